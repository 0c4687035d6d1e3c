//! The TLS client configuration of a tail ([`TlsTrust`]), shared by the WebSocket and HTTP
//! transports: the system roots (built once), the certificates of a PEM CA file, or a
//! caller-made rustls configuration; and the clear message for a refused certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bistream_core::{ClientError, Status};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Which server certificates a `wss://`/`https://` tail trusts (ignored for `ws`/`http`).
#[derive(Clone, Default)]
pub(crate) enum TlsTrust {
    /// The operating system's roots.
    #[default]
    SystemRoots,
    /// Only the certificates in this PEM file, as roots (a private CA or a self-signed
    /// server certificate).
    CaFile(PathBuf),
    /// The caller's configuration as is.
    Custom(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsTrust::SystemRoots => f.write_str("SystemRoots"),
            TlsTrust::CaFile(p) => f.debug_tuple("CaFile").field(p).finish(),
            TlsTrust::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client config for `trust`; errors are 400 (a bad CA file) or 500 (TLS setup).
pub(crate) fn client_config(
    trust: &TlsTrust,
    context: &str,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    match trust {
        TlsTrust::SystemRoots => {
            static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
            CONFIG
                .get_or_init(system_roots)
                .clone()
                .map_err(|e| ClientError::with_context(Status::Internal, context, e))
        }
        TlsTrust::CaFile(path) => {
            ca_file(path).map_err(|e| ClientError::with_context(Status::InvalidInput, context, e))
        }
        TlsTrust::Custom(c) => Ok(Arc::clone(c)),
    }
}

fn with_roots(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn system_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable individual system certificates are skipped; no roots at all still lets
    // plain-text URLs work and makes TLS fail with a clear certificate error.
    let (_added, _ignored) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    with_roots(roots)
}

fn ca_file(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let shown = path.display();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {shown}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("bad PEM in CA file {shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable certificate in CA file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {shown} holds no certificate"));
    }
    with_roots(roots)
}

/// "the server's certificate is not trusted (…)" when `error`'s cause chain holds a rustls
/// certificate error, so a refused certificate is named as such on both transports.
pub(crate) fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(rustls::Error::InvalidCertificate(why)) = e.downcast_ref::<rustls::Error>() {
            return Some(format!(
                "the server's certificate is not trusted ({why:?}); trust its CA with a CA \
                 file (`--ca-file`, TailOptions::ca_file)"
            ));
        }
        // tokio-rustls and hyper wrap the rustls error in an io::Error.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = certificate_problem(inner) {
                    return Some(found);
                }
            }
        }
        cause = e.source();
    }
    None
}
