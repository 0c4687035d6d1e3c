//! Size limits: `max_message_bytes` (4003, counted in frame bytes), the transport frame limit
//! (1009 with websockets' reason text, exactly 1 MiB allowed), and the connection cap (1013).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[tokio::test]
async fn max_message_bytes_counts_frame_bytes_and_closes_4003() {
    let relay = start(bistream_relay_server::RelayConfig {
        max_message_bytes: Some(1024),
        ..config()
    })
    .await;
    let (mut a, au) = registered(&relay, "a").await;
    let (mut b, bu) = registered(&relay, "b").await;
    let base = peer_message(au, "a", bu, "").len();
    // Exactly at the limit: forwarded.
    let fits = peer_message(au, "a", bu, &"x".repeat(1024 - base));
    assert_eq!(fits.len(), 1024);
    send(&mut a, fits).await;
    assert_eq!(
        recv_json(&mut b).await["description"]
            .as_str()
            .unwrap()
            .len(),
        1024 - base
    );
    // Non-ASCII counts its UTF-8 bytes: 'é' is 2 bytes.
    let over = peer_message(au, "a", bu, &"é".repeat((1024 - base) / 2 + 1));
    assert!(over.len() > 1024);
    send(&mut a, over).await;
    assert_eq!(
        expect_close(&mut a).await,
        (4003, "Message length exceeds limit.".to_string())
    );
    eventually("unregistration after 4003", || {
        relay.registered_clients() == 1
    })
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn oversize_garbage_and_binary_get_4003_not_4000() {
    let relay = start(bistream_relay_server::RelayConfig {
        max_message_bytes: Some(100),
        ..config()
    })
    .await;
    let mut ws = connect(&relay).await;
    send(&mut ws, "z".repeat(101)).await;
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    let mut ws = connect(&relay).await;
    ws.send(Message::binary(vec![0u8; 101])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    relay.shutdown().await;
}

#[tokio::test]
async fn frame_limit_allows_exactly_1_mib_and_closes_1009_above() {
    let relay = start(config()).await;
    let (mut a, au) = registered(&relay, "a").await;
    let (mut b, bu) = registered(&relay, "b").await;
    let base = peer_message(au, "a", bu, "").len();
    let exact = peer_message(au, "a", bu, &"x".repeat((1 << 20) - base));
    assert_eq!(exact.len(), 1 << 20);
    send(&mut a, exact).await;
    assert_eq!(
        recv_json(&mut b).await["description"]
            .as_str()
            .unwrap()
            .len(),
        (1 << 20) - base
    );
    send(&mut a, "x".repeat((1 << 20) + 1)).await;
    assert_eq!(
        expect_close(&mut a).await,
        (1009, "frame exceeds limit of 1048576 bytes".to_string())
    );
    eventually("unregistration after 1009", || {
        relay.registered_clients() == 1
    })
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn connection_cap_closes_extra_clients_1013() {
    let relay = start(bistream_relay_server::RelayConfig {
        max_connections: 2,
        ..config()
    })
    .await;
    let (_a, _) = registered(&relay, "a").await;
    let (_b, _) = registered(&relay, "b").await;
    let mut c = connect(&relay).await;
    let (code, reason) = expect_close(&mut c).await;
    assert_eq!(code, 1013);
    assert_eq!(reason, bistream_relay_server::AT_CAPACITY_REASON);
    assert_eq!(relay.metrics().snapshot().connections_rejected, 1);
    // A freed slot can be used again.
    drop(_a);
    eventually("slot freed", || {
        relay.metrics().snapshot().connections_open == 1
    })
    .await;
    let mut d = connect(&relay).await;
    register(&mut d, "d", Uuid::new_v4()).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn handshake_timeout_drops_silent_tcp_connections() {
    use tokio::io::AsyncReadExt;
    let relay = start(bistream_relay_server::RelayConfig {
        handshake_timeout: std::time::Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    // The server gives up on the handshake and closes: read sees EOF.
    let n = tokio::time::timeout(T, tcp.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    eventually("handshake failure counted", || {
        relay
            .metrics()
            .render()
            .contains("relay_handshake_failures_total 1")
    })
    .await;
    relay.shutdown().await;
}
