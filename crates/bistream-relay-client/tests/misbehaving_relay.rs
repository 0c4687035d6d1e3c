//! The client against scripted relays that misbehave in ways the real servers do not (or only
//! rarely): rejected registrations, garbage, HTTP refusals, a close frame without the TCP
//! close, oversized frames, unanswered pings. Each scripted relay is a tokio-tungstenite
//! server on 127.0.0.1:0 running one closure per connection.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_client::{
    Backoff, ConnectionEvent, Events, RelayClient, RelayClientBuilder, RelayError, RelayMessage,
    RelayResponse,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const STEP: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<TcpStream>;

/// Serves each WebSocket connection with `script(ws, n)` (n counts connections from 0).
async fn scripted<F, Fut>(script: F) -> String
where
    F: Fn(Ws, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(script);
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let script = script.clone();
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
                if let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                {
                    script(ws, n).await;
                }
            });
        }
    });
    format!("ws://127.0.0.1:{port}")
}

/// Reads the registration and answers success.
async fn register(ws: &mut Ws) {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                assert!(matches!(
                    RelayMessage::decode(&t),
                    Ok(RelayMessage::Registration(_))
                ));
                let ok = RelayMessage::Response(RelayResponse::success()).encode();
                ws.send(Message::text(ok)).await.unwrap();
                return;
            }
            Some(Ok(_)) => {}
            _ => panic!("no registration"),
        }
    }
}

/// Holds the connection open, reading (so control frames are handled) until it ends.
async fn idle(ws: &mut Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

fn fast(url: &str) -> RelayClientBuilder {
    RelayClient::builder(url)
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            factor: 2.0,
            max: Duration::from_millis(100),
            jitter: 0.0,
        })
        .stable_after(Duration::from_millis(50))
        .registration_timeout(Duration::from_secs(5))
}

async fn wait_event(
    events: &mut Events,
    pred: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    loop {
        let e = tokio::time::timeout(STEP, events.next())
            .await
            .expect("timed out waiting for an event")
            .expect("event stream ended");
        if pred(&e) {
            return e;
        }
    }
}

#[tokio::test]
async fn rejected_or_garbled_registration_replies_are_not_retried() {
    let replies: Vec<Message> = vec![
        Message::text(
            RelayMessage::Response(RelayResponse::failure("BadRequestError: no")).encode(),
        ),
        Message::text("not json"),
        Message::binary(vec![1u8, 2, 3]),
    ];
    for reply in replies {
        let reply2 = reply.clone();
        let url = scripted(move |mut ws, _| {
            let reply = reply2.clone();
            async move {
                let _ = ws.next().await;
                let _ = ws.send(reply).await;
                idle(&mut ws).await;
            }
        })
        .await;
        let client = fast(&url).build().unwrap();
        let err = tokio::time::timeout(STEP, client.connect(true))
            .await
            .expect("not retried")
            .unwrap_err();
        assert!(
            matches!(err, RelayError::RegistrationRejected(_)),
            "{reply:?}: {err:?}"
        );
        if let RelayError::RegistrationRejected(text) = &err {
            if matches!(reply, Message::Text(ref t) if t.contains("BadRequestError")) {
                assert_eq!(text, "BadRequestError: no");
            }
        }
        // A foreground rejection does not poison the client: the application may retry.
        assert!(!client.state().is_terminal(), "{:?}", client.state());
    }
}

#[tokio::test]
async fn http_refusals_4xx_fail_and_5xx_retry() {
    for (status, retried) in [(403u16, false), (503, true)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let attempts = Arc::new(AtomicUsize::new(0));
        let seen = attempts.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // The callback type is tungstenite's; its error is an HTTP response.
                    #[allow(clippy::result_large_err)]
                    let refuse = |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
                        let mut r = ErrorResponse::new(Some("no".into()));
                        *r.status_mut() =
                            tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
                                .unwrap();
                        Err(r)
                    };
                    let _ = tokio_tungstenite::accept_hdr_async(tcp, refuse).await;
                });
            }
        });
        let client = fast(&url).build().unwrap();
        let mut events = client.events();
        if retried {
            let task = tokio::spawn(async move {
                let r = client.connect(true).await;
                (client, r)
            });
            let e = wait_event(&mut events, |e| {
                matches!(e, ConnectionEvent::Retrying { .. })
            })
            .await;
            match e {
                ConnectionEvent::Retrying { error, .. } => {
                    assert_eq!(error, RelayError::HttpStatus { status })
                }
                other => panic!("{other:?}"),
            }
            task.abort();
        } else {
            let err = tokio::time::timeout(STEP, client.connect(true))
                .await
                .expect("a 403 is not retried")
                .unwrap_err();
            assert_eq!(err, RelayError::HttpStatus { status });
            assert_eq!(attempts.load(Ordering::SeqCst), 1);
        }
    }
}

