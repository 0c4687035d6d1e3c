//! The rpc WebSocket framing after the handshake (`bistream_rpc::wsraw`), against hand-driven
//! peers: frames sent in the same write as the handshake response, ping → pong, fragmented
//! messages with control frames between the fragments, the close handshake with code and
//! reason both ways, 1007 / 1009 / 1002 closes, binary messages, and `wss://`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
#[path = "../../bistream-logs/tests/support/tls.rs"]
mod tls;

use bistream_rpc::ws::{ClientOptions, ServerConfig};
use bistream_rpc::{Connection, Router, RpcError};
use bistream_rpc_proto::ws::{self as wsf, Decoder, Kind, Opcode, Role, Step};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::T;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A hand-driven WebSocket server end: reads the upgrade request, answers it and writes
/// `extra` in the same write, then reads the client's (masked) frames with the sans-IO decoder.
struct RawPeer<S> {
    io: S,
    buf: Vec<u8>,
    dec: Decoder,
}

/// What the raw peer read.
#[derive(Debug, PartialEq)]
enum Got {
    Text(Value),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Eof,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    async fn accept(mut io: S, extra: &[u8]) -> Self {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            io.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_owned())
            })
            .unwrap();
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        out.extend_from_slice(extra);
        io.write_all(&out).await.unwrap();
        Self {
            io,
            buf: Vec::new(),
            dec: Decoder::new(Role::Server, 1 << 20),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    async fn next(&mut self) -> Got {
        tokio::time::timeout(T, async {
            loop {
                match self.dec.decode(&mut self.buf).unwrap() {
                    Step::NeedMore => {
                        let mut chunk = [0u8; 4096];
                        let n = self.io.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return Got::Eof;
                        }
                        self.buf.extend_from_slice(&chunk[..n]);
                    }
                    Step::Frame(f) => {
                        let p = self.buf[f.start..f.end].to_vec();
                        self.buf.drain(..f.end);
                        match f.kind {
                            Kind::Text => return Got::Text(serde_json::from_slice(&p).unwrap()),
                            Kind::Pong => return Got::Pong(p),
                            k => panic!("unexpected {k:?} from the client"),
                        }
                    }
                    Step::Close { code, reason, end } => {
                        self.buf.drain(..end);
                        return Got::Close(code, reason);
                    }
                    other => panic!("unexpected {other:?} from the client"),
                }
            }
        })
        .await
        .unwrap()
    }
}

/// A server's (unmasked) frame.
fn frame(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wsf::encode(&mut v, op, payload, None);
    if !fin {
        v[0] &= 0x7f;
    }
    v
}

fn text(v: &Value) -> Vec<u8> {
    frame(true, Opcode::Text, v.to_string().as_bytes())
}

fn request(n: u64, v: u64) -> Value {
    json!({"type":"request","peerID":"S","requestId":["S", n],"data":{"operation":"echo","v":v}})
}

fn echo_router() -> Router {
    Router::new().request_response("echo", |v: Value| async move { Ok(v) })
}

/// Our client (base protocol: no hello) connected to a raw peer on 127.0.0.1.
async fn client_and_raw(extra: &[u8], max: usize) -> (Connection, RawPeer<tokio::net::TcpStream>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/rpc", l.local_addr().unwrap());
    let mut opts = ClientOptions {
        router: echo_router(),
        ..Default::default()
    };
    opts.rpc.extensions = false;
    opts.rpc.limits.max_frame_bytes = max;
    let extra = extra.to_vec();
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        RawPeer::accept(tcp, &extra).await
    });
    let c = tokio::time::timeout(T, bistream_rpc::ws::connect(&url, opts))
        .await
        .unwrap()
        .unwrap();
    (c, server.await.unwrap())
}

