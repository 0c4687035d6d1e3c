//! The forwarding fast path: decode a `peer_connection` without copying its strings, and
//! write the forwarded message in one pass.
//!
//! The checks match [`RelayMessage::decode`](crate::RelayMessage::decode) (every field's JSON
//! type, `description_type` offer/answer, UUIDs in any spelling `uuid` accepts, no unknown or
//! duplicate fields; a lone UTF-16 surrogate escape such as `\ud800` is accepted by both), but
//! `description` and `error` are kept as their raw JSON string tokens and written back as they
//! came, lone surrogates included: no allocation per field, no unescape/re-escape of an SDP. A message this path does not
//! accept goes through `RelayMessage::decode`, which accepts or classifies it.
//!
//! ```
//! use bistream_relay_proto::{json_string, RawPeerMessage};
//! use uuid::Uuid;
//!
//! let text = r#"{"message_type": "peer_connection", "source_uuid": "11111111-2222-4333-8444-555555555555",
//!   "source_name": "spoofed", "peer_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
//!   "description_type": "offer", "description": "v=0\r\n", "error": null}"#;
//! let m = RawPeerMessage::decode(text).unwrap();
//! let me = Uuid::new_v4();
//! let out = m.encode(&me, &json_string("me"), None);
//! assert!(out.contains(r#""source_name":"me""#) && out.contains(r#""description":"v=0\r\n""#));
//! ```

use std::fmt::Write as _;

use crate::DescriptionType;
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
enum PeerType {
    #[serde(rename = "peer_connection")]
    PeerConnection,
}

/// A `peer_connection` borrowed from the received text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeerMessage<'a> {
    #[allow(dead_code)]
    message_type: PeerType,
    #[allow(dead_code)]
    source_uuid: Uuid,
    #[serde(borrow)]
    source_name: &'a RawValue,
    /// The recipient.
    pub peer_uuid: Uuid,
    description_type: DescriptionType,
    #[serde(borrow)]
    description: &'a RawValue,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

/// Whether `raw` is a JSON string token. Its escapes were checked when it was parsed; a lone
/// UTF-16 surrogate escape is kept as it came (see [`crate::surrogates`]'s module doc).
fn is_json_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

