//! The fast path of the frame decoder: a `stream_data` frame in exactly the compact shape our
//! encoder writes (`{"type":"stream_data","peerID":"P","requestId":["C",N],"data":D}`, plain
//! strings, `N` a non-negative integer) is sliced apart by hand instead of going through serde's
//! field-by-field struct decoding. Anything else — other types, other key order, whitespace,
//! escapes in the ids, a negative or huge `N` — is left to the full decoder. Where this returns
//! a frame, the full decoder returns the same one (property tests check it).
//!
//! A connection's engine uses [`decode_item`], which works on the message's bytes before any
//! UTF-8 check: every item of one stream starts with the same bytes up to `"data":` (the type,
//! the sender's id and the request id), so that head is compared with the previous item's in
//! one slice compare, and only the item's value is checked: common scalars (integers, `true`,
//! `false`, `null`, strings without escapes) by hand, anything else by serde_json. A frame
//! taken this way is valid UTF-8 as a whole (a head seen before, a checked value and `}`), so
//! the engine skips the separate UTF-8 pass over the message (DECISIONS D45).

use std::borrow::Cow;
use std::ops::Range;

use serde_json::value::RawValue;

use crate::frame::{FrameRef, FrameType};

/// Nesting (brackets) from which the full decoder decides (serde_json's limit is 128).
const NEAR_DEPTH: usize = 120;

const HEAD: &[u8] = b"{\"type\":\"stream_data\",\"peerID\":";

/// The head of the last stream item decoded on a connection (everything before its value:
/// type, sender's `peerID` and request id, the same on every item of a stream) and its ids.
/// Only heads the scan accepted are remembered, so a match gives what the scan would.
#[derive(Debug, Default, Clone)]
pub struct Known {
    head: Vec<u8>,
    peer: String,
    caller: String,
    n: u64,
}

impl Known {
    /// The sender's `peerID` of the remembered head.
    pub fn peer_id(&self) -> &str {
        &self.peer
    }

    /// The request id of the remembered head: the caller's peer id and its counter.
    pub fn request_id(&self) -> (&str, u64) {
        (&self.caller, self.n)
    }
}

/// A stream item taken by [`decode_item`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    /// The item's JSON text (`None` for `null`), checked as one JSON value and UTF-8.
    pub data: Option<&'a str>,
    /// The head differs from the previous item's: [`Known`] now holds this item's ids.
    pub new_head: bool,
}

/// The item, when `frame` (a received message's bytes, not yet checked as UTF-8) is a
/// `stream_data` frame in our encoder's compact shape; its ids are then in `known`.
pub fn decode_item<'a>(frame: &'a [u8], known: &mut Known) -> Option<Item<'a>> {
    if !known.head.is_empty() && frame.starts_with(&known.head) {
        let data = value(&frame[known.head.len()..])?;
        return Some(Item {
            data,
            new_head: false,
        });
    }
    let h = scan_head(frame)?;
    let data = value(&frame[h.data_at..])?;
    let peer = std::str::from_utf8(&frame[h.peer]).ok()?;
    let caller = std::str::from_utf8(&frame[h.caller]).ok()?;
    known.head.clear();
    known.head.extend_from_slice(&frame[..h.data_at]);
    peer.clone_into(&mut known.peer);
    caller.clone_into(&mut known.caller);
    known.n = h.n;
    Some(Item {
        data,
        new_head: true,
    })
}

/// The frame, when `text` is a `stream_data` frame in our encoder's compact shape.
pub fn decode_stream_data(text: &str) -> Option<FrameRef<'_>> {
    let b = text.as_bytes();
    let h = scan_head(b)?;
    let data = match value(&b[h.data_at..])? {
        Some(v) => Some(serde_json::from_str::<&RawValue>(v).ok()?),
        None => None,
    };
    // The ids end at ASCII quotes: char boundaries of `text`.
    Some(FrameRef {
        ty: FrameType::StreamData,
        peer_id: Some(Cow::Borrowed(text.get(h.peer)?)),
        request_id: Some((Cow::Borrowed(text.get(h.caller)?), i128::from(h.n))),
        data,
    })
}

/// Where the parts of a compact `stream_data` frame are.
struct Head {
    peer: Range<usize>,
    caller: Range<usize>,
    n: u64,
    /// Where the value starts (just after `"data":`).
    data_at: usize,
}

