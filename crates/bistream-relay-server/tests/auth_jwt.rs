//! JWT authentication: HS256, RS256 and ES256; expiry, audience, issuer and signature checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bistream_relay_server::auth::{JwtAlgorithm, JwtConfig};
use bistream_relay_server::{AuthConfig, RelayConfig};
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use uuid::Uuid;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt_config(algorithm: JwtAlgorithm, key: Vec<u8>) -> RelayConfig {
    RelayConfig {
        auth: AuthConfig::Jwt(JwtConfig {
            algorithm,
            key,
            audience: Some("relay".into()),
            issuer: Some("https://issuer.example".into()),
            leeway: Duration::from_secs(0),
        }),
        ..config()
    }
}

fn hs(claims: serde_json::Value) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn good_claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "exp": now() + 3600, "aud": "relay", "iss": "https://issuer.example"})
}

async fn outcome(
    relay: &bistream_relay_server::RunningRelay,
    token: &str,
) -> Result<(), (u16, String)> {
    let mut ws = connect_with(relay, Some(&format!("Bearer {token}"))).await;
    send(&mut ws, registration("x", Uuid::new_v4())).await;
    match futures_util::StreamExt::next(&mut ws).await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
            assert!(t.contains("\"success\":true"), "{t}");
            Ok(())
        }
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            Err((u16::from(f.code), f.reason.to_string()))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn hs256_checks_signature_expiry_audience_issuer() {
    let relay = start(jwt_config(JwtAlgorithm::Hs256, SECRET.to_vec())).await;
    assert_eq!(outcome(&relay, &hs(good_claims("alice"))).await, Ok(()));
    let expired = hs(
        json!({"sub": "alice", "exp": now() - 120, "aud": "relay", "iss": "https://issuer.example"}),
    );
    assert_eq!(
        outcome(&relay, &expired).await,
        Err((
            4002,
            "ForbiddenError: Token is expired or has been revoked.".into()
        ))
    );
    let wrong_aud =
        hs(json!({"sub": "a", "exp": now() + 60, "aud": "other", "iss": "https://issuer.example"}));
    assert_eq!(outcome(&relay, &wrong_aud).await.unwrap_err().0, 4002);
    let no_aud = hs(json!({"sub": "a", "exp": now() + 60, "iss": "https://issuer.example"}));
    assert_eq!(outcome(&relay, &no_aud).await.unwrap_err().0, 4002);
    let wrong_iss =
        hs(json!({"sub": "a", "exp": now() + 60, "aud": "relay", "iss": "https://evil.example"}));
    assert_eq!(outcome(&relay, &wrong_iss).await.unwrap_err().0, 4002);
    let no_exp = hs(json!({"sub": "a", "aud": "relay", "iss": "https://issuer.example"}));
    assert_eq!(outcome(&relay, &no_exp).await.unwrap_err().0, 4002);
    let no_sub = hs(json!({"exp": now() + 60, "aud": "relay", "iss": "https://issuer.example"}));
    assert_eq!(outcome(&relay, &no_sub).await.unwrap_err().0, 4002);
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &good_claims("alice"),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    assert_eq!(outcome(&relay, &other_key).await.unwrap_err().0, 4002);
    assert_eq!(outcome(&relay, "not.a.jwt").await.unwrap_err().0, 4002);
    relay.shutdown().await;
}

#[tokio::test]
async fn users_come_from_sub() {
    let relay = start(jwt_config(JwtAlgorithm::Hs256, SECRET.to_vec())).await;
    let mut a = connect_with(
        &relay,
        Some(&format!("Bearer {}", hs(good_claims("alice")))),
    )
    .await;
    let au = Uuid::new_v4();
    register(&mut a, "a", au).await;
    let mut b = connect_with(&relay, Some(&format!("Bearer {}", hs(good_claims("bob"))))).await;
    let bu = Uuid::new_v4();
    register(&mut b, "b", bu).await;
    send(&mut b, peer_message(bu, "b", au, "x")).await;
    assert!(recv_json(&mut b).await["error"]
        .as_str()
        .unwrap()
        .contains("owned by a different user"));
    relay.shutdown().await;
}

#[tokio::test]
async fn rs256_with_public_key() {
    let public = include_bytes!("keys/test-rsa-public.pem").to_vec();
    let private = include_bytes!("keys/test-rsa-private.pem");
    let relay = start(jwt_config(JwtAlgorithm::Rs256, public)).await;
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let token = encode(
        &Header::new(Algorithm::RS256),
        &good_claims("alice"),
        &EncodingKey::from_rsa_pem(private).unwrap(),
    )
    .unwrap();
    assert_eq!(outcome(&relay, &token).await, Ok(()));
    // An HS256 token must not pass an RS256 relay (algorithm confusion).
    assert_eq!(
        outcome(&relay, &hs(good_claims("alice")))
            .await
            .unwrap_err()
            .0,
        4002
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn es256_with_public_key() {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let relay = start(jwt_config(
        JwtAlgorithm::Es256,
        kp.public_key_pem().into_bytes(),
    ))
    .await;
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    let token = encode(&Header::new(Algorithm::ES256), &good_claims("alice"), &key).unwrap();
    assert_eq!(outcome(&relay, &token).await, Ok(()));
    relay.shutdown().await;
}

#[tokio::test]
async fn short_hs256_secret_is_refused_at_startup() {
    let err = bistream_relay_server::RelayServer::bind(jwt_config(
        JwtAlgorithm::Hs256,
        b"short".to_vec(),
    ))
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
}
