//! Static bearer tokens: ProxyStore's 4001/4002 texts, per-user isolation (UUID ownership and
//! other-user bounces), and reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bistream_relay_server::{AuthConfig, RelayConfig};
use common::*;
use uuid::Uuid;

fn token_config(dir: &tempfile::TempDir) -> (RelayConfig, std::path::PathBuf) {
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        "[tokens]\n\"tok-alice\" = \"alice\"\n\"tok-alice-2\" = \"alice\"\n\"tok-bob\" = \"bob\"\n",
    )
    .unwrap();
    (
        RelayConfig {
            auth: AuthConfig::Tokens { file: path.clone() },
            ..config()
        },
        path,
    )
}

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_get_proxystore_codes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(token_config(&dir).0).await;
    let cases: [(Option<&str>, u16, &str); 6] = [
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
            Some("Bearer a b"),
            4001,
            "UnauthorizedError: Bearer token in authorization header is malformed.",
        ),
        (
            Some("bearer tok-alice"),
            4001,
            "UnauthorizedError: Bearer token in authorization header is malformed.",
        ),
        (
            Some("Bearer tok-carol"),
            4002,
            "ForbiddenError: Token is expired or has been revoked.",
        ),
        (
            Some("Bearer tok-alic"),
            4002,
            "ForbiddenError: Token is expired or has been revoked.",
        ),
    ];
    for (header, code, reason) in cases {
        let mut ws = connect_with(&relay, header).await;
        send(&mut ws, registration("x", Uuid::new_v4())).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (code, reason.to_string()),
            "{header:?}"
        );
    }
    assert_eq!(relay.registered_clients(), 0);
    assert!(relay
        .metrics()
        .render()
        .contains("relay_auth_failures_total 6"));
    relay.shutdown().await;
}

#[tokio::test]
async fn users_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(token_config(&dir).0).await;
    let mut alice = connect_with(&relay, Some("Bearer tok-alice")).await;
    let au = Uuid::new_v4();
    register(&mut alice, "alice", au).await;
    // Same user, different token: may message alice.
    let mut alice2 = connect_with(&relay, Some("Bearer tok-alice-2")).await;
    let a2u = Uuid::new_v4();
    register(&mut alice2, "alice2", a2u).await;
    send(&mut alice2, peer_message(a2u, "alice2", au, "hi")).await;
    assert_eq!(recv_json(&mut alice).await["description"], "hi");

    let mut bob = connect_with(&relay, Some("Bearer tok-bob")).await;
    let bu = Uuid::new_v4();
    register(&mut bob, "bob", bu).await;
    // Bob cannot reach alice's clients.
    send(&mut bob, peer_message(bu, "bob", au, "x")).await;
    let bounced = recv_json(&mut bob).await;
    assert_eq!(
        bounced["error"],
        format!("The requested peer {au} is owned by a different user.")
    );
    assert_silent(&mut alice).await;

    // Bob cannot take alice's UUID; alice keeps it.
    let mut thief = connect_with(&relay, Some("Bearer tok-bob")).await;
    send(&mut thief, registration("bob", au)).await;
    assert_eq!(
        expect_close(&mut thief).await,
        (
            4002,
            format!("ForbiddenError: The client UUID {au} is already registered to another user.")
        )
    );
    send(&mut alice2, peer_message(a2u, "alice2", au, "still-there")).await;
    assert_eq!(recv_json(&mut alice).await["description"], "still-there");
    relay.shutdown().await;
}

#[tokio::test]
async fn reload_replaces_tokens_and_keeps_old_table_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, path) = token_config(&dir);
    let relay = start(cfg).await;
    std::fs::write(&path, "[tokens]\n\"tok-new\" = \"carol\"\n").unwrap();
    relay.reload_auth().unwrap();
    let mut old = connect_with(&relay, Some("Bearer tok-alice")).await;
    send(&mut old, registration("a", Uuid::new_v4())).await;
    assert_eq!(expect_close(&mut old).await.0, 4002);
    let mut new = connect_with(&relay, Some("Bearer tok-new")).await;
    register(&mut new, "c", Uuid::new_v4()).await;
    std::fs::write(&path, "not toml [").unwrap();
    assert!(relay.reload_auth().is_err());
    let mut again = connect_with(&relay, Some("Bearer tok-new")).await;
    register(&mut again, "c2", Uuid::new_v4()).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn unreadable_token_file_fails_at_startup() {
    let cfg = RelayConfig {
        auth: AuthConfig::Tokens {
            file: "/nonexistent/tokens.toml".into(),
        },
        ..config()
    };
    let err = bistream_relay_server::RelayServer::bind(cfg)
        .await
        .err()
        .expect("bind fails");
    assert!(err.to_string().contains("cannot read token file"), "{err}");
}
