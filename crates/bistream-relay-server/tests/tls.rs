//! TLS: wss:// with a self-signed certificate (rcgen), with a separate key file and with the
//! key inside the certificate file (ProxyStore's behaviour), and bad files refused at startup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::sync::Arc;

use bistream_relay_server::{RelayConfig, RelayServer, TlsFiles};
use common::*;
use uuid::Uuid;

struct Cert {
    cert_pem: String,
    key_pem: String,
    der: rustls_pki_types::CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    Cert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

async fn wss_connect(relay: &bistream_relay_server::RunningRelay, cert: &Cert) -> Ws {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url = format!("wss://localhost:{}/", relay.local_addr().port());
    let (ws, _) = tokio::time::timeout(
        T,
        tokio_tungstenite::connect_async_tls_with_config(
            url,
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(Arc::new(cfg))),
        ),
    )
    .await
    .unwrap()
    .expect("wss connect");
    ws
}

#[tokio::test]
async fn serves_wss_with_separate_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed();
    std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
    let relay = start(RelayConfig {
        tls: Some(TlsFiles {
            certfile: dir.path().join("cert.pem"),
            keyfile: Some(dir.path().join("key.pem")),
        }),
        ..config()
    })
    .await;
    assert!(relay.url().starts_with("wss://127.0.0.1:"));
    let mut a = wss_connect(&relay, &cert).await;
    let au = Uuid::new_v4();
    register(&mut a, "a", au).await;
    let mut b = wss_connect(&relay, &cert).await;
    let bu = Uuid::new_v4();
    register(&mut b, "b", bu).await;
    send(&mut a, peer_message(au, "a", bu, "over tls")).await;
    assert_eq!(recv_json(&mut b).await["description"], "over tls");
    relay.shutdown().await;
}

/// A TLS relay whose certificate file also holds the key (no `keyfile`), as ProxyStore allows.
async fn start_with_key_in_cert_file(
    dir: &std::path::Path,
) -> (bistream_relay_server::RunningRelay, Cert) {
    let cert = self_signed();
    let both = dir.join("both.pem");
    std::fs::write(&both, format!("{}{}", cert.cert_pem, cert.key_pem)).unwrap();
    let relay = start(RelayConfig {
        tls: Some(TlsFiles {
            certfile: both,
            keyfile: None,
        }),
        ..config()
    })
    .await;
    (relay, cert)
}

#[tokio::test]
async fn key_may_live_in_the_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, cert) = start_with_key_in_cert_file(dir.path()).await;
    let mut a = wss_connect(&relay, &cert).await;
    register(&mut a, "a", Uuid::new_v4()).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn bad_tls_files_fail_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed();
    let other = self_signed();
    std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("other-key.pem"), &other.key_pem).unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not pem").unwrap();
    for (certfile, keyfile, needle) in [
        ("cert.pem", None, "private key"),
        ("junk.pem", Some("other-key.pem"), "no PEM certificate"),
        ("cert.pem", Some("other-key.pem"), "does not match"),
    ] {
        let cfg = RelayConfig {
            tls: Some(TlsFiles {
                certfile: dir.path().join(certfile),
                keyfile: keyfile.map(|k| dir.path().join(k)),
            }),
            ..config()
        };
        let err = RelayServer::bind(cfg)
            .await
            .err()
            .expect("bind fails")
            .to_string();
        assert!(err.contains(needle), "{certfile} {keyfile:?}: {err}");
    }
}

#[tokio::test]
async fn plain_client_on_tls_port_fails_the_handshake_without_hurting_others() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, cert) = start_with_key_in_cert_file(dir.path()).await;
    let plain = format!("ws://{}/", relay.local_addr());
    assert!(
        tokio::time::timeout(T, tokio_tungstenite::connect_async(plain))
            .await
            .unwrap()
            .is_err()
    );
    let mut a = wss_connect(&relay, &cert).await;
    register(&mut a, "a", Uuid::new_v4()).await;
    relay.shutdown().await;
}
