//! Supervision tests: the rules as plain functions, and the whole client (connect loop,
//! background reconnect task, connection task) against scripted relays joined in memory, on
//! tokio's paused clock, so the schedule is checked exactly without sockets or wall-clock time.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use bistream_relay_proto::{CloseCode, RelayMessage, RelayResponse};
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::*;
use crate::builder::Dialer;
use crate::Backoff;
use crate::{Events, RelayClient};

fn schedule() -> BackoffState {
    Backoff {
        jitter: 0.0,
        ..Backoff::default()
    }
    .start()
}

const STABLE: Duration = Duration::from_secs(10);

#[test]
fn a_relay_that_drops_every_connection_early_sees_growing_waits() {
    let mut b = schedule();
    let mut waits = Vec::new();
    for _ in 0..8 {
        match after_loss(Some(Duration::from_millis(300)), STABLE, true, &mut b) {
            AfterLoss::WaitFirst { attempt, delay } => {
                assert_eq!(attempt as usize, waits.len() + 1);
                waits.push(delay.as_secs());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
}

#[test]
fn a_stable_connection_resets_the_schedule_and_reconnects_at_once() {
    let mut b = schedule();
    for _ in 0..5 {
        b.next_delay();
    }
    assert_eq!(
        after_loss(Some(STABLE), STABLE, true, &mut b),
        AfterLoss::ReconnectNow
    );
    assert_eq!(b.attempts(), 0);
    // The next early loss starts from the first delay again.
    assert_eq!(
        after_loss(Some(Duration::ZERO), STABLE, true, &mut b),
        AfterLoss::WaitFirst {
            attempt: 1,
            delay: Duration::from_secs(1)
        }
    );
    // Even without retry, a stable connection resets (it was a success).
    assert_eq!(
        after_loss(Some(STABLE * 2), STABLE, false, &mut b),
        AfterLoss::ReconnectNow
    );
    assert_eq!(b.attempts(), 0);
}

#[test]
fn no_wait_for_a_first_connection_or_a_single_attempt() {
    let mut b = schedule();
    assert_eq!(after_loss(None, STABLE, true, &mut b), AfterLoss::Dial);
    assert_eq!(
        after_loss(Some(Duration::ZERO), STABLE, false, &mut b),
        AfterLoss::Dial
    );
    assert_eq!(b.attempts(), 0, "no attempt was counted");
}

#[test]
fn retry_rules() {
    use Caller::{Application as App, Supervisor as Sup};
    let refused = RelayError::Io {
        kind: std::io::ErrorKind::ConnectionRefused,
        message: "refused".into(),
    };
    let fatal = RelayError::from_close(4004, "same ID".into());
    let rejected = RelayError::RegistrationRejected("no".into());
    let closed = RelayError::Closed;
    let cases = [
        (&refused, true, App, OnFailure::Retry),
        (&refused, true, Sup, OnFailure::Retry),
        (&refused, false, App, OnFailure::Return),
        (&refused, false, Sup, OnFailure::Fail),
        (&fatal, true, App, OnFailure::Fail),
        (&fatal, false, App, OnFailure::Fail),
        (&fatal, true, Sup, OnFailure::Fail),
        (&rejected, true, App, OnFailure::Return),
        (&rejected, true, Sup, OnFailure::Fail),
        (&closed, true, App, OnFailure::Return),
        (&closed, true, Sup, OnFailure::Return),
    ];
    for (e, retry, caller, want) in cases {
        assert_eq!(
            on_failure(e, retry, caller),
            want,
            "{e:?} retry={retry} {caller:?}"
        );
    }
}

// ---------------------------------------------------------------- whole client, in memory

type RelayWs = WebSocketStream<DuplexStream>;

/// A relay in memory: each connection attempt gets a fresh pipe whose far end runs
/// `script(ws, n)` (n counts attempts from 0). Returns the dialer and the attempt counter.
fn relay<F, Fut>(script: F) -> (Dialer, Arc<AtomicUsize>)
where
    F: Fn(RelayWs, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let count = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let dials = count.clone();
    let dialer: Dialer = Arc::new(move || {
        let (client_end, relay_end) = tokio::io::duplex(64 * 1024);
        let n = dials.fetch_add(1, Ordering::SeqCst);
        let script = script.clone();
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async(relay_end).await {
                script(ws, n).await;
            }
        });
        Box::new(client_end)
    });
    (dialer, count)
}

/// Reads the registration and answers `reply`.
async fn answer(ws: &mut RelayWs, reply: RelayResponse) {
    match ws.next().await {
        Some(Ok(Message::Text(t))) => {
            assert!(matches!(
                RelayMessage::decode(&t),
                Ok(RelayMessage::Registration(_))
            ));
        }
        other => panic!("expected a registration, got {other:?}"),
    }
    let text = RelayMessage::Response(reply).encode();
    ws.send(Message::text(text)).await.unwrap();
}

/// Keeps the connection, answering control frames, until the client ends it.
async fn hold(ws: &mut RelayWs) {
    while let Some(Ok(_)) = ws.next().await {}
}

/// Closes with `code` and waits for the client's answer.
async fn close(ws: &mut RelayWs, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    let _ = ws.close(Some(frame)).await;
    hold(ws).await;
}

fn client(dialer: Dialer) -> RelayClient {
    RelayClient::builder("ws://relay.invalid/")
        .backoff(Backoff {
            jitter: 0.0,
            ..Backoff::default()
        })
        .keepalive(None)
        .dialer(dialer)
        .build()
        .unwrap()
}

async fn next(events: &mut Events) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(3600), events.next())
        .await
        .expect("an event within an hour of virtual time")
        .expect("the event stream is open")
}

