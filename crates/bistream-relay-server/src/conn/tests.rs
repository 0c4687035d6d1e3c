//! Connection behaviour on tokio's paused clock, over in-memory streams (no sockets, so the
//! clock can jump): keepalive pings and the 1011 close, the registration deadline, and the
//! buffer rebuild after a large message.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Conn, Shared};
use crate::tracked::Tracked;
use crate::RelayConfig;

type Client = WebSocketStream<DuplexStream>;

/// A connection task over an in-memory pipe, and the client end.
async fn pipe(config: RelayConfig) -> (Client, tokio::task::JoinHandle<()>, Arc<Shared>) {
    let shared = Arc::new(Shared {
        config,
        registry: crate::registry::Registry::new(),
        metrics: Default::default(),
        auth: Arc::new(crate::auth::NoAuth),
        shutdown: Default::default(),
        hard_stop: Default::default(),
        next_conn_id: Default::default(),
        ws_config: Default::default(),
        frame_budget: Arc::new(crate::tracked::FrameBudget::new(1 << 20)),
    });
    let (c, s) = tokio::io::duplex(1 << 20);
    let server =
        WebSocketStream::from_raw_socket(Tracked::after_handshake(s), Role::Server, None).await;
    let client = WebSocketStream::from_raw_socket(c, Role::Client, None).await;
    let addr = "127.0.0.1:1".parse().unwrap();
    let task = tokio::spawn(Conn::new(server, shared.clone(), addr, Default::default()).run());
    (client, task, shared)
}

fn config(register_timeout: Option<Duration>) -> RelayConfig {
    RelayConfig {
        ping_interval: Some(Duration::from_secs(20)),
        ping_timeout: Duration::from_secs(20),
        register_timeout,
        close_timeout: Duration::from_secs(5),
        ..RelayConfig::default()
    }
}

/// The next close frame (code, reason), skipping pings.
async fn close_of(client: &mut Client) -> (u16, String) {
    while let Some(m) = client.next().await {
        match m {
            Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
            Ok(Message::Ping(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
    panic!("stream ended without a close frame")
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_pings_is_closed_1011_after_interval_plus_timeout() {
    let (mut mute, task, shared) = pipe(config(None)).await;
    let start = tokio::time::Instant::now();
    // Not polling the client: its pings go unanswered.
    tokio::time::sleep(Duration::from_secs(39)).await;
    assert!(!task.is_finished(), "closed before interval + timeout");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, reason) = close_of(&mut mute).await;
    assert_eq!(
        (code, reason.as_str()),
        (1011, bistream_relay_proto::KEEPALIVE_TIMEOUT_REASON)
    );
    drop(mute);
    task.await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(40));
    assert!(shared
        .metrics
        .render()
        .contains("relay_keepalive_timeouts_total 1"));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays_for_hours() {
    let (mut live, task, shared) = pipe(config(None)).await;
    let pinger = tokio::spawn(async move {
        let mut pings = 0u32;
        while let Some(m) = live.next().await {
            match m {
                Ok(Message::Ping(_)) => pings += 1,
                Ok(Message::Close(f)) => panic!("closed: {f:?}"),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
            if pings == 100 {
                break;
            }
        }
        (pings, live)
    });
    let (pings, mut live) = pinger.await.unwrap();
    assert_eq!(pings, 100);
    assert!(!task.is_finished());
    assert!(shared
        .metrics
        .render()
        .contains("relay_keepalive_timeouts_total 0"));
    live.close(None).await.unwrap();
    while live.next().await.is_some() {}
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unregistered_connection_is_closed_at_the_register_timeout() {
    let (mut idle, task, shared) = pipe(config(Some(Duration::from_secs(30)))).await;
    let pinger = tokio::spawn(async move {
        let got = close_of(&mut idle).await;
        (got, idle)
    });
    let ((code, reason), idle) = pinger.await.unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (1008, bistream_relay_proto::REGISTRATION_TIMEOUT_REASON)
    );
    drop(idle);
    task.await.unwrap();
    assert!(shared
        .metrics
        .render()
        .contains("relay_registration_timeouts_total 1"));
}
