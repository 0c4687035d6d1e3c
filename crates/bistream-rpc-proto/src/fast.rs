//! The fast path of the frame decoder: a `stream_data` frame in exactly the compact shape our
//! encoder writes (`{"type":"stream_data","peerID":"P","requestId":["C",N],"data":D}`, plain
//! strings, `N` a non-negative integer) is sliced apart by hand instead of going through serde's
//! field-by-field struct decoding; `D` is still validated as one JSON value. Anything else —
//! other types, other key order, whitespace, escapes in the ids, a negative or huge `N` — is
//! left to the full decoder. Where this returns a frame, [`decode_ref`](crate::decode_ref)
//! returns the same one (a property test checks it against the full decoder).

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::frame::{FrameRef, FrameType};

/// Nesting (brackets) from which the full decoder decides (serde_json's limit is 128).
const NEAR_DEPTH: usize = 120;

const HEAD: &str = "{\"type\":\"stream_data\",\"peerID\":";

/// The two ids of the last stream item decoded on a connection (the sender's `peerID` and the
/// caller's id, the same on every item of a stream): the next item's ids are compared with
/// them byte for byte before they are scanned. Only strings the scan accepted are remembered,
/// so a match gives what the scan would.
#[derive(Debug, Default, Clone)]
pub struct Known {
    peer: String,
    caller: String,
}

/// The frame, when `text` is a `stream_data` frame in our encoder's compact shape.
pub fn decode_stream_data(text: &str) -> Option<FrameRef<'_>> {
    decode_stream_data_known(text, &mut Known::default())
}

/// [`decode_stream_data`], comparing the ids with `known` first (and remembering them): the
/// same result, with two 36-byte compares instead of two scans on a connection's stream items
/// (the scans were ~450 instructions of a reader's ~3,150 per item: DECISIONS D36).
pub fn decode_stream_data_known<'a>(text: &'a str, known: &mut Known) -> Option<FrameRef<'a>> {
    let rest = text.strip_prefix(HEAD)?;
    let (peer_id, rest) = known_str(rest, &known.peer).or_else(|| plain_str(rest))?;
    let rest = rest.strip_prefix(",\"requestId\":[")?;
    let (caller, rest) = known_str(rest, &known.caller).or_else(|| plain_str(rest))?;
    let rest = rest.strip_prefix(',')?;
    let (n, rest) = uint(rest)?;
    let rest = rest.strip_prefix("],\"data\":")?;
    let data = rest.strip_suffix('}')?;
    // Whitespace around the value is valid JSON but not our shape: the full decoder decides.
    let (first, last) = (*data.as_bytes().first()?, *data.as_bytes().last()?);
    if first.is_ascii_whitespace() || last.is_ascii_whitespace() {
        return None;
    }
    // serde_json limits nesting to 128 levels, counting the frame's own object: a value that
    // could come near it (about as many brackets) is left to the full decoder, so both agree.
    if data.len() >= 2 * NEAR_DEPTH
        && data.bytes().filter(|b| matches!(b, b'[' | b'{')).count() >= NEAR_DEPTH
    {
        return None;
    }
    let data = if data == "null" {
        None
    } else {
        let raw: &RawValue = serde_json::from_str(data).ok()?;
        if raw.get().len() != data.len() {
            return None;
        }
        Some(raw)
    };
    if known.peer != peer_id {
        peer_id.clone_into(&mut known.peer);
    }
    if known.caller != caller {
        caller.clone_into(&mut known.caller);
    }
    Some(FrameRef {
        ty: FrameType::StreamData,
        peer_id: Some(Cow::Borrowed(peer_id)),
        request_id: Some((Cow::Borrowed(caller), i128::from(n))),
        data,
    })
}

/// `"k"` at the start of `s` (k non-empty): `k` as borrowed from `s`, and what follows.
fn known_str<'a>(s: &'a str, k: &str) -> Option<(&'a str, &'a str)> {
    let b = s.as_bytes();
    let end = k.len() + 1;
    if k.is_empty() || b.first() != Some(&b'"') || b.get(end) != Some(&b'"') {
        return None;
    }
    let body = s.get(1..end)?;
    (body == k).then(|| (body, &s[end + 1..]))
}

