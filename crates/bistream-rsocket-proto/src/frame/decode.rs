//! Frame decoding: [`decode`] reads one whole frame, checking every length field against what
//! is there and every stream-0 rule; it never panics on any input.

use bytes::{Buf, Bytes};

use super::{
    DecodeError, Frame, FrameType, Payload, Setup, FLAG_COMPLETE, FLAG_FOLLOWS, FLAG_IGNORE,
    FLAG_METADATA, FLAG_NEXT, HEADER, POS_MASK, STREAM_MASK,
};
use crate::ErrorCode;

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
