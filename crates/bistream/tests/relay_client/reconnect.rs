//! Reconnecting: the relay restarts (the client re-registers under the same UUID and a waiting
//! `recv` gets the next message), `close()` while retrying stops every task, and the retry
//! schedule against a port where nothing listens follows the backoff policy exactly.

use std::time::Duration;

use bistream_relay_client::{Backoff, ConnectionEvent, ConnectionState, RelayClient, RelayError};

use crate::support::*;

on_both_relays! {
    reconnects_after_a_relay_restart => survives_server_restart;
    close_while_reconnecting_stops_the_tasks => close_while_reconnecting;
}

/// The relay restarts: the client reconnects and re-registers by itself, and a recv() that
/// was waiting across the outage gets the next message.
pub async fn survives_server_restart(kind: Kind) {
    let relay = Relay::start(kind).await;
    let port = relay.port;
    let client = std::sync::Arc::new(fast(&relay.url).build().unwrap());
    let mut events = client.events();
    client.connect(true).await.unwrap();
    next_event(&mut events).await; // Connected 1

    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.recv().await }
    });
    relay.stop().await;
    let (e, _) = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(e, ConnectionEvent::Disconnected { code: 1001, .. }),
        "{e:?}"
    );
    // Nothing listens now: at least one retry is announced.
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Retrying { .. })
    })
    .await;

    let relay = Relay::start_on(kind, port, None).await;
    let (e, _) = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    assert_eq!(e, ConnectionEvent::Connected { registrations: 2 });
    assert!(client.is_connected());

    // Registered again under the same UUID: a Python peer can reach it.
    let me = client.uuid().to_string();
    let (_py, py_uuid) = python_peer(
        &relay.url,
        &[
            "--mode",
            "send",
            "--to",
            &me,
            "--description",
            "after restart",
        ],
    )
    .await;
    let got = tokio::time::timeout(STEP, waiting)
        .await
        .expect("the waiting recv should finish")
        .expect("task")
        .expect("recv");
    let got = peer_msg(got);
    assert_eq!(got.source_uuid, py_uuid);
    assert_eq!(got.description, "after restart");
    client.close().await;
}

/// close() while the client is retrying ends a waiting recv() with Closed and stops every
/// background task (the event stream ends once the client is dropped).
pub async fn close_while_reconnecting(kind: Kind) {
    let relay = Relay::start(kind).await;
    let client = std::sync::Arc::new(fast(&relay.url).build().unwrap());
    let mut events = client.events();
    client.connect(true).await.unwrap();
    relay.stop().await;
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Retrying { .. })
    })
    .await;
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.recv().await }
    });
    client.close().await;
    let r = tokio::time::timeout(STEP, waiting)
        .await
        .expect("recv ends on close")
        .expect("task");
    assert_eq!(r, Err(RelayError::Closed));
    assert_eq!(client.state(), ConnectionState::Closed);
    drop(client);
    // All tasks hold the event sender; the stream ends only when they are all gone.
    let rest = wait_end(&mut events).await;
    assert!(
        !rest
            .iter()
            .skip_while(|e| **e != ConnectionEvent::Closed)
            .any(|e| matches!(
                e,
                ConnectionEvent::Retrying { .. } | ConnectionEvent::Connected { .. }
            )),
        "activity after close: {rest:?}"
    );
}

/// The retry schedule as announced by the events, against a port where nothing listens:
/// exactly the backoff policy (no jitter), and a connect without retry fails at once.
#[tokio::test]
async fn retry_schedule_follows_the_backoff_policy() {
    let port = bistream_testkit::free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let client = RelayClient::builder(&url)
        .backoff(Backoff {
            initial: Duration::from_millis(5),
            factor: 2.0,
            max: Duration::from_millis(40),
            jitter: 0.0,
        })
        .build()
        .unwrap();
    let err = client.connect(false).await.unwrap_err();
    assert!(
        matches!(
            err,
            RelayError::Io {
                kind: std::io::ErrorKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(client.state(), ConnectionState::Disconnected);

    let client = std::sync::Arc::new(client);
    let mut events = client.events();
    let task = tokio::spawn({
        let c = client.clone();
        async move { c.connect(true).await }
    });
    let mut delays = Vec::new();
    while delays.len() < 6 {
        if let ConnectionEvent::Retrying {
            attempt,
            delay,
            error,
        } = next_event(&mut events).await
        {
            assert_eq!(attempt as usize, delays.len() + 1);
            assert!(error.is_retryable(), "{error:?}");
            delays.push(delay.as_millis());
        }
    }
    assert_eq!(delays, [5, 10, 20, 40, 40, 40]);
    client.close().await;
    let r = tokio::time::timeout(STEP, task).await.unwrap().unwrap();
    assert_eq!(r, Err(RelayError::Closed));
}