#[tokio::test]
async fn undecodable_and_binary_frames_do_not_break_the_connection() {
    let url = scripted(|mut ws, _| async move {
        register(&mut ws).await;
        for m in [
            Message::text("{\"message_type\": \"bogus\"}"),
            Message::binary(vec![0u8; 10]),
            Message::text(
                RelayMessage::Response(RelayResponse::failure("InternalServerError: x")).encode(),
            ),
        ] {
            ws.send(m).await.unwrap();
        }
        idle(&mut ws).await;
    })
    .await;
    let client = fast(&url).build().unwrap();
    let first = tokio::time::timeout(STEP, client.recv()).await.unwrap();
    assert!(matches!(first, Err(RelayError::Decode(_))), "{first:?}");
    let second = tokio::time::timeout(STEP, client.recv()).await.unwrap();
    assert_eq!(
        second,
        Ok(RelayMessage::Response(RelayResponse::failure(
            "InternalServerError: x"
        )))
    );
    let stats = client.stats();
    assert_eq!(stats.decode_errors, 1);
    assert_eq!(stats.binary_frames_ignored, 1);
    assert_eq!(stats.registrations, 1);
    assert!(client.is_connected());
}

#[tokio::test]
async fn close_frame_without_tcp_close_still_reconnects() {
    let url = scripted(|mut ws, n| async move {
        register(&mut ws).await;
        if n == 0 {
            // Send 4000 but never finish the close: no reply read, TCP left open.
            let frame = CloseFrame {
                code: CloseCode::from(4000),
                reason: "Unknown message type.".into(),
            };
            let _ = ws.send(Message::Close(Some(frame))).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        } else {
            idle(&mut ws).await;
        }
    })
    .await;
    let client = fast(&url).build().unwrap();
    let mut events = client.events();
    client.connect(true).await.unwrap();
    let e = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        e,
        ConnectionEvent::Disconnected {
            code: 4000,
            reason: "Unknown message type.".into()
        }
    );
    let e = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    assert_eq!(e, ConnectionEvent::Connected { registrations: 2 });
}

#[tokio::test]
async fn oversized_incoming_message_drops_the_connection_and_reconnects() {
    let url = scripted(|mut ws, n| async move {
        register(&mut ws).await;
        if n == 0 {
            let _ = ws.send(Message::text("x".repeat(2 << 20))).await;
        }
        idle(&mut ws).await;
    })
    .await;
    let client = fast(&url).build().unwrap();
    let mut events = client.events();
    client.connect(true).await.unwrap();
    let e = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(e, ConnectionEvent::Disconnected { code: 1009, .. }),
        "{e:?}"
    );
    let e = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    assert_eq!(e, ConnectionEvent::Connected { registrations: 2 });
}

#[tokio::test]
async fn unanswered_pings_drop_the_connection() {
    let url = scripted(|mut ws, n| async move {
        register(&mut ws).await;
        if n == 0 {
            // Stop reading: our pings are never answered.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        } else {
            idle(&mut ws).await;
        }
    })
    .await;
    let client = fast(&url)
        .keepalive(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let mut events = client.events();
    client.connect(true).await.unwrap();
    let e = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        e,
        ConnectionEvent::Disconnected {
            code: 1011,
            reason: "keepalive ping timeout".into()
        }
    );
    let e = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    assert_eq!(e, ConnectionEvent::Connected { registrations: 2 });
    // The second relay answers pings (it reads). That the connection then stays up across many
    // periods is checked on the paused clock (connection.rs tests), not with wall-clock sleeps
    // that a loaded machine could stretch past the keepalive deadline.
    assert!(client.is_connected());
    assert_eq!(client.stats().registrations, 2);
}

