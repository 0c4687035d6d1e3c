//! `bistream packet serve` / `call` end to end: the real Python cs.packetstream client against
//! `serve --demo`, `call` against a real Python server, `serve --stdio` driven over a child's
//! stdin/stdout, and graceful SIGTERM shutdown on a Unix socket.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::Duration;

use bistream_packet::bytes::Bytes;
use bistream_packet::{Builder, CloseReason};
use bistream_testkit::{packet_python, python_scripts_dir, Peer};
use tokio::process::Command;

const T: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_bistream");

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("timed out")
}

async fn spawn_serve(addr: &str) -> (Peer, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["packet", "serve", addr, "--demo"]);
    let mut peer = Peer::spawn(cmd).expect("spawn bistream");
    let line = peer
        .next_stdout_line(T)
        .await
        .expect("bistream printed its address");
    peer.drain_stderr();
    (peer, line.trim().to_string())
}

#[tokio::test]
async fn python_client_against_serve_demo_then_sigterm() {
    let (mut server, addr) = spawn_serve("127.0.0.1:0").await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut cmd = Command::new(packet_python());
    cmd.arg(python_scripts_dir().join("packet_client.py"))
        .arg(&addr);
    let mut py = Peer::spawn(cmd).expect("spawn python");
    let mut oks = 0;
    within(async {
        loop {
            let line = py
                .next_stdout_line(T)
                .await
                .unwrap_or_else(|| panic!("python ended early:\n{}", py.transcript.join("\n")));
            assert!(!line.starts_with("FAIL"), "{line}");
            if line.starts_with("OK ") {
                oks += 1;
            }
            if line == "ALL DONE" {
                break;
            }
        }
    })
    .await;
    assert!(oks >= 13, "{oks} checks passed");
    let st = server
        .terminate(T)
        .await
        .expect("bistream exits on SIGTERM");
    assert!(st.success(), "{st}");
}

