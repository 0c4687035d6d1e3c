//! The TLS side of a tail, on bistream-core's one TLS client setup
//! ([`bistream_core::tls`]): its errors as status-coded [`ClientError`]s, and the clear
//! message for a refused server certificate on both transports.

use std::sync::Arc;

use bistream_core::tls::{certificate_error, trust_nothing, TlsOptions};
use bistream_core::ClientError;

/// Which server certificates a `wss://`/`https://` tail trusts (ignored for `ws`/`http`).
pub(crate) type TlsTrust = TlsOptions;

/// The client config for `trust`; errors are 400 (a bad CA file) or 500 (TLS setup).
///
/// `tls_needed` is false for a plain `http://` request, which still has to give reqwest a
/// configuration: a machine without system roots then gets one that trusts nothing (so the
/// request works, and a redirect to `https://` fails), not an error.
pub(crate) fn client_config(
    trust: &TlsTrust,
    context: &str,
    tls_needed: bool,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let to_client = |e: bistream_core::tls::TlsConfigError| {
        ClientError::with_context(e.status(), context, e.to_string())
    };
    match bistream_core::tls::client_config(trust) {
        Ok(c) => Ok(c),
        Err(bistream_core::tls::TlsConfigError::NoSystemRoots { .. }) if !tls_needed => {
            trust_nothing().map_err(to_client)
        }
        Err(e) => Err(to_client(e)),
    }
}

/// "the server's certificate is not trusted (…)" when `error`'s cause chain holds a rustls
/// certificate error, so a refused certificate is named as such on both transports.
pub(crate) fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    certificate_error(error).map(|why| {
        format!(
            "the server's certificate is not trusted ({why:?}); trust its CA with a CA \
             file (`--ca-file`, TailOptions::ca_file)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bistream_core::Status;

    #[test]
    fn a_bad_ca_file_is_a_400_and_names_the_file() {
        let e =
            client_config(&TlsTrust::CaFile("/no/such/ca.pem".into()), "job j", true).unwrap_err();
        assert_eq!(e.status(), Status::InvalidInput);
        let text = e.to_string();
        assert!(
            text.contains("cannot read CA file") && text.contains("ca.pem"),
            "{text}"
        );
        // Plain HTTP still needs the CA file it was given to be usable: no silent fallback.
        assert!(client_config(&TlsTrust::CaFile("/no/such/ca.pem".into()), "j", false).is_err());
    }

    #[test]
    fn certificate_problems_are_named() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(inner);
        let text = certificate_problem(&io).unwrap();
        assert!(text.contains("not trusted (UnknownIssuer)"), "{text}");
        assert!(certificate_problem(&std::io::Error::other("refused")).is_none());
    }
}