#[tokio::test]
async fn registration_timeout_is_retried_and_reported() {
    let url = scripted(|mut ws, n| async move {
        if n == 0 {
            // Never answer the first registration.
            idle(&mut ws).await;
        } else {
            register(&mut ws).await;
            idle(&mut ws).await;
        }
    })
    .await;
    let client = fast(&url)
        .registration_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut events = client.events();
    client.connect(true).await.unwrap();
    let e = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Retrying { .. })
    })
    .await;
    assert!(
        matches!(
            e,
            ConnectionEvent::Retrying {
                attempt: 1,
                error: RelayError::Timeout { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(client.stats().registrations, 1);
}

#[tokio::test]
async fn a_relay_that_drops_every_connection_is_not_hammered() {
    // Registers, then closes at once (1000): each short-lived connection counts as a failed
    // attempt, so the delays grow instead of reconnecting in a tight loop.
    let url = scripted(|mut ws, _| async move {
        register(&mut ws).await;
        let _ = ws.close(None).await;
        idle(&mut ws).await;
    })
    .await;
    let client = fast(&url)
        .stable_after(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut events = client.events();
    client.connect(true).await.unwrap();
    let mut delays = Vec::new();
    while delays.len() < 5 {
        if let ConnectionEvent::Retrying { delay, .. } = wait_event(&mut events, |e| {
            matches!(e, ConnectionEvent::Retrying { .. })
        })
        .await
        {
            delays.push(delay.as_millis());
        }
    }
    assert_eq!(delays, [20, 40, 80, 100, 100]);
    client.close().await;
}

#[tokio::test]
async fn without_background_reconnect_recv_reconnects_itself() {
    let url = scripted(|mut ws, n| async move {
        register(&mut ws).await;
        if n == 0 {
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "".into(),
                }))
                .await;
            idle(&mut ws).await;
        } else {
            let hello = bistream_relay_client::PeerConnectionRequest {
                source_uuid: uuid::Uuid::nil(),
                source_name: "relay".into(),
                peer_uuid: uuid::Uuid::nil(),
                description_type: bistream_relay_client::DescriptionType::Offer,
                description: format!("connection {n}"),
                error: None,
            };
            let _ = ws
                .send(Message::text(RelayMessage::PeerConnection(hello).encode()))
                .await;
            idle(&mut ws).await;
        }
    })
    .await;
    let client = fast(&url).reconnect(false).build().unwrap();
    let mut events = client.events();
    client.connect(true).await.unwrap();
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { code: 1001, .. })
    })
    .await;
    // No background task: nothing happens until the application calls recv/send/connect.
    assert!(!client.is_connected());
    let got = tokio::time::timeout(STEP, client.recv())
        .await
        .unwrap()
        .unwrap();
    match got {
        RelayMessage::PeerConnection(m) => assert_eq!(m.description, "connection 1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.stats().registrations, 2);
}

#[tokio::test]
async fn a_slow_event_reader_is_told_it_lagged() {
    // Nothing listens here; zero delays make well over 64 Retrying events quickly.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Arc::new(
        RelayClient::builder(format!("ws://127.0.0.1:{port}"))
            .backoff(Backoff {
                initial: Duration::ZERO,
                factor: 1.0,
                max: Duration::ZERO,
                jitter: 0.0,
            })
            .build()
            .unwrap(),
    );
    let mut slow = client.events();
    let mut fast_reader = client.events();
    let task = tokio::spawn({
        let c = client.clone();
        async move { c.connect(true).await }
    });
    let mut retries = 0;
    while retries < 200 {
        if let Some(ConnectionEvent::Retrying { .. }) = fast_reader.next().await {
            retries += 1;
        }
    }
    client.close().await;
    assert_eq!(task.await.unwrap(), Err(RelayError::Closed));
    let first = slow.next().await.unwrap();
    assert!(
        matches!(first, ConnectionEvent::Lagged(n) if n > 0),
        "{first:?}"
    );
    // Then the newest events follow, ending with Closed.
    let mut last = first;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), slow.next()).await {
        last = e;
    }
    assert_eq!(last, ConnectionEvent::Closed);
}

/// `ws://[::1]:PORT` (and `http://[::1]:PORT/`) reach an IPv6 listener: the client's own dial
/// strips the literal's brackets for the socket call.
#[tokio::test]
async fn ipv6_literal_addresses_connect() {
    let listener = match TcpListener::bind("[::1]:0").await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            eprintln!("SKIPPED: this machine has no IPv6 loopback ({e})");
            return;
        }
        Err(e) => panic!("bind [::1]:0: {e}"),
    };
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    register(&mut ws).await;
                    idle(&mut ws).await;
                }
            });
        }
    });
    for url in [
        format!("ws://[::1]:{port}"),
        format!("http://[::1]:{port}/"),
    ] {
        let client = fast(&url).build().unwrap();
        tokio::time::timeout(STEP, client.connect(false))
            .await
            .expect("connects")
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(client.is_connected());
        client.close().await;
    }
}
