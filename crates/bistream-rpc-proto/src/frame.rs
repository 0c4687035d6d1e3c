//! The wire frames: one JSON object per message,
//! `{"type": T, "peerID": P, "requestId": [caller, N], "data": D}`, their decoder (strict about
//! structure, lenient about unknown fields like the seed's pydantic model) and a fast encoder
//! that copies `data` through byte for byte.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Version announced in `hello` frames.
pub const PROTOCOL_VERSION: u32 = 1;

/// The `type` of a frame: the seed's eight `MessageType` members plus four negotiated extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Request/response call.
    Request,
    /// The single reply to a `request`.
    Response,
    /// Final failure of any call.
    Error,
    /// Request/stream call.
    StreamRequest,
    /// One stream item (either direction in a bi-stream).
    StreamData,
    /// End of one side of a stream.
    StreamEnd,
    /// Bidirectional stream call.
    StreamStreamRequest,
    /// One-way message, no reply.
    FireAndForget,
    /// Extension: negotiation (first frame of each side).
    Hello,
    /// Extension: the caller dropped the call.
    Cancel,
    /// Extension: credit for `n` more stream items.
    RequestN,
    /// Extension: liveness probe / answer.
    Keepalive,
}

impl FrameType {
    /// Every type, in wire order of the table in `docs/protocol/rpc.md`.
    pub const ALL: [FrameType; 12] = [
        Self::Request,
        Self::Response,
        Self::Error,
        Self::StreamRequest,
        Self::StreamData,
        Self::StreamEnd,
        Self::StreamStreamRequest,
        Self::FireAndForget,
        Self::Hello,
        Self::Cancel,
        Self::RequestN,
        Self::Keepalive,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::Error => "error",
            Self::StreamRequest => "stream_request",
            Self::StreamData => "stream_data",
            Self::StreamEnd => "stream_end",
            Self::StreamStreamRequest => "stream_stream_request",
            Self::FireAndForget => "fire_and_forget",
            Self::Hello => "hello",
            Self::Cancel => "cancel",
            Self::RequestN => "request_n",
            Self::Keepalive => "keepalive",
        }
    }

    /// Parses a wire name (exact, lower case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// True for the frames a base (seed) peer never sees.
    pub fn is_extension(self) -> bool {
        matches!(
            self,
            Self::Hello | Self::Cancel | Self::RequestN | Self::Keepalive
        )
    }

    /// The interaction model a request frame opens.
    pub fn model(self) -> Option<Model> {
        match self {
            Self::Request => Some(Model::RequestResponse),
            Self::StreamRequest => Some(Model::RequestStream),
            Self::StreamStreamRequest => Some(Model::StreamStream),
            Self::FireAndForget => Some(Model::FireAndForget),
            _ => None,
        }
    }
}

/// The four interaction models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// One request, one response.
    RequestResponse,
    /// One request, a stream of items.
    RequestStream,
    /// Items both ways under one request id.
    StreamStream,
    /// One request, no reply.
    FireAndForget,
}

impl Model {
    /// The frame type that opens a call of this model.
    pub fn request_type(self) -> FrameType {
        match self {
            Self::RequestResponse => FrameType::Request,
            Self::RequestStream => FrameType::StreamRequest,
            Self::StreamStream => FrameType::StreamStreamRequest,
            Self::FireAndForget => FrameType::FireAndForget,
        }
    }

    /// Human name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::RequestResponse => "request/response",
            Self::RequestStream => "request/stream",
            Self::StreamStream => "stream/stream",
            Self::FireAndForget => "fire-and-forget",
        }
    }
}

/// The codes an `error` frame's `data.code` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No handler of that name (the message names the operation).
    UnknownOperation,
    /// The frame or its `data` is not valid, or the operation was called under the wrong model.
    InvalidRequest,
    /// The handler failed.
    HandlerFailed,
    /// The callee gave up after its deadline.
    Timeout,
    /// The call was cancelled.
    Cancelled,
    /// A per-connection limit (requests in flight, open streams) is reached.
    Overloaded,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 6] = [
        Self::UnknownOperation,
        Self::InvalidRequest,
        Self::HandlerFailed,
        Self::Timeout,
        Self::Cancelled,
        Self::Overloaded,
    ];

    /// The wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownOperation => "unknown_operation",
            Self::InvalidRequest => "invalid_request",
            Self::HandlerFailed => "handler_failed",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Overloaded => "overloaded",
        }
    }

    /// Parses a wire text.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names of the negotiable extensions, as listed in `hello.data.extensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extension {
    /// `cancel` frames.
    Cancel,
    /// `request_n` credit.
    RequestN,
    /// `keepalive` frames.
    Keepalive,
}

impl Extension {
    /// Every extension.
    pub const ALL: [Extension; 3] = [Self::Cancel, Self::RequestN, Self::Keepalive];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::RequestN => "request_n",
            Self::Keepalive => "keepalive",
        }
    }
}

