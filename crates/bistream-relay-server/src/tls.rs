//! TLS (wss://) from PEM files with rustls and the ring provider. As in ProxyStore, the key is
//! read from the certificate file when no key file is given; no client certificates are asked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why the TLS files could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No readable PEM private key.
    #[error("cannot read a PEM private key from {}: {source}", path.display())]
    Key {
        /// The file read.
        path: PathBuf,
        /// The PEM error.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file could not be read or holds a bad PEM block.
    #[error("cannot read certificates from {}: {source}", path.display())]
    Certs {
        /// The file read.
        path: PathBuf,
        /// The PEM error.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no PEM certificate found in {}", path.display())]
    NoCert {
        /// The file read.
        path: PathBuf,
    },
    /// rustls refused the certificate and key (they do not match, unsupported key type, ...).
    #[error("the certificate in {} does not match the key: {source}", path.display())]
    Mismatch {
        /// The certificate file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The TLS provider could not be set up.
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
}

/// Builds the acceptor, with errors naming the file and what is wrong with it.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(&files.certfile)?;
    let key_path = files.keyfile.as_deref().unwrap_or(&files.certfile);
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.to_path_buf(),
        source,
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Setup)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|source| TlsError::Mismatch {
        path: files.certfile.clone(),
        source,
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs_err = |source| TlsError::Certs {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(certs_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(certs_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
