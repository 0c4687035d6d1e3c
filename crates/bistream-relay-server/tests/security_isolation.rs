//! Security (issue 15): one scenario run against every auth method that has users (static
//! tokens, JWT, RFC 7662 introspection — ProxyStore's `globus` method is introspection with
//! Globus' endpoint; `none` has one user for everyone, so there is nothing to isolate):
//!
//! * cross-user forwarding bounces and the owner hears nothing;
//! * source fields are rewritten from the sender's registration (a spoofed `source_uuid` /
//!   `source_name` never reaches the receiver);
//! * a registered client re-registering with another user's UUID is refused and the owner
//!   keeps it; a new connection taking that UUID over is refused (4002) too;
//! * an unknown credential is refused;
//! * no credential (nor the JWT secret, nor the introspection client secret) appears in the
//!   server's log at TRACE level or in any text a client receives (replies, bounces, close
//!   reasons).
//!
//! One test per binary: the log capture is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::post;
use axum::{Form, Json, Router};
use bistream_relay_server::auth::{IntrospectionConfig, JwtAlgorithm, JwtConfig};
use bistream_relay_server::{AuthConfig, RelayConfig};
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const JWT_SECRET: &str = "jwt-secret-0123456789abcdef-0123456789abcdef";
const IDP_SECRET: &str = "idp-client-secret-4f1c9a";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(sub: &str) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": now() + 3600, "aud": "relay"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[derive(serde::Deserialize)]
struct TokenForm {
    token: String,
}

