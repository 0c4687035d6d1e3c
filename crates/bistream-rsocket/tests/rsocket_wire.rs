//! Wire behaviour of our RSocket server seen from raw frames: SETUP refusals (LEASE, RESUME,
//! not-SETUP first), KEEPALIVE echo and dead-peer detection (paused clock), REQUEST_N gating,
//! CANCEL stopping the producer, unknown frames, bad routes and stream ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_rpc::{HandlerError, Router};
use bistream_rsocket::proto::metadata::composite_routing;
use bistream_rsocket::proto::{decode, encode, ErrorCode, Frame, Payload, Setup};
use bistream_rsocket::transport::length_prefixed;
use bistream_rsocket::{start, Role, RsConfig};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

const T: Duration = Duration::from_secs(30);

struct Raw {
    f: bistream_rsocket::transport::Framed,
}

impl Raw {
    async fn send(&mut self, f: Frame) {
        self.f.tx.send(encode(&f).freeze()).await.unwrap();
    }
    async fn recv(&mut self) -> Option<Frame> {
        match tokio::time::timeout(T, self.f.rx.next())
            .await
            .expect("frame in time")
        {
            Some(Ok(b)) => Some(decode(b).unwrap()),
            _ => None,
        }
    }
}

fn produced() -> (Router, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    let r = bistream_rpc::demo::router(Arc::new(|_: &str| {})).request_stream(
        "forever",
        move |_: serde_json::Value| {
            let c = c.clone();
            futures_util::stream::unfold(0u64, move |i| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Some((Ok::<_, HandlerError>(i), i + 1))
                }
            })
        },
    );
    (r, n)
}

fn server(router: Router) -> Raw {
    let (a, b) = tokio::io::duplex(1 << 20);
    let rs = start(
        length_prefixed(b, 1 << 20),
        Role::Server,
        router,
        RsConfig::default(),
    );
    tokio::spawn(async move {
        let _keep = rs.closed().await;
    });
    Raw {
        f: length_prefixed(a, 1 << 20),
    }
}

fn setup(lease: bool, token: Option<&'static [u8]>) -> Frame {
    Frame::Setup(Setup {
        version: (1, 0),
        keepalive_ms: 1000,
        max_lifetime_ms: 3000,
        resume_token: token.map(Bytes::from_static),
        lease,
        metadata_mime: "message/x.rsocket.composite-metadata.v0".into(),
        data_mime: "application/json".into(),
        payload: Payload::default(),
    })
}

fn req(route: &str, data: &str) -> Payload {
    Payload::new(
        Some(Bytes::from(composite_routing(route))),
        Bytes::from(data.to_string()),
    )
}

async fn expect_conn_error(raw: &mut Raw, code: ErrorCode) {
    match raw.recv().await {
        Some(Frame::Error {
            stream: 0, code: c, ..
        }) => assert_eq!(c, code),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.recv().await, None, "connection closed after the error");
}

#[tokio::test]
async fn lease_resume_and_non_setup_are_refused() {
    let mut raw = server(Router::new());
    raw.send(setup(true, None)).await;
    expect_conn_error(&mut raw, ErrorCode::UnsupportedSetup).await;

    let mut raw = server(Router::new());
    raw.send(setup(false, Some(b"tok"))).await;
    expect_conn_error(&mut raw, ErrorCode::UnsupportedSetup).await;

    let mut raw = server(Router::new());
    raw.send(Frame::Resume {
        version: (1, 0),
        token: Bytes::from_static(b"t"),
        last_received_server: 0,
        first_available_client: 0,
    })
    .await;
    expect_conn_error(&mut raw, ErrorCode::RejectedResume).await;

    let mut raw = server(Router::new());
    raw.send(Frame::RequestResponse {
        stream: 1,
        follows: false,
        payload: req("echo", "{}"),
    })
    .await;
    expect_conn_error(&mut raw, ErrorCode::InvalidSetup).await;

    let mut raw = server(Router::new());
    raw.send(setup(false, None)).await;
    raw.send(Frame::Unknown {
        stream: 0,
        frame_type: 0x3F,
        ignore: true,
    })
    .await;
    raw.send(Frame::MetadataPush {
        metadata: Bytes::from_static(b"x"),
    })
    .await;
    raw.send(Frame::Unknown {
        stream: 0,
        frame_type: 0x3F,
        ignore: false,
    })
    .await;
    expect_conn_error(&mut raw, ErrorCode::ConnectionError).await;
}

#[tokio::test(start_paused = true)]
async fn keepalive_echo_and_dead_peer() {
    let mut raw = server(Router::new());
    raw.send(setup(false, None)).await;
    raw.send(Frame::Keepalive {
        respond: true,
        position: 42,
        data: Bytes::from_static(b"ping"),
    })
    .await;
    assert_eq!(
        raw.recv().await,
        Some(Frame::Keepalive {
            respond: false,
            position: 42,
            data: Bytes::from_static(b"ping")
        })
    );
    // Silence past the 3 s max lifetime: the server gives up on us.
    tokio::time::sleep(Duration::from_secs(4)).await;
    expect_conn_error(&mut raw, ErrorCode::ConnectionError).await;
}

