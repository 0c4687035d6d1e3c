//! Property tests of the relay codecs through the public API, in the spelling the real peer
//! writes: Python's `json.dumps` escapes every non-ASCII character as `\uXXXX` (surrogate pairs
//! above U+FFFF) and puts a space after `:` and `,`. Any message in that spelling decodes to the
//! same value as our compact UTF-8 encoding, through the full decoder and through the fast path
//! (whose output, decoded, carries the rewritten source and the original fields).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bistream_relay_proto::{
    json_string, DescriptionType, PeerConnectionRequest, RawPeerMessage, RelayMessage,
    RelayRegistrationRequest, RelayResponse,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Re-spells compact JSON the way Python's `json.dumps` (ensure_ascii) does: non-ASCII as
/// `\uXXXX` escapes and `", "` / `": "` separators outside strings.
fn python_spelling(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut in_string = false;
    let mut escaped = false;
    for c in compact.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            ':' | ',' => {
                out.push(c);
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Text with the characters that stress escaping: quotes, backslashes, controls, non-BMP.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"\\\\\u{0}-\u{1f}\u{7f}\u{80}\u{2028}é😀\u{10ffff} a]{0,40}",
    ]
}

fn any_peer_message() -> impl Strategy<Value = PeerConnectionRequest> {
    (
        any_uuid(),
        any_text(),
        any_uuid(),
        any::<bool>(),
        any_text(),
        proptest::option::of(any_text()),
    )
        .prop_map(|(s, n, p, offer, d, e)| PeerConnectionRequest {
            source_uuid: s,
            source_name: n,
            peer_uuid: p,
            description_type: if offer {
                DescriptionType::Offer
            } else {
                DescriptionType::Answer
            },
            description: d,
            error: e,
        })
}

fn any_message() -> impl Strategy<Value = RelayMessage> {
    prop_oneof![
        (any_text(), any_uuid()).prop_map(|(name, uuid)| {
            RelayMessage::Registration(RelayRegistrationRequest { name, uuid })
        }),
        (
            any::<bool>(),
            proptest::option::of(any_text()),
            any::<bool>()
        )
            .prop_map(
                |(success, message, error)| RelayMessage::Response(RelayResponse {
                    success,
                    message,
                    error
                })
            ),
        any_peer_message().prop_map(RelayMessage::PeerConnection),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn python_spelling_decodes_like_ours(m in any_message()) {
        let ours = m.encode();
        let py = python_spelling(&ours);
        prop_assert!(py.is_ascii());
        prop_assert_eq!(RelayMessage::decode(&py).unwrap(), m.clone());
        // And what we write decodes with a generic JSON parser to the same object.
        let a: serde_json::Value = serde_json::from_str(&ours).unwrap();
        let b: serde_json::Value = serde_json::from_str(&py).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn fast_path_forwards_python_spelling(
        p in any_peer_message(), me in any_uuid(), name in any_text(), bounce in proptest::option::of(any_text())
    ) {
        let py = python_spelling(&RelayMessage::PeerConnection(p.clone()).encode());
        let fast = RawPeerMessage::decode(&py).expect("fast path accepts a valid peer_connection");
        prop_assert_eq!(fast.peer_uuid, p.peer_uuid);
        let out = fast.encode(&me, &json_string(&name), bounce.as_deref());
        let expected = PeerConnectionRequest {
            source_uuid: me,
            source_name: name,
            error: bounce.or(p.error.clone()),
            ..p
        };
        prop_assert_eq!(RelayMessage::decode(&out).unwrap(), RelayMessage::PeerConnection(expected));
    }

    /// A message cut anywhere before its end is refused by both decoders (a WebSocket message
    /// is whole or absent, so a cut message is malformed input, never a partial read).
    #[test]
    fn truncated_messages_are_refused(m in any_message(), cut in any::<prop::sample::Index>()) {
        let text = m.encode();
        let bounds: Vec<usize> = (0..text.len()).filter(|i| text.is_char_boundary(*i)).collect();
        let at = bounds[cut.index(bounds.len())];
        prop_assert!(RelayMessage::decode(&text[..at]).is_err());
        prop_assert!(RawPeerMessage::decode(&text[..at]).is_none());
    }
}
