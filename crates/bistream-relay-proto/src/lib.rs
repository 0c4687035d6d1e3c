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
mod message;

pub use close::{
    is_fatal_close_code, CloseCode, DUPLICATE_REGISTRATION_REASON, FORWARD_BEFORE_REGISTRATION,
    KEEPALIVE_TIMEOUT_REASON, MESSAGE_TOO_LARGE_REASON, UNKNOWN_MESSAGE_REASON,
};
pub use message::{
    other_user_error, unknown_peer_error, DecodeError, DescriptionType, PeerConnectionRequest,
    RelayMessage, RelayRegistrationRequest, RelayResponse,
};