#[tokio::test(start_paused = true)]
async fn the_supervisor_backs_off_from_a_relay_that_drops_every_connection() {
    let (dialer, dials) = relay(|mut ws, _| async move {
        answer(&mut ws, RelayResponse::success()).await;
        close(&mut ws, CloseCode::GoingAway.code(), "").await;
    });
    let c = client(dialer);
    let mut events = c.events();
    c.connect(true).await.unwrap();
    let mut waits = Vec::new();
    let mut registrations = 0;
    while waits.len() < 6 {
        match next(&mut events).await {
            ConnectionEvent::Retrying { attempt, delay, .. } => {
                assert_eq!(attempt as usize, waits.len() + 1);
                waits.push(delay.as_secs());
            }
            ConnectionEvent::Connected { registrations: r } => {
                registrations += 1;
                assert_eq!(r, registrations);
            }
            ConnectionEvent::Disconnected { code, .. } => assert_eq!(code, 1001),
            other => panic!("{other:?}"),
        }
    }
    // Each short-lived connection counts as a failure: ProxyStore's schedule, not a tight loop.
    assert_eq!(waits, [1, 2, 4, 8, 16, 32]);
    assert!(dials.load(Ordering::SeqCst) >= 6);
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_stable_connection_that_ends_is_replaced_at_once() {
    let (dialer, _) = relay(|mut ws, n| async move {
        answer(&mut ws, RelayResponse::success()).await;
        if n == 0 {
            tokio::time::sleep(Duration::from_secs(15)).await; // past stable_after (10 s)
            close(&mut ws, CloseCode::GoingAway.code(), "restart").await;
        } else {
            hold(&mut ws).await;
        }
    });
    let c = client(dialer);
    let mut events = c.events();
    c.connect(true).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        ConnectionEvent::Connected { registrations: 1 }
    );
    assert_eq!(
        next(&mut events).await,
        ConnectionEvent::Disconnected {
            code: 1001,
            reason: "restart".into()
        }
    );
    let lost_at = tokio::time::Instant::now();
    // No Retrying in between: the reconnect is immediate.
    assert_eq!(
        next(&mut events).await,
        ConnectionEvent::Connected { registrations: 2 }
    );
    assert_eq!(lost_at.elapsed(), Duration::ZERO, "virtual time");
    assert!(c.is_connected());
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_fatal_close_stops_the_supervisor_for_good() {
    let (dialer, dials) = relay(|mut ws, _| async move {
        answer(&mut ws, RelayResponse::success()).await;
        close(&mut ws, CloseCode::DuplicateRegistration.code(), "same ID").await;
    });
    let c = client(dialer);
    let mut events = c.events();
    c.connect(true).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        ConnectionEvent::Connected { registrations: 1 }
    );
    assert!(matches!(
        next(&mut events).await,
        ConnectionEvent::Disconnected { code: 4004, .. }
    ));
    let failed = next(&mut events).await;
    let ConnectionEvent::Failed(err) = failed else {
        panic!("{failed:?}")
    };
    assert!(
        matches!(err, RelayError::FatalClose { code: 4004, .. }),
        "{err:?}"
    );
    // An hour later: no new attempt, and every call returns the same error.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(dials.load(Ordering::SeqCst), 1);
    assert_eq!(c.connect(true).await, Err(err.clone()));
    assert_eq!(c.recv().await, Err(err));
}

#[tokio::test(start_paused = true)]
async fn a_rejection_during_a_background_reconnect_fails_the_client() {
    let (dialer, dials) = relay(|mut ws, n| async move {
        if n == 0 {
            answer(&mut ws, RelayResponse::success()).await;
            close(&mut ws, CloseCode::GoingAway.code(), "").await;
        } else {
            let no = RelayResponse::failure("ForbiddenError: not any more");
            answer(&mut ws, no).await;
            hold(&mut ws).await;
        }
    });
    let c = client(dialer);
    let mut events = c.events();
    c.connect(true).await.unwrap();
    let failed = loop {
        if let ConnectionEvent::Failed(e) = next(&mut events).await {
            break e;
        }
    };
    // Nobody was waiting on connect(): the supervisor cannot return the error, so it stops.
    assert_eq!(
        failed,
        RelayError::RegistrationRejected("ForbiddenError: not any more".into())
    );
    assert_eq!(c.state(), ConnectionState::Failed(failed));
    assert_eq!(dials.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn close_stops_a_supervisor_that_is_waiting_to_retry() {
    let (dialer, dials) = relay(|mut ws, n| async move {
        if n == 0 {
            answer(&mut ws, RelayResponse::success()).await;
            close(&mut ws, CloseCode::GoingAway.code(), "").await;
        }
        // Later attempts: the relay hangs up right after the WebSocket opens.
    });
    let c = client(dialer);
    let mut events = c.events();
    c.connect(true).await.unwrap();
    loop {
        if let ConnectionEvent::Retrying { .. } = next(&mut events).await {
            break;
        }
    }
    c.close().await;
    let seen = dials.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(dials.load(Ordering::SeqCst), seen, "no attempt after close");
    assert_eq!(c.state(), ConnectionState::Closed);
}
