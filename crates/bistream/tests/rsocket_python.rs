//! RSocket interop with the real Python `rsocket` 0.4.20 package (`.venv/rsocket`, made by
//! scripts/setup-test-env), both directions: its client (examples/python/rsocket_peer.py) against
//! `bistream rpc serve --protocol rsocket` over TCP and WebSocket, and our client (library and
//! `rpc call`) against its server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use bistream_rpc::Router;
use bistream_rsocket::{RsConfig, RsError};
use bistream_testkit::{venv_python_in, Peer};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::process::Command;

const T: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_bistream");

/// This workspace's root (from this crate's own manifest dir).
fn workspace_root() -> PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

fn python() -> PathBuf {
    venv_python_in(&workspace_root(), "BISTREAM_RSOCKET_PYTHON", "rsocket")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn script() -> PathBuf {
    workspace_root().join("examples/python/rsocket_peer.py")
}

async fn python_checks(transport: &str) {
    let mut cmd = Command::new(BIN);
    // A 64 KiB frame limit makes us fragment the 300 KiB reply (the client fragments its request).
    cmd.args([
        "rpc",
        "serve",
        "--protocol",
        "rsocket",
        "--transport",
        transport,
        "--max-frame-bytes",
        "65536",
        "127.0.0.1:0",
    ]);
    let mut server = Peer::spawn(cmd).unwrap();
    let line = server.next_stdout_line(T).await.expect("address line");
    let port = line
        .split(':')
        .nth(2)
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    server.drain_stderr();
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["client", transport, "127.0.0.1", &port]);
    let mut py = Peer::spawn(cmd).unwrap();
    let mut oks = Vec::new();
    while let Some(line) = py.next_stdout_line(T).await {
        assert!(!line.starts_with("FAIL"), "{line}\n{}", py.output_tail());
        oks.push(line);
    }
    assert_eq!(oks.len(), 11, "{oks:?}\n{}", py.output_tail());
    let log = server.next_stdout_line(T).await.unwrap();
    assert_eq!(log.trim(), r#"{"operation":"log","from":"python"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_against_our_tcp_server() {
    python_checks("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_against_our_websocket_server() {
    python_checks("ws").await;
}

async fn python_server(transport: &str) -> (Peer, String) {
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["server", transport, "127.0.0.1", "0"]);
    let mut py = Peer::spawn(cmd).unwrap();
    let line = py.next_stdout_line(T).await.expect("listening line");
    let port = line.trim().strip_prefix("listening ").unwrap().to_string();
    (py, format!("127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_python_tcp_server() {
    let (mut py, addr) = python_server("tcp").await;
    let rs = bistream_rsocket::connect_tcp(&addr, Router::new(), client_config())
        .await
        .unwrap();
    our_client_checks(rs, &mut py).await;
}

/// Against rsocket-py's `WebsocketsTransport` on a `websockets` server (one frame per binary
/// message; it fragments its replies at 32 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_python_websocket_server() {
    let (mut py, addr) = python_server("ws").await;
    let rs = bistream_rsocket::connect_ws(&format!("ws://{addr}/"), Router::new(), client_config())
        .await
        .unwrap();
    our_client_checks(rs, &mut py).await;
}

fn client_config() -> RsConfig {
    RsConfig {
        max_frame_bytes: 65536,
        window: 4,
        ..RsConfig::default()
    }
}

/// Every model, fragmentation both ways, REQUEST_N past our window, cancel, an error, and
/// fire-and-forget (seen in the Python server's output).
async fn our_client_checks(rs: bistream_rsocket::RSocket, py: &mut Peer) {
    let v: Value = rs.request_response("echo", &json!({"a": 1})).await.unwrap();
    assert_eq!(v, json!({"a": 1}));

    // 300 KiB both ways: we fragment at 64 KiB, so does the Python server.
    let big = "z".repeat(300 * 1024);
    let v: Value = rs
        .request_response("echo", &json!({ "big": big }))
        .await
        .unwrap();
    assert_eq!(v["big"].as_str().unwrap().len(), big.len());

    // A stream longer than our window of 4: REQUEST_N keeps it going.
    let s = rs
        .request_stream::<_, u64>("count", &json!({"n": 25}))
        .await
        .unwrap();
    let items: Vec<u64> = s.map(|r| r.unwrap()).collect().await;
    assert_eq!(items, (0..25).collect::<Vec<_>>());
    let s = rs
        .request_stream::<_, u64>("count", &json!({"n": 0}))
        .await
        .unwrap();
    assert_eq!(s.count().await, 0);

    // Cancel after two items; the connection goes on.
    let mut s = rs
        .request_stream::<_, u64>("count", &json!({"n": 100000}))
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 0);
    assert_eq!(s.next().await.unwrap().unwrap(), 1);
    drop(s);

    // Channel: the first item rides on REQUEST_CHANNEL.
    let (mut tx, rx) = rs
        .request_channel::<_, String>("upper", &"a")
        .await
        .unwrap();
    tx.send(&"b").await.unwrap();
    tx.send(&"c").await.unwrap();
    tx.end().await.unwrap();
    let got: Vec<String> = rx.map(|r| r.unwrap()).collect().await;
    assert_eq!(got, ["A", "B", "C"]);

    let e = rs
        .request_response::<_, Value>("fail", &json!({}))
        .await
        .unwrap_err();
    match e {
        RsError::Remote { code, message } => {
            assert_eq!(code, bistream_rsocket::proto::ErrorCode::ApplicationError);
            assert!(message.contains("python says no"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    rs.fire_and_forget("log", &json!({"from": "rust"}))
        .await
        .unwrap();
    let line = py.wait_for_line("log ", T).await;
    assert!(
        line.contains(r#"{"from": "rust"}"#) || line.contains(r#"{"from":"rust"}"#),
        "{line}"
    );

    let v: Value = rs
        .request_response("echo", &json!({"still": "alive"}))
        .await
        .unwrap();
    assert_eq!(v["still"], "alive");
    rs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_cli_against_python_server() {
    let (_py, addr) = python_server("tcp").await;
    let url = format!("tcp://{addr}");
    let out = Command::new(BIN)
        .args([
            "rpc",
            "call",
            "--protocol",
            "rsocket",
            &url,
            "count",
            r#"{"n":3}"#,
            "--stream",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n");
    let out = Command::new(BIN)
        .args(["rpc", "call", "--protocol", "rsocket", &url, "fail", "{}"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("APPLICATION_ERROR: python says no"));
}
