//! A client that does not read: its bounded send queue fills, it is closed (1008, counted),
//! and senders get their messages back with an error instead of the relay growing memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bistream_relay_server::RelayConfig;
use common::*;

#[tokio::test]
async fn non_reading_client_is_disconnected_and_senders_are_told() {
    let relay = start(RelayConfig {
        send_queue_messages: 8,
        send_queue_bytes: 256 * 1024,
        ..config()
    })
    .await;
    let (mut a, au) = registered(&relay, "a").await;
    let (_sleepy, su) = registered(&relay, "sleepy").await;
    let desc = "x".repeat(64 * 1024);
    let mut sent = 0;
    // Send until a bounce comes back; the socket buffers absorb the first few MiB.
    let bounced = loop {
        assert!(sent < 2000, "no bounce after {sent} messages");
        send(&mut a, peer_message(au, "a", su, &desc)).await;
        sent += 1;
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
            tokio::time::timeout(
                std::time::Duration::from_millis(1),
                futures_util::StreamExt::next(&mut a),
            )
            .await
        {
            break serde_json::from_str::<serde_json::Value>(&t).unwrap();
        }
    };
    let err = bounced["error"].as_str().unwrap();
    assert!(
        err.contains("is not reading its messages") || err.contains("not registered"),
        "{err}"
    );
    eventually("sleepy unregistered", || relay.registered_clients() == 1).await;
    assert_eq!(relay.metrics().snapshot().send_queue_drops, 1);
    // The sender is unaffected.
    send(&mut a, peer_message(au, "a", au, "self")).await;
    loop {
        let v = recv_json(&mut a).await;
        if v["description"] == "self" {
            break;
        }
    }
    relay.shutdown().await;
}
