//! The one TLS client setup of every bistream part (relay client, rpc, logs), behind the
//! `tls` feature: which server certificates a `wss://`/`https://` client trusts
//! ([`TlsOptions`]: the system roots by default, a CA file whose certificates are also accepted
//! as exact pins so a self-signed server certificate made the usual way with `openssl req -x509`
//! works, a caller-made rustls configuration, or no verification at all, dangerous, for tests),
//! the rustls configuration built from it ([`client_config`]), its typed errors
//! ([`TlsConfigError`], with a [`Status`]) and the rustls certificate error buried in a
//! connection error's cause chain ([`certificate_error`]).
//!
//! ```
//! use bistream_core::tls::{client_config, TlsConfigError, TlsOptions};
//! use bistream_core::Status;
//!
//! let e = client_config(&TlsOptions::CaFile("/no/such/ca.pem".into())).unwrap_err();
//! assert!(matches!(e, TlsConfigError::CaFileUnreadable { .. }));
//! assert_eq!(e.status(), Status::InvalidInput);
//! assert!(client_config(&TlsOptions::DangerAcceptAnyCertificate).is_ok());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Status;

/// How a `wss://`/`https://` connection checks the server's certificate. Ignored for
/// `ws://`/`http://`.
///
/// The parts set it through their own builders (the relay client's `tls`, `ca_file`,
/// `tls_config` and `danger_accept_any_certificate`; the logs' `TailOptions::ca_file`; the
/// CLI's `--ca-file`); each call replaces the previous TLS setting, so the last one wins.
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
    /// but anyone on the path can impersonate the server and read the bearer token. Only for
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

impl TlsConfigError {
    /// The status of a client error caused by this: 400 for a bad CA file (the caller's
    /// input), 500 for a machine or library problem.
    pub fn status(&self) -> Status {
        match self {
            TlsConfigError::CaFileUnreadable { .. }
            | TlsConfigError::CaFileBadPem { .. }
            | TlsConfigError::CaFileUnusableCertificate { .. }
            | TlsConfigError::CaFileEmpty { .. } => Status::InvalidInput,
            TlsConfigError::NoSystemRoots { .. } | TlsConfigError::Setup(_) => Status::Internal,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn setup(e: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::Setup(e.to_string())
}

/// The operating system's root certificates, loaded once per process (loading them reads
/// and parses a few hundred files).
fn system_roots() -> Result<Arc<RootCertStore>, TlsConfigError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, TlsConfigError>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsConfigError::NoSystemRoots {
                    errors: found.errors.len(),
                });
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// Builds the rustls client configuration for these options.
///
/// # Errors
/// [`TlsConfigError`]: no system roots, an unusable CA file, or rustls refusing the setup.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match opts {
        TlsOptions::Custom(c) => return Ok(c.clone()),
        TlsOptions::SystemRoots => {
            WebPkiServerVerifier::builder_with_provider(system_roots()?, provider.clone())
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

/// A configuration that trusts no certificate at all: for a client that must be given one
/// but will not use TLS (a plain `http://` client, whose redirect to `https://` then fails
/// instead of trusting anything).
///
/// # Errors
/// [`TlsConfigError::Setup`] if rustls refuses the protocol versions.
pub fn trust_nothing() -> Result<Arc<ClientConfig>, TlsConfigError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls certificate error (an untrusted issuer, a wrong name, an expired certificate,
/// ...) somewhere in `error`'s cause chain, looking inside the `io::Error`s that tokio-rustls,
/// tungstenite and hyper wrap it in; `None` when the failure was not about the certificate.
pub fn certificate_error(error: &(dyn std::error::Error + 'static)) -> Option<CertificateError> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(rustls::Error::InvalidCertificate(why)) = e.downcast_ref::<rustls::Error>() {
            return Some(why.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = certificate_error(inner) {
                    return Some(found);
                }
            }
        }
        cause = e.source();
    }
    None
}

/// Whether a TLS failure is a mismatch of configuration that trying again will not fix (an
/// untrusted or wrong certificate, no common protocol version or cipher suite, the peer refusing
/// our certificate or parameters), as opposed to a broken or corrupted connection (a bad
/// record, a decrypt error, a peer that closed mid-handshake), which a client may retry.
///
/// ```
/// use rustls::{AlertDescription, CertificateError, Error};
/// use bistream_core::tls::is_permanent_tls_error;
/// assert!(is_permanent_tls_error(&Error::InvalidCertificate(CertificateError::UnknownIssuer)));
/// assert!(is_permanent_tls_error(&Error::AlertReceived(AlertDescription::HandshakeFailure)));
/// assert!(!is_permanent_tls_error(&Error::DecryptError));
/// assert!(!is_permanent_tls_error(&Error::AlertReceived(AlertDescription::InternalError)));
/// ```
pub fn is_permanent_tls_error(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    match error {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType
        | rustls::Error::PeerIncompatible(_)
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::NoApplicationProtocol
        | rustls::Error::BadMaxFragmentSize
        | rustls::Error::InconsistentKeys(_)
        | rustls::Error::InvalidEncryptedClientHello(_) => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::HandshakeFailure
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::ProtocolVersion
                | A::InsufficientSecurity
                | A::UnrecognisedName
                | A::CertificateRequired
                | A::NoApplicationProtocol
        ),
        _ => false,
    }
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
                    "accepted the server's certificate as an exact match of one in the CA file \
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
mod tests;
