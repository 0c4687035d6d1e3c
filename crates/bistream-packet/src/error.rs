//! Error types: [`DecodeError`] and [`EncodeError`] from the sans-IO codec, [`PacketError`] from
//! the connection, and [`HandlerError`], the error a request handler returns.

use bytes::Bytes;

/// Bytes received from the peer that are not a valid packet stream. Always fatal for the
/// receive side of a connection: after a framing error the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A varint longer than [`crate::varint::MAX_VARINT_LEN`] bytes.
    #[error("varint longer than {} bytes", crate::varint::MAX_VARINT_LEN)]
    VarintTooLong,
    /// A varint whose value does not fit in 64 bits.
    #[error("varint value does not fit in 64 bits")]
    VarintOverflow,
    /// A packet whose body length is above the configured maximum.
    #[error("packet body of {len} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// The announced body length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The header fields (tag, flags, channel, rq_type) run past the end of the packet body.
    #[error("packet body of {len} bytes ends inside its {field} field")]
    TruncatedBody {
        /// The body length.
        len: usize,
        /// The field that was cut short.
        field: &'static str,
    },
}

/// A packet that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Flags too large for the flags word (requests: below 2^62; responses: below 2^61).
    #[error("flags value {0} is too large for the wire (requests: < 2^62, responses: < 2^61)")]
    FlagsTooLarge(u64),
    /// `rq_type + 1` (the wire rq_type) overflows.
    #[error("rq_type {0} is too large (the wire carries rq_type + 1)")]
    RqTypeTooLarge(u64),
    /// The packet body would exceed the configured maximum packet size.
    #[error("packet body of {len} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// The body length the packet would have.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Why a connection stopped receiving; carried by [`PacketError::Closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent its EOF packet.
    PeerEof,
    /// The transport reached end of file at a packet boundary, without an EOF packet.
    TransportEof,
    /// The transport reached end of file in the middle of a packet.
    TruncatedPacket,
    /// The peer sent bytes that are not a valid packet stream, or a malformed EOF packet.
    Protocol(String),
    /// A read or write failed.
    Io(String),
    /// Bytes were queued for the peer and none could be written for this long: the peer
    /// does not read ([`crate::Config::write_stall_timeout`]).
    WriteStalled(std::time::Duration),
    /// A packet started arriving and was not complete within this time
    /// ([`crate::Config::packet_timeout`]).
    PacketTimeout(std::time::Duration),
    /// The connection was shut down locally ([`crate::PacketConnection::close`] or abort).
    Local,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerEof => f.write_str("the peer sent EOF"),
            CloseReason::TransportEof => f.write_str("the transport reached end of file"),
            CloseReason::TruncatedPacket => {
                f.write_str("the transport reached end of file in the middle of a packet")
            }
            CloseReason::Protocol(m) => write!(f, "protocol error: {m}"),
            CloseReason::Io(m) => write!(f, "i/o error: {m}"),
            CloseReason::WriteStalled(d) => write!(
                f,
                "no write progress for {d:?} with bytes queued: the peer does not read"
            ),
            CloseReason::PacketTimeout(d) => {
                write!(
                    f,
                    "a packet started arriving and was not complete within {d:?}"
                )
            }
            CloseReason::Local => f.write_str("the connection was closed locally"),
        }
    }
}

/// Errors of [`crate::PacketConnection`] requests.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The connection ended (or was closing) before this request got its response.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The peer answered with `ok == false` (returned by `call`, not by `submit`). The payload
    /// is the peer's reason, e.g. `exception during handler`.
    #[error("request failed: {}", String::from_utf8_lossy(.payload))]
    Failed {
        /// The response flags.
        flags: u64,
        /// The peer's reason text.
        payload: Bytes,
    },
    /// The request cannot be encoded (flags or rq_type too large, payload above the maximum).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The response was ok but `decode_response` rejected it.
    #[error("cannot decode the response: {0}")]
    DecodeResponse(#[source] HandlerError),
    /// Opening an on-demand connection failed.
    #[error("cannot open the connection: {0}")]
    Connect(#[source] std::io::Error),
    /// The per-channel tag counter is exhausted (2^64 requests on one channel).
    #[error("no more tags on channel {0}")]
    TagsExhausted(u64),
}

impl PacketError {
    /// The failure reason text when the peer answered `ok == false`.
    pub fn failure_reason(&self) -> Option<String> {
        match self {
            PacketError::Failed { payload, .. } => {
                Some(String::from_utf8_lossy(payload).into_owned())
            }
            _ => None,
        }
    }
}

/// The error type of request handlers and typed-request decoders: any error, boxed. Its text is
/// logged locally; the peer only sees the failure reason `exception during handler`, as in
/// Python, where the exception text is never transmitted.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;
