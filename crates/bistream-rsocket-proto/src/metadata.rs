//! Composite metadata (`message/x.rsocket.composite-metadata.v0`) and routing metadata
//! (`message/x.rsocket.routing.v0`), with the well-known MIME id table. An entry's MIME type is
//! either a well-known id (high bit set) or an explicit string (length - 1 in 7 bits); both are
//! accepted, unknown entries are skipped by [`route_of`].

use bytes::{BufMut, BytesMut};

/// Well-known MIME types by id (RSocket extension "Well-known MIME Types").
pub const WELL_KNOWN: &[(u8, &str)] = &[
    (0x00, "application/avro"),
    (0x01, "application/cbor"),
    (0x02, "application/graphql"),
    (0x03, "application/gzip"),
    (0x04, "application/javascript"),
    (0x05, "application/json"),
    (0x06, "application/octet-stream"),
    (0x07, "application/pdf"),
    (0x08, "application/vnd.apache.thrift.binary"),
    (0x09, "application/vnd.google.protobuf"),
    (0x0A, "application/xml"),
    (0x0B, "application/zip"),
    (0x0C, "audio/aac"),
    (0x0D, "audio/mp3"),
    (0x0E, "audio/mp4"),
    (0x0F, "audio/mpeg3"),
    (0x10, "audio/mpeg"),
    (0x11, "audio/ogg"),
    (0x12, "audio/opus"),
    (0x13, "audio/vorbis"),
    (0x14, "image/bmp"),
    (0x15, "image/gif"),
    (0x16, "image/heic-sequence"),
    (0x17, "image/heic"),
    (0x18, "image/heif-sequence"),
    (0x19, "image/heif"),
    (0x1A, "image/jpeg"),
    (0x1B, "image/png"),
    (0x1C, "image/tiff"),
    (0x1D, "multipart/mixed"),
    (0x1E, "text/css"),
    (0x1F, "text/csv"),
    (0x20, "text/html"),
    (0x21, "text/plain"),
    (0x22, "text/xml"),
    (0x23, "video/H264"),
    (0x24, "video/H265"),
    (0x25, "video/VP8"),
    (0x26, "application/x-hessian"),
    (0x27, "application/x-java-object"),
    (0x28, "application/cloudevents+json"),
    (0x7A, "message/x.rsocket.mime-type.v0"),
    (0x7B, "message/x.rsocket.accept-mime-types.v0"),
    (0x7C, "message/x.rsocket.authentication.v0"),
    (0x7D, "message/x.rsocket.tracing-zipkin.v0"),
    (0x7E, crate::MIME_ROUTING),
    (0x7F, crate::MIME_COMPOSITE),
];

/// Well-known id of the routing MIME type.
pub const ROUTING_ID: u8 = 0x7E;

/// The MIME type of a well-known id.
pub fn mime_by_id(id: u8) -> Option<&'static str> {
    WELL_KNOWN.iter().find(|(i, _)| *i == id).map(|(_, m)| *m)
}

/// The well-known id of a MIME type.
pub fn id_by_mime(mime: &str) -> Option<u8> {
    WELL_KNOWN.iter().find(|(_, m)| *m == mime).map(|(i, _)| *i)
}

/// Malformed metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// An entry ends early.
    #[error("composite metadata truncated at byte {0}")]
    Truncated(usize),
    /// A routing tag or explicit MIME type is not UTF-8.
    #[error("routing tag or MIME type is not UTF-8")]
    NotUtf8,
}

/// One composite metadata entry's MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mime<'a> {
    /// A well-known id.
    Id(u8),
    /// An explicit MIME type string.
    Named(&'a str),
}

impl Mime<'_> {
    /// True if this names `mime` (either form).
    pub fn is(&self, mime: &str) -> bool {
        match self {
            Mime::Id(i) => mime_by_id(*i) == Some(mime),
            Mime::Named(n) => *n == mime,
        }
    }
}

/// One composite metadata entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its MIME type.
    pub mime: Mime<'a>,
    /// Its content.
    pub content: &'a [u8],
}

