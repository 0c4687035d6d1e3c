//! TLS (wss://) from PEM files with rustls and the ring provider. As in ProxyStore, the key is
//! read from the certificate file when no key file is given; no client certificates are asked.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Builds the acceptor, with errors naming the file and what is wrong with it.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs = read_certs(&files.certfile)?;
    let key_path = files.keyfile.as_deref().unwrap_or(&files.certfile);
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "cannot read a PEM private key from {}: {e}",
            key_path.display()
        )
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        format!(
            "the certificate in {} does not match the key: {e}",
            files.certfile.display()
        )
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate found in {}", path.display()));
    }
    Ok(certs)
}
