//! Hostile clients (issue 14): abrupt disconnects are normal client losses, connections that
//! never register are closed, and a large message does not leave its buffers behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::time::Duration;

use bistream_relay_server::RelayConfig;
use common::*;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Item 8: clients that drop TCP after registering (no closing handshake) are counted as
/// client closes, not as protocol errors closed 1002.
#[tokio::test]
async fn abrupt_disconnects_are_client_losses_not_protocol_errors() {
    let relay = start(config()).await;
    for i in 0..20 {
        let (ws, _) = registered(&relay, &format!("c{i}")).await;
        // Drop the TCP socket without a close frame.
        let mut tcp = ws.into_inner();
        if let tokio_tungstenite::MaybeTlsStream::Plain(t) = &mut tcp {
            let _ = t.shutdown().await;
        }
        drop(tcp);
    }
    eventually("all unregistered", || relay.registered_clients() == 0).await;
    eventually("all closed", || {
        relay.metrics().snapshot().connections_open == 0
    })
    .await;
    let text = relay.metrics().render();
    assert_eq!(relay.metrics().closes_with(1002), 0, "{text}");
    assert!(text.contains("relay_client_closes_total 20"), "{text}");
    // The relay still serves.
    let (mut a, _) = registered(&relay, "a").await;
    let (_b, ub) = registered(&relay, "b").await;
    send(&mut a, peer_message(uuid::Uuid::new_v4(), "a", ub, "d")).await;
    relay.shutdown().await;
}

/// Item 6: a connection that never registers is closed 1008 after `register_timeout`, even
/// though it answers pings; registered clients are not affected.
#[tokio::test]
async fn unregistered_connections_are_closed_after_the_deadline() {
    let relay = start(RelayConfig {
        register_timeout: Some(Duration::from_millis(300)),
        ping_interval: Some(Duration::from_millis(50)),
        ..config()
    })
    .await;
    let (mut registered_ws, _) = registered(&relay, "stays").await;
    let mut idle = connect(&relay).await;
    let (code, reason) = expect_close(&mut idle).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, bistream_relay_proto::REGISTRATION_TIMEOUT_REASON)
    );
    assert!(relay
        .metrics()
        .render()
        .contains("relay_registration_timeouts_total 1"));
    // The registered client is still there and answered pings all along.
    tokio::time::timeout(T, async {
        while let Some(Ok(m)) = registered_ws.next().await {
            if matches!(m, Message::Ping(_)) {
                break;
            }
        }
    })
    .await
    .expect("registered client still pinged");
    assert_eq!(relay.registered_clients(), 1);
    relay.shutdown().await;
}

/// Item 4: after a 1 MiB message goes through, both connections rebuild their WebSocket (which
/// frees tungstenite's peak-size buffers) and keep working.
#[tokio::test]
async fn large_messages_do_not_leave_their_buffers_behind() {
    let relay = start(config()).await;
    let (mut a, ua) = registered(&relay, "a").await;
    let (mut b, ub) = registered(&relay, "b").await;
    let big = "x".repeat(900 * 1024);
    send(&mut a, peer_message(ua, "a", ub, &big)).await;
    let got = recv_json(&mut b).await;
    assert_eq!(got["description"].as_str().map(str::len), Some(big.len()));
    // Sender (large frame in) and receiver (large frame out) both rebuild.
    eventually("both connections rebuilt", || {
        relay
            .metrics()
            .render()
            .contains("relay_buffer_rebuilds_total 2")
    })
    .await;
    // Traffic still flows both ways on the rebuilt connections, small and large.
    for desc in ["small", big.as_str(), "after"] {
        send(&mut b, peer_message(ub, "b", ua, desc)).await;
        assert_eq!(recv_json(&mut a).await["description"], desc);
        send(&mut a, peer_message(ua, "a", ub, desc)).await;
        assert_eq!(recv_json(&mut b).await["description"], desc);
    }
    relay.shutdown().await;
}
