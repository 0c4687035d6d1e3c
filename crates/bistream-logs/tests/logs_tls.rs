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
use support::{collect, opts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

struct Cert {
    pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// A self-signed certificate for `names`.
fn self_signed(names: &[&str]) -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    Cert {
        pem: ck.cert.pem(),
        der: ck.cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
    }
}

/// Writes `pem` to a file of its own under the test target directory.
fn pem_file(name: &str, pem: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("logs-tls-{}-{name}.pem", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path
}

fn acceptor(cert: &Cert) -> TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der.clone()], cert.key.clone_key())
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(cert);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                for part in PARTS {
                    if ws.send(Message::binary(part.to_vec())).await.is_err() {
                        return;
                    }
                }
                let _ = ws.close(None).await;
            });
        }
    });
    addr
}

/// An https server answering any request with `PARTS` as chunks of a chunked body.
async fn https_server(cert: &Cert) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(cert);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
                    transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                    .to_vec();
                for part in PARTS {
                    out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                let _ = tls.write_all(&out).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
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
