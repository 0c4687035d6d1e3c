//! Profiling driver for the stream path: reads one `count` stream of N items from a running
//! `bistream rpc serve` (or any slipstream peer) and prints items/s.
//!
//! `cargo run --release -p bistream-rpc --example stream_perf -- ws://127.0.0.1:PORT/ 2000000 [batch]`
//! (`batch` reads with `ResponseStream::next_batch` instead of one item per poll).

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let conn = bistream_rpc::ws::connect(&url, Default::default())
            .await
            .unwrap();
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
        assert_eq!(got, n);
        println!(
            "{got} items in {secs:.3} s: {:.0} items/s",
            got as f64 / secs
        );
        conn.close().await;
    });
}
