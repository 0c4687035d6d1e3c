//! The REAL ProxyStore 1.1.0 client side (`RelayClient`, `PeerManager` over WebRTC) against
//! `bistream relay serve` run as a process: registration, forwarding, bounces, takeover (4004),
//! auth (4001/4002, per-user isolation), 4003 + automatic reconnect, 1009, TLS, shutdown 1001.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod relay_server_support;
use bistream_testkit::http_get;
use relay_server_support::*;

#[tokio::test]
async fn relay_client_registers_forwards_and_gets_bounces() {
    let mut s = serve(&[]).await;
    s.peer.drain_stderr();
    let out = python("basic", &s.url, &[]).await;
    assert!(out.iter().any(|l| l == "OK forwarded"), "{out:?}");
    assert!(
        out.iter().any(|l| l == "OK unknown peer bounced"),
        "{out:?}"
    );
}

#[tokio::test]
async fn bad_input_closes_4000_or_4002_and_client_recovers() {
    let mut s = serve(&[]).await;
    s.peer.drain_stderr();
    let out = python("bad_input", &s.url, &[]).await;
    assert!(out.iter().any(|l| l == "OK forward before registration closed 4002 ForbiddenError: Client has not registered and authenticated with the relay server."), "{out:?}");
}

#[tokio::test]
async fn same_uuid_elsewhere_closes_old_client_4004() {
    let mut s = serve(&[]).await;
    s.peer.drain_stderr();
    let out = python("takeover", &s.url, &[]).await;
    assert!(
        out.iter().any(|l| l.starts_with(
            "OK old socket closed 4004 Relay received a registration with the same ID."
        )),
        "{out:?}"
    );
}

#[tokio::test]
async fn token_auth_with_python_client() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[tokens]\n\"alice-token\" = \"alice\"\n\"eve-token\" = \"eve\"\n",
    )
    .unwrap();
    let mut s = serve(&[
        "--auth-method",
        "tokens",
        "--auth-tokens-file",
        tokens.to_str().unwrap(),
    ])
    .await;
    s.peer.drain_stderr();
    let out = python("auth", &s.url, &["alice-token", "eve-token"]).await;
    assert!(out.iter().any(|l| l == "OK missing header 4001 UnauthorizedError: Request headers are missing authorization header."), "{out:?}");
    assert!(out.iter().any(|l| l == "OK bad token 4002 ForbiddenError: Token is expired or has been revoked."), "{out:?}");
    assert!(out.iter().any(|l| l == "OK other user bounced"), "{out:?}");
}

#[tokio::test]
async fn oversize_message_closes_4003_and_client_reconnects() {
    let mut s = serve(&["--max-message-bytes", "2048"]).await;
    s.peer.drain_stderr();
    python("oversize", &s.url, &["4096"]).await;
}

#[tokio::test]
async fn one_mib_is_forwarded_and_more_closes_1009() {
    let mut s = serve(&[]).await;
    s.peer.drain_stderr();
    let out = python("frame_limit", &s.url, &[]).await;
    assert!(
        out.iter()
            .any(|l| l == "OK closed 1009 frame exceeds limit of 1048576 bytes"),
        "{out:?}"
    );
}

#[tokio::test]
async fn peer_managers_connect_over_webrtc_through_the_relay() {
    let mut s = serve(&["--metrics-addr", "127.0.0.1:0"]).await;
    s.peer.drain_stderr();
    python("peers", &s.url, &[]).await;
    // Exactly an offer and an answer went through the relay.
    let (_, metrics) = http_get(s.metrics.as_deref().unwrap(), "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "relay_messages_forwarded_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn tls_with_python_client() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut s = serve(&[
        "--certfile",
        cert.to_str().unwrap(),
        "--keyfile",
        key.to_str().unwrap(),
    ])
    .await;
    s.peer.drain_stderr();
    assert!(s.url.starts_with("wss://"), "{}", s.url);
    python("tls", &s.url, &[]).await;
}

#[tokio::test]
async fn sigterm_closes_python_clients_1001_and_exits_0() {
    let mut s = serve(&[]).await;
    s.peer.drain_stderr();
    let mut client = bistream_testkit::Peer::spawn({
        let mut c = tokio::process::Command::new(bistream_testkit::relay_python());
        c.arg(bistream_testkit::python_scripts_dir().join("relay_server_interop.py"))
            .arg("wait_shutdown")
            .arg(&s.url);
        c
    })
    .unwrap();
    client.wait_for_line("READY", T).await;
    signal(&s.peer, "TERM");
    client.wait_for_line("CLOSED 1001", T).await;
    assert_eq!(exit_code(&mut s.peer).await, Some(0));
}

/// Issue 14 item 3: after a close the relay starts, the connection ends at once (the relay
/// half-closes and drains), not when its close timeout (30 s here) fires. The Python
/// scenario fails if a connection outlives its close frame by 5 s. Against 10d60bd the
/// input-error closes (1009, 1007, 1002) took the whole 30 s; 4003 and the 4004 during a
/// fragmented message already ended promptly there and guard the drain against regressions.
#[tokio::test]
async fn closes_end_promptly_for_python_clients() {
    for (mode, extra) in [
        ("frame", &[][..]),
        ("input_errors", &[][..]),
        ("oversize", &["--max-message-bytes", "2048"][..]),
        ("takeover", &[][..]),
    ] {
        let mut args = vec!["--close-timeout", "30"];
        args.extend_from_slice(extra);
        let mut s = serve(&args).await;
        s.peer.drain_stderr();
        python("close_promptly", &s.url, &[mode]).await;
    }
}
