//! What a peer sends cannot flood or forge the log of `bistream rpc serve` and `bistream
//! packet serve`: the lines a peer causes per frame pass bistream-core's rate limit
//! (`logsafe`), its text in them is escaped, and every dropped frame is still counted (the rpc
//! connection's statistics, logged when it ends). The relay's own checks are in
//! crates/bistream-relay-server/tests/log_safety.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use bistream_packet::codec::Packet;
use bistream_testkit::LoggedChild;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");
const T: Duration = Duration::from_secs(30);
/// Lines per second one process may write for its peers' frames (bistream-core's budget).
const SERVER_BUDGET: usize = 50;
const FORGED: &str = "evil\n2026-01-01T00:00:00.000000Z  INFO bistream: forged line\x1b[31m";

/// Starts `bistream ARGS` logging to a file; returns the child, its first stdout line and
/// the log's path.
async fn serve(args: &[&str], dir: &tempfile::TempDir) -> (LoggedChild, String, PathBuf) {
    let log = dir.path().join("server.log");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("BISTREAM_LOG_LEVEL");
    let child = LoggedChild::spawn(cmd, &log, T).await.unwrap();
    let first = child.first_line.clone();
    (child, first, log)
}

/// Waits (bounded) until the log holds `needle`; returns the whole log.
async fn log_with(log: &Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_not_forged(log: &str) {
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "forged line:\n{log}"
    );
    assert!(!log.contains('\x1b'), "raw ESC in the log:\n{log:?}");
    assert!(log.lines().all(|l| l.len() < 2048), "a line is too long");
}

async fn send_frame(s: &mut TcpStream, json: &str) {
    let len = u32::try_from(json.len()).unwrap().to_be_bytes();
    s.write_all(&len).await.unwrap();
    s.write_all(json.as_bytes()).await.unwrap();
}

async fn read_frame(s: &mut TcpStream) -> serde_json::Value {
    let mut len = [0u8; 4];
    tokio::time::timeout(T, s.read_exact(&mut len))
        .await
        .expect("a reply in time")
        .unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn rpc_peers_cannot_flood_or_forge_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, first, log) =
        serve(&["rpc", "serve", "127.0.0.1:0", "--transport", "tcp"], &dir).await;
    let addr = first
        .trim()
        .strip_prefix("rpc listening on tcp://")
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // 500 fire-and-forget frames naming an unknown operation that forges a log line: each
    // is dropped (nothing to answer) and logged.
    let op = serde_json::to_string(FORGED).unwrap();
    let ff = format!(r#"{{"type":"fire_and_forget","peerID":"p","data":{{"operation":{op}}}}}"#);
    for _ in 0..500 {
        send_frame(&mut s, &ff).await;
    }
    // The connection still serves.
    send_frame(
        &mut s,
        r#"{"type":"request","peerID":"p","requestId":["p",1],"data":{"operation":"echo","n":7}}"#,
    )
    .await;
    let reply = read_frame(&mut s).await;
    assert_eq!(reply["type"], "response", "{reply}");
    assert_eq!(reply["data"]["n"], 7, "{reply}");
    drop(s);

    let text = log_with(&log, "rpc connection ended").await;
    assert_not_forged(&text);
    let dropped = text.matches("rpc frame dropped").count();
    assert!(
        (1..=SERVER_BUDGET).contains(&dropped),
        "{dropped} dropped-frame lines"
    );
    assert!(
        text.contains(r"evil\n2026"),
        "escaped text missing:\n{text}"
    );
    // Every drop is counted, the suppressed ones too.
    let end = text
        .lines()
        .find(|l| l.contains("rpc connection ended"))
        .unwrap();
    assert!(end.contains("ff_refused: 500"), "{end}");
}

#[tokio::test]
async fn packet_peers_cannot_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, first, log) = serve(&["packet", "serve", "--demo", "127.0.0.1:0"], &dir).await;
    let mut s = TcpStream::connect(first.trim()).await.unwrap();
    // 500 responses to requests the server never sent: each dropped and counted.
    let mut burst = Vec::new();
    for tag in 0..500 {
        let p = Packet::response(0, tag, true, 0, Bytes::from_static(b"x")).unwrap();
        burst.extend_from_slice(&p.to_bytes().unwrap());
    }
    s.write_all(&burst).await.unwrap();
    // The connection still serves: an echo request (rq_type 0) is answered.
    let rq = Packet::request(0, 9_999, 0, 0, Bytes::from_static(b"ping")).unwrap();
    s.write_all(&rq.to_bytes().unwrap()).await.unwrap();
    let dec = bistream_packet::codec::Decoder::new(1 << 20);
    let mut buf = bytes::BytesMut::new();
    let answer = tokio::time::timeout(T, async {
        loop {
            if let Some(p) = dec.decode(&mut buf).unwrap() {
                return p;
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0, "server closed");
        }
    })
    .await
    .expect("an answer in time");
    assert_eq!((answer.tag, answer.payload.as_ref()), (9_999, &b"ping"[..]));

    let text = log_with(&log, "response to unknown request dropped").await;
    // Give the reader time to have logged all it would (it has read every packet: the echo
    // came after them).
    let dropped = text.matches("response to unknown request dropped").count();
    assert!(dropped <= SERVER_BUDGET, "{dropped} lines for 500 packets");
    assert_not_forged(&text);
}
