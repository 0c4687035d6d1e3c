//! Security (issue 15): the opening handshake is bounded in size, not only in time. Requests
//! with too many header lines, one endless header line, or megabytes of headers are refused
//! or cut off well before the handshake timeout (set to 10 minutes here, so that a refusal
//! that only comes from the timeout fails the test), and the relay keeps serving a normal
//! client meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::time::Duration;

use bistream_relay_server::RelayConfig;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `head` (errors ignored: the server may close while we write), then reads until
/// the server ends the connection; returns what it sent. Panics if it stays open for `T`.
async fn refused(addr: &str, head: Vec<u8>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.split();
    let write = async {
        let _ = wr.write_all(&head).await;
        // Keep the connection open: only the server may end it.
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let got = tokio::time::timeout(T, async {
        tokio::select! {
            g = read => g,
            _ = write => unreachable!(),
        }
    })
    .await
    .expect("the relay kept an oversized handshake open");
    String::from_utf8_lossy(&got).into_owned()
}

fn upgrade_head(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}"
    )
}

#[tokio::test]
async fn oversized_handshakes_are_refused_and_others_are_served() {
    let relay = start(RelayConfig {
        handshake_timeout: Duration::from_secs(600),
        ..config()
    })
    .await;
    let addr = relay.url().trim_start_matches("ws://").to_string();

    // 1,000 header lines.
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let got = refused(&addr, upgrade_head(&format!("{many}\r\n")).into_bytes()).await;
    assert!(!got.starts_with("HTTP/1.1 101"), "accepted: {got}");

    // One header line of 4 MiB that never ends.
    let mut endless = upgrade_head("X-Long: ").into_bytes();
    endless.extend(std::iter::repeat_n(b'a', 4 << 20));
    let got = refused(&addr, endless).await;
    assert!(!got.starts_with("HTTP/1.1 101"), "accepted: {got}");

    // 4 MiB spread over short header lines, never finished.
    let mut lots = upgrade_head("").into_bytes();
    for i in 0..(4 << 20) / 64 {
        lots.extend_from_slice(format!("X-{i:08}: {}\r\n", "b".repeat(50)).as_bytes());
    }
    let got = refused(&addr, lots).await;
    assert!(!got.starts_with("HTTP/1.1 101"), "accepted: {got}");

    // Still serving.
    let (mut a, au) = registered(&relay, "a").await;
    send(&mut a, peer_message(au, "a", au, "alive")).await;
    assert_eq!(recv_json(&mut a).await["description"], "alive");
    relay.shutdown().await;
}
