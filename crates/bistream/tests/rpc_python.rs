//! Interop with the Python example peer (`examples/python/slipstream_peer.py`, written from
//! docs/protocol/rpc.md with `websockets`), both directions: its checks against
//! `bistream rpc serve`, and our client (library and `rpc call`) against its server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bistream_rpc::ws::ClientOptions;
use bistream_testkit::{relay_python, workspace_root, Peer};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::process::Command;

const T: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_bistream");

fn script() -> std::path::PathBuf {
    workspace_root().join("examples/python/slipstream_peer.py")
}

async fn first_url(peer: &mut Peer) -> String {
    let line = peer.next_stdout_line(T).await.expect("address line");
    line.trim()
        .strip_prefix("rpc listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string()
}

#[tokio::test]
async fn python_client_against_bistream_server() {
    let mut cmd = Command::new(BIN);
    cmd.args(["rpc", "serve", "127.0.0.1:0"]);
    let mut server = Peer::spawn(cmd).unwrap();
    let url = first_url(&mut server).await;
    server.drain_stderr();
    let mut cmd = Command::new(relay_python());
    cmd.arg(script()).arg("check").arg(format!("{url}/rpc"));
    let mut py = Peer::spawn(cmd).unwrap();
    let mut oks = 0;
    loop {
        let line = py
            .next_stdout_line(T)
            .await
            .unwrap_or_else(|| panic!("python ended early:\n{}", py.transcript.join("\n")));
        assert!(
            !line.starts_with("FAIL"),
            "{line}\n{}",
            py.transcript.join("\n")
        );
        if line.starts_with("OK ") {
            oks += 1;
        }
        if line.trim() == "ALL DONE" {
            break;
        }
    }
    assert!(oks >= 14, "{oks}");
    // The fire-and-forget log line reached the server's stdout.
    let log = server.next_stdout_line(T).await.unwrap();
    assert_eq!(log.trim(), r#"{"operation":"log","line":"from python"}"#);
    server.terminate(T).await;
}

#[tokio::test]
async fn bistream_client_against_python_server() {
    let mut cmd = Command::new(relay_python());
    cmd.arg(script()).args(["serve", "127.0.0.1", "0"]);
    let mut py = Peer::spawn(cmd).unwrap();
    let url = first_url(&mut py).await;
    py.drain_stderr();
    let c = tokio::time::timeout(T, bistream_rpc::ws::connect(&url, ClientOptions::default()))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(T, async {
        let v: Value = c
            .request_response(
                "echo",
                &json!({"a": 9007199254740993u64, "b": i64::MIN, "s": "é"}),
            )
            .await
            .unwrap();
        assert_eq!(v["a"].as_u64(), Some(9007199254740993));
        assert_eq!(v["b"].as_i64(), Some(i64::MIN));
        assert_eq!(v["s"], "é");
        let s = c
            .request_stream::<_, u64>("count", &json!({"n": 50}))
            .await
            .unwrap();
        let items: Vec<u64> = s.map(|r| r.unwrap()).collect().await;
        assert_eq!(items, (0..50).collect::<Vec<_>>());
        let (mut tx, rx) = c
            .stream_stream::<_, String, String>("upper", &json!({}))
            .await
            .unwrap();
        for w in ["a", "bé", "c"] {
            tx.send(&w.to_string()).await.unwrap();
        }
        tx.end().await.unwrap();
        let up: Vec<String> = rx.map(|r| r.unwrap()).collect().await;
        assert_eq!(up, ["A", "BÉ", "C"]);
        c.fire_and_forget("log", &json!({"from": "rust"}))
            .await
            .unwrap();
        // concurrency and out-of-order replies
        let slow = {
            let c = c.clone();
            tokio::spawn(async move {
                c.request_response::<_, Value>("sleep", &json!({"ms": 500}))
                    .await
            })
        };
        let calls = (0..200).map(|i| {
            let c = c.clone();
            async move {
                c.request_response::<_, Value>("echo", &json!({"i": i}))
                    .await
                    .unwrap()["i"]
                    .clone()
            }
        });
        let got = futures_util::future::join_all(calls).await;
        assert_eq!(got, (0..200).map(|i| json!(i)).collect::<Vec<_>>());
        assert!(!slow.is_finished());
        assert_eq!(slow.await.unwrap().unwrap(), json!({"slept_ms": 500}));
        for (op, code) in [("fail", "handler_failed"), ("nope", "unknown_operation")] {
            match c
                .request_response::<_, Value>(op, &json!({}))
                .await
                .unwrap_err()
            {
                bistream_rpc::RpcError::Remote { code: got, .. } => assert_eq!(got, code),
                other => panic!("{other:?}"),
            }
        }
        let mut s = c
            .request_stream::<_, Value>("count", &json!({"n": -1}))
            .await
            .unwrap();
        assert!(matches!(
            s.next().await,
            Some(Err(bistream_rpc::RpcError::Remote { .. }))
        ));
    })
    .await
    .unwrap();
    let log = py.next_stdout_line(T).await.unwrap();
    assert_eq!(log.trim(), r#"{"operation":"log","from":"rust"}"#);

    // `rpc call` against the Python server too.
    let out = Command::new(BIN)
        .args(["rpc", "call", &url, "count", r#"{"n":3}"#, "--stream"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n");

    // The Python peer vanishing fails a pending call at once.
    let c2 = c.clone();
    let pending = tokio::spawn(async move {
        c2.request_response::<_, Value>("sleep", &json!({"ms": 60000}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    py.terminate(T).await;
    let e = tokio::time::timeout(T, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            e,
            bistream_rpc::RpcError::Lost(_) | bistream_rpc::RpcError::Closed { .. }
        ),
        "{e:?}"
    );
}
