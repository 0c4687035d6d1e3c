//! Typed errors of the rpc API ([`RpcError`]), the error a handler returns ([`HandlerError`]),
//! and the observable connection states ([`ConnState`]).

use bistream_rpc_proto::ErrorCode;

/// Why a call, a stream or the connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The connection was closed (WebSocket close frame, or a clean end of a byte stream).
    #[error("connection closed: {} (code={})", reason_or(.reason, "no reason given"), code_or(.code))]
    Closed {
        /// Close code, if the transport has one.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// The connection was lost (I/O error, abrupt end, keepalive timeout).
    #[error("connection lost: {0}")]
    Lost(String),
    /// The peer broke the protocol for this call or connection.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the call's timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The peer answered an `error` frame.
    #[error("remote error {code}: {message}")]
    Remote {
        /// `data.code` (one of the documented codes, or whatever the peer sent).
        code: String,
        /// `data.message`.
        message: String,
    },
    /// The call was cancelled locally (its handle was dropped, or the stream was closed).
    #[error("cancelled")]
    Cancelled,
    /// A local limit refused the call (too many pending calls).
    #[error("local limit: {0}")]
    Limit(String),
    /// A value could not be (de)serialized, or request data was not a JSON object.
    #[error("invalid data: {0}")]
    Data(String),
    /// Connecting failed.
    #[error("connect failed: {0}")]
    Connect(String),
}

fn reason_or<'a>(r: &'a str, d: &'a str) -> &'a str {
    if r.is_empty() {
        d
    } else {
        r
    }
}

fn code_or(c: &Option<u16>) -> String {
    c.map_or_else(|| "none".into(), |c| c.to_string())
}

impl RpcError {
    /// For [`RpcError::Remote`]: the code when it is a documented one.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => ErrorCode::parse(code),
            _ => None,
        }
    }
}

/// What a handler returns on failure: becomes an `error` frame with this code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    /// The wire code.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
}

impl HandlerError {
    /// An error with any code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `handler_failed`.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::HandlerFailed, message.to_string())
    }

    /// `invalid_request`.
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidRequest, message.to_string())
    }
}

/// Connection states, observable through [`crate::Connection::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Transport being set up.
    Connecting,
    /// Frames flow.
    Open,
    /// A close was requested or started; no new calls.
    Closing,
    /// Ended; every call has failed with the cause.
    Closed,
}