fn response_of(g: &Got) -> Option<(u64, u64)> {
    match g {
        Got::Text(v) if v["type"] == "response" => Some((
            v["requestId"][1].as_u64().unwrap(),
            v["data"]["v"].as_u64().unwrap(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn client_reads_frames_sent_with_the_handshake_answers_pings_and_reassembles_fragments() {
    // A request in the same write as the 101 response, then a ping.
    let mut extra = text(&request(0, 10));
    extra.extend(frame(true, Opcode::Ping, b"hi"));
    let (c, mut peer) = client_and_raw(&extra, 1 << 20).await;
    let mut got = [peer.next().await, peer.next().await];
    got.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(got[0], Got::Pong(b"hi".to_vec()));
    assert_eq!(response_of(&got[1]), Some((0, 10)));

    // A request in three fragments with a ping and a pong between them; a multi-byte
    // character split across two fragments.
    let body = json!({"type":"request","peerID":"S","requestId":["S",1],"data":{"operation":"echo","v":11,"s":"é"}})
        .to_string()
        .into_bytes();
    let cut = body.iter().position(|&b| b == 0xc3).unwrap() + 1;
    let mut wire = frame(false, Opcode::Text, &body[..5]);
    wire.extend(frame(true, Opcode::Ping, b"mid"));
    wire.extend(frame(false, Opcode::Continuation, &body[5..cut]));
    wire.extend(frame(true, Opcode::Pong, b""));
    wire.extend(frame(true, Opcode::Continuation, &body[cut..]));
    peer.send(&wire).await;
    let mut got = [peer.next().await, peer.next().await];
    got.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(got[0], Got::Pong(b"mid".to_vec()));
    assert_eq!(response_of(&got[1]), Some((1, 11)));
    match &got[1] {
        Got::Text(v) => assert_eq!(v["data"]["s"], "é"),
        g => panic!("{g:?}"),
    }

    // A binary message is an invalid frame (no requestId to answer): the connection stays.
    peer.send(&frame(true, Opcode::Binary, b"\x00\x01")).await;
    peer.send(&text(&request(2, 12))).await;
    assert_eq!(response_of(&peer.next().await), Some((2, 12)));

    // The server closes with a code and a reason: the client answers with the same code,
    // and its calls see both.
    peer.send(&frame(
        true,
        Opcode::Close,
        &wsf::close_payload(4001, "bye now"),
    ))
    .await;
    assert_eq!(peer.next().await, Got::Close(Some(4001), String::new()));
    let cause = tokio::time::timeout(T, c.closed()).await.unwrap();
    assert_eq!(
        cause,
        RpcError::Closed {
            code: Some(4001),
            reason: "bye now".into()
        }
    );
}

#[tokio::test]
async fn client_closes_with_its_code_and_reason_and_waits_for_the_answer() {
    let (c, mut peer) = client_and_raw(&[], 1 << 20).await;
    let closing = tokio::spawn(async move {
        c.close().await;
        c
    });
    assert_eq!(peer.next().await, Got::Close(Some(1000), "closing".into()));
    peer.send(&frame(true, Opcode::Close, &wsf::close_payload(1000, "")))
        .await;
    let c = tokio::time::timeout(T, closing).await.unwrap().unwrap();
    assert!(matches!(
        tokio::time::timeout(T, c.closed()).await.unwrap(),
        RpcError::Closed {
            code: Some(1000),
            ..
        }
    ));
}

/// The client closes with `code` after `wire`.
async fn client_refuses(wire: Vec<u8>, max: usize, code: u16) {
    let (c, mut peer) = client_and_raw(&[], max).await;
    peer.send(&wire).await;
    match peer.next().await {
        Got::Close(Some(got), _) => assert_eq!(got, code),
        g => panic!("expected close {code}, got {g:?}"),
    }
    let cause = tokio::time::timeout(T, c.closed()).await.unwrap();
    assert!(
        matches!(cause, RpcError::Closed { code: Some(got), .. } if got == code),
        "{cause:?}"
    );
}

#[tokio::test]
async fn client_closes_1007_on_invalid_utf8_1009_on_a_large_message_1002_on_bad_framing() {
    // Invalid UTF-8: in one frame, and split over fragments.
    client_refuses(
        frame(true, Opcode::Text, b"{\"a\":\"\xff\"}"),
        1 << 20,
        1007,
    )
    .await;
    let mut w = frame(false, Opcode::Text, b"\"\xc3");
    w.extend(frame(true, Opcode::Continuation, b"\x28\""));
    client_refuses(w, 1 << 20, 1007).await;
    // Over the limit: refused from the header.
    client_refuses(frame(true, Opcode::Text, &[b' '; 2000]), 1000, 1009).await;
    // A masked frame from a server, a reserved bit, a ping over 125 bytes, an unknown opcode.
    let mut masked = Vec::new();
    wsf::encode(&mut masked, Opcode::Text, b"{}", Some([1, 2, 3, 4]));
    client_refuses(masked, 1 << 20, 1002).await;
    let mut rsv = text(&json!({}));
    rsv[0] |= 0x40;
    client_refuses(rsv, 1 << 20, 1002).await;
    client_refuses(frame(true, Opcode::Ping, &[0; 126]), 1 << 20, 1002).await;
    let mut unknown = frame(true, Opcode::Text, b"{}");
    unknown[0] = 0x83;
    client_refuses(unknown, 1 << 20, 1002).await;
}

#[tokio::test]
async fn server_answers_pings_reassembles_fragments_and_echoes_the_close_code() {
    let url = support::ws_server(ServerConfig::new(echo_router())).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let call = |n: u64| {
        json!({"type":"request","peerID":"C","requestId":["C", n],"data":{"operation":"echo","v":n}})
            .to_string()
    };
    ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    let body = call(1).into_bytes();
    ws.send(Message::Frame(Frame::message(
        body[..7].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Ping(b"p2".to_vec().into())).await.unwrap();
    ws.send(Message::Frame(Frame::message(
        body[7..].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    let mut pongs = Vec::new();
    let mut answer = None;
    while pongs.len() < 2 || answer.is_none() {
        match tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(p) => pongs.push(p.to_vec()),
            Message::Text(t) => answer = Some(serde_json::from_str::<Value>(&t).unwrap()),
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(pongs, vec![b"p1".to_vec(), b"p2".to_vec()]);
    assert_eq!(answer.unwrap()["data"]["v"], 1);
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4002),
        reason: "done".into(),
    })))
    .await
    .unwrap();
    loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 4002);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("no close answer: {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_closes_1007_on_invalid_utf8_and_1002_on_an_unmasked_frame() {
    let url = support::ws_server(ServerConfig::new(echo_router())).await;
    for (bytes, code) in [
        // Masked text frame whose payload is not UTF-8.
        (
            {
                let mut v = Vec::new();
                wsf::encode(&mut v, Opcode::Text, b"\"\xff\"", Some([9, 8, 7, 6]));
                v
            },
            1007u16,
        ),
        // An unmasked frame from a client.
        (frame(true, Opcode::Text, b"{}"), 1002),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        // Bypass tungstenite's writer: raw bytes on its socket.
        match ws.get_mut() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s.write_all(&bytes).await.unwrap(),
            _ => unreachable!(),
        }
        let got = loop {
            match tokio::time::timeout(T, ws.next()).await.unwrap() {
                Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
                Some(Ok(_)) => {}
                other => panic!("no close: {other:?}"),
            }
        };
        assert_eq!(got, code);
    }
}

#[tokio::test]
async fn wss_client_with_a_ca_file_and_extra_headers() {
    let cert = tls::self_signed(&["localhost"]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = tls::acceptor(&cert);
    let extra = text(&request(0, 7));
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        // Check the extra header arrived, then serve raw frames over TLS.
        let mut peer = RawPeer::accept(HeaderSpy::new(tls), &extra).await;
        let answer = peer.next().await;
        (peer.io.seen, answer)
    });
    let dir = std::env::temp_dir().join(format!("rpc-wss-{}.pem", std::process::id()));
    std::fs::write(&dir, &cert.pem).unwrap();
    let mut opts = ClientOptions {
        router: echo_router(),
        headers: vec![("Authorization".into(), "Bearer t0k".into())],
        tls: Some(bistream_rpc::ws::tls_with_ca_file(&dir).unwrap()),
        ..Default::default()
    };
    opts.rpc.extensions = false;
    let c = tokio::time::timeout(
        T,
        bistream_rpc::ws::connect(&format!("wss://localhost:{port}/rpc"), opts),
    )
    .await
    .unwrap()
    .unwrap();
    let (seen, answer) = tokio::time::timeout(T, server).await.unwrap().unwrap();
    assert!(
        seen.to_ascii_lowercase()
            .contains("authorization: bearer t0k"),
        "{seen}"
    );
    assert_eq!(response_of(&answer), Some((0, 7)));
    drop(c);
    let _ = std::fs::remove_file(dir);
}

/// Records what is read through it (the upgrade request's head).
struct HeaderSpy<S> {
    io: S,
    seen: String,
}

impl<S> HeaderSpy<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            seen: String::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeaderSpy<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        if this.seen.len() < 4096 {
            this.seen
                .push_str(&String::from_utf8_lossy(&buf.filled()[before..]));
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeaderSpy<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
