//! The sans-IO packet codec: [`Packet`] and its exact cs.packetstream wire form, with an
//! incremental [`Decoder`] that parses packets out of a `BytesMut` filled in arbitrary pieces.
//! No sockets, no async runtime.
//!
//! Wire form of one packet: `BSUInt(L)` then `L` body bytes. The body is `tag`, `flags_word =
//! (flags << 2) | (is_request << 1) | has_channel`, `channel` (only when non-zero), the wire
//! `rq_type` (only for requests; user rq_type + 1) and the payload (all remaining bytes).
//! All integers are [`crate::varint`] (big-endian base-128).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::varint;

/// Default bound on a packet body (`L`), both received and sent: 16 MiB.
pub const DEFAULT_MAX_PACKET: usize = 16 * 1024 * 1024;

/// Largest flags value a request can carry (`flags << 2` must fit in 64 bits).
pub const MAX_REQUEST_FLAGS: u64 = (1 << 62) - 1;
/// Largest user flags value a response can carry (`flags << 3` must fit in 64 bits).
pub const MAX_RESPONSE_FLAGS: u64 = (1 << 61) - 1;

/// One packet, with the fields as they are on the wire (as Python's `Packet`).
///
/// - `flags` is the packet flags: `flags_word >> 2`. For a request that is the user flags; for
///   a response it is `(user_flags << 1) | ok` — use [`Packet::ok`] and
///   [`Packet::response_flags`].
/// - `rq_type` is the **wire** rq_type: the user rq_type + 1 (0 is EOF/ERQ). Ignored (and not
///   sent) for responses. Use [`Packet::user_rq_type`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    /// A request (or ERQ/EOF) rather than a response.
    pub is_request: bool,
    /// The channel (0 is the default channel; not sent on the wire when 0).
    pub channel: u64,
    /// The request tag, unique per channel while the request is in progress.
    pub tag: u64,
    /// The packet flags (`flags_word >> 2`); see the type's documentation.
    pub flags: u64,
    /// The wire rq_type: user rq_type + 1 (0 is EOF/ERQ); not sent for responses.
    pub rq_type: u64,
    /// The payload: every byte of the body after the header fields.
    pub payload: Bytes,
}

impl Packet {
    /// A request for the user-visible `rq_type` (the wire carries `rq_type + 1`).
    pub fn request(
        channel: u64,
        tag: u64,
        rq_type: u64,
        flags: u64,
        payload: Bytes,
    ) -> Result<Packet, EncodeError> {
        if flags > MAX_REQUEST_FLAGS {
            return Err(EncodeError::FlagsTooLarge(flags));
        }
        let wire = rq_type
            .checked_add(1)
            .ok_or(EncodeError::RqTypeTooLarge(rq_type))?;
        Ok(Packet {
            is_request: true,
            channel,
            tag,
            flags,
            rq_type: wire,
            payload,
        })
    }

    /// A response to the request `(channel, tag)`: packet flags `(flags << 1) | ok`.
    pub fn response(
        channel: u64,
        tag: u64,
        ok: bool,
        flags: u64,
        payload: Bytes,
    ) -> Result<Packet, EncodeError> {
        if flags > MAX_RESPONSE_FLAGS {
            return Err(EncodeError::FlagsTooLarge(flags));
        }
        Ok(Packet {
            is_request: false,
            channel,
            tag,
            flags: (flags << 1) | u64::from(ok),
            rq_type: 0,
            payload,
        })
    }

    /// A failure response (`ok = 0`, flags 0) whose payload is the UTF-8 `reason`.
    pub fn failure(channel: u64, tag: u64, reason: &str) -> Packet {
        Packet {
            is_request: false,
            channel,
            tag,
            flags: 0,
            rq_type: 0,
            payload: Bytes::copy_from_slice(reason.as_bytes()),
        }
    }

    /// The EOF packet, `03 00 02 00`: "I will send nothing more".
    pub fn eof() -> Packet {
        Packet {
            is_request: true,
            ..Packet::default()
        }
    }

