//! Graceful shutdown: every client gets 1001, the server drains; a client that never answers
//! the close is dropped at the deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::time::Duration;

use bistream_relay_server::RelayConfig;
use common::*;

#[tokio::test]
async fn shutdown_closes_every_client_with_1001() {
    let relay = start(config()).await;
    let (mut a, _) = registered(&relay, "a").await;
    let (mut b, _) = registered(&relay, "b").await;
    let mut unregistered = connect(&relay).await;
    let addr = relay.local_addr();
    let (report, ca, cb, cu) = tokio::join!(
        relay.shutdown(),
        expect_close(&mut a),
        expect_close(&mut b),
        expect_close(&mut unregistered)
    );
    assert_eq!((ca.0, cb.0, cu.0), (1001, 1001, 1001));
    assert!(report.drained);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn unresponsive_client_is_dropped_at_the_deadline() {
    let relay = start(RelayConfig {
        shutdown_timeout: Duration::from_millis(300),
        close_timeout: Duration::from_secs(30),
        ..config()
    })
    .await;
    // This client never reads, so it never answers the close frame.
    let (_silent, _) = registered(&relay, "silent").await;
    let report = tokio::time::timeout(T, relay.shutdown())
        .await
        .expect("shutdown returns after the deadline");
    assert!(!report.drained);
}
