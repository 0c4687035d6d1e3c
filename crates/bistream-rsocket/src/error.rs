//! [`RsError`]: why an RSocket call, stream or connection failed.

use bistream_rsocket_proto::ErrorCode;

/// Why a call, a stream or the connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsError {
    /// The peer answered an ERROR frame.
    #[error("remote error {code}: {message}")]
    Remote {
        /// The ERROR code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The connection ended cleanly (or was closed locally).
    #[error("connection closed: {0}")]
    Closed(String),
    /// The connection was lost (I/O error, keepalive timeout, connection ERROR).
    #[error("connection lost: {0}")]
    Lost(String),
    /// No answer within the call's timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The call was cancelled locally.
    #[error("cancelled")]
    Cancelled,
    /// A value could not be (de)serialized as JSON.
    #[error("invalid data: {0}")]
    Data(String),
    /// Connecting failed.
    #[error("connect failed: {0}")]
    Connect(String),
    /// A local limit refused the call.
    #[error("local limit: {0}")]
    Limit(String),
    /// The peer broke the protocol on this stream.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl RsError {
    /// The ERROR code of a [`RsError::Remote`].
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}
