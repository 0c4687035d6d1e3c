//! `bistream relay listen` and `bistream relay send` as processes, against the real
//! ProxyStore relay (and the fake-auth RelayServer for 4001), with Python peers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod relay_client_support;

use std::process::Stdio;

use bistream_relay_client::{DescriptionType, RelayMessage};
use bistream_relay_proto::unknown_peer_error;
use bistream_testkit::Peer;
use relay_client_support::*;
use tokio::process::Command;
use uuid::Uuid;

fn bistream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bistream"));
    c.env("BISTREAM_LOG_LEVEL", "warn");
    c
}

struct Done {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Done {
    let mut cmd = bistream();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("bistream {args:?} did not finish"))
        .expect("run bistream");
    Done {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn listen(url: &str, extra: &[&str]) -> (Peer, Uuid) {
    let mut cmd = bistream();
    cmd.args(["relay", "listen", url]).args(extra);
    let mut peer = Peer::spawn(cmd).expect("spawn listen");
    let first = peer
        .next_stdout_line(STEP)
        .await
        .expect("listen printed its uuid");
    let uuid = Uuid::parse_str(first.trim()).expect("first line is a UUID");
    (peer, uuid)
}

fn parse_peer(line: &str) -> bistream_relay_client::PeerConnectionRequest {
    match RelayMessage::decode(line) {
        Ok(RelayMessage::PeerConnection(m)) => m,
        other => panic!("{line:?}: {other:?}"),
    }
}

#[tokio::test]
async fn listen_prints_uuid_then_messages_from_rust_and_python_and_exits_after_count() {
    let relay = Relay::start(Kind::Python).await;
    let fixed = Uuid::new_v4();
    let fixed_s = fixed.to_string();
    let (mut listener, uuid) = listen(
        &relay.url,
        &["--uuid", &fixed_s, "--name", "lst", "--count", "2"],
    )
    .await;
    assert_eq!(uuid, fixed);

    // From `bistream relay send`.
    let d = run(&[
        "relay",
        "send",
        &relay.url,
        "--to",
        &fixed_s,
        "--description",
        "héllo",
        "--type",
        "answer",
        "--name",
        "sender",
        "--wait",
        "0.3",
    ])
    .await;
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    let sender =
        Uuid::parse_str(d.stdout.lines().next().unwrap_or("")).expect("send prints its uuid");
    let m = parse_peer(&listener.next_stdout_line(STEP).await.unwrap());
    assert_eq!(m.source_uuid, sender);
    assert_eq!(m.source_name, "sender");
    assert_eq!(m.peer_uuid, fixed);
    assert_eq!(m.description, "héllo");
    assert_eq!(m.description_type, DescriptionType::Answer);

    // From a Python RelayClient.
    let (_py, py_uuid) = python_peer(
        &relay.url,
        &[
            "--mode",
            "send",
            "--to",
            &fixed_s,
            "--description",
            "from python",
        ],
    )
    .await;
    let m = parse_peer(&listener.next_stdout_line(STEP).await.unwrap());
    assert_eq!(m.source_uuid, py_uuid);
    assert_eq!(m.description, "from python");

    let status = tokio::time::timeout(STEP, listener.child.wait())
        .await
        .expect("listen exits after --count")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn send_reaches_a_python_client() {
    let relay = Relay::start(Kind::Python).await;
    let (mut py, py_uuid) = python_peer(&relay.url, &["--mode", "recv", "--count", "1"]).await;
    let to = py_uuid.to_string();
    let d = run(&[
        "relay",
        "send",
        &relay.url,
        "--to",
        &to,
        "--description",
        "{\"sdp\": \"v=0\"}",
    ])
    .await;
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    let m = parse_peer(&py.next_stdout_line(STEP).await.unwrap());
    assert_eq!(m.peer_uuid, py_uuid);
    assert_eq!(m.description, "{\"sdp\": \"v=0\"}");
    assert_eq!(m.description_type, DescriptionType::Offer);
}

#[tokio::test]
async fn send_to_unknown_peer_prints_the_relays_error_and_fails() {
    let relay = Relay::start(Kind::Python).await;
    let nobody = Uuid::new_v4();
    let d = run(&[
        "relay",
        "send",
        &relay.url,
        "--to",
        &nobody.to_string(),
        "--description",
        "x",
    ])
    .await;
    assert_eq!(d.code, Some(5), "stdout {} stderr {}", d.stdout, d.stderr);
    assert!(
        d.stderr.contains(&unknown_peer_error(&nobody)),
        "{}",
        d.stderr
    );
}

#[tokio::test]
async fn auth_failure_exits_non_zero_with_the_reason() {
    let relay = start_fake_auth_relay().await;
    let to = Uuid::new_v4().to_string();
    let d = run(&[
        "relay",
        "send",
        &relay.url,
        "--to",
        &to,
        "--description",
        "x",
    ])
    .await;
    assert_eq!(d.code, Some(3), "{}", d.stderr);
    assert!(d.stderr.contains("4001"), "{}", d.stderr);
    assert!(
        d.stderr
            .contains("Request headers are missing authorization header."),
        "{}",
        d.stderr
    );
    let d = run(&[
        "relay",
        "listen",
        &relay.url,
        "--header",
        "Authorization: Bearer revoked",
    ])
    .await;
    assert_eq!(d.code, Some(3), "{}", d.stderr);
    assert!(d.stderr.contains("4002"), "{}", d.stderr);
    assert!(
        d.stderr.contains("Token is expired or has been revoked."),
        "{}",
        d.stderr
    );
    // The token itself is never echoed.
    assert!(!d.stderr.contains("Bearer revoked"), "{}", d.stderr);

    // With a token, listen works (and exits at once with --count 0).
    let d = run(&[
        "relay",
        "listen",
        &relay.url,
        "--header",
        "Authorization: Bearer alice",
        "--count",
        "0",
    ])
    .await;
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    Uuid::parse_str(d.stdout.trim()).expect("uuid line");
}

#[tokio::test]
async fn unreachable_relay_gives_up_after_connect_timeout() {
    let port = bistream_testkit::free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let d = run(&["relay", "listen", &url, "--connect-timeout", "1.5"]).await;
    assert_eq!(d.code, Some(4), "{}", d.stderr);
    assert!(d.stderr.contains("could not register"), "{}", d.stderr);
    assert!(
        d.stderr.contains("Connection refused") || d.stderr.contains("ConnectionRefused"),
        "{}",
        d.stderr
    );
    assert!(d.stdout.is_empty());
}

#[tokio::test]
async fn bad_arguments_are_clear_errors() {
    let u = Uuid::new_v4().to_string();
    for (args, needle) in [
        (
            vec!["relay", "listen", "http://127.0.0.1:1"],
            "ws:// or wss://",
        ),
        (
            vec!["relay", "listen", "ws://127.0.0.1:1", "--header", "nocolon"],
            "Name: value",
        ),
        (
            vec![
                "relay",
                "listen",
                "ws://127.0.0.1:1",
                "--header",
                "Bad Name: x",
            ],
            "invalid header",
        ),
        (
            vec![
                "relay",
                "listen",
                "ws://127.0.0.1:1",
                "--uuid",
                "not-a-uuid",
            ],
            "--uuid",
        ),
        (
            vec![
                "relay",
                "listen",
                "ws://127.0.0.1:1",
                "--connect-timeout",
                "0",
            ],
            "more than 0",
        ),
        (
            vec!["relay", "send", "ws://127.0.0.1:1", "--to", &u],
            "--description",
        ),
        (
            vec![
                "relay",
                "send",
                "ws://127.0.0.1:1",
                "--to",
                &u,
                "--description",
                "x",
                "--type",
                "bogus",
            ],
            "bogus",
        ),
        (
            vec!["relay", "send", "ws://127.0.0.1:1", "--description", "x"],
            "--to",
        ),
    ] {
        let d = run(&args).await;
        assert!(
            matches!(d.code, Some(1) | Some(2)),
            "{args:?}: {:?} {}",
            d.code,
            d.stderr
        );
        assert!(d.stderr.contains(needle), "{args:?}: {}", d.stderr);
        assert!(d.stdout.is_empty(), "{args:?}: {}", d.stdout);
    }
}

#[tokio::test]
async fn listen_exits_3_when_its_uuid_is_taken_over() {
    let relay = Relay::start(Kind::Python).await;
    let id = Uuid::new_v4().to_string();
    let (mut first, _) = listen(&relay.url, &["--uuid", &id]).await;
    let (_second, _) = listen(&relay.url, &["--uuid", &id]).await;
    let status = tokio::time::timeout(STEP, first.child.wait())
        .await
        .expect("the first listener exits")
        .unwrap();
    assert_eq!(status.code(), Some(3));
    let line = first.wait_for_line("refused us", STEP).await;
    assert!(line.contains("4004"), "{line}");
    assert!(line.contains("registered again elsewhere"), "{line}");
}

#[tokio::test]
async fn listen_stops_cleanly_on_sigterm() {
    let relay = Relay::start(Kind::Python).await;
    let (mut listener, uuid) = listen(&relay.url, &[]).await;
    let status = listener
        .terminate(STEP)
        .await
        .expect("listen exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    // It closed its connection: the relay soon no longer knows the UUID (polled, since the
    // relay unregisters after the close handshake, concurrently with our next connection).
    let to = uuid.to_string();
    let mut last = None;
    for _ in 0..50 {
        let d = run(&[
            "relay",
            "send",
            &relay.url,
            "--to",
            &to,
            "--description",
            "x",
            "--wait",
            "0.3",
        ])
        .await;
        if d.code == Some(5) {
            return;
        }
        last = Some((d.code, d.stderr));
    }
    panic!("the relay still knows the listener: {last:?}");
}
