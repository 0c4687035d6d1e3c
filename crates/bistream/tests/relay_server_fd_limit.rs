//! Issue 14, item 6: the connection cap follows the file-descriptor limit. With `ulimit -n 300`
//! and the default cap of 50,000, the relay lowers its cap (300 minus a reserve), says so, closes
//! the clients above it with 1013 instead of hanging them in the backlog, and its ops endpoint
//! keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod relay_server_support;
use std::time::Duration;

use bistream_testkit::{http_get, open_websocket_raw, Peer};
use relay_server_support::T;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The close code of a close frame the server sends within a short window, if any.
async fn close_code(s: &mut TcpStream, wait: Duration) -> Option<u16> {
    let mut h = [0u8; 4];
    match tokio::time::timeout(wait, s.read_exact(&mut h)).await {
        Ok(Ok(_)) if h[0] == 0x88 => Some(u16::from_be_bytes([h[2], h[3]])),
        _ => None,
    }
}

#[tokio::test]
async fn cap_follows_the_descriptor_limit_and_extra_clients_get_1013() {
    let bin = env!("CARGO_BIN_EXE_bistream");
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 300 && exec "$0" relay serve --host 127.0.0.1 --port 0 --metrics-addr 127.0.0.1:0"#)
        .arg(bin)
        .env("NO_COLOR", "1")
        .env("BISTREAM_LOG_LEVEL", "info");
    let mut peer = Peer::spawn(cmd).expect("spawn");
    let relay = peer.next_stdout_line(T).await.expect("address line");
    let relay = relay
        .strip_prefix("relay listening on ws://")
        .unwrap()
        .to_string();
    let ops = peer.next_stdout_line(T).await.expect("metrics line");
    let ops = ops
        .strip_prefix("metrics listening on http://")
        .unwrap()
        .to_string();
    // 300 descriptors minus the reserve of 128: 172 clients.
    let cap = 172;
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(open_websocket_raw(&relay, T).await);
    }
    // Above the cap: 1013 at once (not a hang in the backlog).
    for _ in 0..10 {
        let mut extra = open_websocket_raw(&relay, T).await;
        assert_eq!(close_code(&mut extra, T).await, Some(1013));
    }
    // The ops endpoint still answers.
    let (status, body) = http_get(ops.as_str(), "/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"connections\":{cap}")), "{body}");
    // The held clients were served, not refused.
    assert_eq!(
        close_code(&mut held[0], Duration::from_millis(200)).await,
        None
    );
    drop(held);
}