/// Scans the head of a compact `stream_data` frame (ids plain, not yet checked as UTF-8).
fn scan_head(b: &[u8]) -> Option<Head> {
    let mut at = HEAD.len();
    if !b.starts_with(HEAD) {
        return None;
    }
    let peer = plain_str(b, at)?;
    at = peer.end + 1;
    at = after(b, at, b",\"requestId\":[")?;
    let caller = plain_str(b, at)?;
    at = after(b, caller.end + 1, b",")?;
    let (n, digits) = uint(&b[at..])?;
    at = after(b, at + digits, b"],\"data\":")?;
    Some(Head {
        peer,
        caller,
        n,
        data_at: at,
    })
}

/// `at` moved past `lit`, when `b` has `lit` there.
fn after(b: &[u8], at: usize, lit: &[u8]) -> Option<usize> {
    b.get(at..)?.starts_with(lit).then_some(at + lit.len())
}

/// The contents of a JSON string literal at `b[at..]` with no escapes and no control
/// characters (the closing quote is at the range's end).
fn plain_str(b: &[u8], at: usize) -> Option<Range<usize>> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let end = start + special(&b[start..])?;
    (b[end] == b'"').then_some(start..end)
}

/// The value at the start of `rest` (which must end with the frame's closing `}` right after
/// it): its text, `None` for `null`. The value must be one JSON value with no whitespace
/// around it, valid UTF-8.
fn value(rest: &[u8]) -> Option<Option<&str>> {
    let v = rest.strip_suffix(b"}")?;
    let (&first, &last) = (v.first()?, v.last()?);
    match first {
        b'n' if v == b"null" => return Some(None),
        b't' if v == b"true" => return Some(Some("true")),
        b'f' if v == b"false" => return Some(Some("false")),
        b'-' | b'0'..=b'9' if integer(v) => return std::str::from_utf8(v).ok().map(Some),
        b'"' if v.len() >= 2 && special(&v[1..]) == Some(v.len() - 2) && last == b'"' => {
            return std::str::from_utf8(v).ok().map(Some)
        }
        _ => {}
    }
    // Whitespace around the value is valid JSON but not our shape: the full decoder decides.
    if first.is_ascii_whitespace() || last.is_ascii_whitespace() {
        return None;
    }
    // serde_json limits nesting to 128 levels, counting the frame's own object: a value that
    // could come near it (about as many brackets) is left to the full decoder, so both agree.
    if v.len() >= 2 * NEAR_DEPTH
        && v.iter().filter(|b| matches!(b, b'[' | b'{')).count() >= NEAR_DEPTH
    {
        return None;
    }
    // serde_json checks the raw value's UTF-8 as it takes it.
    let raw: &RawValue = serde_json::from_slice(v).ok()?;
    (raw.get().len() == v.len()).then_some(Some(raw.get()))
}

