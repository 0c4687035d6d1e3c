//! The Rust relay client against the REAL ProxyStore relay (proxystore 1.1.0 from
//! `.venv/relay`), with real Python `RelayClient` peers on the other side; plus the real
//! `RelayServer` behind a fake token authenticator for 4001/4002, TLS via the real server's
//! certfile/keyfile config, and the retry schedule against a port where nothing listens.

mod relay_client_support;

use std::time::Duration;

use bistream_relay_client::{
    Backoff, ConnectionEvent, ConnectionState, DescriptionType, RelayClient, RelayError,
};
use relay_client_support::*;

#[tokio::test]
async fn registers_with_python_relay() {
    let relay = Relay::start(Kind::Python).await;
    registers(&relay).await;
}

#[tokio::test]
async fn forwards_between_rust_and_python_clients() {
    let relay = Relay::start(Kind::Python).await;
    forwards_with_python(&relay).await;
}

#[tokio::test]
async fn unknown_peer_is_bounced_with_the_relays_error() {
    let relay = Relay::start(Kind::Python).await;
    unknown_peer_bounces(&relay).await;
}

#[tokio::test]
async fn full_incoming_queue_pauses_without_dropping() {
    let relay = Relay::start(Kind::Python).await;
    backpressure_keeps_every_message(&relay).await;
}

#[tokio::test]
async fn concurrent_senders_share_one_python_relayed_client() {
    let relay = Relay::start(Kind::Python).await;
    concurrent_senders_share_one_client(&relay).await;
}

#[tokio::test]
async fn dropping_the_client_closes_its_python_relay_connection() {
    let relay = Relay::start(Kind::Python).await;
    drop_closes_the_connection(&relay).await;
}

#[tokio::test]
async fn duplicate_registration_4004_is_fatal() {
    let relay = Relay::start(Kind::Python).await;
    duplicate_uuid_is_fatal(&relay).await;
}

#[tokio::test]
async fn reconnects_after_python_relay_restart() {
    survives_server_restart(Kind::Python).await;
}

#[tokio::test]
async fn close_while_reconnecting_stops_the_tasks() {
    close_while_reconnecting(Kind::Python).await;
}

