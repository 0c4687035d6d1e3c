//! The three relay messages, their JSON encoding and type-checked decoding.
//!
//! Decoding is stricter than ProxyStore's (which checks only UUIDs and field names): every field
//! must have its declared JSON type, `description_type` must be `offer` or `answer`, and the top
//! level must be an object. Anything else is a [`DecodeError`], which the server answers with
//! close code 4000. Encoding writes compact JSON with non-ASCII as raw UTF-8 (Python writes
//! `\uXXXX` escapes); both decode to the same values with any JSON parser.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use bistream_core::sanitize::sanitize_to;

use crate::surrogates::replace_lone_surrogates;

/// A client's request to register under `uuid` (sent first on every connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayRegistrationRequest {
    /// Human-readable client name (ProxyStore uses the host or endpoint name).
    pub name: String,
    /// The client's identity on the relay.
    pub uuid: Uuid,
}

/// The server's reply to a registration (and, in ProxyStore, to server-side errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayResponse {
    /// Whether the request succeeded.
    #[serde(default = "default_true")]
    pub success: bool,
    /// Error text, `"<ErrorClass>: <message>"` in ProxyStore.
    #[serde(default)]
    pub message: Option<String>,
    /// Whether this reply reports an error.
    #[serde(default)]
    pub error: bool,
}

fn default_true() -> bool {
    true
}

impl RelayResponse {
    /// The reply to a successful registration.
    pub fn success() -> RelayResponse {
        RelayResponse {
            success: true,
            message: None,
            error: false,
        }
    }

    /// An error reply with the given text.
    pub fn failure(message: impl Into<String>) -> RelayResponse {
        RelayResponse {
            success: false,
            message: Some(message.into()),
            error: true,
        }
    }
}

/// WebRTC session description kind carried by a [`PeerConnectionRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DescriptionType {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
}

impl fmt::Display for DescriptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DescriptionType::Offer => "offer",
            DescriptionType::Answer => "answer",
        })
    }
}

/// A message from one client to another, forwarded by the relay to `peer_uuid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConnectionRequest {
    /// The sender (the bistream server overwrites it with the sender's registration).
    pub source_uuid: Uuid,
    /// The sender's name (overwritten like `source_uuid`).
    pub source_name: String,
    /// The recipient.
    pub peer_uuid: Uuid,
    /// Offer or answer.
    pub description_type: DescriptionType,
    /// The session description (opaque text to the relay).
    pub description: String,
    /// Set by the relay when the message is bounced back undeliverable.
    #[serde(default)]
    pub error: Option<String>,
}

/// Any relay message. The JSON `message_type` key selects the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "message_type")]
pub enum RelayMessage {
    /// `relay_registration`
    #[serde(rename = "relay_registration")]
    Registration(RelayRegistrationRequest),
    /// `relay_response`
    #[serde(rename = "relay_response")]
    Response(RelayResponse),
    /// `peer_connection`
    #[serde(rename = "peer_connection")]
    PeerConnection(PeerConnectionRequest),
}

/// Why a text could not be decoded as a relay message. Every variant maps to close code 4000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// Valid JSON, but the top level is not an object.
    #[error("the top-level JSON value is {0}, not an object")]
    NotAnObject(&'static str),
    /// No `message_type` key, or it is not a string.
    #[error("missing or non-string \"message_type\"")]
    MissingType,
    /// `message_type` names no known message.
    #[error("unknown message_type {0:?}")]
    UnknownType(String),
    /// The fields do not match the message's definition (missing, extra, or wrong type).
    #[error("invalid {message_type} message: {detail}")]
    InvalidFields {
        /// The message type whose fields were wrong.
        message_type: &'static str,
        /// What was wrong, from the JSON decoder.
        detail: String,
    },
}

const TYPE_NAMES: [&str; 3] = ["relay_registration", "relay_response", "peer_connection"];

impl RelayMessage {
    /// Decodes one text frame. A lone UTF-16 surrogate escape (`\ud800`, which Python's
    /// `json` writes) in a string reads as U+FFFD.
    pub fn decode(text: &str) -> Result<RelayMessage, DecodeError> {
        serde_json::from_str(text).or_else(|e| match replace_lone_surrogates(text) {
            // Python writes lone surrogates as escapes: read each as U+FFFD (see `surrogates`).
            Some(t) => serde_json::from_str(&t).map_err(|e| classify_error(&t, e)),
            None => Err(classify_error(text, e)),
        })
    }

