//! Profiling driver for the tail's hot path (not part of the library): one process serves the
//! bench's stream (`serve`), another reads it (`ours`, `floor`), so a profiler attached to the
//! reader sees only the client. Per-line cost is then compared by instruction counts
//! (`valgrind --tool=callgrind`, `perf stat -e instructions`), which the load of a shared
//! machine does not move, instead of by wall-clock rates, which it does.
//!
//! ```text
//! cargo run --release -p bistream-logs --example tail_profile -- serve 300 &   # prints 2 URLs
//! valgrind --tool=callgrind target/release/examples/tail_profile ours ws://127.0.0.1:P/tail
//! valgrind --tool=callgrind target/release/examples/tail_profile floor ws://127.0.0.1:P/tail
//! ```
//!
//! The stream is the `logs` bench suite's: ~85-byte lines, WebSocket text frames of 10 lines
//! (Ray's framing) or chunked HTTP with 64 KiB chunks. `ours` tails it through
//! `Tail::next_lines` (what `logs tail` does) with the bench's limits; `floor` reads the same
//! bytes over the same transport stack without line work (tungstenite messages, reqwest body
//! chunks), as the bench's floor does. Both print lines, bytes and CPU seconds of the process.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use bistream_core::StreamLimits;
use bistream_logs::{Tail, TailOptions};

/// One 64 KiB-ish block of whole log lines (the bench's), and its line count.
fn block() -> (Bytes, usize) {
    let mut b = String::with_capacity(70 * 1024);
    let mut n = 0;
    while b.len() < 64 * 1024 - 100 {
        b.push_str(&format!(
            "2026-11-30 02:00:{:02}.{:06} INFO worker.py:{:<4} -- processed item {n:08} of the batch\n",
            n % 60,
            n * 7 % 1_000_000,
            n % 997
        ));
        n += 1;
    }
    (Bytes::from(b), n)
}

async fn serve(blocks: usize) {
    let (data, lines) = block();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("http://{}/logs", http.local_addr().unwrap());
    println!("ws://{}/tail", ws.local_addr().unwrap());
    println!("lines {}", lines * blocks);
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(b"\r\n");
    let chunk = Bytes::from(chunk);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = http.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..blocks {
                    if tcp.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = tcp.write_all(b"0\r\n\r\n").await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    let text = std::str::from_utf8(&data).unwrap().to_owned();
    let all: Vec<&str> = text.split_inclusive('\n').collect();
    let frames: Vec<String> = all.chunks(10).map(|c| c.concat()).collect();
    let accept = async move {
        while let Ok((tcp, _)) = ws.accept().await {
            let frames = frames.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut conn) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                for _ in 0..blocks {
                    for f in &frames {
                        if conn.feed(Message::text(f.as_str())).await.is_err() {
                            return;
                        }
                    }
                    if conn.flush().await.is_err() {
                        return;
                    }
                }
                let _ = conn.close(None).await;
            });
        }
    };
    accept.await;
}

async fn ours(url: &str) -> (u64, u64) {
    let limits = StreamLimits::builder()
        .max_lines(u64::MAX)
        .max_messages(u64::MAX)
        .max_bytes(u64::MAX)
        .build()
        .unwrap();
    let mut tail = Tail::new(url, TailOptions::new("profile").limits(limits));
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(batch) = tail
        .next_lines(|line| {
            n += 1;
            bytes += line.len() as u64;
            std::hint::black_box(line);
        })
        .await
    {
        batch.unwrap();
    }
    (n, bytes)
}

async fn floor(url: &str) -> (u64, u64) {
    let mut bytes = 0u64;
    if url.starts_with("http") {
        let tls = std::sync::Arc::unwrap_or_clone(bistream_core::tls::trust_nothing().unwrap());
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        let mut resp = client.get(url).send().await.unwrap();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            bytes += chunk.len() as u64;
        }
    } else {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        while let Some(m) = ws.next().await {
            match m.unwrap() {
                Message::Text(t) => bytes += t.len() as u64,
                Message::Close(_) => break,
                _ => {}
            }
        }
    }
    (0, bytes)
}

/// CPU time of this thread so far, in seconds (the reader runs on a current-thread runtime,
/// so this is the read path's CPU), from /proc/thread-self/schedstat (nanoseconds).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or_default();
    let arg = args.get(2).cloned().unwrap_or_default();
    if mode == "serve" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve(arg.parse().unwrap_or(300)));
        return;
    }
    // The bench runs on the `bistream` binary's multi-thread runtime; the reader here runs on
    // a current-thread one, so the count is the read path's own instructions.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    let (lines, bytes) = match mode {
        "ours" => rt.block_on(ours(&arg)),
        "floor" => rt.block_on(floor(&arg)),
        _ => panic!("usage: tail_profile serve BLOCKS | ours URL | floor URL"),
    };
    println!(
        "{mode}: {lines} lines, {bytes} bytes, {:.4} s CPU, {:.4} s wall",
        cpu_secs() - cpu0,
        t0.elapsed().as_secs_f64()
    );
}
