//! Frame encoding: [`encode`] and [`encode_into`] write a [`Frame`] as the spec lays it out
//! (6-byte header, then the type's fields; metadata behind its 24-bit length).

use bytes::{BufMut, BytesMut};

use super::{
    Frame, FrameType, Payload, FLAG_COMPLETE, FLAG_FOLLOWS, FLAG_IGNORE, FLAG_METADATA, FLAG_NEXT,
    POS_MASK, STREAM_MASK,
};

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