/// A request id: the caller's peer id and its never-reused counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// The caller's peer id.
    pub peer: String,
    /// The caller's counter (any JSON integer that fits in 128 bits).
    pub n: i128,
}

/// `hello.data`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Hello {
    /// Protocol version (1).
    pub version: u32,
    /// Extensions the sender supports (unknown names are ignored).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Items the sender accepts per stream before it grants more with `request_n`.
    #[serde(default)]
    pub window: Option<u32>,
    /// Keepalive interval the sender uses, in milliseconds.
    #[serde(default)]
    pub keepalive_ms: Option<u64>,
}

/// A decoded frame. `data` stays raw JSON text so values pass through unchanged.
#[derive(Debug)]
pub struct Frame {
    /// The frame type.
    pub ty: FrameType,
    /// The sender's peer id.
    pub peer_id: Option<String>,
    /// The request id (absent or null on fire-and-forget and extension frames without one).
    pub request_id: Option<RequestId>,
    /// `data`, as raw JSON (absent and `null` both give `None`).
    pub data: Option<Box<RawValue>>,
}

/// Why a message is not a valid frame; `request_id` is set when it could still be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid frame: {reason}")]
pub struct DecodeError {
    /// The request id, if the message had a readable one.
    pub request_id: Option<RequestId>,
    /// The frame's `type` text, if readable.
    pub frame_type: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// A string field borrowed from the message when it has no escapes (the common case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A decoded frame that borrows from the message ([`decode_ref`]): nothing is copied until
/// the receiver keeps it.
#[derive(Debug)]
pub struct FrameRef<'a> {
    /// The frame type.
    pub ty: FrameType,
    /// The sender's peer id.
    pub peer_id: Option<Cow<'a, str>>,
    /// The request id: the caller's peer id and its counter.
    pub request_id: Option<(Cow<'a, str>, i128)>,
    /// `data`, as raw JSON (absent and `null` both give `None`).
    pub data: Option<&'a RawValue>,
}

impl FrameRef<'_> {
    /// An owned copy.
    pub fn into_owned(self) -> Frame {
        Frame {
            ty: self.ty,
            peer_id: self.peer_id.map(Cow::into_owned),
            request_id: self.request_id.map(|(peer, n)| RequestId {
                peer: peer.into_owned(),
                n,
            }),
            data: self.data.map(RawValue::to_owned),
        }
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Text<'a>,
    #[serde(rename = "peerID", default, borrow)]
    peer_id: Option<Text<'a>>,
    #[serde(rename = "requestId", default, borrow)]
    request_id: Option<(Text<'a>, i128)>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Decodes one message into a [`Frame`], checking what every frame of its type must carry.
pub fn decode(text: &str) -> Result<Frame, DecodeError> {
    decode_ref(text).map(FrameRef::into_owned)
}

/// Like [`decode`], but borrows the strings and `data` from `text` (the engine's hot path).
pub fn decode_ref(text: &str) -> Result<FrameRef<'_>, DecodeError> {
    // Stream items in our own encoder's shape skip the field-by-field decoding (D27).
    match crate::fast::decode_stream_data(text) {
        Some(f) => Ok(f),
        None => decode_ref_full(text),
    }
}

/// [`decode_ref`] without its fast path: every message through the field-by-field decoder
/// (the reference the fast path is tested against).
pub fn decode_ref_full(text: &str) -> Result<FrameRef<'_>, DecodeError> {
    let w: Wire<'_> = serde_json::from_str(text).map_err(|e| lenient(text, e.to_string()))?;
    let owned_id = || {
        w.request_id.as_ref().map(|(peer, n)| RequestId {
            peer: peer.0.clone().into_owned(),
            n: *n,
        })
    };
    let fail = |reason: String| DecodeError {
        request_id: None,
        frame_type: Some(w.ty.0.clone().into_owned()),
        reason,
    };
    let Some(ty) = FrameType::parse(&w.ty.0) else {
        let mut e = fail(format!("unknown frame type {:?}", truncate(&w.ty.0)));
        e.request_id = owned_id();
        return Err(e);
    };
    if ty.model().is_some() && w.peer_id.as_ref().is_none_or(|p| p.0.is_empty()) {
        return Err(DecodeError {
            request_id: owned_id(),
            frame_type: Some(w.ty.0.clone().into_owned()),
            reason: "peerID required for request messages".into(),
        });
    }
    let needs_id = !matches!(
        ty,
        FrameType::FireAndForget | FrameType::Hello | FrameType::Keepalive
    );
    if needs_id && w.request_id.is_none() {
        return Err(fail(format!("{} frame without a requestId", ty.as_str())));
    }
    Ok(FrameRef {
        ty,
        peer_id: w.peer_id.map(|p| p.0),
        request_id: w.request_id.map(|(p, n)| (p.0, n)),
        data: w.data,
    })
}

/// Second look at a message that failed strict decoding: is there a readable requestId?
fn lenient(text: &str, reason: String) -> DecodeError {
    let v: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let obj = v.as_ref().and_then(|v| v.as_object());
    let request_id = obj
        .and_then(|o| o.get("requestId"))
        .and_then(|r| serde_json::from_value::<(String, i128)>(r.clone()).ok())
        .map(|(peer, n)| RequestId { peer, n });
    let frame_type = obj
        .and_then(|o| o.get("type"))
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    DecodeError {
        request_id,
        frame_type,
        reason: truncate(&reason).to_string(),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Appends one encoded frame to `out`. `data` must be valid JSON text (it is copied verbatim);
/// `None` writes `null`.
pub fn encode(
    out: &mut String,
    ty: FrameType,
    peer_id: &str,
    request_id: Option<(&str, i128)>,
    data: Option<&str>,
) {
    encode_prefix(out, ty, peer_id, request_id);
    out.push_str(data.unwrap_or("null"));
    out.push('}');
}

/// Appends a frame up to its `data` value (`...,"data":`): append the data text and `}` to
/// finish it. Lets a sender encode the fixed part of many frames of one stream once.
pub fn encode_prefix(
    out: &mut String,
    ty: FrameType,
    peer_id: &str,
    request_id: Option<(&str, i128)>,
) {
    out.push_str("{\"type\":\"");
    out.push_str(ty.as_str());
    out.push_str("\",\"peerID\":");
    push_json_str(out, peer_id);
    out.push_str(",\"requestId\":");
    match request_id {
        Some((peer, n)) => {
            out.push('[');
            push_json_str(out, peer);
            let _ = write!(out, ",{n}]");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"data\":");
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json never fails on a &str.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// `{"code": code, "message": message}` as JSON text.
pub fn error_data(code: &str, message: &str) -> String {
    let mut s = String::with_capacity(32 + message.len());
    s.push_str("{\"code\":");
    push_json_str(&mut s, code);
    s.push_str(",\"message\":");
    push_json_str(&mut s, message);
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_data_bytes() {
        let data = r#"{"operation":"echo","big":9007199254740993,"neg":-9223372036854775808,"f":1.10,"s":"\u00e9é"}"#;
        let mut s = String::new();
        encode(
            &mut s,
            FrameType::Request,
            "p\"1",
            Some(("p\"1", 7)),
            Some(data),
        );
        let f = decode(&s).unwrap();
        assert_eq!(f.ty, FrameType::Request);
        assert_eq!(f.peer_id.as_deref(), Some("p\"1"));
        assert_eq!(
            f.request_id,
            Some(RequestId {
                peer: "p\"1".into(),
                n: 7
            })
        );
        assert_eq!(f.data.unwrap().get(), data);
    }

    #[test]
    fn request_needs_peer_id_and_keeps_readable_id() {
        let e = decode(r#"{"type":"request","requestId":["a",1],"data":{}}"#).unwrap_err();
        assert_eq!(
            e.request_id,
            Some(RequestId {
                peer: "a".into(),
                n: 1
            })
        );
        assert!(e.reason.contains("peerID"));
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        for bad in [
            "",
            "null",
            "[]",
            "{",
            r#"{"type":5}"#,
            r#"{"type":"nope","requestId":["a",1]}"#,
            r#"{"type":"response","requestId":["a",1.5]}"#,
            r#"{"type":"response","requestId":["a"]}"#,
            r#"{"type":"response","requestId":[1,1]}"#,
            r#"{"type":"response"}"#,
            r#"{"type":"request","type":"request","peerID":"x","requestId":["a",1]}"#,
            "\u{0}",
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        let e = decode(r#"{"type":"nope","requestId":["a",3]}"#).unwrap_err();
        assert_eq!(e.request_id.unwrap().n, 3);
    }

    #[test]
    fn fire_and_forget_may_omit_request_id() {
        let f = decode(r#"{"type":"fire_and_forget","peerID":"x","data":{"operation":"log"}}"#)
            .unwrap();
        assert!(f.request_id.is_none());
        let f =
            decode(r#"{"type":"fire_and_forget","peerID":"x","requestId":null,"data":1}"#).unwrap();
        assert!(f.request_id.is_none());
    }

    #[test]
    fn names_round_trip() {
        for t in FrameType::ALL {
            assert_eq!(FrameType::parse(t.as_str()), Some(t));
        }
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(error_data("x", "a\"b"), r#"{"code":"x","message":"a\"b"}"#);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(s in ".{0,200}") {
            let _ = decode(&s);
        }

        #[test]
        fn encode_decode(peer in ".{0,20}", n in proptest::num::i64::ANY, txt in ".{0,40}") {
            let data = serde_json::to_string(&txt).unwrap();
            let mut s = String::new();
            encode(&mut s, FrameType::StreamData, &peer, Some((&peer, n.into())), Some(&data));
            let f = decode(&s).unwrap();
            proptest::prop_assert_eq!(f.request_id.unwrap(), RequestId { peer: peer.clone(), n: n.into() });
            let got = f.data.unwrap();
            proptest::prop_assert_eq!(got.get(), data.as_str());
        }
    }
}