/// An introspection endpoint: tokens `intro-alice-*` are alice, `intro-bob-*` bob.
async fn idp() -> String {
    let app = Router::new().route(
        "/introspect",
        post(|Form(f): Form<TokenForm>| async move {
            let exp = now() + 3600;
            Json(if f.token.starts_with("intro-alice-") {
                json!({"active": true, "sub": "alice", "exp": exp})
            } else if f.token.starts_with("intro-bob-") {
                json!({"active": true, "sub": "bob", "exp": exp})
            } else {
                json!({"active": false})
            })
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/introspect")
}

/// One auth method: its config and credentials (alice ×2, bob, unknown).
struct Method {
    name: &'static str,
    config: RelayConfig,
    alice: [String; 2],
    bob: String,
    unknown: String,
}

/// Every text a client received, to grep for credentials.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn json(&mut self, ws: &mut Ws) -> serde_json::Value {
        let v = recv_json(ws).await;
        self.0.push(v.to_string());
        v
    }
    async fn close(&mut self, ws: &mut Ws) -> (u16, String) {
        let c = expect_close(ws).await;
        self.0.push(c.1.clone());
        c
    }
}

async fn bearer(relay: &bistream_relay_server::RunningRelay, token: &str) -> Ws {
    connect_with(relay, Some(&format!("Bearer {token}"))).await
}

async fn scenario(m: &Method, seen: &mut Seen) {
    let relay = start(m.config.clone()).await;
    let (au, a2u, bu) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut alice = bearer(&relay, &m.alice[0]).await;
    register(&mut alice, "alice", au).await;
    let mut alice2 = bearer(&relay, &m.alice[1]).await;
    register(&mut alice2, "alice2", a2u).await;
    let mut bob = bearer(&relay, &m.bob).await;
    register(&mut bob, "bob", bu).await;

    // Forward across users: bounced to bob, nothing reaches alice.
    send(&mut bob, peer_message(bu, "bob", au, "cross")).await;
    let bounce = seen.json(&mut bob).await;
    assert!(
        bounce["error"]
            .as_str()
            .is_some_and(|e| e.contains("owned by a different user")),
        "{}: {bounce}",
        m.name
    );
    assert_silent(&mut alice).await;

    // Spoofed source fields: alice2 claims to be bob; alice sees alice2.
    send(&mut alice2, peer_message(bu, "bob", au, "spoof")).await;
    let got = seen.json(&mut alice).await;
    assert_eq!(got["description"], "spoof", "{}", m.name);
    assert_eq!(got["source_uuid"], a2u.to_string(), "{}: {got}", m.name);
    assert_eq!(got["source_name"], "alice2", "{}: {got}", m.name);

    // Re-registration on bob's registered socket with alice's UUID: refused.
    send(&mut bob, registration("bob", au)).await;
    let refused = loop {
        match tokio::time::timeout(T, bob.next())
            .await
            .expect("a reply in time")
        {
            Some(Ok(Message::Text(t))) => {
                seen.0.push(t.to_string());
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_ne!(v["success"], true, "{}: bob took alice's UUID: {v}", m.name);
                break format!("reply {v}");
            }
            Some(Ok(Message::Close(f))) => {
                let f = f.expect("a close code");
                seen.0.push(f.reason.to_string());
                assert_eq!(u16::from(f.code), 4002, "{}: {f:?}", m.name);
                break format!("close {f:?}");
            }
            Some(Ok(_)) => continue,
            other => panic!("{}: {other:?}", m.name),
        }
    };
    // Takeover from a new connection of bob's: 4002.
    let mut thief = bearer(&relay, &m.bob).await;
    send(&mut thief, registration("thief", au)).await;
    let (code, reason) = seen.close(&mut thief).await;
    assert_eq!(code, 4002, "{}: {reason}", m.name);
    assert!(reason.contains("another user"), "{}: {reason}", m.name);
    // Alice still owns her UUID.
    send(&mut alice2, peer_message(a2u, "alice2", au, "still-mine")).await;
    assert_eq!(
        seen.json(&mut alice).await["description"],
        "still-mine",
        "{} (after {refused})",
        m.name
    );

    // An unknown credential is refused.
    let mut stranger = bearer(&relay, &m.unknown).await;
    send(&mut stranger, registration("stranger", Uuid::new_v4())).await;
    let (code, _) = seen.close(&mut stranger).await;
    assert!(
        [4001, 4002].contains(&code),
        "{}: unknown credential got {code}",
        m.name
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn users_are_isolated_and_credentials_stay_secret_for_every_auth_method() {
    let cap = LogCapture::install(tracing::Level::TRACE);

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[tokens]\n\"tok-alice-7d1e\" = \"alice\"\n\"tok-alice-2-9b3f\" = \"alice\"\n\"tok-bob-c5a2\" = \"bob\"\n",
    )
    .unwrap();
    let methods = [
        Method {
            name: "tokens",
            config: RelayConfig {
                auth: AuthConfig::Tokens { file: tokens },
                ..config()
            },
            alice: ["tok-alice-7d1e".into(), "tok-alice-2-9b3f".into()],
            bob: "tok-bob-c5a2".into(),
            unknown: "tok-mallory-e0f1".into(),
        },
        Method {
            name: "jwt",
            config: RelayConfig {
                auth: AuthConfig::Jwt(JwtConfig {
                    algorithm: JwtAlgorithm::Hs256,
                    key: JWT_SECRET.as_bytes().to_vec(),
                    audience: Some("relay".into()),
                    issuer: None,
                    leeway: Duration::from_secs(0),
                }),
                ..config()
            },
            alice: [jwt("alice"), jwt("alice")],
            bob: jwt("bob"),
            // Signed with another key.
            unknown: {
                let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    &json!({"sub": "alice", "exp": now() + 3600, "aud": "relay"}),
                    &jsonwebtoken::EncodingKey::from_secret(
                        b"not-the-relay-secret-0123456789abcdef",
                    ),
                )
                .unwrap()
            },
        },
        Method {
            name: "introspection",
            config: RelayConfig {
                auth: AuthConfig::Introspection(IntrospectionConfig {
                    endpoint: idp().await,
                    client_id: "relay-client".into(),
                    client_secret: IDP_SECRET.into(),
                    audience: None,
                    cache_ttl: Duration::from_secs(30),
                    cache_entries: 100,
                    timeout: Duration::from_secs(5),
                }),
                ..config()
            },
            alice: ["intro-alice-1a2b".into(), "intro-alice-3c4d".into()],
            bob: "intro-bob-5e6f".into(),
            unknown: "intro-mallory-7a8b".into(),
        },
    ];
    let mut seen = Seen::default();
    for m in &methods {
        scenario(m, &mut seen).await;
    }

    // The test's own clients run in this process too: tungstenite's client handshake logs the
    // whole request, Authorization header included, at TRACE (a dependency's behaviour that
    // docs/RELIABILITY.md records). Those lines are the client's, not the server's.
    let log: String = cap
        .text()
        .lines()
        .filter(|l| !l.contains(" tungstenite::handshake::client:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        log.contains("registered"),
        "the capture saw no relay log lines:\n{log}"
    );
    let mut secrets: Vec<&str> = vec![JWT_SECRET, IDP_SECRET];
    for m in &methods {
        secrets.extend(m.alice.iter().map(String::as_str));
        secrets.push(&m.bob);
        secrets.push(&m.unknown);
    }
    for s in secrets {
        // A JWT's signature part alone is enough to find it.
        let needle = s.rsplit('.').next().unwrap_or(s);
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        assert!(
            leaks.is_empty(),
            "a credential is in the server log: {leaks:#?}"
        );
        for text in &seen.0 {
            assert!(
                !text.contains(needle),
                "a credential reached a client: {text}"
            );
        }
    }
}