    /// Encodes as compact JSON (non-ASCII as UTF-8).
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: all keys are strings and there are no maps.
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("relay message encode: {e}"))
    }

    /// The wire name of this message's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            RelayMessage::Registration(_) => TYPE_NAMES[0],
            RelayMessage::Response(_) => TYPE_NAMES[1],
            RelayMessage::PeerConnection(_) => TYPE_NAMES[2],
        }
    }
}

impl From<RelayRegistrationRequest> for RelayMessage {
    fn from(m: RelayRegistrationRequest) -> Self {
        RelayMessage::Registration(m)
    }
}
impl From<RelayResponse> for RelayMessage {
    fn from(m: RelayResponse) -> Self {
        RelayMessage::Response(m)
    }
}
impl From<PeerConnectionRequest> for RelayMessage {
    fn from(m: PeerConnectionRequest) -> Self {
        RelayMessage::PeerConnection(m)
    }
}

/// Turns serde's error into a specific [`DecodeError`]. Only runs on the error path, so the
/// second parse it may do costs nothing on valid traffic.
fn classify_error(text: &str, err: serde_json::Error) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return DecodeError::Json(e.to_string()),
    };
    let obj = match &value {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null => return DecodeError::NotAnObject("null"),
        serde_json::Value::Bool(_) => return DecodeError::NotAnObject("a boolean"),
        serde_json::Value::Number(_) => return DecodeError::NotAnObject("a number"),
        serde_json::Value::String(_) => return DecodeError::NotAnObject("a string"),
        serde_json::Value::Array(_) => return DecodeError::NotAnObject("an array"),
    };
    let Some(serde_json::Value::String(t)) = obj.get("message_type") else {
        return DecodeError::MissingType;
    };
    match TYPE_NAMES.iter().find(|n| **n == t.as_str()) {
        // Both texts quote the client's input (a field name, a type name), which may be 1 MB
        // long or hold control characters: escaped and cut by core's sanitizer.
        Some(name) => DecodeError::InvalidFields {
            message_type: name,
            detail: sanitize_to(&err.to_string(), MAX_QUOTED_DETAIL),
        },
        None => DecodeError::UnknownType(sanitize_to(t, MAX_QUOTED_TYPE)),
    }
}

/// Longest quoted `message_type` in a [`DecodeError::UnknownType`] (bytes).
const MAX_QUOTED_TYPE: usize = 64;
/// Longest detail in a [`DecodeError::InvalidFields`] (bytes).
const MAX_QUOTED_DETAIL: usize = 256;

/// The `error` text ProxyStore puts on a message bounced back because the peer is unknown
/// (grammar as in ProxyStore 1.1.0).
pub fn unknown_peer_error(peer: &Uuid) -> String {
    format!(
        "Cannot forward peer connection message to peer {peer} because this peer is not registered this relay server."
    )
}

/// The `error` text ProxyStore puts on a message bounced back because the peer belongs to
/// another user.
pub fn other_user_error(peer: &Uuid) -> String {
    format!("The requested peer {peer} is owned by a different user.")
}

/// The `error` text bistream puts on a message bounced back because the peer's send queue was
/// full (the peer was disconnected; ProxyStore has no such limit).
pub fn not_reading_error(peer: &Uuid) -> String {
    format!("The requested peer {peer} is not reading its messages and was disconnected.")
}

/// The `error` text a clustered relay puts on a message for a peer on another node when the
/// Redis backplane is down; `cause` names it (no credentials).
pub fn cluster_unavailable_error(peer: &Uuid, cause: &str) -> String {
    format!(
        "Cannot forward peer connection message to peer {peer}: the peer is not on this relay node and the relay cluster backplane is unavailable ({cause})."
    )
}

/// The `error` text a clustered relay puts on a message for a peer on another node when the
/// backplane failed while the message was in flight (it may have been delivered).
pub fn cluster_failed_error(peer: &Uuid, cause: &str) -> String {
    format!(
        "Cannot forward peer connection message to peer {peer}: the relay cluster backplane failed while forwarding it ({cause})."
    )
}