/// A JSON string literal at the start of `s` with no escapes and no control characters: its
/// contents and what follows the closing quote.
fn plain_str(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('"')?;
    let end = special(body.as_bytes())?;
    if body.as_bytes()[end] != b'"' {
        return None;
    }
    Some((&body[..end], &body[end + 1..]))
}

/// The first `"`, `\` or control character in `b`. Eight bytes at a time (SWAR): a
/// byte-at-a-time scan of the two 36-character peer ids cost more than the rest of the path.
fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Nonzero iff some byte of `x` is zero (exact for "any", which is all we ask).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        // A byte is below 0x20 exactly when it is zero once its low five bits are cleared.
        let control = zero(w & 0xe0e0_e0e0_e0e0_e0e0);
        if control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) != 0 {
            break;
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| p + i)
}

/// A JSON non-negative integer of at most 18 digits (no leading zero) at the start of `s`.
fn uint(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 18 || (digits > 1 && s.starts_with('0')) {
        return None;
    }
    let n = s[..digits].parse().ok()?;
    Some((n, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_our_shape_only() {
        let ok = r#"{"type":"stream_data","peerID":"a","requestId":["b",7],"data":[1,{"x":"}"}]}"#;
        let f = decode_stream_data(ok).unwrap();
        assert_eq!(f.request_id, Some((Cow::Borrowed("b"), 7)));
        assert_eq!(f.data.unwrap().get(), r#"[1,{"x":"}"}]"#);
        let null = r#"{"type":"stream_data","peerID":"a","requestId":["b",0],"data":null}"#;
        assert!(decode_stream_data(null).unwrap().data.is_none());
        for other in [
            r#"{"type":"stream_data","peerID":"a","requestId":["b",07],"data":1}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",-1],"data":1}"#,
            r#"{"type":"stream_data","peerID":"a\"","requestId":["b",1],"data":1}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data": 1}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":1,"x":2}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":1"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":1 }"#,
            r#"{"type":"stream_end","peerID":"a","requestId":["b",1],"data":1}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1234567890123456789],"data":1}"#,
        ] {
            assert!(decode_stream_data(other).is_none(), "{other}");
        }
    }

    /// Frames with ids from an alphabet of plain and special characters, in our shape or
    /// nearly.
    fn frame(peer: &str, caller: &str, n: u64, data: &str) -> String {
        format!(
            r#"{{"type":"stream_data","peerID":"{peer}","requestId":["{caller}",{n}],"data":{data}}}"#
        )
    }

    proptest::proptest! {
        #[test]
        fn known_ids_give_what_the_scan_gives(
            seeds in proptest::collection::vec(("[ab\"\\\\\u{1}é]{0,6}", "[ab\"\\\\\u{1}é]{0,6}"), 1..4),
            peer in "[ab\"\\\\\u{1}é]{0,6}",
            caller in "[ab\"\\\\\u{1}é]{0,6}",
            n in 0u64..100,
            data in "(1|\"x\"|null|\\[1\\]|1 |)",
        ) {
            let mut known = Known::default();
            for (p, c) in &seeds {
                let _ = decode_stream_data_known(&frame(p, c, 1, "1"), &mut known);
            }
            let text = frame(&peer, &caller, n, &data);
            let plain = decode_stream_data(&text);
            let fast = decode_stream_data_known(&text, &mut known);
            proptest::prop_assert_eq!(
                fast.map(|f| (f.peer_id, f.request_id, f.data.map(RawValue::get))),
                plain.map(|f| (f.peer_id, f.request_id, f.data.map(RawValue::get)))
            );
        }

        #[test]
        fn special_finds_what_a_plain_scan_finds(s in "[a-f0-9\\-\"\\\\\u{0}-\u{1f} é]{0,40}") {
            let b = s.as_bytes();
            let plain = b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            proptest::prop_assert_eq!(special(b), plain);
        }
    }
}