    /// The ERQ packet, `03 01 02 00`: "I will send no more requests".
    pub fn erq() -> Packet {
        Packet {
            is_request: true,
            tag: 1,
            ..Packet::default()
        }
    }

    /// Whether this is exactly the EOF packet (field equality, as Python checks it).
    pub fn is_eof(&self) -> bool {
        self.is_special(0)
    }

    /// Whether this is exactly the ERQ packet.
    pub fn is_erq(&self) -> bool {
        self.is_special(1)
    }

    fn is_special(&self, tag: u64) -> bool {
        self.is_request
            && self.channel == 0
            && self.tag == tag
            && self.flags == 0
            && self.rq_type == 0
            && self.payload.is_empty()
    }

    /// The user rq_type of a request (`wire rq_type - 1`); `None` for wire rq_type 0 (EOF, ERQ
    /// or a malformed special packet) and for responses.
    pub fn user_rq_type(&self) -> Option<u64> {
        if self.is_request {
            self.rq_type.checked_sub(1)
        } else {
            None
        }
    }

    /// For a response: the ok bit.
    pub fn ok(&self) -> bool {
        self.flags & 1 == 1
    }

    /// For a response: the user flags (the packet flags without the ok bit).
    pub fn response_flags(&self) -> u64 {
        self.flags >> 1
    }

    fn flags_word(&self) -> Result<u64, EncodeError> {
        if self.flags > MAX_REQUEST_FLAGS {
            return Err(EncodeError::FlagsTooLarge(self.flags));
        }
        Ok((self.flags << 2) | (u64::from(self.is_request) << 1) | u64::from(self.channel != 0))
    }

    /// Length of the body (`L`) and of the whole encoded packet.
    pub fn encoded_len(&self) -> Result<(usize, usize), EncodeError> {
        let body = self.body_header_len()? + self.payload.len();
        Ok((body, varint::encoded_len(body as u64) + body))
    }

    fn body_header_len(&self) -> Result<usize, EncodeError> {
        let mut n = varint::encoded_len(self.tag) + varint::encoded_len(self.flags_word()?);
        if self.channel != 0 {
            n += varint::encoded_len(self.channel);
        }
        if self.is_request {
            n += varint::encoded_len(self.rq_type);
        }
        Ok(n)
    }

    /// Writes everything but the payload: `BSUInt(L)`, tag, flags word, channel, rq_type.
    /// The payload must follow. `max_packet` bounds `L`.
    pub fn encode_header(
        &self,
        out: &mut impl BufMut,
        max_packet: usize,
    ) -> Result<(), EncodeError> {
        let flags_word = self.flags_word()?;
        let body = self.body_header_len()? + self.payload.len();
        if body > max_packet {
            return Err(EncodeError::PacketTooLarge {
                len: body,
                max: max_packet,
            });
        }
        varint::encode(body as u64, out);
        varint::encode(self.tag, out);
        varint::encode(flags_word, out);
        if self.channel != 0 {
            varint::encode(self.channel, out);
        }
        if self.is_request {
            varint::encode(self.rq_type, out);
        }
        Ok(())
    }

    /// Appends the whole packet (header and payload) to `out`.
    pub fn encode(&self, out: &mut BytesMut, max_packet: usize) -> Result<(), EncodeError> {
        out.reserve(self.header_reserve() + self.payload.len());
        self.encode_header(out, max_packet)?;
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// An upper bound on the header size, for reserving buffer space.
    pub fn header_reserve(&self) -> usize {
        5 * varint::MAX_VARINT_LEN
    }

    /// The packet as one `Bytes` (convenient for tests and tools; connections do not copy).
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut b = BytesMut::new();
        self.encode(&mut b, usize::MAX)?;
        Ok(b.freeze())
    }