/// `b` is exactly a JSON integer: `-?(0|[1-9][0-9]*)`.
fn integer(b: &[u8]) -> bool {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    match digits {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
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

/// A JSON non-negative integer of at most 18 digits (no leading zero) at the start of `b`:
/// its value and how many digits it has.
fn uint(b: &[u8]) -> Option<(u64, usize)> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 18 || (digits > 1 && b[0] == b'0') {
        return None;
    }
    let n = b[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((n, digits))
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
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":01}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":-}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":"a\"}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":"}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1],"data":nul}"#,
            r#"{"type":"stream_end","peerID":"a","requestId":["b",1],"data":1}"#,
            r#"{"type":"stream_data","peerID":"a","requestId":["b",1234567890123456789],"data":1}"#,
        ] {
            assert!(decode_stream_data(other).is_none(), "{other}");
            assert!(
                decode_item(other.as_bytes(), &mut Known::default()).is_none(),
                "{other}"
            );
        }
    }

    #[test]
    fn a_known_head_is_compared_then_only_the_value_checked() {
        let mut known = Known::default();
        let f = |d: &str| {
            format!(r#"{{"type":"stream_data","peerID":"p","requestId":["c",3],"data":{d}}}"#)
        };
        let first = f("1");
        let item = decode_item(first.as_bytes(), &mut known).unwrap();
        assert_eq!((item.data, item.new_head), (Some("1"), true));
        assert_eq!((known.peer_id(), known.request_id()), ("p", ("c", 3)));
        let second = f(r#""é""#);
        let item = decode_item(second.as_bytes(), &mut known).unwrap();
        assert_eq!((item.data, item.new_head), (Some(r#""é""#), false));
        // The same head with a value that is not UTF-8, or not JSON: not taken.
        let mut bad = f(r#""éé""#).into_bytes();
        let at = bad.len() - 3;
        bad[at] = 0xff;
        assert!(decode_item(&bad, &mut known).is_none());
        assert!(decode_item(f("[1,]").as_bytes(), &mut known).is_none());
        assert!(decode_item(f(r#"["\ud800"]"#).as_bytes(), &mut known).is_some());
        // An id that is not UTF-8 is never remembered.
        let mut bad_id = f("1").into_bytes();
        bad_id[32] = 0xc3;
        assert!(decode_item(&bad_id, &mut Known::default()).is_none());
    }

    /// Frames with ids from an alphabet of plain and special characters, in our shape or
    /// nearly.
    fn frame(peer: &str, caller: &str, n: u64, data: &str) -> String {
        format!(
            r#"{{"type":"stream_data","peerID":"{peer}","requestId":["{caller}",{n}],"data":{data}}}"#
        )
    }

    /// What the full decoder says of `frame`'s bytes, as (peer, caller, n, data).
    fn full(frame: &[u8]) -> Option<(String, String, i128, Option<String>)> {
        let text = std::str::from_utf8(frame).ok()?;
        let f = crate::frame::decode_ref_full(text).ok()?;
        assert_eq!(f.ty, FrameType::StreamData);
        let (caller, n) = f.request_id?;
        Some((
            f.peer_id?.into_owned(),
            caller.into_owned(),
            n,
            f.data.map(|d| d.get().to_owned()),
        ))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Whatever came before (a warm or cold head), an item taken from the bytes is what
        /// the full decoder makes of the same bytes — invalid UTF-8 anywhere included.
        #[test]
        fn items_from_bytes_agree_with_the_full_decoder(
            seeds in proptest::collection::vec(("[ab\"\\\\\u{1}é]{0,6}", "[ab\"\\\\\u{1}é]{0,6}"), 0..3),
            peer in "[ab\"\\\\\u{1}é]{0,6}",
            caller in "[ab\"\\\\\u{1}é]{0,6}",
            n in 0u64..100,
            data in "(1|-0|01|-|1.5|1e3|true|fals|null|\"x\"|\"é\"|\"\\\\n\"|\"\u{1}\"|\\[1\\]|\\{\"a\":2\\}|1 | 1|)",
            flip in proptest::option::of((0usize..200, proptest::sample::select(vec![0x80u8, 0xc3, 0xff, b'"', b'}', b' ']))),
        ) {
            let mut known = Known::default();
            for (p, c) in &seeds {
                let _ = decode_item(frame(p, c, n, "1").as_bytes(), &mut known);
            }
            let mut bytes = frame(&peer, &caller, n, &data).into_bytes();
            if let Some((at, b)) = flip {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            let cold = decode_item(&bytes, &mut Known::default()).map(|i| i.data);
            if let Some(item) = decode_item(&bytes, &mut known) {
                let (p, c, n2, d) = full(&bytes).unwrap_or_else(|| panic!("taken, refused by the full decoder: {}", String::from_utf8_lossy(&bytes)));
                proptest::prop_assert_eq!(known.peer_id(), p.as_str());
                proptest::prop_assert_eq!(known.request_id(), (c.as_str(), u64::try_from(n2).unwrap()));
                proptest::prop_assert_eq!(item.data.map(str::to_owned), d);
                proptest::prop_assert_eq!(Some(item.data), cold);
            } else {
                proptest::prop_assert_eq!(cold, None);
            }
        }

        #[test]
        fn special_finds_what_a_plain_scan_finds(s in "[a-f0-9\\-\"\\\\\u{0}-\u{1f} é]{0,40}") {
            let b = s.as_bytes();
            let plain = b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            proptest::prop_assert_eq!(special(b), plain);
        }

        #[test]
        fn integer_is_the_json_grammar(s in "-?[0-9]{0,4}[.e]?[0-9]?") {
            let json = serde_json::from_str::<serde_json::Value>(&s).is_ok_and(|v| v.is_number())
                && !s.contains(['.', 'e']);
            proptest::prop_assert_eq!(integer(s.as_bytes()), json);
        }
    }
}