/// 4001 (no / malformed token) and 4002 (revoked token) from the real RelayServer code are
/// typed errors returned at once: no retry loop, and the client stays failed.
#[tokio::test]
async fn auth_failures_are_typed_errors_not_retries() {
    let relay = start_fake_auth_relay().await;
    let cases: [(Option<&str>, u16, &str); 4] = [
        (
            None,
            4001,
            "UnauthorizedError: Request headers are missing authorization header.",
        ),
        (
            Some("Basic abc"),
            4001,
            "UnauthorizedError: Bearer token in authorization header is malformed.",
        ),
        (
            Some("bearer abc"),
            4001,
            "UnauthorizedError: Bearer token in authorization header is malformed.",
        ),
        (
            Some("Bearer revoked"),
            4002,
            "ForbiddenError: Token is expired or has been revoked.",
        ),
    ];
    for (header, code, reason) in cases {
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
        assert_eq!(
            err,
            RelayError::FatalClose {
                code,
                reason: reason.into()
            },
            "{header:?}"
        );
        assert!(err.is_auth_failure());
        assert_eq!(client.state(), ConnectionState::Failed(err.clone()));
        let (_, skipped) =
            wait_event(&mut events, |e| matches!(e, ConnectionEvent::Failed(_))).await;
        assert!(
            !skipped
                .iter()
                .any(|e| matches!(e, ConnectionEvent::Retrying { .. })),
            "{skipped:?}"
        );
        // recv() does not start over either.
        assert_eq!(client.recv().await.unwrap_err(), err);
        assert_eq!(client.stats().registrations, 0);
    }

    // With a token: works, and a UUID owned by another user is 4002 for the newcomer.
    let alice = fast(&relay.url)
        .header("Authorization", "Bearer alice")
        .build()
        .unwrap();
    alice.connect(true).await.unwrap();
    let bob = fast(&relay.url)
        .uuid(alice.uuid())
        .header("Authorization", "Bearer bob")
        .build()
        .unwrap();
    match bob.connect(true).await.unwrap_err() {
        RelayError::FatalClose { code: 4002, reason } => {
            assert!(
                reason.contains("already registered to another user"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Alice is untouched.
    alice
        .send(alice.peer_connection(alice.uuid(), DescriptionType::Offer, "ok"))
        .await
        .unwrap();
    assert!(matches!(
        recv(&alice).await,
        bistream_relay_client::RelayMessage::PeerConnection(m) if m.description == "ok"
    ));
}

/// The retry schedule as announced by the events, against a port where nothing listens:
/// exactly the backoff policy (no jitter), and a connect without retry fails at once.
#[tokio::test]
async fn retry_schedule_follows_the_backoff_policy() {
    let port = bistream_testkit::free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let client = RelayClient::builder(&url)
        .backoff(Backoff {
            initial: Duration::from_millis(5),
            factor: 2.0,
            max: Duration::from_millis(40),
            jitter: 0.0,
        })
        .build()
        .unwrap();
    let err = client.connect(false).await.unwrap_err();
    assert!(
        matches!(
            err,
            RelayError::Io {
                kind: std::io::ErrorKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(client.state(), ConnectionState::Disconnected);

    let client = std::sync::Arc::new(client);
    let mut events = client.events();
    let task = tokio::spawn({
        let c = client.clone();
        async move { c.connect(true).await }
    });
    let mut delays = Vec::new();
    while delays.len() < 6 {
        if let ConnectionEvent::Retrying {
            attempt,
            delay,
            error,
        } = next_event(&mut events).await
        {
            assert_eq!(attempt as usize, delays.len() + 1);
            assert!(error.is_retryable(), "{error:?}");
            delays.push(delay.as_millis());
        }
    }
    assert_eq!(delays, [5, 10, 20, 40, 40, 40]);
    client.close().await;
    let r = tokio::time::timeout(STEP, task).await.unwrap().unwrap();
    assert_eq!(r, Err(RelayError::Closed));
}

/// wss:// against the real server serving TLS from its config file (certfile/keyfile).
#[tokio::test]
async fn tls_with_ca_file_and_with_verification_off() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let port = bistream_testkit::free_port();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"127.0.0.1\"\nport = {port}\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    let relay = Relay::start_on(Kind::Python, port, Some(&config)).await;
    assert!(relay.url.starts_with("wss://"));

    let trusted = fast(&relay.url).ca_file(&cert_path).build().unwrap();
    trusted.connect(true).await.unwrap();
    trusted
        .send(trusted.peer_connection(trusted.uuid(), DescriptionType::Offer, "over tls"))
        .await
        .unwrap();
    assert!(matches!(
        recv(&trusted).await,
        bistream_relay_client::RelayMessage::PeerConnection(m) if m.description == "over tls"
    ));

    let insecure = fast(&relay.url)
        .danger_accept_any_certificate()
        .build()
        .unwrap();
    insecure.connect(true).await.unwrap();

    // The self-signed certificate is not in the system roots: a TLS error, not retried.
    if let Ok(untrusting) = fast(&relay.url).build() {
        let err = tokio::time::timeout(STEP, untrusting.connect(true))
            .await
            .expect("a TLS failure must not be retried")
            .unwrap_err();
        assert!(matches!(err, RelayError::Tls(_)), "{err:?}");
    }

    // A plain ws:// client talking to the TLS port fails without hanging.
    let plain = fast(&format!("ws://127.0.0.1:{}", relay.port))
        .build()
        .unwrap();
    let err = plain.connect(false).await.unwrap_err();
    assert!(!matches!(err, RelayError::Closed), "{err:?}");
}
