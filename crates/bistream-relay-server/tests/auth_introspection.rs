//! OAuth2 token introspection (RFC 7662) against a local HTTP server: basic auth and form
//! body, active/inactive, audience, the positive-result cache, and an unreachable endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Form, Json, Router};
use bistream_relay_server::auth::IntrospectionConfig;
use bistream_relay_server::{AuthConfig, RelayConfig};
use common::*;
use serde_json::json;
use uuid::Uuid;

#[derive(Clone, Default)]
struct Idp {
    calls: Arc<AtomicUsize>,
}

#[derive(serde::Deserialize)]
struct TokenForm {
    token: String,
}

async fn introspect(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Json<serde_json::Value> {
    idp.calls.fetch_add(1, Ordering::SeqCst);
    // base64("relay-client:relay-secret")
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != "Basic cmVsYXktY2xpZW50OnJlbGF5LXNlY3JldA==" {
        return Json(json!({"active": false}));
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Json(match f.token.as_str() {
        "alice-1" | "alice-2" => {
            json!({"active": true, "sub": "alice-sub", "username": "alice", "aud": ["other", "relay-aud"], "exp": exp})
        }
        "bob" => json!({"active": true, "sub": "bob-sub", "aud": "relay-aud", "exp": exp}),
        "wrong-aud" => json!({"active": true, "sub": "eve", "aud": ["something-else"], "exp": exp}),
        _ => json!({"active": false}),
    })
}

async fn idp() -> (std::net::SocketAddr, Idp) {
    let state = Idp::default();
    let app = Router::new()
        .route("/introspect", post(introspect))
        .with_state(state.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, state)
}

fn relay_config(endpoint: String, secret: &str) -> RelayConfig {
    RelayConfig {
        auth: AuthConfig::Introspection(IntrospectionConfig {
            endpoint,
            client_id: "relay-client".into(),
            client_secret: secret.into(),
            audience: Some("relay-aud".into()),
            cache_ttl: Duration::from_secs(30),
            cache_entries: 100,
            timeout: Duration::from_secs(5),
        }),
        ..config()
    }
}

async fn try_register(
    relay: &bistream_relay_server::RunningRelay,
    token: &str,
) -> Result<(Ws, Uuid), (u16, String)> {
    let mut ws = connect_with(relay, Some(&format!("Bearer {token}"))).await;
    let u = Uuid::new_v4();
    send(&mut ws, registration("x", u)).await;
    match tokio::time::timeout(T, futures_util::StreamExt::next(&mut ws))
        .await
        .unwrap()
    {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
            assert!(t.contains("\"success\":true"), "{t}");
            Ok((ws, u))
        }
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            Err((u16::from(f.code), f.reason.to_string()))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn introspection_decides_and_caches() {
    let (addr, idp) = idp().await;
    let relay = start(relay_config(
        format!("http://{addr}/introspect"),
        "relay-secret",
    ))
    .await;
    let (mut a1, a1u) = try_register(&relay, "alice-1").await.unwrap();
    // Two tokens of the same `sub` are the same user.
    let (mut a2, a2u) = try_register(&relay, "alice-2").await.unwrap();
    send(&mut a2, peer_message(a2u, "x", a1u, "hi")).await;
    assert_eq!(recv_json(&mut a1).await["description"], "hi");
    let (mut b, bu) = try_register(&relay, "bob").await.unwrap();
    send(&mut b, peer_message(bu, "x", a1u, "x")).await;
    assert!(recv_json(&mut b).await["error"]
        .as_str()
        .unwrap()
        .contains("owned by a different user"));

    assert_eq!(
        try_register(&relay, "revoked").await.err().unwrap(),
        (
            4002,
            "ForbiddenError: Token is expired or has been revoked.".to_string()
        )
    );
    let (code, reason) = try_register(&relay, "wrong-aud").await.err().unwrap();
    assert_eq!(code, 4002);
    assert!(
        reason.starts_with("ForbiddenError: Token audience does not include \"relay-aud\"."),
        "{reason}"
    );
    assert!(reason.len() <= 123);

    // The positive answer for alice-1 is cached: no new call.
    let before = idp.calls.load(Ordering::SeqCst);
    let _again = try_register(&relay, "alice-1").await.unwrap();
    assert_eq!(idp.calls.load(Ordering::SeqCst), before);
    // Negative answers are not cached.
    let _ = try_register(&relay, "revoked").await;
    assert_eq!(idp.calls.load(Ordering::SeqCst), before + 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn wrong_client_secret_means_inactive() {
    let (addr, _idp) = idp().await;
    let relay = start(relay_config(
        format!("http://{addr}/introspect"),
        "not-the-secret",
    ))
    .await;
    assert_eq!(try_register(&relay, "alice-1").await.err().unwrap().0, 4002);
    relay.shutdown().await;
}

#[tokio::test]
async fn unreachable_endpoint_closes_1011_so_clients_retry() {
    let port = bistream_testkit::free_port();
    let relay = start(relay_config(
        format!("http://127.0.0.1:{port}/introspect"),
        "relay-secret",
    ))
    .await;
    assert_eq!(
        try_register(&relay, "alice-1").await.err().unwrap(),
        (1011, "Authentication backend unavailable.".to_string())
    );
    relay.shutdown().await;
}
