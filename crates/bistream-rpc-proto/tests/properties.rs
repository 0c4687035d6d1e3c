//! Property tests of the rpc frame codec through its public API: any frame `encode` writes,
//! with any peer id, any 128-bit request id and any JSON `data`, decodes to exactly what was
//! encoded (raw `data` byte-identical); several frames concatenated in one text, or a frame cut
//! short, are refused, never half-read; and arbitrary text never panics the decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bistream_rpc_proto::frame::decode_ref_full;
use bistream_rpc_proto::{decode, decode_ref, encode, FrameRef, FrameType, RequestId};
use proptest::prelude::*;
use serde_json::value::RawValue;

/// Any JSON value, nested a few levels, with numbers no f64 holds exactly.
fn any_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<i128>().prop_map(|n| n.to_string()),
        Just("1.10".to_string()),
        Just("1e400".to_string()),
        Just("-0.0".to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::to_string(&f).unwrap()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((any::<String>(), inner), 0..6).prop_map(|kv| {
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn any_type() -> impl Strategy<Value = FrameType> {
    proptest::sample::select(FrameType::ALL.to_vec())
}

/// Peer ids: any printable text, or the characters that need escaping.
fn any_peer() -> impl Strategy<Value = String> {
    prop_oneof!["\\PC{1,24}", "[\"\\\\\u{0}-\u{1f}\u{7f}é😀]{1,8}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_round_trips(
        ty in any_type(),
        peer in any_peer(),
        id_peer in any::<String>(),
        n in any::<i128>(),
        data in proptest::option::of(any_json()),
    ) {
        let mut text = String::new();
        encode(&mut text, ty, &peer, Some((&id_peer, n)), data.as_deref());
        let f = decode(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        prop_assert_eq!(f.ty, ty);
        prop_assert_eq!(f.peer_id.as_deref(), Some(peer.as_str()));
        prop_assert_eq!(f.request_id, Some(RequestId { peer: id_peer, n }));
        // `null` data reads as absent.
        let want = data.filter(|d| d != "null");
        prop_assert_eq!(f.data.as_deref().map(|d| d.get().to_string()), want);
        // The text is one valid JSON value (syntax only: `1e400` is valid JSON but no f64).
        prop_assert!(serde_json::from_str::<Box<RawValue>>(&text).is_ok(), "{}", text);
    }

    #[test]
    fn frames_without_request_id_round_trip(
        ty in proptest::sample::select(vec![FrameType::FireAndForget, FrameType::Hello, FrameType::Keepalive]),
        peer in any_peer(),
        data in proptest::option::of(any_json()),
    ) {
        let mut text = String::new();
        encode(&mut text, ty, &peer, None, data.as_deref());
        let f = decode(&text).unwrap();
        prop_assert_eq!(f.ty, ty);
        prop_assert_eq!(f.request_id, None);
    }

    /// Two frames in one text (a framing bug upstream) are refused as a whole.
    #[test]
    fn concatenated_frames_are_refused(a in any_json(), b in any_json(), n in any::<i64>()) {
        let mut text = String::new();
        encode(&mut text, FrameType::Request, "p", Some(("p", n.into())), Some(&a));
        encode(&mut text, FrameType::Response, "p", Some(("p", n.into())), Some(&b));
        prop_assert!(decode(&text).is_err());
    }

    /// Cutting a frame anywhere before its end gives an error, never a frame or a panic.
    #[test]
    fn truncated_frames_are_refused(
        data in any_json(), n in any::<i64>(), cut in any::<prop::sample::Index>()
    ) {
        let mut text = String::new();
        encode(&mut text, FrameType::StreamData, "peer", Some(("peer", n.into())), Some(&data));
        let bounds: Vec<usize> = (0..text.len()).filter(|i| text.is_char_boundary(*i)).collect();
        let at = bounds[cut.index(bounds.len())];
        prop_assert!(decode(&text[..at]).is_err(), "accepted {:?}", &text[..at]);
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = decode(&s);
    }
}

/// A decoded frame's type, peer id, request id and data, comparable.
type Fields = (
    FrameType,
    Option<String>,
    Option<(String, i128)>,
    Option<String>,
);

/// The fields of a decoded frame, comparable.
fn fields(f: &FrameRef<'_>) -> Fields {
    (
        f.ty,
        f.peer_id.as_deref().map(str::to_owned),
        f.request_id.as_ref().map(|(p, n)| (p.to_string(), *n)),
        f.data.map(|d| d.get().to_owned()),
    )
}

/// A frame text: one our encoder writes (any type, peer ids, counter and data), then maybe
/// changed at one place (a character cut, inserted or replaced, or the text cut short).
fn any_frame_text() -> impl Strategy<Value = String> {
    let peer = prop_oneof![
        Just("5f0c1a2e-9b7d-4c3e-8a1f-0123456789ab".to_string()),
        any_peer()
    ];
    let n = prop_oneof![
        0..1_000_000i128,
        any::<i64>().prop_map(i128::from),
        any::<i128>()
    ];
    let ty = prop_oneof![4 => Just(FrameType::StreamData), 1 => any_type()];
    let data = prop_oneof![
        any_json().prop_map(Some),
        Just(None),
        "[ \t\r\n]{0,2}[-0-9a-z\\[\\]{}\",:. ]{0,12}[ \t\r\n]{0,2}".prop_map(Some),
    ];
    let edit = prop_oneof![
        3 => Just(None),
        1 => (any::<prop::sample::Index>(), 0..4u8, any::<char>()).prop_map(Some),
    ];
    (ty, peer.clone(), peer, n, data, edit).prop_map(|(ty, me, caller, n, data, edit)| {
        let mut text = String::new();
        encode(&mut text, ty, &me, Some((&caller, n)), data.as_deref());
        if let Some((at, how, c)) = edit {
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|i| text.is_char_boundary(*i))
                .collect();
            let i = bounds[at.index(bounds.len())];
            match how {
                0 => text.truncate(i),
                1 => text.insert(i, c),
                _ if i < text.len() => {
                    let ch = text[i..].chars().next().map_or(1, char::len_utf8);
                    if how == 2 {
                        text.replace_range(i..i + ch, "");
                    } else {
                        text.replace_range(i..i + ch, &c.to_string());
                    }
                }
                _ => {}
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Where the `stream_data` fast path takes a message, the full decoder gives the same
    /// frame; and it takes every `stream_data` frame our encoder writes with plain ids.
    #[test]
    fn fast_path_agrees_with_full_decoder(text in any_frame_text()) {
        let fast = bistream_rpc_proto::fast::decode_stream_data(&text);
        let full = decode_ref_full(&text);
        if let Some(f) = &fast {
            let full = full.as_ref().unwrap_or_else(|e| panic!("fast took {text:?}, full said {e}"));
            prop_assert_eq!(fields(f), fields(full), "{}", text);
        }
        // decode_ref is the fast path, else the full decoder.
        if let (Ok(a), Ok(b)) = (decode_ref(&text), decode_ref_full(&text)) {
            prop_assert_eq!(fields(&a), fields(&b));
        }
    }

    #[test]
    fn fast_path_takes_our_items(n in 0..1_000_000_000_000_000_000u64, data in any_json()) {
        let me = "5f0c1a2e-9b7d-4c3e-8a1f-0123456789ab";
        let mut text = String::new();
        encode(&mut text, FrameType::StreamData, me, Some((me, n.into())), Some(&data));
        let f = bistream_rpc_proto::fast::decode_stream_data(&text);
        prop_assert!(f.is_some(), "{}", text);
    }
}