    /// Parses one complete body (the `L` bytes after the length). The payload shares `body`.
    pub fn decode_body(body: Bytes) -> Result<Packet, DecodeError> {
        let len = body.len();
        let mut pos = 0usize;
        let mut field = |name: &'static str| -> Result<u64, DecodeError> {
            let rest = body.get(pos..).unwrap_or_default();
            match varint::decode(rest)? {
                Some((v, used)) => {
                    pos += used;
                    Ok(v)
                }
                None => Err(DecodeError::TruncatedBody { len, field: name }),
            }
        };
        let tag = field("tag")?;
        let flags_word = field("flags")?;
        let has_channel = flags_word & 1 == 1;
        let is_request = flags_word & 2 == 2;
        let channel = if has_channel { field("channel")? } else { 0 };
        let rq_type = if is_request { field("rq_type")? } else { 0 };
        Ok(Packet {
            is_request,
            channel,
            tag,
            flags: flags_word >> 2,
            rq_type,
            payload: body.slice(pos..),
        })
    }
}

/// Most capacity [`Decoder::decode`] adds to a buffer for an incomplete packet.
const DECODE_RESERVE: usize = 64 * 1024;

/// Incremental decoder: feed bytes into a `BytesMut` in any pieces and call
/// [`Decoder::decode`] until it returns `Ok(None)`.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_packet: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_PACKET)
    }
}

impl Decoder {
    /// A decoder rejecting bodies longer than `max_packet` bytes.
    pub fn new(max_packet: usize) -> Decoder {
        Decoder { max_packet }
    }

    /// The configured maximum body length.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Reads the length prefix at the front of `buf` without consuming anything: `Ok(Some((hdr,
    /// len)))` is the prefix size and the body length `L` (checked against `max_packet`),
    /// `Ok(None)` means the prefix itself is incomplete.
    ///
    /// ```
    /// use bistream_packet::Decoder;
    /// let dec = Decoder::new(1 << 20);
    /// assert_eq!(dec.peek_len(&[0x05, 0x02]).unwrap(), Some((1, 5))); // body of 5 bytes
    /// assert_eq!(dec.peek_len(&[0x81]).unwrap(), None); // prefix cut short
    /// assert!(dec.peek_len(&[0xc0, 0x80, 0x01]).is_err()); // 1 MiB + 1 > max_packet
    /// ```
    pub fn peek_len(&self, buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
        let Some((len, hdr)) = varint::decode(buf)? else {
            return Ok(None);
        };
        if len > self.max_packet as u64 {
            return Err(DecodeError::PacketTooLarge {
                len,
                max: self.max_packet,
            });
        }
        // len <= max_packet <= usize::MAX, so this cannot truncate.
        Ok(Some((hdr, len as usize)))
    }

