//! A long stream (hundreds of MB) keeps memory flat: its own test binary so that no other
//! test's allocations disturb the resident-set reading.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use bistream_logs::Tail;
use bytes::Bytes;
use futures_util::StreamExt;
use support::*;

const LINE: usize = 1024; // bytes per line, with its \n
const CHUNK_LINES: usize = 64; // 64 KiB chunks
const CHUNKS: usize = 4096; // 256 MiB in all

fn chunk() -> Bytes {
    let mut line = vec![b'x'; LINE - 1];
    line.push(b'\n');
    Bytes::from(line.repeat(CHUNK_LINES))
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reads the whole stream; returns (lines, RSS growth in KiB between 1/16 and the end).
async fn drain(url: &str) -> (u64, u64) {
    let total = (CHUNK_LINES * CHUNKS) as u64;
    let o = opts(limits(|b| {
        b.max_lines(total)
            .max_messages(total)
            .max_bytes(u64::MAX / 2)
    }))
    .timeouts(Duration::from_secs(30), Some(Duration::from_secs(60)));
    let mut stream = Tail::new(url, o).into_stream();
    let mut n = 0u64;
    let mut base = 0;
    let mut peak = 0;
    let all = async {
        while let Some(line) = stream.next().await {
            assert_eq!(line.unwrap().len(), LINE - 1);
            n += 1;
            if n == total / 16 {
                base = rss_kib();
            }
            if n % 4096 == 0 {
                peak = peak.max(rss_kib());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .expect("stream finished");
    (n, peak.saturating_sub(base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_megabytes_in_flat_memory() {
    let router = Router::new()
        .route(
            "/logs",
            get(|| async {
                let c = chunk();
                let s = futures_util::stream::iter(
                    (0..CHUNKS).map(move |_| Ok::<_, Infallible>(c.clone())),
                );
                Body::from_stream(s)
            }),
        )
        .route(
            "/tail",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    let c = chunk();
                    for _ in 0..CHUNKS {
                        if socket.send(Message::Binary(c.clone())).await.is_err() {
                            return;
                        }
                    }
                    let _ = socket.send(Message::Close(None)).await;
                })
            }),
        );
    let addr = serve(router).await;
    for url in [format!("http://{addr}/logs"), format!("ws://{addr}/tail")] {
        let (lines, growth) = drain(&url).await;
        assert_eq!(lines, (CHUNK_LINES * CHUNKS) as u64, "{url}");
        // 256 MiB went through; the resident set may move by allocator noise only.
        assert!(growth < 24 * 1024, "{url}: RSS grew by {growth} KiB");
        eprintln!("{url}: {lines} lines, RSS growth {growth} KiB");
    }
}