#[tokio::test]
async fn request_n_gates_items_and_cancel_stops_the_producer() {
    let (router, made) = produced();
    let mut raw = server(router);
    raw.send(setup(false, None)).await;
    raw.send(Frame::RequestStream {
        stream: 1,
        follows: false,
        initial_n: 3,
        payload: req("forever", "{}"),
    })
    .await;
    for i in 0..3 {
        match raw.recv().await {
            Some(Frame::Payload {
                stream: 1,
                next: true,
                complete: false,
                payload,
                ..
            }) => {
                assert_eq!(payload.data, Bytes::from(i.to_string()));
            }
            other => panic!("{other:?}"),
        }
    }
    // Nothing more until we ask: a keepalive round trip proves the queue is empty.
    raw.send(Frame::Keepalive {
        respond: true,
        position: 0,
        data: Bytes::new(),
    })
    .await;
    assert!(matches!(raw.recv().await, Some(Frame::Keepalive { .. })));
    raw.send(Frame::RequestN { stream: 1, n: 2 }).await;
    for _ in 0..2 {
        assert!(matches!(
            raw.recv().await,
            Some(Frame::Payload { stream: 1, .. })
        ));
    }
    raw.send(Frame::Cancel { stream: 1 }).await;
    raw.send(Frame::Keepalive {
        respond: true,
        position: 1,
        data: Bytes::new(),
    })
    .await;
    assert!(matches!(
        raw.recv().await,
        Some(Frame::Keepalive { position: 1, .. })
    ));
    let after = made.load(Ordering::SeqCst);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The producer stopped: bounded by the bridge's window, not running on.
    let later = made.load(Ordering::SeqCst);
    assert!(later <= after + 1 && later < 1000, "{after} -> {later}");
    // The connection still serves.
    raw.send(Frame::RequestResponse {
        stream: 3,
        follows: false,
        payload: req("echo", r#"{"a":1}"#),
    })
    .await;
    match raw.recv().await {
        Some(Frame::Payload {
            stream: 3,
            next: true,
            complete: true,
            payload,
            ..
        }) => {
            assert_eq!(
                payload.data,
                Bytes::from_static(br#"{"operation":"echo","a":1}"#)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_requests_get_stream_errors() {
    let mut raw = server(bistream_rpc::demo::router(Arc::new(|_: &str| {})));
    raw.send(setup(false, None)).await;
    let cases = [
        (1, req("nope", "{}"), ErrorCode::Invalid),
        (3, req("count", "{}"), ErrorCode::Invalid), // wrong model
        (5, req("echo", "not json"), ErrorCode::Invalid),
        (
            7,
            Payload::data(Bytes::from_static(b"{}")),
            ErrorCode::Invalid,
        ), // no route
        (9, req("fail", "{}"), ErrorCode::ApplicationError),
        (2, req("echo", "{}"), ErrorCode::Invalid), // even id from a client
    ];
    for (stream, payload, code) in cases {
        raw.send(Frame::RequestResponse {
            stream,
            follows: false,
            payload,
        })
        .await;
        match raw.recv().await {
            Some(Frame::Error {
                stream: s,
                code: c,
                message,
            }) => {
                assert_eq!((s, c), (stream, code), "{message}");
            }
            other => panic!("stream {stream}: {other:?}"),
        }
    }
    // An empty stream: COMPLETE without NEXT.
    raw.send(Frame::RequestStream {
        stream: 11,
        follows: false,
        initial_n: 5,
        payload: req("count", r#"{"n":0}"#),
    })
    .await;
    assert_eq!(
        raw.recv().await,
        Some(Frame::Payload {
            stream: 11,
            follows: false,
            complete: true,
            next: false,
            payload: Payload::default()
        })
    );
}

#[tokio::test]
async fn channel_waits_for_our_grant_and_accepts_next_complete() {
    let mut raw = server(bistream_rpc::demo::router(Arc::new(|_: &str| {})));
    raw.send(setup(false, None)).await;
    raw.send(Frame::RequestChannel {
        stream: 1,
        follows: false,
        complete: false,
        initial_n: 10,
        payload: req("upper", r#""a""#),
    })
    .await;
    // The responder grants REQUEST_N for our further items, and answers the first one.
    let mut got_grant = false;
    let mut items = Vec::new();
    while !got_grant || items.is_empty() {
        match raw.recv().await {
            Some(Frame::RequestN { stream: 1, n }) => {
                assert!(n >= 1);
                got_grant = true;
            }
            Some(Frame::Payload {
                stream: 1,
                next: true,
                payload,
                ..
            }) => items.push(payload.data),
            other => panic!("{other:?}"),
        }
    }
    // The last item with NEXT|COMPLETE.
    raw.send(Frame::Payload {
        stream: 1,
        follows: false,
        complete: true,
        next: true,
        payload: Payload::data(Bytes::from_static(b"\"b\"")),
    })
    .await;
    loop {
        match raw.recv().await {
            Some(Frame::Payload {
                stream: 1,
                next: true,
                payload,
                complete,
                ..
            }) => {
                items.push(payload.data);
                if complete {
                    break;
                }
            }
            Some(Frame::Payload {
                stream: 1,
                complete: true,
                next: false,
                ..
            }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        items,
        [Bytes::from_static(b"\"A\""), Bytes::from_static(b"\"B\"")]
    );
}

#[tokio::test]
async fn client_and_server_in_process_with_fragmentation() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let cfg = RsConfig {
        max_frame_bytes: 1024,
        ..RsConfig::default()
    };
    let _srv = start(
        length_prefixed(b, 1024),
        Role::Server,
        bistream_rpc::demo::router(Arc::new(|_: &str| {})),
        cfg.clone(),
    );
    let cli = start(length_prefixed(a, 1024), Role::Client, Router::new(), cfg);
    let big = "q".repeat(300 * 1024);
    let v: serde_json::Value = cli
        .request_response("echo", &serde_json::json!({ "big": big }))
        .await
        .unwrap();
    assert_eq!(v["big"].as_str().unwrap().len(), big.len());
    let s = cli
        .request_stream::<_, u64>("count", &serde_json::json!({"n": 1000}))
        .await
        .unwrap();
    assert_eq!(s.map(|r| r.unwrap()).collect::<Vec<_>>().await.len(), 1000);
}
