//! Profiling driver for the stream path: reads one `count` stream of N items from a running
//! `bistream rpc serve` (or any slipstream peer) and prints items/s.
//!
//! `cargo run --release -p bistream-rpc --example stream_perf -- ws://127.0.0.1:PORT/ 2000000 [batch [ct]]`
//! (`batch` reads with `ResponseStream::next_batch` instead of one item per poll). Also prints
//! this process's CPU time per item (all threads, from `/proc/self/task/*/schedstat` on
//! Linux), a figure that moves far less with the machine's load than items/s, and its peak
//! RSS. `RPC_WINDOW=N` sets the client's credit window (`Limits::window`, the one the server's
//! producer obeys). `RPC_WS=tungstenite` reads through tokio-tungstenite instead of our
//! WebSocket framing (the A/B of DECISIONS D44).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use futures_util::StreamExt;
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:8701/".into());
    let n: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(2_000_000);
    let batch = args.get(3).map(String::as_str) == Some("batch");
    // `ct` as the fourth argument: a current-thread runtime (driver and reader on one thread).
    let rt = if args.get(4).map(String::as_str) == Some("ct") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    rt.block_on(async move {
        let mut opts = bistream_rpc::ws::ClientOptions::default();
        if let Some(w) = std::env::var("RPC_WINDOW")
            .ok()
            .and_then(|w| w.parse().ok())
        {
            opts.rpc.limits.window = w;
        }
        // `RPC_WS=tungstenite`: the previous transport (tokio-tungstenite's message I/O after
        // the handshake), for A/B instruction counts against our framing (D44).
        let conn = if std::env::var("RPC_WS").as_deref() == Ok("tungstenite") {
            let cfg = bistream_rpc::transport::ws_config(opts.rpc.limits.max_frame_bytes);
            let (ws, _) =
                tokio_tungstenite::connect_async_with_config(url.as_str(), Some(cfg), true)
                    .await
                    .unwrap();
            bistream_rpc::start(
                bistream_rpc::transport::WsTransport(ws),
                bistream_rpc::Side::Initiator,
                opts.router,
                opts.rpc,
            )
        } else {
            bistream_rpc::ws::connect(&url, opts).await.unwrap()
        };
        let cpu0 = cpu_ns();
        let t = std::time::Instant::now();
        let mut s = conn
            .request_stream::<_, u64>("count", &json!({"n": n}))
            .await
            .unwrap();
        let mut got = 0u64;
        if batch {
            let mut buf = Vec::new();
            while let Some(n) = s.next_batch(&mut buf, 1024).await {
                n.unwrap();
                for v in buf.drain(..) {
                    assert_eq!(v, got);
                    got += 1;
                }
            }
        } else {
            while let Some(r) = s.next().await {
                assert_eq!(r.unwrap(), got);
                got += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_ns().saturating_sub(cpu0);
        assert_eq!(got, n);
        println!(
            "{got} items in {secs:.3} s: {:.0} items/s, client CPU {:.0} ns/item, peak RSS {} KiB",
            got as f64 / secs,
            cpu as f64 / got as f64,
            peak_rss_kib()
        );
        conn.close().await;
    });
}

/// This process's peak resident set (VmHWM), in KiB (0 where /proc is missing).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of every thread of this process so far, in ns (0 where schedstat is missing).
fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
