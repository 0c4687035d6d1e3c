//! `bistream relay listen` and `bistream relay send` as processes: what they print, their
//! exit codes (as `--help` lists them: 0 ok, 1 error, 2 bad arguments, 3 refused, 4
//! unreachable, 5 error reply), `http://` addresses, and bad arguments. Against the real
//! ProxyStore relay (and the fake-auth RelayServer for 4001/4002), with Python peers, and
//! against ours where it matters.

use bistream_relay_client::{DescriptionType, RelayMessage};
use bistream_relay_proto::unknown_peer_error;
use uuid::Uuid;

use crate::support::*;

on_both_relays! {
    listen_and_send_accept_http_addresses => http_addresses_are_converted;
}

/// `relay listen http://…` and `relay send http://…` work: the address is converted to ws://.
async fn http_addresses_are_converted(kind: Kind) {
    let relay = Relay::start(kind).await;
    let http = format!("http://127.0.0.1:{}/", relay.port);
    let (mut listener, uuid) = listen(&http, &["--count", "1"]).await;
    let to = uuid.to_string();
    let d = run(&[
        "relay",
        "send",
        &http,
        "--to",
        &to,
        "--description",
        "via http",
        "--wait",
        "0.2",
    ])
    .await;
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    let m = parse_peer(&listener.next_stdout_line(STEP).await.unwrap());
    assert_eq!(m.description, "via http");
    let status = tokio::time::timeout(STEP, listener.child.wait())
        .await
        .expect("listen exits after --count")
        .unwrap();
    assert!(status.success(), "{status:?}");
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
            vec!["relay", "listen", "ftp://127.0.0.1:1"],
            "ws://, wss://, http:// or https://",
        ),
        (vec!["relay", "listen", "127.0.0.1:1"], "HOST[:PORT]"),
        (
            vec!["relay", "listen", "ws://bob:hunter2@127.0.0.1:99999/"],
            "invalid relay address",
        ),
        (
            vec![
                "relay",
                "listen",
                "wss://127.0.0.1:1",
                "--ca-file",
                "/nonexistent/ca.pem",
            ],
            "cannot read CA file",
        ),
        (
            vec![
                "relay",
                "listen",
                "ws://127.0.0.1:1",
                "--connect-timeout",
                "1e9",
            ],
            "at most 86400",
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
                "--wait",
                "soon",
            ],
            "number of seconds",
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
            "greater than 0",
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
        // 2 = bad arguments, as --help says, whether clap or the client's checks refuse.
        assert_eq!(d.code, Some(2), "{args:?}: {}", d.stderr);
        assert!(d.stderr.contains(needle), "{args:?}: {}", d.stderr);
        assert!(d.stdout.is_empty(), "{args:?}: {}", d.stdout);
        assert!(!d.stderr.contains("hunter2"), "{args:?}: {}", d.stderr);
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

/// `bistream relay listen` keeps listening across a relay restart: it reconnects and
/// re-registers by itself, and a message sent after the restart is printed.
#[tokio::test]
async fn cli_listen_survives_a_relay_restart() {
    let relay = Relay::start(Kind::Ours).await;
    let port = relay.port;
    let url = relay.url.clone();
    let mut cmd = bistream();
    cmd.env("BISTREAM_LOG_LEVEL", "info")
        .args(["relay", "listen", &url, "--count", "1"]);
    let mut listener = bistream_testkit::Peer::spawn(cmd).unwrap();
    let me = listener.next_stdout_line(STEP).await.expect("uuid line");
    relay.stop().await;
    let relay = Relay::start_on(Kind::Ours, port, None).await;
    // Wait for the second registration (logged on stderr), then send.
    for _ in 0..2 {
        listener
            .wait_for_line("registered with the relay", STEP)
            .await;
    }
    let out = run(&[
        "relay",
        "send",
        &relay.url,
        "--to",
        me.trim(),
        "--description",
        "after restart",
        "--wait",
        "0.2",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = listener.next_stdout_line(STEP).await.expect("message line");
    assert!(line.contains("\"description\":\"after restart\""), "{line}");
    let status = tokio::time::timeout(STEP, listener.child.wait())
        .await
        .expect("listen exits after --count 1")
        .unwrap();
    assert!(status.success());
}
