//! The reconnect loop under tokio's paused clock: a relay that accepts TCP connections and
//! never answers makes every attempt hit the registration timeout, and the client must retry
//! on ProxyStore's default schedule (1 s doubling to the 60 s cap). Virtual time makes the
//! ~200 s of waiting take no real time, and no assertion depends on the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

use std::net::TcpListener;
use std::time::Duration;

use bistream_relay_client::{Backoff, ConnectionEvent, RelayClient, RelayError};

/// A listener on its own thread that accepts and holds connections silently.
fn silent_relay() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(64) {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    port
}

#[tokio::test(start_paused = true)]
async fn silent_relay_is_retried_on_the_default_schedule() {
    let port = silent_relay();
    let client = std::sync::Arc::new(
        RelayClient::builder(format!("ws://127.0.0.1:{port}"))
            .backoff(Backoff {
                jitter: 0.0,
                ..Backoff::default()
            })
            .build()
            .unwrap(),
    );
    let mut events = client.events();
    let task = tokio::spawn({
        let c = client.clone();
        async move { c.connect(true).await }
    });
    let mut delays = Vec::new();
    while delays.len() < 8 {
        let e = tokio::time::timeout(Duration::from_secs(3600), events.next())
            .await
            .expect("an event within an hour of virtual time")
            .expect("stream open");
        if let ConnectionEvent::Retrying { delay, error, .. } = e {
            assert!(
                matches!(error, RelayError::Timeout { after, .. } if after == Duration::from_secs(10)),
                "{error:?}"
            );
            delays.push(delay.as_secs());
        }
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    client.close().await;
    let r = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("connect ends on close")
        .unwrap();
    assert_eq!(r, Err(RelayError::Closed));
}
