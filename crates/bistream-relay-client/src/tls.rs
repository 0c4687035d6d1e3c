//! TLS settings for `wss://` relays: the system roots (default), a CA file, a caller-made
//! rustls configuration, or no certificate verification at all (dangerous, for tests).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::RelayError;

/// How a `wss://` connection checks the relay's certificate. Ignored for `ws://`.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TlsOptions {
    /// Trust the operating system's root certificates (like Python's
    /// `ssl.create_default_context()`).
    #[default]
    SystemRoots,
    /// Trust only the CA certificates in this PEM file (for a private CA or a self-signed relay).
    CaFile(PathBuf),
    /// Use this rustls configuration as is (client certificates, custom roots, ...).
    Custom(Arc<ClientConfig>),
    /// **Dangerous**: accept any certificate for any host name. The connection is encrypted
    /// but anyone on the path can impersonate the relay and read the bearer token. Only for
    /// tests against a throw-away certificate; the equivalent of ProxyStore's
    /// `verify_certificate=False`.
    DangerAcceptInvalidCerts,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsOptions::SystemRoots => f.write_str("SystemRoots"),
            TlsOptions::CaFile(p) => f.debug_tuple("CaFile").field(p).finish(),
            TlsOptions::Custom(_) => f.write_str("Custom(..)"),
            TlsOptions::DangerAcceptInvalidCerts => f.write_str("DangerAcceptInvalidCerts"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn with_roots(roots: RootCertStore) -> Result<ClientConfig, RelayError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Builds the rustls configuration for these options.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, RelayError> {
    match opts {
        TlsOptions::Custom(c) => Ok(c.clone()),
        TlsOptions::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(RelayError::TlsConfig(format!(
                    "no usable system root certificates found ({} errors while loading); \
                     give a CA file instead",
                    found.errors.len()
                )));
            }
            Ok(Arc::new(with_roots(roots)?))
        }
        TlsOptions::CaFile(path) => {
            let iter = CertificateDer::pem_file_iter(path).map_err(|e| {
                RelayError::TlsConfig(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let mut roots = RootCertStore::empty();
            for cert in iter {
                let cert = cert.map_err(|e| {
                    RelayError::TlsConfig(format!("bad PEM in CA file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    RelayError::TlsConfig(format!(
                        "unusable certificate in CA file {}: {e}",
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(RelayError::TlsConfig(format!(
                    "CA file {} holds no certificate",
                    path.display()
                )));
            }
            Ok(Arc::new(with_roots(roots)?))
        }
        TlsOptions::DangerAcceptInvalidCerts => {
            let provider = provider();
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| RelayError::TlsConfig(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { provider }))
                .with_no_client_auth();
            Ok(Arc::new(config))
        }
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
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_are_specific() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(&TlsOptions::CaFile(missing)).unwrap_err();
        assert!(e.to_string().contains("cannot read CA file"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = client_config(&TlsOptions::CaFile(empty)).unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = client_config(&TlsOptions::CaFile(garbage)).unwrap_err();
        assert!(matches!(e, RelayError::TlsConfig(_)), "{e}");
    }

    #[test]
    fn ca_file_with_a_real_certificate_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.cert.pem()).unwrap();
        client_config(&TlsOptions::CaFile(path)).unwrap();
        client_config(&TlsOptions::DangerAcceptInvalidCerts).unwrap();
    }
}
