//! The client's one error type, and the rule that decides which errors are worth a retry.

use std::io;
use std::time::Duration;

use bistream_core::{sanitize, UrlError};
use bistream_relay_proto::{is_fatal_close_code, CloseCode, DecodeError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use bistream_core::tls::TlsConfigError;

/// Everything that can go wrong in the relay client.
///
/// The type is `Clone` because one failure (for example a fatal close seen by the background
/// reconnect task) is reported to every caller that waits on the client afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The address is not a `ws://`, `wss://`, `http://` or `https://` URL with a host (as
    /// checked by [`bistream_core::http_to_websocket_url`]; the error shows the address
    /// sanitized).
    #[error(
        "invalid relay address: {0}; a relay address is ws://, wss://, http:// or https:// and \
         HOST[:PORT][/PATH]"
    )]
    InvalidAddress(#[from] UrlError),
    /// An extra handshake header has an invalid name or value (the value is never shown).
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given, sanitized.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A builder setting is out of range (backoff, queue capacity, ...).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// The TLS settings could not be turned into a TLS client (unreadable CA file, no roots, ...).
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] TlsConfigError),
    /// The TLS handshake failed (certificate not trusted, wrong host name, ...). Not retried.
    #[error("TLS handshake with the relay failed: {0}")]
    Tls(String),
    /// Opening the WebSocket or waiting for the registration reply took longer than the
    /// registration timeout. Retried.
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
        /// What the client was waiting for.
        during: &'static str,
    },
    /// A network error (connection refused or reset, DNS failure, ...). Retried.
    #[error("I/O error talking to the relay ({kind:?}): {message}")]
    Io {
        /// The kind of the underlying I/O error.
        kind: io::ErrorKind,
        /// Its text.
        message: String,
    },
    /// The relay (or a proxy in front of it) answered the WebSocket upgrade with an HTTP
    /// status other than 101. Retried for 5xx and 429, not retried otherwise.
    #[error("the relay refused the WebSocket upgrade with HTTP status {status}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
    },
    /// Any other WebSocket-level failure (protocol violation, oversized frame, ...). Retried.
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    /// The relay closed the connection with a close code that is not fatal (for example 1001
    /// when it shuts down, or 4000 after an undecodable message). Retried.
    #[error("the relay closed the connection with code {code}: {reason:?}")]
    Disconnected {
        /// The close code (1006 when the connection dropped without a close frame).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The relay closed the connection with 4001 (unauthorized), 4002 (forbidden) or 4004
    /// (the same UUID registered elsewhere). Never retried: the client stops for good.
    #[error("the relay closed the connection with fatal code {code}: {reason}")]
    FatalClose {
        /// 4001, 4002 or 4004.
        code: u16,
        /// The relay's reason text.
        reason: String,
    },
    /// The relay answered the registration with something other than a success reply.
    /// Not retried.
    #[error("the relay rejected the registration: {0}")]
    RegistrationRejected(String),
    /// A text frame from the relay could not be decoded as a relay message. The connection
    /// stays open; this is returned by one `recv()` call and the next call continues.
    #[error("undecodable message from the relay: {0}")]
    Decode(#[from] DecodeError),
    /// The message to send encodes to more bytes than the client's message size limit.
    #[error("the message encodes to {size} bytes, more than the limit of {limit} bytes")]
    MessageTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The connection broke after the message was handed to the socket, so whether the relay
    /// got it is unknown. The client reconnects; the caller decides whether to send again.
    #[error("the connection broke while sending: {0}")]
    SendFailed(String),
    /// The client was closed (by `close()` or by dropping it).
    #[error("the relay client is closed")]
    Closed,
}

impl RelayError {
    /// Whether a connection attempt that failed with this error should be tried again with
    /// backoff. Fatal closes (4001, 4002, 4004), rejected registrations, TLS and configuration
    /// problems and HTTP 4xx answers are not retried: they need a person to fix something.
    pub fn is_retryable(&self) -> bool {
        match self {
            RelayError::Timeout { .. }
            | RelayError::Io { .. }
            | RelayError::WebSocket(_)
            | RelayError::Disconnected { .. }
            | RelayError::SendFailed(_) => true,
            RelayError::HttpStatus { status } => *status == 429 || (500..600).contains(status),
            RelayError::InvalidAddress(_)
            | RelayError::InvalidHeader { .. }
            | RelayError::InvalidConfig(_)
            | RelayError::TlsConfig(_)
            | RelayError::Tls(_)
            | RelayError::FatalClose { .. }
            | RelayError::RegistrationRejected(_)
            | RelayError::Decode(_)
            | RelayError::MessageTooLarge { .. }
            | RelayError::Closed => false,
        }
    }

    /// Whether this is an authentication failure (close code 4001 or 4002).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            RelayError::FatalClose { code, .. }
                if *code == CloseCode::Unauthorized.code() || *code == CloseCode::Forbidden.code()
        )
    }

    /// The close error for a close frame (or its absence) received from the relay. The
    /// reason is untrusted text: it is sanitized here.
    pub(crate) fn from_close(code: u16, reason: String) -> RelayError {
        let reason = sanitize(&reason);
        if is_fatal_close_code(code) {
            RelayError::FatalClose { code, reason }
        } else {
            RelayError::Disconnected { code, reason }
        }
    }

    pub(crate) fn from_io(e: &io::Error) -> RelayError {
        // tokio-tungstenite reports TLS handshake failures as I/O errors wrapping a rustls
        // error. A certificate or version mismatch needs a person; a corrupted record or a
        // peer gone mid-handshake is network weather and stays a retryable I/O error.
        if let Some(inner) = e.get_ref() {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                if bistream_core::tls::is_permanent_tls_error(tls) {
                    return RelayError::Tls(tls.to_string());
                }
            }
        }
        RelayError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    pub(crate) fn from_ws(e: tokio_tungstenite::tungstenite::Error) -> RelayError {
        use tokio_tungstenite::tungstenite::Error as E;
        match e {
            E::Io(io) => RelayError::from_io(&io),
            E::Tls(t) => RelayError::Tls(t.to_string()),
            E::Http(resp) => RelayError::HttpStatus {
                status: resp.status().as_u16(),
            },
            E::ConnectionClosed | E::AlreadyClosed => RelayError::Disconnected {
                code: u16::from(WsCloseCode::Abnormal),
                reason: "connection closed".into(),
            },
            // build() checked the URL with the same library, so this is not expected.
            E::Url(u) => RelayError::InvalidConfig(format!("relay address: {u}")),
            other => RelayError::WebSocket(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fatal_codes_are_fatal() {
        for code in [4001u16, 4002, 4004] {
            let e = RelayError::from_close(code, "x".into());
            assert!(matches!(e, RelayError::FatalClose { .. }), "{code}");
            assert!(!e.is_retryable());
        }
        for code in [1000u16, 1001, 1006, 1009, 1011, 4000, 4003] {
            let e = RelayError::from_close(code, "x".into());
            assert!(matches!(e, RelayError::Disconnected { .. }), "{code}");
            assert!(e.is_retryable());
        }
        assert!(RelayError::from_close(4001, String::new()).is_auth_failure());
        assert!(!RelayError::from_close(4004, String::new()).is_auth_failure());
    }

    #[test]
    fn http_status_retry_rule() {
        assert!(RelayError::HttpStatus { status: 503 }.is_retryable());
        assert!(RelayError::HttpStatus { status: 429 }.is_retryable());
        assert!(!RelayError::HttpStatus { status: 401 }.is_retryable());
        assert!(!RelayError::HttpStatus { status: 404 }.is_retryable());
    }

    #[test]
    fn io_errors_are_retryable_but_tls_inside_io_is_not() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert!(RelayError::from_io(&refused).is_retryable());
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = RelayError::from_io(&tls);
        assert!(matches!(e, RelayError::Tls(_)), "{e:?}");
        assert!(!e.is_retryable());
        // A corrupted record is not a configuration problem: retried like other I/O errors.
        let corrupt = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        let e = RelayError::from_io(&corrupt);
        assert!(matches!(e, RelayError::Io { .. }), "{e:?}");
        assert!(e.is_retryable());
    }
}
