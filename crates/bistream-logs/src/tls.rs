//! The one TLS client configuration of this crate (ring provider, system roots), shared by
//! the WebSocket and HTTP transports.

use std::sync::{Arc, OnceLock};

use bistream_core::ClientError;

/// The shared client config, built once.
pub(crate) fn client_config(context: &str) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(build)
        .clone()
        .map_err(|e| ClientError::with_context(bistream_core::Status::Internal, context, e))
}

fn build() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable individual system certificates are skipped; no roots at all still lets
    // plain-text URLs work and makes TLS fail with a clear certificate error.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
