//! RSocket 1.0 frames and their binary codec. A frame here is what follows the transport's
//! framing (the TCP 3-byte length prefix, or one WebSocket binary message): a 6-byte header
//! (stream id, 6-bit type, 10-bit flags) and the type's fields. Decoding never panics and never
//! trusts a length field; payloads are `Bytes` slices of the input (no copy).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ErrorCode;

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

fn meta_flag(p: &Payload) -> u16 {
    if p.metadata.is_some() {
        FLAG_METADATA
    } else {
        0
    }
}

fn flag(on: bool, f: u16) -> u16 {
    if on {
        f
    } else {
        0
    }
}

fn header(out: &mut BytesMut, stream: u32, t: u8, flags: u16) {
    out.put_u32(stream & STREAM_MASK);
    out.put_u16((u16::from(t) << 10) | (flags & 0x3FF));
}

fn put_payload(out: &mut BytesMut, p: &Payload) {
    if let Some(m) = &p.metadata {
        let n = m.len().min(crate::MAX_FRAME_LEN);
        out.put_uint(n as u64, 3);
        out.put_slice(&m[..n]);
    }
    out.put_slice(&p.data);
}

/// Encodes `f` into a new buffer.
pub fn encode(f: &Frame) -> BytesMut {
    let mut out = BytesMut::with_capacity(f.encoded_len());
    encode_into(f, &mut out);
    out
}

/// Appends `f`'s encoding to `out`. Metadata longer than 16 MiB - 1 cannot be represented and
/// is cut (callers fragment long payloads first, see [`crate::fragment`]).
pub fn encode_into(f: &Frame, out: &mut BytesMut) {
    match f {
        Frame::Setup(s) => {
            let flags = meta_flag(&s.payload)
                | flag(s.resume_token.is_some(), FLAG_FOLLOWS)
                | flag(s.lease, FLAG_COMPLETE);
            header(out, 0, FrameType::Setup as u8, flags);
            out.put_u16(s.version.0);
            out.put_u16(s.version.1);
            out.put_u32(s.keepalive_ms & STREAM_MASK);
            out.put_u32(s.max_lifetime_ms & STREAM_MASK);
            if let Some(t) = &s.resume_token {
                out.put_u16(t.len().min(usize::from(u16::MAX)) as u16);
                out.put_slice(&t[..t.len().min(usize::from(u16::MAX))]);
            }
            for mime in [&s.metadata_mime, &s.data_mime] {
                let n = mime.len().min(255);
                out.put_u8(n as u8);
                out.put_slice(&mime.as_bytes()[..n]);
            }
            put_payload(out, &s.payload);
        }
        Frame::Lease {
            ttl_ms,
            requests,
            metadata,
        } => {
            header(
                out,
                0,
                FrameType::Lease as u8,
                flag(metadata.is_some(), FLAG_METADATA),
            );
            out.put_u32(ttl_ms & STREAM_MASK);
            out.put_u32(requests & STREAM_MASK);
            if let Some(m) = metadata {
                out.put_slice(m);
            }
        }
        Frame::Keepalive {
            respond,
            position,
            data,
        } => {
            header(
                out,
                0,
                FrameType::Keepalive as u8,
                flag(*respond, FLAG_FOLLOWS),
            );
            out.put_u64(position & POS_MASK);
            out.put_slice(data);
        }
        Frame::RequestResponse {
            stream,
            follows,
            payload,
        } => {
            let flags = meta_flag(payload) | flag(*follows, FLAG_FOLLOWS);
            header(out, *stream, FrameType::RequestResponse as u8, flags);
            put_payload(out, payload);
        }
        Frame::RequestFnf {
            stream,
            follows,
            payload,
        } => {
            let flags = meta_flag(payload) | flag(*follows, FLAG_FOLLOWS);
            header(out, *stream, FrameType::RequestFnf as u8, flags);
            put_payload(out, payload);
        }
        Frame::RequestStream {
            stream,
            follows,
            initial_n,
            payload,
        } => {
            let flags = meta_flag(payload) | flag(*follows, FLAG_FOLLOWS);
            header(out, *stream, FrameType::RequestStream as u8, flags);
            out.put_u32(initial_n & STREAM_MASK);
            put_payload(out, payload);
        }
        Frame::RequestChannel {
            stream,
            follows,
            complete,
            initial_n,
            payload,
        } => {
            let flags =
                meta_flag(payload) | flag(*follows, FLAG_FOLLOWS) | flag(*complete, FLAG_COMPLETE);
            header(out, *stream, FrameType::RequestChannel as u8, flags);
            out.put_u32(initial_n & STREAM_MASK);
            put_payload(out, payload);
        }
        Frame::RequestN { stream, n } => {
            header(out, *stream, FrameType::RequestN as u8, 0);
            out.put_u32(n & STREAM_MASK);
        }
        Frame::Cancel { stream } => header(out, *stream, FrameType::Cancel as u8, 0),
        Frame::Payload {
            stream,
            follows,
            complete,
            next,
            payload,
        } => {
            let flags = meta_flag(payload)
                | flag(*follows, FLAG_FOLLOWS)
                | flag(*complete, FLAG_COMPLETE)
                | flag(*next, FLAG_NEXT);
            header(out, *stream, FrameType::Payload as u8, flags);
            put_payload(out, payload);
        }
        Frame::Error {
            stream,
            code,
            message,
        } => {
            header(out, *stream, FrameType::Error as u8, 0);
            out.put_u32(code.code());
            out.put_slice(message.as_bytes());
        }
        Frame::MetadataPush { metadata } => {
            header(out, 0, FrameType::MetadataPush as u8, FLAG_METADATA);
            out.put_slice(metadata);
        }
        Frame::Resume {
            version,
            token,
            last_received_server,
            first_available_client,
        } => {
            header(out, 0, FrameType::Resume as u8, 0);
            out.put_u16(version.0);
            out.put_u16(version.1);
            let n = token.len().min(usize::from(u16::MAX));
            out.put_u16(n as u16);
            out.put_slice(&token[..n]);
            out.put_u64(last_received_server & POS_MASK);
            out.put_u64(first_available_client & POS_MASK);
        }
        Frame::ResumeOk {
            last_received_client,
        } => {
            header(out, 0, FrameType::ResumeOk as u8, 0);
            out.put_u64(last_received_client & POS_MASK);
        }
        Frame::Unknown {
            stream,
            frame_type,
            ignore,
        } => header(out, *stream, *frame_type & 0x3F, flag(*ignore, FLAG_IGNORE)),
    }
}

