//! The registration exchange against a scripted relay over an in-memory stream (no sockets;
//! the timeout case runs on tokio's paused clock).

use std::time::Duration;

use bistream_relay_proto::RelayResponse;
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A client and a relay WebSocket joined in memory.
async fn pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let relay = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
    (client, relay)
}

/// Runs the handshake while the relay side follows `script` after reading the registration.
async fn exchange<F, Fut>(name: &str, script: F) -> (Result<(), RelayError>, RelayMessage)
where
    F: FnOnce(WebSocketStream<DuplexStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (mut client, mut relay) = pair().await;
    let uuid = Uuid::new_v4();
    let relay_task = tokio::spawn(async move {
        let first = match relay.next().await {
            Some(Ok(Message::Text(t))) => RelayMessage::decode(&t).unwrap(),
            other => panic!("expected the registration, got {other:?}"),
        };
        script(relay).await;
        first
    });
    let result = handshake(&mut client, name, uuid, TIMEOUT).await;
    drop(client);
    let seen = relay_task.await.unwrap();
    match &seen {
        RelayMessage::Registration(r) => {
            assert_eq!(r.uuid, uuid);
            assert_eq!(r.name, name);
        }
        other => panic!("{other:?}"),
    }
    (result, seen)
}

/// Keeps the relay side open (answering control frames) until the client goes away.
async fn drain(mut relay: WebSocketStream<DuplexStream>) {
    while let Some(Ok(_)) = relay.next().await {}
}

fn reply(r: RelayResponse) -> Message {
    Message::text(RelayMessage::Response(r).encode())
}

#[tokio::test]
async fn success_reply_registers() {
    let (r, _) = exchange("alice", |mut relay| async move {
        // Control frames before the reply are fine.
        relay.send(Message::Ping(Default::default())).await.unwrap();
        relay.send(reply(RelayResponse::success())).await.unwrap();
        drain(relay).await;
    })
    .await;
    r.unwrap();
}

#[tokio::test]
async fn a_long_hostile_name_is_sent_as_given() {
    let name = format!("\x1b[31m{}\u{202e}", "n".repeat(4096));
    let (r, _) = exchange(&name.clone(), |mut relay| async move {
        relay.send(reply(RelayResponse::success())).await.unwrap();
        drain(relay).await;
    })
    .await;
    r.unwrap();
}

#[tokio::test]
async fn a_rejection_is_typed_sanitized_and_not_retried() {
    let (r, _) = exchange("alice", |mut relay| async move {
        let no = RelayResponse {
            success: false,
            message: Some("UnauthorizedError: bad token=abc123xyz \x1b[2J".into()),
            error: true,
        };
        relay.send(reply(no)).await.unwrap();
        drain(relay).await;
    })
    .await;
    let e = r.unwrap_err();
    let RelayError::RegistrationRejected(text) = &e else {
        panic!("{e:?}")
    };
    assert!(text.starts_with("UnauthorizedError: bad token="), "{text}");
    assert!(
        !text.contains("abc123xyz") && !text.contains('\x1b'),
        "{text}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn replies_that_are_not_a_response_are_rejections() {
    for script in 0..3 {
        let (r, _) = exchange("a", move |mut relay| async move {
            let m = match script {
                0 => Message::text("garbage"),
                1 => Message::text(
                    r#"{"name": "n", "uuid": "11111111-2222-4333-8444-555555555555", "message_type": "relay_registration"}"#,
                ),
                _ => Message::binary(vec![1u8, 2, 3]),
            };
            relay.send(m).await.unwrap();
            drain(relay).await;
        })
        .await;
        let e = r.unwrap_err();
        assert!(
            matches!(e, RelayError::RegistrationRejected(_)),
            "{script}: {e:?}"
        );
    }
}

#[tokio::test]
async fn fatal_close_during_registration_is_typed_and_sanitized() {
    let (r, _) = exchange("a", |mut relay| async move {
        let frame = CloseFrame {
            code: WsCloseCode::Library(4001),
            reason: "UnauthorizedError: token=s3cr3t-t0ken \x1b]0;pwned\x07".into(),
        };
        let _ = relay.close(Some(frame)).await;
        while let Some(Ok(_)) = relay.next().await {}
    })
    .await;
    match r.unwrap_err() {
        RelayError::FatalClose { code: 4001, reason } => {
            assert!(reason.starts_with("UnauthorizedError: token="), "{reason}");
            assert!(
                !reason.contains("s3cr3t") && !reason.contains('\x1b'),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn other_closes_and_drops_are_retryable() {
    let (r, _) = exchange("a", |mut relay| async move {
        let frame = CloseFrame {
            code: WsCloseCode::Away,
            reason: "".into(),
        };
        let _ = relay.close(Some(frame)).await;
        while let Some(Ok(_)) = relay.next().await {}
    })
    .await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, RelayError::Disconnected { code: 1001, .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());

    // Gone without a close frame.
    let (r, _) = exchange("a", |relay| async move { drop(relay) }).await;
    let e = r.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_relay_times_out() {
    let (mut client, mut relay) = pair().await;
    let hold = tokio::spawn(async move {
        // Read everything, answer nothing.
        while let Some(Ok(_)) = relay.next().await {}
    });
    let start = tokio::time::Instant::now();
    let e = handshake(&mut client, "a", Uuid::new_v4(), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        RelayError::Timeout {
            after: TIMEOUT,
            during: "waiting for the registration reply"
        }
    );
    assert!(e.is_retryable());
    assert_eq!(start.elapsed(), TIMEOUT, "virtual time");
    drop(client);
    hold.await.unwrap();
}

#[test]
fn registration_replies() {
    assert!(registration_reply(
        r#"{"success": true, "message": null, "error": false, "message_type": "relay_response"}"#
    )
    .is_ok());
    let e = registration_reply(
        r#"{"success": false, "message": "UnauthorizedError: x", "error": true, "message_type": "relay_response"}"#,
    )
    .unwrap_err();
    assert_eq!(
        e,
        RelayError::RegistrationRejected("UnauthorizedError: x".into())
    );
    assert!(!e.is_retryable());
    for bad in [
        "garbage",
        r#"{"name": "n", "uuid": "11111111-2222-4333-8444-555555555555", "message_type": "relay_registration"}"#,
    ] {
        let e = registration_reply(bad).unwrap_err();
        assert!(matches!(e, RelayError::RegistrationRejected(_)), "{e:?}");
    }
}

#[test]
fn close_parts_sanitizes_and_defaults() {
    assert_eq!(close_parts(None), (1005, String::new()));
    let (code, reason) = close_parts(Some(CloseFrame {
        code: WsCloseCode::Library(4004),
        reason: "same ID\nFAKE LOG LINE".into(),
    }));
    assert_eq!(code, 4004);
    assert!(!reason.contains('\n'), "{reason}");
}
