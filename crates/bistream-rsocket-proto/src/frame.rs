//! RSocket 1.0 frames and their binary codec. A frame here is what follows the transport's
//! framing (the TCP 3-byte length prefix, or one WebSocket binary message): a 6-byte header
//! (stream id, 6-bit type, 10-bit flags) and the type's fields. Decoding never panics and never
//! trusts a length field; payloads are `Bytes` slices of the input (no copy).

use bytes::Bytes;

use crate::ErrorCode;

mod decode;
mod encode;

pub use decode::decode;
pub use encode::{encode, encode_into};

/// Flag: ignore this frame if not understood.
pub const FLAG_IGNORE: u16 = 0x200;
/// Flag: metadata present.
pub const FLAG_METADATA: u16 = 0x100;
/// Flag: FOLLOWS (fragments), RESUME (SETUP) or RESPOND (KEEPALIVE).
pub const FLAG_FOLLOWS: u16 = 0x80;
/// Flag: COMPLETE (PAYLOAD, REQUEST_CHANNEL) or LEASE (SETUP).
pub const FLAG_COMPLETE: u16 = 0x40;
/// Flag: NEXT (PAYLOAD).
pub const FLAG_NEXT: u16 = 0x20;

/// The frame types (6 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// 0x01
    Setup = 0x01,
    /// 0x02
    Lease = 0x02,
    /// 0x03
    Keepalive = 0x03,
    /// 0x04
    RequestResponse = 0x04,
    /// 0x05
    RequestFnf = 0x05,
    /// 0x06
    RequestStream = 0x06,
    /// 0x07
    RequestChannel = 0x07,
    /// 0x08
    RequestN = 0x08,
    /// 0x09
    Cancel = 0x09,
    /// 0x0A
    Payload = 0x0A,
    /// 0x0B
    Error = 0x0B,
    /// 0x0C
    MetadataPush = 0x0C,
    /// 0x0D
    Resume = 0x0D,
    /// 0x0E
    ResumeOk = 0x0E,
}

/// Metadata (optional) and data of a request or payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    /// Metadata, when the M flag is set (may be empty).
    pub metadata: Option<Bytes>,
    /// Data (the rest of the frame).
    pub data: Bytes,
}

impl Payload {
    /// A payload.
    pub fn new(metadata: Option<Bytes>, data: Bytes) -> Self {
        Self { metadata, data }
    }

    /// Data only.
    pub fn data(data: impl Into<Bytes>) -> Self {
        Self {
            metadata: None,
            data: data.into(),
        }
    }

    /// Bytes of metadata plus data.
    pub fn len(&self) -> usize {
        self.metadata.as_ref().map_or(0, Bytes::len) + self.data.len()
    }

    /// No metadata and no data.
    pub fn is_empty(&self) -> bool {
        self.metadata.is_none() && self.data.is_empty()
    }
}

/// The SETUP frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Protocol version (major, minor).
    pub version: (u16, u16),
    /// Client keepalive interval in milliseconds (31 bits).
    pub keepalive_ms: u32,
    /// Max lifetime without a frame from the peer, in milliseconds (31 bits).
    pub max_lifetime_ms: u32,
    /// Resume token (R flag) when the client asks for resumption.
    pub resume_token: Option<Bytes>,
    /// L flag: the client asks for LEASE.
    pub lease: bool,
    /// Metadata MIME type (ASCII).
    pub metadata_mime: String,
    /// Data MIME type (ASCII).
    pub data_mime: String,
    /// Setup payload.
    pub payload: Payload,
}

