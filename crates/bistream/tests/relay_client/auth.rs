//! Refusals: 4001/4002 from the real `RelayServer` code (behind a fake token authenticator)
//! and from our relay's static tokens, and 4004 when the same UUID registers elsewhere, are
//! typed errors returned at once: never a retry loop, and the client stays failed.

use bistream_relay_client::{ConnectionState, DescriptionType, RelayError};
use uuid::Uuid;

use crate::support::*;

on_both_relays! {
    duplicate_registration_4004_is_fatal => duplicate_uuid_is_fatal;
}

/// 4004: the same UUID registered elsewhere stops the old client for good (no reconnect).
pub async fn duplicate_uuid_is_fatal(kind: Kind) {
    let relay = Relay::start(kind).await;
    let id = Uuid::new_v4();
    let old = fast(&relay.url).uuid(id).build().unwrap();
    let mut events = old.events();
    old.connect(true).await.unwrap();
    let new = fast(&relay.url).uuid(id).build().unwrap();
    new.connect(true).await.unwrap();

    let err = tokio::time::timeout(STEP, old.recv())
        .await
        .expect("recv should end")
        .unwrap_err();
    match &err {
        RelayError::FatalClose { code: 4004, reason } => {
            assert!(reason.contains("same ID"), "{reason}")
        }
        other => panic!("expected 4004, got {other:?}"),
    }
    assert!(matches!(old.state(), ConnectionState::Failed(_)));
    // Every later call returns the same error, without reconnecting.
    assert_eq!(old.connect(true).await.unwrap_err(), err);
    assert_eq!(
        old.send(old.peer_connection(id, DescriptionType::Offer, "x"))
            .await
            .unwrap_err(),
        err
    );
    assert_stopped_without_retry(&mut events).await;
    assert_eq!(old.stats().registrations, 1);
    // The new owner of the UUID still works.
    new.send(new.peer_connection(id, DescriptionType::Offer, "still here"))
        .await
        .unwrap();
    assert_eq!(peer_msg(recv(&new).await).description, "still here");
    new.close().await;
}

/// 4001 (no / malformed token) and 4002 (revoked token) from the real RelayServer code are
/// typed errors returned at once: no retry loop, and the client stays failed.
#[tokio::test]
async fn python_relay_auth_failures_are_typed_errors_not_retries() {
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
        let err = connect_fails(&client).await;
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
        assert_stopped_without_retry(&mut events).await;
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

#[tokio::test]
async fn our_relay_auth_failures_are_typed_errors_not_retries() {
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
        let err = connect_fails(&client).await;
        match &err {
            RelayError::FatalClose { code: c, reason } => {
                assert_eq!(*c, code, "{header:?}: {reason}");
                assert!(!reason.contains("wrong-token"), "{reason}");
            }
            other => panic!("{header:?}: {other:?}"),
        }
        assert!(matches!(client.state(), ConnectionState::Failed(_)));
        assert_stopped_without_retry(&mut events).await;
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
    let out = run(&["relay", "listen", &relay.url, "--count", "0"]).await;
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains("4001"));
    let out = run(&[
        "relay",
        "listen",
        &relay.url,
        "--count",
        "0",
        "--header",
        "Authorization: Bearer alice-token",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    Uuid::parse_str(out.stdout.trim()).expect("uuid line");
}