async fn call(args: &[&str]) -> (i32, String, String) {
    let out = within(
        Command::new(BIN)
            .arg("packet")
            .arg("call")
            .args(args)
            .output(),
    )
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn call_against_python_server() {
    let mut cmd = Command::new(packet_python());
    cmd.arg(python_scripts_dir().join("packet_server.py"))
        .arg("tcp");
    let mut py = Peer::spawn(cmd).expect("spawn python");
    let line = py.wait_for_line("PORT ", T).await;
    let addr = format!("127.0.0.1:{}", line.trim().trim_start_matches("PORT "));
    py.drain_stderr();

    let (code, out, _) = call(&[&addr, "0", "hi", "--flags", "5"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "ok: true\nflags: 5\npayload: hi\n")
    );
    let (code, out, _) = call(&[&addr, "1", "6869ff", "--hex"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "ok: true\nflags: 3\npayload: ff6968\n")
    );
    let (code, out, err) = call(&[&addr, "2", "x"]).await;
    assert_eq!((code, out.as_str()), (1, "ok: false\nflags: 0\n"));
    assert!(err.contains("exception during handler"), "{err}");
    let (code, _, err) = call(&[&addr, "0", "x", "--channel", "1"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown channel %d"), "{err}");
    // bad input is a clear error, not a request (exit 2: bad argument)
    let (code, _, err) = call(&[&addr, "0", "abc", "--hex"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("odd number"), "{err}");
    let (code, _, err) = call(&["127.0.0.1:1", "0"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

async fn run(args: &[&str]) -> (i32, String) {
    let out = within(Command::new(BIN).args(args).output()).await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 10 item 9: bad arguments exit 2 (as `--help` says) with a message that says exactly
/// what is accepted; nothing is started.
#[tokio::test]
async fn bad_arguments_exit_2_with_what_is_accepted() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["packet", "serve", "127.0.0.1:99999", "--demo"],
            &["HOST:PORT", "0 to 65535", "\"99999\""],
        ),
        (
            &["packet", "serve", "localhost", "--demo"],
            &["HOST:PORT", "unix:PATH"],
        ),
        (
            &["packet", "serve", ":80", "--demo"],
            &["HOST:PORT", "no host"],
        ),
        (
            &["packet", "serve", "unix:", "--demo"],
            &["unix:PATH", "empty"],
        ),
        (&["packet", "serve", "127.0.0.1:0"], &["--demo"]),
        (
            &[
                "packet",
                "serve",
                "127.0.0.1:0",
                "--demo",
                "--packet-timeout",
                "0",
            ],
            &["must be greater than 0 seconds"],
        ),
        (
            &[
                "packet",
                "serve",
                "127.0.0.1:0",
                "--demo",
                "--max-connections",
                "0",
            ],
            &["--max-connections"],
        ),
        (
            &[
                "packet",
                "serve",
                "127.0.0.1:0",
                "--demo",
                "--max-packet",
                "8",
            ],
            &["from 16 to 1073741824"],
        ),
        (
            &[
                "packet",
                "serve",
                "127.0.0.1:0",
                "--demo",
                "--packet-grace-ms=-1",
            ],
            &["from 0 to 10000"],
        ),
        (
            &[
                "packet",
                "serve",
                "127.0.0.1:0",
                "--demo",
                "--packet-grace-ms",
                "20000",
            ],
            &["from 0 to 10000"],
        ),
        (
            &["packet", "call", "127.0.0.1:1", "0", "--timeout", "0"],
            &["invalid timeout 0: must be greater than 0 seconds"],
        ),
        (
            &["packet", "call", "127.0.0.1:1", "0", "--timeout", "nan"],
            &["finite number of seconds"],
        ),
        (
            &["packet", "call", "127.0.0.1:1", "0", "--timeout", "90000"],
            &["must be at most 86400 seconds"],
        ),
        (
            &["packet", "call", "127.0.0.1:1", "0", "--timeout", "soon"],
            &["expected a number of seconds", "\"soon\""],
        ),
        (
            &["packet", "call", "127.0.0.1:0", "0"],
            &["port 0 cannot be connected to"],
        ),
        (&["packet", "call", "localhost", "0"], &["HOST:PORT"]),
    ];
    for (args, wants) in cases {
        let (code, err) = run(args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        for w in *wants {
            assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
        }
        // one line of error plus clap's usage hint, never a backtrace or a panic
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn serve_stdio_driven_over_child_stdio() {
    let mut child = Command::new(BIN)
        .args(["packet", "serve", "--stdio", "--demo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let c = Builder::new().child(&mut child).unwrap();
    within(async {
        assert_eq!(
            c.call(0, 5, &b"hi"[..], 0).await.unwrap(),
            (5, Bytes::from_static(b"hi"))
        );
        assert_eq!(
            c.call(1, 0, &b"abc"[..], 7).await.unwrap(),
            (3, Bytes::from_static(b"cba"))
        );
        let slow = c.submit(3, 9, &b"slow"[..], 0).await.unwrap();
        let e = c.call(2, 0, Bytes::new(), 0).await.unwrap_err();
        assert_eq!(
            e.failure_reason().as_deref(),
            Some("exception during handler")
        );
        let e = c.call(4, 0, Bytes::new(), 0).await.unwrap_err();
        assert_eq!(
            e.failure_reason().as_deref(),
            Some("exception during handler")
        );
        assert_eq!(slow.await.unwrap().flags, 9);
        assert_eq!(c.close().await, CloseReason::PeerEof);
        assert!(child.wait().await.unwrap().success());
    })
    .await;
}

#[tokio::test]
async fn sigterm_answers_in_flight_requests_on_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("bistream-packet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo.sock");
    let _ = std::fs::remove_file(&path);
    let (mut server, addr) = spawn_serve(&format!("unix:{}", path.display())).await;
    assert_eq!(addr, format!("unix:{}", path.display()));
    within(async {
        let c = Builder::new().connect_unix(&path).await.unwrap();
        let slow = c.submit(3, 1, &b"late"[..], 0).await.unwrap();
        // The echo's answer proves the server has read (and started) the slow request.
        c.call(0, 0, Bytes::new(), 0).await.unwrap();
        let st = server
            .terminate(T)
            .await
            .expect("bistream exits on SIGTERM");
        assert!(st.success(), "{st}");
        let r = slow.await.unwrap();
        assert_eq!((r.ok, &r.payload[..]), (true, &b"late"[..]));
        assert_eq!(c.closed().await, CloseReason::PeerEof);
        assert!(!c.is_open());
    })
    .await;
    assert!(!path.exists(), "the socket file is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}
