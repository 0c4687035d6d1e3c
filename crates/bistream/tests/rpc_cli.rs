//! `bistream rpc serve` / `call` end to end: the announced address, every demo operation via
//! `call` (including `--stream`, `--bistream` from stdin, fire-and-forget `log` on the server's
//! stdout), exit codes, the tcp and unix transports, and `serve --transport stdio` driven over
//! a child's stdin/stdout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use bistream_rpc::{stream_io, Router, RpcConfig};
use bistream_testkit::Peer;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const T: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_bistream");

async fn spawn_serve(args: &[&str]) -> (Peer, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["rpc", "serve"]).args(args);
    let mut peer = Peer::spawn(cmd).expect("spawn bistream");
    let line = peer.next_stdout_line(T).await.expect("address line");
    peer.drain_stderr();
    let url = line
        .trim()
        .strip_prefix("rpc listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    (peer, url)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn call(args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(["rpc", "call"]).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut i = child.stdin.take().unwrap();
        i.write_all(input.as_bytes()).await.unwrap();
        drop(i);
    }
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn serve_ws_and_call_every_demo_operation() {
    let (mut server, url) = spawn_serve(&["127.0.0.1:0"]).await;
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let url = format!("{url}/any/path");

    let o = call(
        &[
            &url,
            "echo",
            r#"{"n":9007199254740993,"m":-9223372036854775808,"s":"é"}"#,
        ],
        None,
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        "{\"operation\":\"echo\",\"n\":9007199254740993,\"m\":-9223372036854775808,\"s\":\"é\"}\n"
    );

    let o = call(&[&url, "count", r#"{"n":4}"#, "--stream"], None).await;
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "0\n1\n2\n3\n"),
        "{}",
        o.stderr
    );

    let o = call(&[&url, "upper", "--bistream"], Some("\"ab\"\n\"cd\"\n")).await;
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "\"AB\"\n\"CD\"\n"),
        "{}",
        o.stderr
    );

    let o = call(&[&url, "sleep", r#"{"ms":10}"#], None).await;
    assert_eq!(o.stdout, "{\"slept_ms\":10}\n");

    let o = call(&[&url, "fail"], None).await;
    assert_eq!(o.code, 5);
    assert!(o.stderr.contains("handler_failed"), "{}", o.stderr);

    let o = call(&[&url, "nope"], None).await;
    assert_eq!(o.code, 5);
    assert!(
        o.stderr.contains("unknown_operation") && o.stderr.contains("nope"),
        "{}",
        o.stderr
    );

    let o = call(&[&url, "count", r#"{"n":-1}"#, "--stream"], None).await;
    assert_eq!(o.code, 5);
    assert!(o.stderr.contains("invalid_request"), "{}", o.stderr);

    let o = call(
        &[&url, "sleep", r#"{"ms":20000}"#, "--timeout", "0.3"],
        None,
    )
    .await;
    assert_eq!(o.code, 6, "{}", o.stderr);

    let o = call(&[&url, "upper", "--bistream"], Some("\"ok\"\n7\n")).await;
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert_eq!(o.stdout, "\"OK\"\n");

    let o = call(
        &[&url, "log", r#"{"line": [1, 2.50]}"#, "--fire-and-forget"],
        None,
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let line = server.next_stdout_line(T).await.unwrap();
    assert_eq!(line.trim(), r#"{"operation":"log","line":[1,2.50]}"#);

    // Bad input to `call` itself.
    let o = call(&[&url, "echo", "{not json"], None).await;
    assert_ne!(o.code, 0);
    let o = call(&[&url, "echo", "[1]"], None).await;
    assert_ne!(o.code, 0);
    let o = call(&[&url, "echo", "--timeout", "-1"], None).await;
    assert_ne!(o.code, 0);

    let st = server.terminate(T).await.unwrap();
    assert!(st.success() || st.code().is_none(), "{st:?}");
    let o = call(&[&url, "echo"], None).await;
    assert_eq!(o.code, 4, "{}", o.stderr);
}

#[tokio::test]
async fn tcp_and_unix_transports() {
    let (mut tcp, url) = spawn_serve(&["127.0.0.1:0", "--transport", "tcp"]).await;
    assert!(url.starts_with("tcp://127.0.0.1:"), "{url}");
    let o = call(&[&url, "count", r#"{"n":2}"#, "--stream"], None).await;
    assert_eq!((o.code, o.stdout.as_str()), (0, "0\n1\n"), "{}", o.stderr);
    tcp.terminate(T).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.sock");
    let (mut unix, url) = spawn_serve(&[path.to_str().unwrap(), "--transport", "unix"]).await;
    assert_eq!(url, format!("unix:{}", path.display()));
    let o = call(&[&url, "echo", r#"{"a":1}"#], None).await;
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "{\"operation\":\"echo\",\"a\":1}\n"),
        "{}",
        o.stderr
    );
    unix.terminate(T).await;
}

#[tokio::test]
async fn serve_over_child_stdio() {
    let mut child = Command::new(BIN)
        .args([
            "rpc",
            "serve",
            "--transport",
            "stdio",
            "--log-level",
            "warn",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let conn = stream_io::over_child(&mut child, Router::new(), RpcConfig::default()).unwrap();
    let v: Value = tokio::time::timeout(T, conn.request_response("echo", &json!({"x": 1})))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!({"operation": "echo", "x": 1}));
    let s = conn
        .request_stream::<_, u64>("count", &json!({"n": 1000}))
        .await
        .unwrap();
    let n = tokio::time::timeout(T, s.map(|r| r.unwrap()).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(n.len(), 1000);
    conn.close().await;
    let st = tokio::time::timeout(T, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st:?}");
}