/// Splits composite metadata into entries.
pub fn parse_composite(b: &[u8]) -> Result<Vec<Entry<'_>>, MetadataError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let h = b[i];
        i += 1;
        let mime = if h & 0x80 != 0 {
            Mime::Id(h & 0x7F)
        } else {
            let n = usize::from(h) + 1;
            let s = b.get(i..i + n).ok_or(MetadataError::Truncated(i))?;
            i += n;
            Mime::Named(std::str::from_utf8(s).map_err(|_| MetadataError::NotUtf8)?)
        };
        let l = b.get(i..i + 3).ok_or(MetadataError::Truncated(i))?;
        i += 3;
        let n = (usize::from(l[0]) << 16) | (usize::from(l[1]) << 8) | usize::from(l[2]);
        let content = b.get(i..i + n).ok_or(MetadataError::Truncated(i))?;
        i += n;
        out.push(Entry { mime, content });
    }
    Ok(out)
}

/// Appends one entry, with the well-known id when `mime` has one.
pub fn push_entry(out: &mut BytesMut, mime: &str, content: &[u8]) {
    match id_by_mime(mime) {
        Some(id) => out.put_u8(0x80 | id),
        None => {
            let m = &mime.as_bytes()[..mime.len().clamp(1, 128)];
            out.put_u8((m.len() - 1) as u8);
            out.put_slice(m);
        }
    }
    let n = content.len().min(crate::MAX_FRAME_LEN);
    out.put_uint(n as u64, 3);
    out.put_slice(&content[..n]);
}

/// Routing metadata content: each tag as a 1-byte length and its UTF-8 (tags over 255 bytes
/// are cut).
pub fn encode_routing(tags: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for t in tags {
        let n = t.len().min(255);
        v.push(n as u8);
        v.extend_from_slice(&t.as_bytes()[..n]);
    }
    v
}

/// Routing tags of routing metadata content.
pub fn parse_routing(b: &[u8]) -> Result<Vec<String>, MetadataError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let n = usize::from(b[i]);
        i += 1;
        let t = b.get(i..i + n).ok_or(MetadataError::Truncated(i))?;
        i += n;
        out.push(
            std::str::from_utf8(t)
                .map_err(|_| MetadataError::NotUtf8)?
                .to_owned(),
        );
    }
    Ok(out)
}

/// Composite metadata with one routing entry naming `route` (well-known id form).
pub fn composite_routing(route: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    push_entry(&mut out, crate::MIME_ROUTING, &encode_routing(&[route]));
    out.to_vec()
}

/// The first routing tag in composite metadata (`None` when there is no routing entry).
pub fn route_of(composite: &[u8]) -> Result<Option<String>, MetadataError> {
    for e in parse_composite(composite)? {
        if e.mime.is(crate::MIME_ROUTING) {
            return Ok(parse_routing(e.content)?.into_iter().next());
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_routing_entry() {
        // rsocket 0.4.20: composite(route('echo'))
        assert_eq!(composite_routing("echo"), b"\xfe\x00\x00\x05\x04echo");
        assert_eq!(
            route_of(b"\xfe\x00\x00\x05\x04echo").unwrap().as_deref(),
            Some("echo")
        );
    }

    #[test]
    fn explicit_string_form_and_unknown_entries() {
        let mut b = BytesMut::new();
        // An unknown explicit type, an unknown well-known id, then routing by name.
        push_entry(&mut b, "x/unknown", b"zz");
        b.put_u8(0x80 | 0x55);
        b.put_uint(1, 3);
        b.put_u8(9);
        let r = encode_routing(&["count", "second"]);
        b.put_u8((crate::MIME_ROUTING.len() - 1) as u8);
        b.put_slice(crate::MIME_ROUTING.as_bytes());
        b.put_uint(r.len() as u64, 3);
        b.put_slice(&r);
        let entries = parse_composite(&b).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].mime, Mime::Named("x/unknown"));
        assert_eq!(route_of(&b).unwrap().as_deref(), Some("count"));
        assert_eq!(route_of(b"").unwrap(), None);
    }

    #[test]
    fn malformed() {
        assert_eq!(route_of(b"\xfe\x00\x00"), Err(MetadataError::Truncated(1)));
        assert_eq!(
            route_of(b"\xfe\x00\x00\x05\x09echo"),
            Err(MetadataError::Truncated(1))
        );
        assert!(route_of(b"\x05abc").is_err());
        assert_eq!(
            route_of(b"\xfe\x00\x00\x02\x01\xff"),
            Err(MetadataError::NotUtf8)
        );
    }

    #[test]
    fn ids() {
        assert_eq!(id_by_mime("application/json"), Some(5));
        assert_eq!(mime_by_id(0x7F), Some(crate::MIME_COMPOSITE));
        assert_eq!(mime_by_id(0x60), None);
    }
}