impl<'a> RawPeerMessage<'a> {
    /// Decodes `text` if it is a well-formed `peer_connection`; `None` otherwise (the caller
    /// then uses the full decoder).
    pub fn decode(text: &'a str) -> Option<RawPeerMessage<'a>> {
        let m: RawPeerMessage<'a> = serde_json::from_str(text).ok()?;
        let error_ok = m
            .error
            .is_none_or(|e| is_json_string(e) || e.get() == "null");
        (is_json_string(m.source_name) && is_json_string(m.description) && error_ok).then_some(m)
    }

    /// Writes the message as sent by `source` (`source_name_json` is its name as a JSON
    /// string), with `error` replaced when given. Same layout as `RelayMessage::encode`.
    pub fn encode(&self, source: &Uuid, source_name_json: &str, error: Option<&str>) -> String {
        let desc = self.description.get();
        let mut out = String::with_capacity(
            200 + source_name_json.len() + desc.len() + error.map_or(0, |e| e.len() + 8),
        );
        let dt = match self.description_type {
            DescriptionType::Offer => "offer",
            DescriptionType::Answer => "answer",
        };
        let _ = write!(
            out,
            r#"{{"message_type":"peer_connection","source_uuid":"{source}","source_name":{source_name_json},"peer_uuid":"{}","description_type":"{dt}","description":{desc},"error":"#,
            self.peer_uuid
        );
        match (error, self.error) {
            (Some(e), _) => out.push_str(&json_string(e)),
            (None, Some(raw)) => out.push_str(raw.get()),
            (None, None) => out.push_str("null"),
        }
        out.push('}');
        out
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PeerConnectionRequest, RelayMessage};

    const A: &str = "11111111-2222-4333-8444-555555555555";
    const B: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

    fn py(desc_json: &str, error_json: &str) -> String {
        format!(
            r#"{{"source_uuid": "{A}", "source_name": "client-a", "peer_uuid": "{}", "description_type": "offer", "description": {desc_json}, "error": {error_json}, "message_type": "peer_connection"}}"#,
            B.to_uppercase()
        )
    }

    /// What the fast path writes decodes to exactly what the full path would build.
    #[test]
    fn agrees_with_the_full_decoder() {
        let src = Uuid::new_v4();
        for (desc, err) in [
            (r#""{\"sdp\": \"v=0\\r\\n\", \"type\": \"offer\"}""#, "null"),
            (r#""\u00e9\ud83d\ude00 raw é😀""#, r#""boom""#),
            (r#""""#, "null"),
        ] {
            let text = py(desc, err);
            let fast = RawPeerMessage::decode(&text).expect("fast path accepts");
            for new_error in [None, Some("Cannot forward \"x\" é")] {
                let out = fast.encode(&src, &json_string("ñame"), new_error);
                let RelayMessage::PeerConnection(full) = RelayMessage::decode(&text).unwrap()
                else {
                    panic!()
                };
                let expected = PeerConnectionRequest {
                    source_uuid: src,
                    source_name: "ñame".into(),
                    error: new_error.map(str::to_string).or(full.error.clone()),
                    ..full
                };
                assert_eq!(
                    RelayMessage::decode(&out).unwrap(),
                    RelayMessage::PeerConnection(expected),
                    "{out}"
                );
                assert!(
                    out.contains(&format!("\"peer_uuid\":\"{B}\"")),
                    "canonical uuid: {out}"
                );
            }
        }
    }

    /// Everything the full decoder refuses, the fast path refuses too (and the full decoder
    /// then reports it).
    #[test]
    fn refuses_what_the_full_decoder_refuses() {
        let ok = py("\"d\"", "null");
        assert!(RawPeerMessage::decode(&ok).is_some());
        for bad in [
            ok.replace("\"description\": \"d\"", "\"description\": {\"k\": 1}"),
            ok.replace("\"description\": \"d\"", "\"description\": 7"),
            ok.replace("\"error\": null", "\"error\": 1"),
            ok.replace("\"error\": null", "\"error\": []"),
            ok.replace("\"source_name\": \"client-a\"", "\"source_name\": 7"),
            ok.replace("\"offer\"", "\"weird\""),
            ok.replace(A, "not-a-uuid"),
            ok.replace(
                "\"message_type\": \"peer_connection\"",
                "\"message_type\": \"relay_registration\"",
            ),
            ok.replace("\"error\": null,", "\"error\": null, \"extra\": 1,"),
            ok.replace(
                "\"error\": null,",
                "\"error\": null, \"description\": \"again\",",
            ),
            ok.replace("\"source_name\": \"client-a\", ", ""),
            format!("{ok} trailing"),
            "[]".to_string(),
        ] {
            assert!(
                RawPeerMessage::decode(&bad).is_none(),
                "fast path accepted {bad}"
            );
            assert!(
                RelayMessage::decode(&bad).is_err(),
                "full path accepted {bad}"
            );
        }
        // Lone surrogate escapes (Python writes them): both paths accept them; the fast path
        // forwards the raw token byte-exact, the full decoder reads each as U+FFFD.
        for (desc, value) in [
            (r#""\ud800""#, "\u{fffd}"),
            (r#""x\udc00y""#, "x\u{fffd}y"),
            (r#""\ud83d""#, "\u{fffd}"),
            (r#""\ud83dx""#, "\u{fffd}x"),
            (r#""\ud83d\u0041""#, "\u{fffd}A"),
        ] {
            for field in ["description", "error"] {
                let old = if field == "error" {
                    "\"error\": null".to_string()
                } else {
                    "\"description\": \"d\"".to_string()
                };
                let text = ok.replace(&old, &format!("\"{field}\": {desc}"));
                let fast = RawPeerMessage::decode(&text).expect("fast path accepts");
                let out = fast.encode(&Uuid::new_v4(), &json_string("me"), None);
                assert!(
                    out.contains(&format!("\"{field}\":{desc}")),
                    "byte-exact: {out}"
                );
                let Ok(RelayMessage::PeerConnection(full)) = RelayMessage::decode(&text) else {
                    panic!("full path refused {text}")
                };
                let got = if field == "error" {
                    full.error.clone().unwrap_or_default()
                } else {
                    full.description.clone()
                };
                assert_eq!(got, value, "{text}");
            }
        }
        // A lone surrogate whose hex is cut short is an invalid escape: both refuse it.
        let bad = ok.replace("\"description\": \"d\"", r#""description": "\ud83d\ude0""#);
        assert!(
            RawPeerMessage::decode(&bad).is_none(),
            "fast path accepted {bad}"
        );
        assert!(
            RelayMessage::decode(&bad).is_err(),
            "full path accepted {bad}"
        );
        // A surrogate pair, and an escaped backslash before `u`, are fine in both.
        for desc in [r#""\ud83d\ude00""#, r#""\\ud800""#, r#""\u00e9\\""#] {
            let good = ok.replace(
                "\"description\": \"d\"",
                &format!("\"description\": {desc}"),
            );
            assert!(
                RawPeerMessage::decode(&good).is_some(),
                "fast path refused {good}"
            );
            assert!(
                RelayMessage::decode(&good).is_ok(),
                "full path refused {good}"
            );
        }
        // `error` may be absent (defaults to null).
        assert!(RawPeerMessage::decode(&ok.replace("\"error\": null, ", "")).is_some());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{json, Value};

        fn any_value() -> impl Strategy<Value = Value> {
            let uuid = any::<u128>().prop_map(|v| {
                let u = Uuid::from_u128(v);
                Value::String(match v % 4 {
                    0 => u.to_string(),
                    1 => u.to_string().to_uppercase(),
                    2 => format!("{{{u}}}"),
                    _ => u.simple().to_string(),
                })
            });
            prop_oneof![
                4 => uuid,
                4 => any::<String>().prop_map(Value::String),
                2 => prop_oneof![Just("offer"), Just("answer"), Just("peer_connection"), Just("Offer")]
                    .prop_map(|s| Value::String(s.into())),
                1 => Just(Value::Null),
                1 => any::<i64>().prop_map(|n| json!(n)),
                1 => any::<bool>().prop_map(Value::Bool),
                1 => Just(json!([1, "x"])),
                1 => Just(json!({"k": "v"})),
            ]
        }

        const KEYS: [&str; 8] = [
            "message_type",
            "source_uuid",
            "source_name",
            "peer_uuid",
            "description_type",
            "description",
            "error",
            "extra",
        ];

        /// A mostly-valid peer_connection with random fields dropped, retyped or added.
        fn any_message() -> impl Strategy<Value = String> {
            (
                any::<String>(),
                any::<String>(),
                proptest::option::of(any::<String>()),
                proptest::collection::vec((0..KEYS.len(), proptest::option::of(any_value())), 0..4),
            )
                .prop_map(|(name, desc, err, edits)| {
                    let mut m = serde_json::Map::new();
                    m.insert("message_type".into(), json!("peer_connection"));
                    m.insert("source_uuid".into(), json!(Uuid::new_v4().to_string()));
                    m.insert("source_name".into(), json!(name));
                    m.insert("peer_uuid".into(), json!(Uuid::new_v4().to_string()));
                    m.insert("description_type".into(), json!("offer"));
                    m.insert("description".into(), json!(desc));
                    m.insert("error".into(), json!(err));
                    for (k, v) in edits {
                        match v {
                            Some(v) => m.insert(KEYS[k].into(), v),
                            None => m.remove(KEYS[k]),
                        };
                    }
                    Value::Object(m).to_string()
                })
        }

        /// Raw escapes a serializer never writes, spliced into `description` or `error`.
        const ESCAPES: [&str; 10] = [
            "",
            "\\ud800",
            "\\udc00x",
            "\\ud800\\ud800",
            "\\udfff",
            "\\ud83d\\ude00",
            "\\ud83d",
            "\\ud83d\\u0041",
            "\\\\ud800",
            "\\u00e9",
        ];

        fn with_escape(text: String, field: bool, esc: usize) -> String {
            let key = if field {
                "\"description\":\""
            } else {
                "\"error\":\""
            };
            text.replacen(key, &format!("{key}{}", ESCAPES[esc % ESCAPES.len()]), 1)
        }

        proptest! {
            #[test]
            fn fast_and_full_paths_agree(
                text in any_message(), src in any::<u128>(), field in any::<bool>(), esc in 0..ESCAPES.len()
            ) {
                let text = with_escape(text, field, esc);
                let fast = RawPeerMessage::decode(&text);
                let full = RelayMessage::decode(&text);
                match (&fast, &full) {
                    (Some(f), Ok(RelayMessage::PeerConnection(p))) => {
                        let src = Uuid::from_u128(src);
                        let out = f.encode(&src, &json_string("me"), None);
                        // Forwarded byte-exact, lone surrogate escapes included.
                        let raw_desc = format!("\"description\":{}", f.description.get());
                        prop_assert!(out.contains(&raw_desc), "not byte-exact: {}", out);
                        let expected = PeerConnectionRequest { source_uuid: src, source_name: "me".into(), ..p.clone() };
                        prop_assert_eq!(RelayMessage::decode(&out).unwrap(), RelayMessage::PeerConnection(expected));
                    }
                    (None, Err(_)) | (None, Ok(RelayMessage::Registration(_) | RelayMessage::Response(_))) => {}
                    _ => prop_assert!(false, "paths disagree on {}: fast {} full {:?}", text, fast.is_some(), full),
                }
            }
        }
    }
}