    /// Takes one packet off the front of `buf`. `Ok(None)` means more bytes are needed (and
    /// `buf` has been given capacity for up to 64 KiB more of the packet: the length prefix is
    /// untrusted, so the buffer grows as the bytes arrive, never all at once from the
    /// announced length). The payload is split off `buf` without copying.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some((hdr, len)) = self.peek_len(buf)? else {
            return Ok(None);
        };
        let total = hdr + len;
        if buf.len() < total {
            buf.reserve((total - buf.len()).min(DECODE_RESERVE));
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        let body = frame.split_off(hdr);
        Packet::decode_body(body).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    fn rq(channel: u64, tag: u64, rq_type: u64, flags: u64, payload: &[u8]) -> Packet {
        Packet::request(
            channel,
            tag,
            rq_type,
            flags,
            Bytes::copy_from_slice(payload),
        )
        .unwrap()
    }

    fn rs(channel: u64, tag: u64, ok: bool, flags: u64, payload: &[u8]) -> Packet {
        Packet::response(channel, tag, ok, flags, Bytes::copy_from_slice(payload)).unwrap()
    }

    /// The hex dumps of the reference (`bytes(Packet(...))` from cs.packetstream 20240630).
    fn golden() -> Vec<(Packet, Vec<u8>)> {
        vec![
            (rq(0, 2, 0, 5, b"hi"), hex("05 02 16 01 68 69")),
            (rq(0, 3, 1, 0, b""), hex("03 03 02 02")),
            (rq(1, 0, 0, 0, b"hi"), hex("06 00 03 01 01 68 69")),
            (rq(1, 0, 3, 5, b"hi"), hex("06 00 17 01 04 68 69")),
            (rq(300, 200, 128, 1000, b""), hex("08 81 48 9f 23 82 2c 81 01")),
            (rs(0, 2, true, 5, b"hi"), hex("04 02 2c 68 69")),
            (rs(0, 5, true, 0, b""), hex("02 05 04")),
            (rs(1, 0, true, 0, b""), hex("03 00 05 01")),
            (rs(0, 3, true, 3, b"cba"), hex("05 03 1c 63 62 61")),
            (
                Packet::failure(0, 4, "exception during handler"),
                hex("1a 04 00 65 78 63 65 70 74 69 6f 6e 20 64 75 72 69 6e 67 20 68 61 6e 64 6c 65 72"),
            ),
            (
                Packet::failure(1, 0, "unknown channel %d"),
                hex("15 00 01 01 75 6e 6b 6e 6f 77 6e 20 63 68 61 6e 6e 65 6c 20 25 64"),
            ),
            (
                Packet::failure(0, 2, "no request handler"),
                hex("14 02 00 6e 6f 20 72 65 71 75 65 73 74 20 68 61 6e 64 6c 65 72"),
            ),
            (Packet::eof(), hex("03 00 02 00")),
            (Packet::erq(), hex("03 01 02 00")),
        ]
    }

    #[test]
    fn an_announced_length_does_not_size_the_buffer() {
        // A 16 MiB body announced, 3 bytes of it sent: the buffer grows by at most 64 KiB.
        let dec = Decoder::new(DEFAULT_MAX_PACKET);
        let mut buf = BytesMut::new();
        varint::encode(DEFAULT_MAX_PACKET as u64, &mut buf);
        buf.extend_from_slice(&[0, 0, 0]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() <= 64 * 1024 + 16, "{}", buf.capacity());
    }

    #[test]
    fn golden_vectors_encode_and_decode() {
        let dec = Decoder::default();
        for (p, bytes) in golden() {
            assert_eq!(p.to_bytes().unwrap().as_ref(), &bytes[..], "encode {p:?}");
            let mut b = BytesMut::from(&bytes[..]);
            assert_eq!(
                dec.decode(&mut b).unwrap(),
                Some(p.clone()),
                "decode {bytes:02x?}"
            );
            assert!(b.is_empty());
            assert_eq!(p.encoded_len().unwrap().1, bytes.len());
        }
    }

    #[test]
    fn golden_one_mib_headers() {
        let mib = Bytes::from(vec![7u8; 1 << 20]);
        let cases = [
            (
                Packet::request(0, 2, 0, 0, mib.clone()).unwrap(),
                hex("c0 80 03 02 02 01"),
            ),
            (
                Packet::response(0, 2, true, 0, mib.clone()).unwrap(),
                hex("c0 80 02 02 04"),
            ),
            (
                Packet::response(0, 2, true, 1 << 20, mib.clone()).unwrap(),
                hex("c0 80 05 02 84 80 80 04"),
            ),
        ];
        for (p, header) in cases {
            let b = p.to_bytes().unwrap();
            assert_eq!(&b[..header.len()], &header[..]);
            assert_eq!(b.len(), header.len() + (1 << 20));
            let mut bm = BytesMut::from(&b[..]);
            assert_eq!(Decoder::default().decode(&mut bm).unwrap(), Some(p));
        }
    }

    #[test]
    fn special_packets_are_recognised_exactly() {
        assert!(Packet::eof().is_eof() && !Packet::eof().is_erq());
        assert!(Packet::erq().is_erq() && !Packet::erq().is_eof());
        let mut p = Packet::eof();
        p.payload = Bytes::from_static(b"x");
        assert!(!p.is_eof());
        assert_eq!(p.user_rq_type(), None);
        // tag 0 with a real rq_type is an ordinary request
        let r = rq(0, 0, 0, 0, b"");
        assert!(!r.is_eof());
        assert_eq!(r.user_rq_type(), Some(0));
    }

    #[test]
    fn non_minimal_tag_is_accepted() {
        // request tag `80 80 05` (non-minimal 5), flags word 02, wire rq 01
        let mut b = BytesMut::from(&hex("05 80 80 05 02 01")[..]);
        let p = Decoder::default().decode(&mut b).unwrap().unwrap();
        assert_eq!(p.tag, 5);
        assert_eq!(p.user_rq_type(), Some(0));
    }

    #[test]
    fn explicit_channel_zero_parses_as_channel_zero() {
        let mut b = BytesMut::from(&hex("04 02 03 00 01")[..]);
        let p = Decoder::default().decode(&mut b).unwrap().unwrap();
        assert_eq!(p.channel, 0);
        assert!(p.is_request);
    }

    #[test]
    fn bad_inputs_are_specific_errors() {
        let dec = Decoder::new(100);
        // body length above the maximum
        let mut b = BytesMut::from(&hex("81 00")[..]);
        assert!(matches!(
            dec.decode(&mut b),
            Err(DecodeError::PacketTooLarge { len: 128, max: 100 })
        ));
        // length varint too long
        let mut b = BytesMut::from(&[0x80u8; 12][..]);
        assert_eq!(dec.decode(&mut b), Err(DecodeError::VarintTooLong));
        // empty body: no tag
        let mut b = BytesMut::from(&hex("00")[..]);
        assert!(matches!(
            dec.decode(&mut b),
            Err(DecodeError::TruncatedBody { field: "tag", .. })
        ));
        // request without its rq_type
        let mut b = BytesMut::from(&hex("02 05 02")[..]);
        assert!(matches!(
            dec.decode(&mut b),
            Err(DecodeError::TruncatedBody {
                field: "rq_type",
                ..
            })
        ));
        // has_channel without the channel
        let mut b = BytesMut::from(&hex("02 05 01")[..]);
        assert!(matches!(
            dec.decode(&mut b),
            Err(DecodeError::TruncatedBody {
                field: "channel",
                ..
            })
        ));
        // tag varint running past the body
        let mut b = BytesMut::from(&hex("01 81 02")[..]);
        assert!(matches!(
            dec.decode(&mut b),
            Err(DecodeError::TruncatedBody { field: "tag", .. })
        ));
    }

    #[test]
    fn incomplete_input_waits() {
        let dec = Decoder::default();
        let full = hex("05 02 16 01 68 69");
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(dec.decode(&mut b).unwrap(), None, "cut {cut}");
            assert_eq!(b.len(), cut);
        }
    }

    #[test]
    fn encode_rejects_out_of_range_values() {
        assert_eq!(
            Packet::request(0, 2, 0, 1 << 62, Bytes::new()),
            Err(EncodeError::FlagsTooLarge(1 << 62))
        );
        assert_eq!(
            Packet::request(0, 2, u64::MAX, 0, Bytes::new()),
            Err(EncodeError::RqTypeTooLarge(u64::MAX))
        );
        assert_eq!(
            Packet::response(0, 2, true, 1 << 61, Bytes::new()),
            Err(EncodeError::FlagsTooLarge(1 << 61))
        );
        let p = rq(0, 2, 0, 0, &[0; 50]);
        let mut out = BytesMut::new();
        assert!(matches!(
            p.encode(&mut out, 40),
            Err(EncodeError::PacketTooLarge { .. })
        ));
        assert!(out.is_empty());
        // the largest values still encode and round-trip
        let p = Packet::request(
            u64::MAX,
            u64::MAX,
            u64::MAX - 1,
            MAX_REQUEST_FLAGS,
            Bytes::new(),
        )
        .unwrap();
        let mut b = BytesMut::from(&p.to_bytes().unwrap()[..]);
        assert_eq!(Decoder::default().decode(&mut b).unwrap(), Some(p));
    }
}
