//! Hostile inputs against a real TCP server (`serve_tcp` on 127.0.0.1 port 0): truncated
//! frames, a huge length prefix, unknown frame types, a wrong stream id parity, REQUEST_N 0,
//! requests on stream 0, a fragment flood and too many streams. Each gets its defined answer,
//! and after each one a fresh connection is still served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bistream_rsocket::proto::metadata::composite_routing;
use bistream_rsocket::proto::{decode, encode, ErrorCode, Frame, Payload, Setup};
use bistream_rsocket::transport::{length_prefixed, Framed};
use bistream_rsocket::RsConfig;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);

fn setup() -> Frame {
    Frame::Setup(Setup {
        version: (1, 0),
        keepalive_ms: 1000,
        max_lifetime_ms: 30_000,
        resume_token: None,
        lease: false,
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

async fn server(cfg: RsConfig) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let router = bistream_rpc::demo::router(Arc::new(|_: &str| {}));
    tokio::spawn(bistream_rsocket::serve_tcp(l, router, cfg));
    addr
}

struct Client {
    f: Framed,
}

impl Client {
    async fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            f: length_prefixed(s, 1 << 24),
        };
        c.send(setup()).await;
        c
    }
    async fn send(&mut self, f: Frame) {
        self.send_bytes(encode(&f).freeze()).await;
    }
    /// Any bytes as one length-prefixed frame.
    async fn send_bytes(&mut self, b: Bytes) {
        self.f.tx.send(b).await.unwrap();
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
    async fn expect_conn_error(&mut self, code: ErrorCode) -> String {
        let msg = match self.recv().await {
            Some(Frame::Error {
                stream: 0,
                code: c,
                message,
            }) => {
                assert_eq!(c, code, "{message}");
                message
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(self.recv().await, None, "closed after the error");
        msg
    }
    async fn expect_stream_error(&mut self, stream: u32, code: ErrorCode) -> String {
        loop {
            match self.recv().await {
                Some(Frame::Error {
                    stream: s,
                    code: c,
                    message,
                }) if s == stream => {
                    assert_eq!(c, code, "{message}");
                    return message;
                }
                Some(Frame::Cancel { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    async fn echo(&mut self, stream: u32) {
        self.send(Frame::RequestResponse {
            stream,
            follows: false,
            payload: req("echo", r#"{"ok":1}"#),
        })
        .await;
        match self.recv().await {
            Some(Frame::Payload {
                stream: s, payload, ..
            }) if s == stream => {
                assert_eq!(&payload.data[..], br#"{"operation":"echo","ok":1}"#)
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A fresh connection is still served.
async fn still_serving(addr: &str) {
    let mut c = Client::connect(addr).await;
    c.echo(1).await;
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let addr = server(RsConfig::default()).await;

    // Truncated: a 4-byte "frame" (the header alone is 6).
    let mut c = Client::connect(&addr).await;
    c.send_bytes(Bytes::from_static(&[0, 0, 0, 1])).await;
    let m = c.expect_conn_error(ErrorCode::ConnectionError).await;
    assert!(m.contains("truncated"), "{m}");
    still_serving(&addr).await;

    // Truncated inside a field: REQUEST_RESPONSE whose metadata length points past the end.
    let mut c = Client::connect(&addr).await;
    c.send_bytes(Bytes::from_static(&[
        0, 0, 0, 1, 0x11, 0x00, 0xFF, 0xFF, 0xFF, 1,
    ]))
    .await;
    c.expect_conn_error(ErrorCode::ConnectionError).await;
    still_serving(&addr).await;

    // Unknown frame type 0x30 without the I flag: connection error; with I: ignored.
    let mut c = Client::connect(&addr).await;
    c.send_bytes(Bytes::from_static(&[0, 0, 0, 1, 0x30 << 2 | 0x02, 0x00]))
        .await;
    c.echo(3).await;
    c.send_bytes(Bytes::from_static(&[0, 0, 0, 1, 0x30 << 2, 0x00]))
        .await;
    let m = c.expect_conn_error(ErrorCode::ConnectionError).await;
    assert!(m.contains("unknown frame type"), "{m}");
    still_serving(&addr).await;

    // REQUEST_N 0 (the spec requires N > 0).
    let mut c = Client::connect(&addr).await;
    c.send(Frame::RequestStream {
        stream: 1,
        follows: false,
        initial_n: 1,
        payload: req("count", r#"{"n":5}"#),
    })
    .await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::Payload { stream: 1, .. })
    ));
    c.send_bytes(Bytes::from_static(&[0, 0, 0, 1, 0x08 << 2, 0, 0, 0, 0, 0]))
        .await;
    c.expect_conn_error(ErrorCode::ConnectionError).await;
    still_serving(&addr).await;

    // A request on stream 0.
    let mut c = Client::connect(&addr).await;
    c.send(Frame::RequestResponse {
        stream: 0,
        follows: false,
        payload: req("echo", "{}"),
    })
    .await;
    c.expect_conn_error(ErrorCode::ConnectionError).await;
    still_serving(&addr).await;

    // Not JSON, then a wrong parity: stream errors, the connection goes on.
    let mut c = Client::connect(&addr).await;
    c.send(Frame::RequestResponse {
        stream: 1,
        follows: false,
        payload: req("echo", "{not json"),
    })
    .await;
    c.expect_stream_error(1, ErrorCode::Invalid).await;
    c.send(Frame::RequestResponse {
        stream: 4,
        follows: false,
        payload: req("echo", "{}"),
    })
    .await;
    c.expect_stream_error(4, ErrorCode::Invalid).await;
    c.echo(5).await;
}

#[tokio::test]
async fn huge_length_prefix_is_refused() {
    let cfg = RsConfig {
        max_frame_bytes: 1 << 20,
        ..RsConfig::default()
    };
    let addr = server(cfg).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut setup_bytes = Vec::new();
    let f = encode(&setup());
    setup_bytes.extend_from_slice(&(f.len() as u32).to_be_bytes()[1..]);
    setup_bytes.extend_from_slice(&f);
    // A prefix announcing 16 MiB - 1, over the 1 MiB limit: refused before it is read.
    setup_bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0, 0, 0, 1]);
    s.write_all(&setup_bytes).await.unwrap();
    let mut c = Client {
        f: length_prefixed(s, 1 << 24),
    };
    let m = c.expect_conn_error(ErrorCode::ConnectionError).await;
    assert!(m.contains("too large"), "{m}");
    still_serving(&addr).await;
}

#[tokio::test]
async fn fragment_flood_is_bounded_per_stream() {
    let cfg = RsConfig {
        max_message_bytes: 64 << 10,
        max_reassembly_bytes: 256 << 10,
        ..RsConfig::default()
    };
    let addr = server(cfg).await;
    let mut c = Client::connect(&addr).await;
    // One stream sends FOLLOWS fragments past the 64 KiB message limit.
    c.send(Frame::RequestResponse {
        stream: 1,
        follows: true,
        payload: req("echo", "[1,"),
    })
    .await;
    let chunk = Bytes::from(vec![b' '; 16 << 10]);
    for _ in 0..5 {
        c.send(Frame::Payload {
            stream: 1,
            follows: true,
            complete: false,
            next: true,
            payload: Payload::data(chunk.clone()),
        })
        .await;
    }
    c.expect_stream_error(1, ErrorCode::Rejected).await;
    // Many streams each under the message limit, together past the connection's 256 KiB.
    let mut rejected = 0;
    for k in 0..8u32 {
        let stream = 3 + 2 * k;
        c.send(Frame::RequestResponse {
            stream,
            follows: true,
            payload: req("echo", "[1,"),
        })
        .await;
        for _ in 0..3 {
            c.send(Frame::Payload {
                stream,
                follows: true,
                complete: false,
                next: true,
                payload: Payload::data(chunk.clone()),
            })
            .await;
        }
    }
    // 8 x 48 KiB = 384 KiB buffered: at least two streams must have been refused.
    c.send(Frame::RequestResponse {
        stream: 101,
        follows: false,
        payload: req("echo", "{}"),
    })
    .await;
    loop {
        match c.recv().await {
            Some(Frame::Error {
                stream,
                code: ErrorCode::Rejected,
                ..
            }) if (3..19).contains(&stream) => rejected += 1,
            Some(Frame::Cancel { .. }) => {}
            Some(Frame::Payload { stream: 101, .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(rejected >= 2, "{rejected} streams refused");
    still_serving(&addr).await;
}

#[tokio::test]
async fn too_many_streams_are_rejected() {
    let cfg = RsConfig {
        max_streams: 4,
        ..RsConfig::default()
    };
    let addr = server(cfg).await;
    let mut c = Client::connect(&addr).await;
    for k in 0..4u32 {
        c.send(Frame::RequestResponse {
            stream: 1 + 2 * k,
            follows: false,
            payload: req("sleep", r#"{"ms":600000}"#),
        })
        .await;
    }
    c.send(Frame::RequestResponse {
        stream: 9,
        follows: false,
        payload: req("echo", "{}"),
    })
    .await;
    let m = c.expect_stream_error(9, ErrorCode::Rejected).await;
    assert!(m.contains("too many"), "{m}");
    // Cancelling one frees a slot.
    c.send(Frame::Cancel { stream: 1 }).await;
    // (CANCEL has no answer; a KEEPALIVE round trip orders it before the next request.)
    c.send(Frame::Keepalive {
        respond: true,
        position: 0,
        data: Bytes::new(),
    })
    .await;
    assert!(matches!(c.recv().await, Some(Frame::Keepalive { .. })));
    c.echo(11).await;
    still_serving(&addr).await;
}
