//! TLS settings for `wss://` relays: the system roots (default), a CA file (whose certificates
//! are also accepted as exact pins, so a self-signed server certificate made the usual way with
//! `openssl req -x509` works), a caller-made rustls configuration, or no certificate
//! verification at all (dangerous, for tests).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// How a `wss://` connection checks the relay's certificate. Ignored for `ws://`.
///
/// Set it with [`RelayClientBuilder::tls`](crate::RelayClientBuilder::tls) or one of the
/// builder's shortcuts ([`ca_file`](crate::RelayClientBuilder::ca_file),
/// [`tls_config`](crate::RelayClientBuilder::tls_config),
/// [`danger_accept_any_certificate`](crate::RelayClientBuilder::danger_accept_any_certificate));
/// each call replaces the previous TLS setting, so the last one wins.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TlsOptions {
    /// Trust the operating system's root certificates (like Python's
    /// `ssl.create_default_context()`). The default.
    #[default]
    SystemRoots,
    /// Trust only the certificates in this PEM file, in two ways:
    /// * as certificate authorities: a server certificate that chains up to one of them is
    ///   accepted (a private CA);
    /// * as exact pins: a server certificate that is byte-for-byte one of them is accepted
    ///   even when it is not usable as a CA-issued end-entity certificate. This is the
    ///   self-signed certificate that `openssl req -x509 -newkey ... -nodes` makes (it carries
    ///   `CA:TRUE`, which plain WebPKI checking refuses as a server certificate, while Python's
    ///   `ssl` accepts it). The host name, the validity dates and the handshake signature are
    ///   still checked.
    ///
    /// The system roots are not used.
    CaFile(PathBuf),
    /// Use this rustls configuration as is (client certificates, custom roots, ...).
    Custom(Arc<ClientConfig>),
    /// **Dangerous**: accept any certificate for any host name. The connection is encrypted
    /// but anyone on the path can impersonate the relay and read the bearer token. Only for
    /// tests against a throw-away certificate; the equivalent of ProxyStore's
    /// `verify_certificate=False`. (The handshake signature is still checked against the
    /// presented certificate's key.)
    DangerAcceptAnyCertificate,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsOptions::SystemRoots => f.write_str("SystemRoots"),
            TlsOptions::CaFile(p) => f.debug_tuple("CaFile").field(p).finish(),
            TlsOptions::Custom(_) => f.write_str("Custom(..)"),
            TlsOptions::DangerAcceptAnyCertificate => f.write_str("DangerAcceptAnyCertificate"),
        }
    }
}

/// Why the TLS settings could not be turned into a TLS client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// [`TlsOptions::SystemRoots`], but the system has no usable root certificate.
    #[error(
        "no usable system root certificates found ({errors} errors while loading); \
         give a CA file instead"
    )]
    NoSystemRoots {
        /// How many errors the loader reported.
        errors: usize,
    },
    /// The CA file could not be read.
    #[error("cannot read CA file {path:?}: {reason}")]
    CaFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The CA file holds a malformed PEM block.
    #[error("bad PEM in CA file {path:?}: {reason}")]
    CaFileBadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// A certificate in the CA file could not be used as a trust anchor.
    #[error("unusable certificate in CA file {path:?}: {reason}")]
    CaFileUnusableCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The CA file holds no `CERTIFICATE` block.
    #[error("CA file {path:?} holds no certificate")]
    CaFileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the configuration (protocol versions, verifier).
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn setup(e: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::Setup(e.to_string())
}

/// Builds the rustls configuration for these options.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match opts {
        TlsOptions::Custom(c) => return Ok(c.clone()),
        TlsOptions::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsConfigError::NoSystemRoots {
                    errors: found.errors.len(),
                });
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(setup)?
        }
        TlsOptions::CaFile(path) => Arc::new(CaFileVerifier::load(path, provider.clone())?),
        TlsOptions::DangerAcceptAnyCertificate => Arc::new(AcceptAnyCert {
            provider: provider.clone(),
        }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads every certificate of a PEM file.
fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    // Read first, so an unreadable file is told apart from malformed PEM.
    let bytes = std::fs::read(path).map_err(|e| TlsConfigError::CaFileUnreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(cert.map_err(|e| TlsConfigError::CaFileBadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
    }
    if certs.is_empty() {
        return Err(TlsConfigError::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// [`TlsOptions::CaFile`]: WebPKI path checking against the file's certificates as roots, and
/// when that fails, acceptance of a server certificate identical to one in the file.
#[derive(Debug)]
struct CaFileVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl CaFileVerifier {
    fn load(path: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsConfigError> {
        let pinned = read_pem_certs(path)?;
        let mut roots = RootCertStore::empty();
        for cert in &pinned {
            roots
                .add(cert.clone())
                .map_err(|e| TlsConfigError::CaFileUnusableCertificate {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(setup)?;
        Ok(CaFileVerifier { webpki, pinned })
    }
}

/// The checks left for a pinned certificate: it names the server and is within its dates.
fn verify_pinned(
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let parsed = ParsedCertificate::try_from(end_entity)?;
    verify_server_name(&parsed, server_name)?;
    let bad = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| bad())?;
    let secs = i64::try_from(now.as_secs()).map_err(|_| bad())?;
    let now = x509_parser::time::ASN1Time::from_timestamp(secs).map_err(|_| bad())?;
    let validity = cert.validity();
    if now < validity.not_before {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

impl ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => Ok(ok),
            Err(e) => {
                if !self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref())
                {
                    return Err(e);
                }
                verify_pinned(end_entity, server_name, now)?;
                tracing::debug!(
                    "accepted the relay's certificate as an exact match of one in the CA file \
                     (WebPKI alone said: {e})"
                );
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts any certificate chain and host name, but still checks that the handshake
/// signatures were made with the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