fn need(b: &Bytes, n: usize, what: &'static str) -> Result<(), DecodeError> {
    if b.remaining() < n {
        return Err(DecodeError::Truncated(what));
    }
    Ok(())
}

/// Metadata (24-bit length when `M`) then data: the rest of the frame.
fn take_payload(b: &mut Bytes, has_meta: bool) -> Result<Payload, DecodeError> {
    let metadata = if has_meta {
        need(b, 3, "metadata length")?;
        let n = b.get_uint(3) as usize;
        if n > b.remaining() {
            return Err(DecodeError::BadLength("metadata", n));
        }
        Some(b.split_to(n))
    } else {
        None
    };
    Ok(Payload {
        metadata,
        data: std::mem::take(b),
    })
}

fn ascii(b: &mut Bytes, what: &'static str) -> Result<String, DecodeError> {
    need(b, 1, what)?;
    let n = usize::from(b.get_u8());
    if n > b.remaining() {
        return Err(DecodeError::BadLength(what, n));
    }
    let s = b.split_to(n);
    if !s.is_ascii() {
        return Err(DecodeError::Invalid(what));
    }
    Ok(String::from_utf8_lossy(&s).into_owned())
}

/// Decodes one frame (the whole buffer).
pub fn decode(mut b: Bytes) -> Result<Frame, DecodeError> {
    need(&b, HEADER, "header")?;
    let stream = b.get_u32() & STREAM_MASK;
    let tf = b.get_u16();
    let t = (tf >> 10) as u8;
    let flags = tf & 0x3FF;
    let m = flags & FLAG_METADATA != 0;
    let follows = flags & FLAG_FOLLOWS != 0;
    let c = flags & FLAG_COMPLETE != 0;
    let conn_only = |ft: FrameType| {
        if stream != 0 {
            Err(DecodeError::WrongStream(ft, stream))
        } else {
            Ok(())
        }
    };
    let stream_only = |ft: FrameType| {
        if stream == 0 {
            Err(DecodeError::WrongStream(ft, stream))
        } else {
            Ok(())
        }
    };
    let f = match t {
        0x01 => {
            conn_only(FrameType::Setup)?;
            need(&b, 12, "SETUP")?;
            let version = (b.get_u16(), b.get_u16());
            let keepalive_ms = b.get_u32() & STREAM_MASK;
            let max_lifetime_ms = b.get_u32() & STREAM_MASK;
            let resume_token = if follows {
                need(&b, 2, "resume token length")?;
                let n = usize::from(b.get_u16());
                if n > b.remaining() {
                    return Err(DecodeError::BadLength("resume token", n));
                }
                Some(b.split_to(n))
            } else {
                None
            };
            let metadata_mime = ascii(&mut b, "metadata MIME type")?;
            let data_mime = ascii(&mut b, "data MIME type")?;
            Frame::Setup(Setup {
                version,
                keepalive_ms,
                max_lifetime_ms,
                resume_token,
                lease: c,
                metadata_mime,
                data_mime,
                payload: take_payload(&mut b, m)?,
            })
        }
        0x02 => {
            conn_only(FrameType::Lease)?;
            need(&b, 8, "LEASE")?;
            let ttl_ms = b.get_u32() & STREAM_MASK;
            let requests = b.get_u32() & STREAM_MASK;
            Frame::Lease {
                ttl_ms,
                requests,
                metadata: m.then(|| std::mem::take(&mut b)),
            }
        }
        0x03 => {
            conn_only(FrameType::Keepalive)?;
            need(&b, 8, "KEEPALIVE")?;
            let position = b.get_u64() & POS_MASK;
            Frame::Keepalive {
                respond: follows,
                position,
                data: b,
            }
        }
        0x04 => {
            stream_only(FrameType::RequestResponse)?;
            Frame::RequestResponse {
                stream,
                follows,
                payload: take_payload(&mut b, m)?,
            }
        }
        0x05 => {
            stream_only(FrameType::RequestFnf)?;
            Frame::RequestFnf {
                stream,
                follows,
                payload: take_payload(&mut b, m)?,
            }
        }
        0x06 | 0x07 => {
            let ft = if t == 0x06 {
                FrameType::RequestStream
            } else {
                FrameType::RequestChannel
            };
            stream_only(ft)?;
            need(&b, 4, "initial request N")?;
            let initial_n = b.get_u32() & STREAM_MASK;
            if initial_n == 0 {
                return Err(DecodeError::Invalid("initial request N 0"));
            }
            let payload = take_payload(&mut b, m)?;
            if t == 0x06 {
                Frame::RequestStream {
                    stream,
                    follows,
                    initial_n,
                    payload,
                }
            } else {
                Frame::RequestChannel {
                    stream,
                    follows,
                    complete: c,
                    initial_n,
                    payload,
                }
            }
        }
        0x08 => {
            stream_only(FrameType::RequestN)?;
            need(&b, 4, "REQUEST_N")?;
            let n = b.get_u32() & STREAM_MASK;
            if n == 0 {
                return Err(DecodeError::Invalid("REQUEST_N 0"));
            }
            Frame::RequestN { stream, n }
        }
        0x09 => {
            stream_only(FrameType::Cancel)?;
            Frame::Cancel { stream }
        }
        0x0A => {
            stream_only(FrameType::Payload)?;
            Frame::Payload {
                stream,
                follows,
                complete: c,
                next: flags & FLAG_NEXT != 0,
                payload: take_payload(&mut b, m)?,
            }
        }
        0x0B => {
            need(&b, 4, "error code")?;
            let code = ErrorCode::from_code(b.get_u32());
            Frame::Error {
                stream,
                code,
                message: String::from_utf8_lossy(&b).into_owned(),
            }
        }
        0x0C => {
            conn_only(FrameType::MetadataPush)?;
            Frame::MetadataPush { metadata: b }
        }
        0x0D => {
            conn_only(FrameType::Resume)?;
            need(&b, 6, "RESUME")?;
            let version = (b.get_u16(), b.get_u16());
            let n = usize::from(b.get_u16());
            if n > b.remaining() {
                return Err(DecodeError::BadLength("resume token", n));
            }
            let token = b.split_to(n);
            need(&b, 16, "RESUME positions")?;
            Frame::Resume {
                version,
                token,
                last_received_server: b.get_u64() & POS_MASK,
                first_available_client: b.get_u64() & POS_MASK,
            }
        }
        0x0E => {
            conn_only(FrameType::ResumeOk)?;
            need(&b, 8, "RESUME_OK")?;
            Frame::ResumeOk {
                last_received_client: b.get_u64() & POS_MASK,
            }
        }
        other => Frame::Unknown {
            stream,
            frame_type: other,
            ignore: flags & FLAG_IGNORE != 0,
        },
    };
    Ok(f)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
