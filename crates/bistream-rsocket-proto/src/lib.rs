//! RSocket 1.0 without sockets: the frames and their binary codec ([`frame`]), the standard
//! error codes ([`ErrorCode`]), fragmentation and reassembly ([`fragment`]), and composite /
//! routing metadata with the well-known MIME ids ([`metadata`]). Transports (TCP with a 3-byte
//! length prefix, WebSocket with one frame per binary message) and the connection live in
//! `bistream-rsocket`; the wire as we speak it is described in `docs/protocol/rsocket.md`.
//!
//! # Example
//!
//! ```
//! use bistream_rsocket_proto::{decode, encode, Frame, Payload};
//! use bistream_rsocket_proto::metadata::{composite_routing, route_of};
//!
//! let meta = composite_routing("echo");
//! let f = Frame::RequestResponse {
//!     stream: 1,
//!     follows: false,
//!     payload: Payload::new(Some(meta.into()), br#"{"x":1}"#.to_vec().into()),
//! };
//! let wire = encode(&f);
//! let back = decode(wire.freeze())?;
//! assert_eq!(back, f);
//! let Frame::RequestResponse { payload, .. } = back else { unreachable!() };
//! let route = route_of(payload.metadata.as_deref().unwrap_or_default())?;
//! assert_eq!(route.as_deref(), Some("echo"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod codes;
pub mod fragment;
pub mod frame;
pub mod metadata;

pub use codes::ErrorCode;
pub use fragment::{fragment, Reassembler, ReassemblyError};
pub use frame::{decode, encode, encode_into, DecodeError, Frame, FrameType, Payload, Setup};

/// Protocol version we speak (major, minor).
pub const VERSION: (u16, u16) = (1, 0);
/// Largest frame a 3-byte length prefix can carry (16 MiB - 1).
pub const MAX_FRAME_LEN: usize = (1 << 24) - 1;
/// Largest `REQUEST_N` value (2^31 - 1, "unbounded").
pub const MAX_REQUEST_N: u32 = i32::MAX as u32;
/// Composite metadata MIME type (SETUP).
pub const MIME_COMPOSITE: &str = "message/x.rsocket.composite-metadata.v0";
/// Routing metadata MIME type.
pub const MIME_ROUTING: &str = "message/x.rsocket.routing.v0";
/// JSON data MIME type (SETUP).
pub const MIME_JSON: &str = "application/json";
