//! The ProxyStore relay wire protocol (`proxystore==1.1.0`), with no sockets: the three JSON
//! messages, their decoding with type checks, their encoding, and the close codes and reply
//! texts the server and client agree on. The server and the client crates both use this one
//! definition.
//!
//! Messages travel as WebSocket text frames holding one JSON object whose `message_type` key
//! names the kind (`relay_registration`, `relay_response`, `peer_connection`).
//!
//! ```
//! use bistream_relay_proto::{RelayMessage, RelayRegistrationRequest};
//! use uuid::Uuid;
//!
//! let reg = RelayMessage::Registration(RelayRegistrationRequest {
//!     name: "client-a".into(),
//!     uuid: Uuid::parse_str("11111111-2222-4333-8444-555555555555").unwrap(),
//! });
//! let text = reg.encode();
//! assert_eq!(RelayMessage::decode(&text).unwrap(), reg);
//! // What the Python client sends decodes too (any UUID spelling Python accepts).
//! let py = r#"{"name": "client-a", "uuid": "{11111111-2222-4333-8444-555555555555}", "message_type": "relay_registration"}"#;
//! assert_eq!(RelayMessage::decode(py).unwrap(), reg);
//! ```
#![forbid(unsafe_code)]

mod close;
mod fastpath;
mod message;
mod surrogates;

pub use close::{
    close_reason_fit, frame_too_big_reason, is_fatal_close_code, uuid_owned_by_other_user_reason,
    CloseCode, AT_CAPACITY_REASON, DUPLICATE_REGISTRATION_REASON, FORWARD_BEFORE_REGISTRATION,
    INVALID_UTF8_REASON, KEEPALIVE_TIMEOUT_REASON, LARGE_MESSAGE_BUDGET_REASON,
    MAX_CLOSE_REASON_BYTES, MESSAGE_TOO_LARGE_REASON, REGISTRATION_TIMEOUT_REASON,
    SEND_QUEUE_FULL_REASON, UNKNOWN_MESSAGE_REASON,
};
pub use fastpath::{json_string, RawPeerMessage};
pub use message::{
    cluster_failed_error, cluster_overloaded_error, cluster_unavailable_error, not_reading_error,
    other_user_error, unknown_peer_error, DecodeError, DescriptionType, PeerConnectionRequest,
    RelayMessage, RelayRegistrationRequest, RelayResponse,
};