/// One RSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SETUP (stream 0).
    Setup(Setup),
    /// LEASE (stream 0).
    Lease {
        /// Validity in milliseconds.
        ttl_ms: u32,
        /// Number of requests allowed.
        requests: u32,
        /// Metadata.
        metadata: Option<Bytes>,
    },
    /// KEEPALIVE (stream 0).
    Keepalive {
        /// R flag: the peer must answer.
        respond: bool,
        /// Last received position (63 bits).
        position: u64,
        /// Data.
        data: Bytes,
    },
    /// REQUEST_RESPONSE.
    RequestResponse {
        /// Stream id.
        stream: u32,
        /// More fragments follow.
        follows: bool,
        /// Request payload.
        payload: Payload,
    },
    /// REQUEST_FNF.
    RequestFnf {
        /// Stream id.
        stream: u32,
        /// More fragments follow.
        follows: bool,
        /// Request payload.
        payload: Payload,
    },
    /// REQUEST_STREAM.
    RequestStream {
        /// Stream id.
        stream: u32,
        /// More fragments follow.
        follows: bool,
        /// Initial request N (31 bits).
        initial_n: u32,
        /// Request payload.
        payload: Payload,
    },
    /// REQUEST_CHANNEL.
    RequestChannel {
        /// Stream id.
        stream: u32,
        /// More fragments follow.
        follows: bool,
        /// C flag: the requester's side is complete with this payload.
        complete: bool,
        /// Initial request N (31 bits).
        initial_n: u32,
        /// Request payload (the channel's first item).
        payload: Payload,
    },
    /// REQUEST_N.
    RequestN {
        /// Stream id.
        stream: u32,
        /// Items requested (31 bits).
        n: u32,
    },
    /// CANCEL.
    Cancel {
        /// Stream id.
        stream: u32,
    },
    /// PAYLOAD.
    Payload {
        /// Stream id.
        stream: u32,
        /// More fragments follow.
        follows: bool,
        /// C flag: the stream is complete.
        complete: bool,
        /// N flag: the payload is an item.
        next: bool,
        /// Payload.
        payload: Payload,
    },
    /// ERROR (stream 0: connection; else the stream).
    Error {
        /// Stream id.
        stream: u32,
        /// Code.
        code: ErrorCode,
        /// UTF-8 message (invalid UTF-8 is replaced when decoding).
        message: String,
    },
    /// METADATA_PUSH (stream 0).
    MetadataPush {
        /// Metadata (the whole rest of the frame).
        metadata: Bytes,
    },
    /// RESUME (stream 0).
    Resume {
        /// Version.
        version: (u16, u16),
        /// Resume token.
        token: Bytes,
        /// Last received server position.
        last_received_server: u64,
        /// First available client position.
        first_available_client: u64,
    },
    /// RESUME_OK (stream 0).
    ResumeOk {
        /// Last received client position.
        last_received_client: u64,
    },
    /// A frame type we do not know (EXT or reserved); the I flag says whether it may be ignored.
    Unknown {
        /// Stream id.
        stream: u32,
        /// Raw 6-bit type.
        frame_type: u8,
        /// I flag.
        ignore: bool,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short for its type.
    #[error("frame truncated: {0}")]
    Truncated(&'static str),
    /// A length field points past the end.
    #[error("{0} length {1} exceeds the frame")]
    BadLength(&'static str, usize),
    /// The frame must (or must not) be on stream 0.
    #[error("{0:?} on stream {1} is not allowed")]
    WrongStream(FrameType, u32),
    /// A field holds a value the spec forbids.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

const HEADER: usize = 6;
const STREAM_MASK: u32 = 0x7FFF_FFFF;
const POS_MASK: u64 = 0x7FFF_FFFF_FFFF_FFFF;

impl Frame {
    /// The stream id (0 for connection frames).
    pub fn stream(&self) -> u32 {
        match self {
            Self::Setup(_)
            | Self::Lease { .. }
            | Self::Keepalive { .. }
            | Self::MetadataPush { .. }
            | Self::Resume { .. }
            | Self::ResumeOk { .. } => 0,
            Self::RequestResponse { stream, .. }
            | Self::RequestFnf { stream, .. }
            | Self::RequestStream { stream, .. }
            | Self::RequestChannel { stream, .. }
            | Self::RequestN { stream, .. }
            | Self::Cancel { stream }
            | Self::Payload { stream, .. }
            | Self::Error { stream, .. }
            | Self::Unknown { stream, .. } => *stream,
        }
    }

    /// The F flag of a fragmentable frame.
    pub fn follows(&self) -> bool {
        match self {
            Self::RequestResponse { follows, .. }
            | Self::RequestFnf { follows, .. }
            | Self::RequestStream { follows, .. }
            | Self::RequestChannel { follows, .. }
            | Self::Payload { follows, .. } => *follows,
            _ => false,
        }
    }

    /// The payload of a fragmentable frame.
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Self::RequestResponse { payload, .. }
            | Self::RequestFnf { payload, .. }
            | Self::RequestStream { payload, .. }
            | Self::RequestChannel { payload, .. }
            | Self::Payload { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// Exact encoded length (without any transport prefix).
    pub fn encoded_len(&self) -> usize {
        fn pl(p: &Payload) -> usize {
            p.metadata.as_ref().map_or(0, |m| 3 + m.len()) + p.data.len()
        }
        HEADER
            + match self {
                Self::Setup(s) => {
                    12 + s.resume_token.as_ref().map_or(0, |t| 2 + t.len())
                        + 2
                        + s.metadata_mime.len()
                        + s.data_mime.len()
                        + pl(&s.payload)
                }
                Self::Lease { metadata, .. } => 8 + metadata.as_ref().map_or(0, Bytes::len),
                Self::Keepalive { data, .. } => 8 + data.len(),
                Self::RequestResponse { payload, .. } | Self::RequestFnf { payload, .. } => {
                    pl(payload)
                }
                Self::RequestStream { payload, .. } | Self::RequestChannel { payload, .. } => {
                    4 + pl(payload)
                }
                Self::RequestN { .. } => 4,
                Self::Cancel { .. } | Self::Unknown { .. } => 0,
                Self::Payload { payload, .. } => pl(payload),
                Self::Error { message, .. } => 4 + message.len(),
                Self::MetadataPush { metadata } => metadata.len(),
                Self::Resume { token, .. } => 4 + 2 + token.len() + 16,
                Self::ResumeOk { .. } => 8,
            }
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
