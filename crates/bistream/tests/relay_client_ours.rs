//! The Rust relay client against OUR relay (`bistream relay serve`, started as a process),
//! with the same scenarios as `relay_client_python.rs` (Python `RelayClient` peers included),
//! plus auth through our static-token method, TLS, and the CLI.

mod relay_client_support;

use std::process::Stdio;

use bistream_relay_client::{ConnectionEvent, ConnectionState, DescriptionType, RelayError};
use relay_client_support::*;
use uuid::Uuid;

#[tokio::test]
async fn registers_with_our_relay() {
    let relay = Relay::start(Kind::Ours).await;
    registers(&relay).await;
}

#[tokio::test]
async fn forwards_between_rust_and_python_clients_via_our_relay() {
    let relay = Relay::start(Kind::Ours).await;
    forwards_with_python(&relay).await;
}

#[tokio::test]
async fn unknown_peer_is_bounced_by_our_relay() {
    let relay = Relay::start(Kind::Ours).await;
    unknown_peer_bounces(&relay).await;
}

#[tokio::test]
async fn full_incoming_queue_pauses_without_dropping_on_our_relay() {
    let relay = Relay::start(Kind::Ours).await;
    backpressure_keeps_every_message(&relay).await;
}

#[tokio::test]
async fn concurrent_senders_share_one_client_on_our_relay() {
    let relay = Relay::start(Kind::Ours).await;
    concurrent_senders_share_one_client(&relay).await;
}

#[tokio::test]
async fn dropping_the_client_closes_its_connection_on_our_relay() {
    let relay = Relay::start(Kind::Ours).await;
    drop_closes_the_connection(&relay).await;
}

#[tokio::test]
async fn duplicate_registration_4004_is_fatal_on_our_relay() {
    let relay = Relay::start(Kind::Ours).await;
    duplicate_uuid_is_fatal(&relay).await;
}

#[tokio::test]
async fn reconnects_after_our_relay_restarts() {
    survives_server_restart(Kind::Ours).await;
}

#[tokio::test]
async fn close_while_reconnecting_to_our_relay_stops_the_tasks() {
    close_while_reconnecting(Kind::Ours).await;
}

#[tokio::test]
async fn auth_failures_from_our_relay_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "[tokens]\n\"alice-token\" = \"alice\"\n").unwrap();
    let relay = Relay::start_with(
        Kind::Ours,
        0,
        &[
            "--auth-method".into(),
            "tokens".into(),
            "--auth-tokens-file".into(),
            tokens.display().to_string(),
        ],
        "ws",
    )
    .await;
    for (header, code) in [
        (None, 4001u16),
        (Some("Basic abc"), 4001),
        (Some("Bearer wrong-token"), 4002),
    ] {
        let mut b = fast(&relay.url);
        if let Some(h) = header {
            b = b.header("Authorization", h);
        }
        let client = b.build().unwrap();
        let mut events = client.events();
        let err = tokio::time::timeout(STEP, client.connect(true))
            .await
            .expect("a fatal close must not be retried forever")
            .unwrap_err();
        match &err {
            RelayError::FatalClose { code: c, reason } => {
                assert_eq!(*c, code, "{header:?}: {reason}");
                assert!(!reason.contains("wrong-token"), "{reason}");
            }
            other => panic!("{header:?}: {other:?}"),
        }
        assert!(matches!(client.state(), ConnectionState::Failed(_)));
        let (_, skipped) =
            wait_event(&mut events, |e| matches!(e, ConnectionEvent::Failed(_))).await;
        assert!(
            !skipped
                .iter()
                .any(|e| matches!(e, ConnectionEvent::Retrying { .. })),
            "{skipped:?}"
        );
    }
    let alice = fast(&relay.url)
        .header("Authorization", "Bearer alice-token")
        .build()
        .unwrap();
    alice
        .send(alice.peer_connection(alice.uuid(), DescriptionType::Offer, "authorized"))
        .await
        .unwrap();
    assert!(matches!(
        recv(&alice).await,
        bistream_relay_client::RelayMessage::PeerConnection(m) if m.description == "authorized"
    ));

    // The CLI: no token → exit 3 with the reason; with the token → registers.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bistream"))
        .args(["relay", "listen", &relay.url, "--count", "0"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4001"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bistream"))
        .args(["relay", "listen", &relay.url, "--count", "0"])
        .args(["--header", "Authorization: Bearer alice-token"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Uuid::parse_str(String::from_utf8_lossy(&out.stdout).trim()).expect("uuid line");
}

#[tokio::test]
async fn tls_to_our_relay_with_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let relay = Relay::start_with(
        Kind::Ours,
        0,
        &[
            "--certfile".into(),
            cert_path.display().to_string(),
            "--keyfile".into(),
            key_path.display().to_string(),
        ],
        "wss",
    )
    .await;
    let client = fast(&relay.url).ca_file(&cert_path).build().unwrap();
    client
        .send(client.peer_connection(client.uuid(), DescriptionType::Offer, "tls"))
        .await
        .unwrap();
    assert!(matches!(
        recv(&client).await,
        bistream_relay_client::RelayMessage::PeerConnection(m) if m.description == "tls"
    ));
    // The CLI with --ca-file: send to itself is delivered (not an error reply).
    let me = Uuid::new_v4().to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bistream"))
        .args(["relay", "send", &relay.url, "--uuid", &me, "--to", &me])
        .args(["--description", "loop", "--wait", "0.3", "--ca-file"])
        .arg(&cert_path)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"description\":\"loop\""), "{stdout}");
}

/// `bistream relay listen` keeps listening across a relay restart: it reconnects and
/// re-registers by itself, and a message sent after the restart is printed.
#[tokio::test]
async fn cli_listen_survives_a_relay_restart() {
    let relay = Relay::start(Kind::Ours).await;
    let port = relay.port;
    let url = relay.url.clone();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bistream"));
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
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bistream"))
        .args(["relay", "send", &relay.url, "--to", me.trim()])
        .args(["--description", "after restart", "--wait", "0.2"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = listener.next_stdout_line(STEP).await.expect("message line");
    assert!(line.contains("\"description\":\"after restart\""), "{line}");
    let status = tokio::time::timeout(STEP, listener.child.wait())
        .await
        .expect("listen exits after --count 1")
        .unwrap();
    assert!(status.success());
}
