//! wss:// and https:// tails against local TLS servers with a self-signed certificate
//! (rcgen): trusted through a CA file or a custom rustls config, refused with a clear 503
//! when untrusted or issued for another name, and a bad CA file is a 400.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bistream_logs::{ClientError, StreamLimits, Tail, TailOptions};
use futures_util::SinkExt;
use support::tls::{self_signed, tls_server, Cert};
use support::{collect, opts};
use tokio_tungstenite::tungstenite::Message;

/// Writes `pem` to a file of its own under the test target directory.
fn pem_file(name: &str, pem: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("logs-tls-{}-{name}.pem", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path
}

/// What the servers send: a line split across frames/chunks, `\r\n`, UTF-8 split in two.
const PARTS: [&[u8]; 4] = [
    b"first line\nsec",
    b"ond line\r\nthird \xc3",
    b"\xa9\n",
    b"last",
];
const LINES: [&str; 4] = ["first line", "second line", "third é", "last"];

/// A wss server sending `PARTS` as binary frames, then a normal close.
async fn wss_server(cert: &Cert) -> SocketAddr {
    tls_server(cert, |tls| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
            return;
        };
        for part in PARTS {
            if ws.send(Message::binary(part.to_vec())).await.is_err() {
                return;
            }
        }
        let _ = ws.close(None).await;
    })
    .await
}

/// An https server answering any request with `PARTS` as chunks of a chunked body.
async fn https_server(cert: &Cert) -> SocketAddr {
    support::tls::https_server(cert, &PARTS).await
}

async fn tail(url: String, opts: TailOptions) -> (Vec<String>, Option<ClientError>) {
    collect(Tail::new(url, opts).into_stream()).await
}

fn expected() -> Vec<String> {
    LINES.iter().map(|l| l.to_string()).collect()
}

#[tokio::test]
async fn wss_and_https_with_a_ca_file() {
    let cert = self_signed(&["localhost", "127.0.0.1"]);
    let ca = pem_file("ok", &cert.pem);
    let wss = wss_server(&cert).await;
    let https = https_server(&cert).await;
    for url in [
        format!("wss://localhost:{}/tail", wss.port()),
        format!("wss://127.0.0.1:{}/tail", wss.port()),
        format!("https://localhost:{}/logs", https.port()),
        format!("https://127.0.0.1:{}/logs", https.port()),
    ] {
        let (lines, err) = tail(url.clone(), opts(StreamLimits::default()).ca_file(&ca)).await;
        assert!(err.is_none(), "{url}: {err:?}");
        assert_eq!(lines, expected(), "{url}");
    }
}

#[tokio::test]
async fn a_custom_rustls_config_is_used_as_is() {
    let cert = self_signed(&["localhost"]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let config = Arc::new(config);
    let wss = wss_server(&cert).await;
    let https = https_server(&cert).await;
    for url in [
        format!("wss://localhost:{}/tail", wss.port()),
        format!("https://localhost:{}/logs", https.port()),
    ] {
        let o = opts(StreamLimits::default()).tls_config(Arc::clone(&config));
        let (lines, err) = tail(url.clone(), o).await;
        assert!(err.is_none(), "{url}: {err:?}");
        assert_eq!(lines, expected(), "{url}");
    }
}

/// The refusal is a 503 that says the certificate is not trusted, names the context and
/// delivers no line.
fn assert_refused(url: &str, lines: &[String], err: Option<ClientError>, why: &str) {
    assert!(lines.is_empty(), "{url}: {lines:?}");
    let err = err.unwrap_or_else(|| panic!("{url}: no error"));
    let text = err.to_string();
    assert_eq!(err.status_code(), 503, "{url}: {text}");
    assert!(text.contains("job test-1"), "{url}: {text}");
    assert!(text.contains("certificate is not trusted"), "{url}: {text}");
    assert!(text.contains(why), "{url}: {text}");
    assert!(text.contains("CA file"), "{url}: {text}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_clearly() {
    let cert = self_signed(&["localhost"]);
    let wss = wss_server(&cert).await;
    let https = https_server(&cert).await;
    // The system roots do not hold a self-signed certificate.
    for url in [
        format!("wss://localhost:{}/tail", wss.port()),
        format!("https://localhost:{}/logs", https.port()),
    ] {
        let (lines, err) = tail(url.clone(), opts(StreamLimits::default())).await;
        assert_refused(&url, &lines, err, "UnknownIssuer");
    }
    // Trusted in the CA file, but issued to another name.
    let other = self_signed(&["other.example"]);
    let ca = pem_file("other", &other.pem);
    let wss = wss_server(&other).await;
    let https = https_server(&other).await;
    for url in [
        format!("wss://localhost:{}/tail", wss.port()),
        format!("https://localhost:{}/logs", https.port()),
    ] {
        let (lines, err) = tail(url.clone(), opts(StreamLimits::default()).ca_file(&ca)).await;
        assert_refused(&url, &lines, err, "NotValidForName");
    }
}

#[tokio::test]
async fn a_bad_ca_file_is_a_400_naming_it() {
    let cert = self_signed(&["localhost"]);
    let wss = wss_server(&cert).await;
    let https = https_server(&cert).await;
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs-tls-no-such-file.pem");
    let empty = pem_file("empty", "no certificate here\n");
    for url in [
        format!("wss://localhost:{}/tail", wss.port()),
        format!("https://localhost:{}/logs", https.port()),
    ] {
        for (file, says) in [
            (&missing, "cannot read CA file"),
            (&empty, "holds no certificate"),
        ] {
            let (lines, err) = tail(url.clone(), opts(StreamLimits::default()).ca_file(file)).await;
            assert!(lines.is_empty());
            let err = err.expect("an error");
            let text = err.to_string();
            assert_eq!(err.status_code(), 400, "{text}");
            assert!(text.contains(says), "{text}");
            assert!(text.contains(&file.display().to_string()), "{text}");
        }
    }
}
