//! Local TLS test servers with self-signed certificates (rcgen), shared by the logs tests
//! (`logs_tls`) and the CLI's (`crates/bistream/tests/logs_cli.rs` includes the support module by path).
//! It uses only dev-dependencies both crates have: rcgen, rustls, tokio-rustls, tokio.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A certificate and its key.
pub struct Cert {
    /// PEM, for a CA file.
    pub pem: String,
    /// DER, for a custom root store.
    pub der: rustls::pki_types::CertificateDer<'static>,
    /// The private key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// A self-signed certificate for `names`.
pub fn self_signed(names: &[&str]) -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    Cert {
        pem: ck.cert.pem(),
        der: ck.cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
    }
}

/// A TLS acceptor presenting `cert`.
pub fn acceptor(cert: &Cert) -> TlsAcceptor {
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

/// A TLS server on 127.0.0.1 port 0: every connection whose handshake succeeds goes to
/// `handle` (in a task of its own); failed handshakes are dropped.
pub async fn tls_server<F, Fut>(cert: &Cert, handle: F) -> SocketAddr
where
    F: Fn(TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(cert);
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handle(tls).await;
                }
            });
        }
    });
    addr
}

/// An https server answering any request with 200 and `parts` as the chunks of a chunked
/// body, then closing.
pub async fn https_server(cert: &Cert, parts: &'static [&'static [u8]]) -> SocketAddr {
    tls_server(cert, move |mut tls| async move {
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
        for part in parts {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        let _ = tls.write_all(&out).await;
        let _ = tls.shutdown().await;
    })
    .await
}
