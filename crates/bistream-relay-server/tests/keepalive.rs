//! Keepalive: the server pings idle clients and closes 1011 those that do not answer; clients
//! that answer stay registered.

mod common;
use std::time::Duration;

use bistream_relay_server::RelayConfig;
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn unanswered_pings_close_1011_answered_pings_keep_the_client() {
    let relay = start(RelayConfig {
        ping_interval: Some(Duration::from_millis(100)),
        ping_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    // `mute` never polls its socket, so it never answers pings.
    let (mut mute, _) = registered(&relay, "mute").await;
    let (mut live, _) = registered(&relay, "live").await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    // `live` is polled all along; tungstenite answers pings while the stream is polled.
    let live_task = tokio::spawn(async move {
        let mut pings = 0u32;
        loop {
            tokio::select! {
                _ = &mut stop_rx => return pings,
                m = live.next() => match m {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    Some(Ok(_)) => {}
                    other => panic!("live client lost its connection: {other:?}"),
                },
            }
        }
    });
    eventually("mute client dropped", || relay.registered_clients() == 1).await;
    // Keep going for several more ping rounds: the live client stays.
    eventually("more pings", || {
        relay
            .metrics()
            .render()
            .contains("relay_keepalive_timeouts_total 1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(relay.registered_clients(), 1);
    stop_tx.send(()).unwrap();
    let pings = live_task.await.unwrap();
    assert!(pings >= 2, "live client saw {pings} pings");
    let (code, reason) = expect_close(&mut mute).await;
    assert_eq!((code, reason.as_str()), (1011, "keepalive ping timeout"));
    relay.shutdown().await;
}