/// The `error` text a clustered relay puts on a message for a peer on another node when its
/// queue towards the backplane is full.
pub fn cluster_overloaded_error(peer: &Uuid) -> String {
    format!(
        "Cannot forward peer connection message to peer {peer}: the relay cluster backplane is overloaded; try again later."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "11111111-2222-4333-8444-555555555555";
    const B: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

    fn uuid(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    // Exact texts produced by proxystore 1.1.0's encode_relay_message.
    #[test]
    fn decodes_python_encodings() {
        let reg = format!(
            r#"{{"name": "client-a", "uuid": "{A}", "message_type": "relay_registration"}}"#
        );
        assert_eq!(
            RelayMessage::decode(&reg).unwrap(),
            RelayMessage::Registration(RelayRegistrationRequest {
                name: "client-a".into(),
                uuid: uuid(A)
            })
        );
        let ok = r#"{"success": true, "message": null, "error": false, "message_type": "relay_response"}"#;
        assert_eq!(
            RelayMessage::decode(ok).unwrap(),
            RelayMessage::Response(RelayResponse::success())
        );
        let fail = r#"{"success": false, "message": "UnauthorizedError: x", "error": true, "message_type": "relay_response"}"#;
        assert_eq!(
            RelayMessage::decode(fail).unwrap(),
            RelayMessage::Response(RelayResponse::failure("UnauthorizedError: x"))
        );
        let pc = format!(
            r#"{{"source_uuid": "{A}", "source_name": "client-a", "peer_uuid": "{B}", "description_type": "answer", "description": "d", "error": "boom", "message_type": "peer_connection"}}"#
        );
        assert_eq!(
            RelayMessage::decode(&pc).unwrap(),
            RelayMessage::PeerConnection(PeerConnectionRequest {
                source_uuid: uuid(A),
                source_name: "client-a".into(),
                peer_uuid: uuid(B),
                description_type: DescriptionType::Answer,
                description: "d".into(),
                error: Some("boom".into()),
            })
        );
        let escaped = format!(
            r#"{{"name": "\u00f1ame\ud83d\ude00", "uuid": "{A}", "message_type": "relay_registration"}}"#
        );
        match RelayMessage::decode(&escaped).unwrap() {
            RelayMessage::Registration(r) => assert_eq!(r.name, "ñame😀"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_python_uuid_spellings_and_defaults() {
        for spelling in [
            A.to_uppercase(),
            format!("{{{A}}}"),
            format!("urn:uuid:{A}"),
            A.replace('-', ""),
        ] {
            let t = format!(
                r#"{{"name":"n","uuid":"{spelling}","message_type":"relay_registration"}}"#
            );
            match RelayMessage::decode(&t) {
                Ok(RelayMessage::Registration(r)) => assert_eq!(r.uuid, uuid(A)),
                other => panic!("{spelling}: {other:?}"),
            }
        }
        // Defaults as in the Python dataclasses.
        assert_eq!(
            RelayMessage::decode(r#"{"message_type":"relay_response"}"#).unwrap(),
            RelayMessage::Response(RelayResponse::success())
        );
    }

    #[test]
    fn encodes_canonical_uuids_and_raw_utf8() {
        let m = RelayMessage::PeerConnection(PeerConnectionRequest {
            source_uuid: uuid(&A.to_uppercase()),
            source_name: "é".into(),
            peer_uuid: uuid(B),
            description_type: DescriptionType::Offer,
            description: "{\"sdp\": \"v=0\"}".into(),
            error: None,
        });
        let t = m.encode();
        assert!(t.contains(A), "{t}");
        assert!(t.contains("\"source_name\":\"é\""), "{t}");
        assert!(t.contains("\"message_type\":\"peer_connection\""), "{t}");
        assert!(t.contains("\"description_type\":\"offer\""), "{t}");
        assert_eq!(RelayMessage::decode(&t).unwrap(), m);
    }

    #[test]
    fn classifies_bad_input() {
        use DecodeError::*;
        type Check = fn(&DecodeError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("hello", |e| matches!(e, Json(_))),
            ("", |e| matches!(e, Json(_))),
            ("{\"message_type\":", |e| matches!(e, Json(_))),
            ("[]", |e| matches!(e, NotAnObject("an array"))),
            ("1", |e| matches!(e, NotAnObject("a number"))),
            ("null", |e| matches!(e, NotAnObject("null"))),
            ("\"x\"", |e| matches!(e, NotAnObject("a string"))),
            ("{}", |e| matches!(e, MissingType)),
            (r#"{"message_type": ["x"]}"#, |e| matches!(e, MissingType)),
            (
                r#"{"message_type": "bogus"}"#,
                |e| matches!(e, UnknownType(t) if t == "bogus"),
            ),
            (
                r#"{"message_type": "RelayRegistrationRequest", "name": "a", "uuid": "11111111-2222-4333-8444-555555555555"}"#,
                |e| matches!(e, UnknownType(_)),
            ),
            (
                r#"{"message_type": "relay_registration", "name": "a", "uuid": "nope"}"#,
                |e| {
                    matches!(
                        e,
                        InvalidFields {
                            message_type: "relay_registration",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"message_type": "relay_registration", "name": "a"}"#,
                |e| matches!(e, InvalidFields { .. }),
            ),
            (
                r#"{"message_type": "relay_registration", "name": "a", "uuid": "11111111-2222-4333-8444-555555555555", "x": 1}"#,
                |e| matches!(e, InvalidFields { .. }),
            ),
            (
                r#"{"message_type": "relay_registration", "name": 123, "uuid": "11111111-2222-4333-8444-555555555555"}"#,
                |e| matches!(e, InvalidFields { .. }),
            ),
            (
                r#"{"message_type": "relay_registration", "name": null, "uuid": "11111111-2222-4333-8444-555555555555"}"#,
                |e| matches!(e, InvalidFields { .. }),
            ),
            (
                r#"{"message_type": "relay_response", "success": "yes"}"#,
                |e| matches!(e, InvalidFields { .. }),
            ),
            (
                r#"{"message_type": "peer_connection", "source_uuid": "11111111-2222-4333-8444-555555555555", "source_name": "a", "peer_uuid": "11111111-2222-4333-8444-555555555555", "description_type": "weird", "description": "d"}"#,
                |e| {
                    matches!(
                        e,
                        InvalidFields {
                            message_type: "peer_connection",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"message_type": "peer_connection", "source_uuid": "11111111-2222-4333-8444-555555555555", "source_name": "a", "peer_uuid": "11111111-2222-4333-8444-555555555555", "description_type": "offer", "description": {"k": 1}}"#,
                |e| matches!(e, InvalidFields { .. }),
            ),
        ];
        for (text, check) in cases {
            let e = RelayMessage::decode(text).expect_err(text);
            assert!(check(&e), "{text:?} gave {e:?}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn unknown_type_in_error_is_truncated() {
        let long = "x".repeat(10_000);
        let e = RelayMessage::decode(&format!(r#"{{"message_type": "{long}"}}"#)).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
        // A 1 MB unknown field name, with a forged log line in it, is cut and escaped too.
        let field = format!("a\n2026-01-01 INFO forged\x1b{}", "f".repeat(1 << 20));
        let text = format!(r#"{{"message_type": "relay_registration", "{field}": 1}}"#)
            .replace('\n', "\\n")
            .replace('\x1b', "\\u001b");
        let e = RelayMessage::decode(&text).unwrap_err();
        let shown = e.to_string();
        assert!(matches!(e, DecodeError::InvalidFields { .. }), "{shown}");
        assert!(shown.len() < 400, "{} bytes", shown.len());
        assert!(
            !shown.contains('\n') && !shown.contains('\x1b'),
            "{shown:?}"
        );
    }

    #[test]
    fn error_texts_match_proxystore() {
        let u = uuid("63a4ab35-38a3-4228-86a4-89d9755973e3");
        assert_eq!(unknown_peer_error(&u), "Cannot forward peer connection message to peer 63a4ab35-38a3-4228-86a4-89d9755973e3 because this peer is not registered this relay server.");
        assert_eq!(
            other_user_error(&u),
            "The requested peer 63a4ab35-38a3-4228-86a4-89d9755973e3 is owned by a different user."
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_uuid() -> impl Strategy<Value = Uuid> {
            any::<u128>().prop_map(Uuid::from_u128)
        }

        fn any_message() -> impl Strategy<Value = RelayMessage> {
            prop_oneof![
                (any::<String>(), any_uuid()).prop_map(|(name, uuid)| {
                    RelayMessage::Registration(RelayRegistrationRequest { name, uuid })
                }),
                (
                    any::<bool>(),
                    proptest::option::of(any::<String>()),
                    any::<bool>()
                )
                    .prop_map(|(success, message, error)| RelayMessage::Response(
                        RelayResponse {
                            success,
                            message,
                            error
                        }
                    )),
                (
                    any_uuid(),
                    any::<String>(),
                    any_uuid(),
                    any::<bool>(),
                    any::<String>(),
                    proptest::option::of(any::<String>())
                )
                    .prop_map(|(s, n, p, offer, d, e)| {
                        RelayMessage::PeerConnection(PeerConnectionRequest {
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
                    }),
            ]
        }

        proptest! {
            #[test]
            fn round_trips(m in any_message()) {
                prop_assert_eq!(RelayMessage::decode(&m.encode()).unwrap(), m);
            }

            #[test]
            fn decode_never_panics(s in ".*") {
                let _ = RelayMessage::decode(&s);
            }
        }
    }
}
