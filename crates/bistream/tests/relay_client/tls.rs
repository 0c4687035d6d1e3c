//! `wss://`: each relay serving TLS with a self-signed certificate, once made by rcgen and once
//! made with `openssl req -x509` as docs/relay-client.md tells people to (a `CA:TRUE`
//! certificate, which plain WebPKI checking refuses as a server certificate). With the
//! certificate as `--ca-file`/`ca_file` both are accepted; with verification off too; with the
//! system roots it is a TLS error that is not retried. Python's `RelayClient` trusting the
//! same file accepts both as well.

use bistream_relay_client::{DescriptionType, RelayError, RelayMessage};
use uuid::Uuid;

use crate::support::*;

on_both_relays! {
    rcgen_certificate => with_rcgen_certificate;
    openssl_certificate => with_openssl_certificate;
}

async fn with_rcgen_certificate(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let certs = rcgen_self_signed(dir.path());
    tls_scenario(kind, dir.path(), &certs).await;
}

async fn with_openssl_certificate(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let certs = openssl_self_signed(dir.path());
    tls_scenario(kind, dir.path(), &certs).await;
}

/// A relay serving TLS: the real server from its config file (certfile/keyfile), ours from
/// its flags.
async fn start_tls(kind: Kind, dir: &std::path::Path, certs: &CertFiles) -> Relay {
    let relay = match kind {
        Kind::Python => {
            let port = bistream_testkit::free_port();
            let config = dir.join("relay.toml");
            std::fs::write(
                &config,
                format!(
                    "host = \"127.0.0.1\"\nport = {port}\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
                    certs.cert.display(),
                    certs.key.display()
                ),
            )
            .unwrap();
            Relay::start_on(Kind::Python, port, Some(&config)).await
        }
        Kind::Ours => {
            Relay::start_with(
                Kind::Ours,
                0,
                &[
                    "--certfile".into(),
                    certs.cert.display().to_string(),
                    "--keyfile".into(),
                    certs.key.display().to_string(),
                ],
                "wss",
            )
            .await
        }
    };
    assert!(relay.url.starts_with("wss://"));
    relay
}

async fn tls_scenario(kind: Kind, dir: &std::path::Path, certs: &CertFiles) {
    let relay = start_tls(kind, dir, certs).await;

    // The certificate as the CA file: accepted, and messages flow.
    let trusted = fast(&relay.url).ca_file(&certs.cert).build().unwrap();
    trusted.connect(true).await.unwrap();
    trusted
        .send(trusted.peer_connection(trusted.uuid(), DescriptionType::Offer, "over tls"))
        .await
        .unwrap();
    assert!(matches!(
        recv(&trusted).await,
        RelayMessage::PeerConnection(m) if m.description == "over tls"
    ));

    // Python's RelayClient trusting the same file (`ssl.create_default_context(cafile=...)`)
    // reaches our client through the relay: both accept the certificate.
    let me = trusted.uuid().to_string();
    let ca = certs.cert.display().to_string();
    let (_py, py_uuid) = python_peer(
        &relay.url,
        &[
            "--mode",
            "send",
            "--to",
            &me,
            "--description",
            "python over tls",
            "--cafile",
            &ca,
        ],
    )
    .await;
    let got = peer_msg(recv(&trusted).await);
    assert_eq!(got.source_uuid, py_uuid);
    assert_eq!(got.description, "python over tls");

    // The same through `localhost` (the certificate names both).
    let by_name = fast(&format!("wss://localhost:{}", relay.port))
        .ca_file(&certs.cert)
        .build()
        .unwrap();
    by_name.connect(true).await.unwrap();

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

    // The CLI with --ca-file: a message to itself is delivered (not an error reply).
    let me = Uuid::new_v4().to_string();
    let out = run(&[
        "relay",
        "send",
        &relay.url,
        "--uuid",
        &me,
        "--to",
        &me,
        "--description",
        "loop",
        "--wait",
        "0.3",
        "--ca-file",
        &ca,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("\"description\":\"loop\""),
        "{}",
        out.stdout
    );

    // --insecure registers too; without either, the CLI fails with the TLS error (exit 1).
    let out = run(&["relay", "listen", &relay.url, "--insecure", "--count", "0"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(&["relay", "listen", &relay.url, "--count", "0"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
}
