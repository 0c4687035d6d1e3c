//! The close codes of the rpc protocol: the WebSocket close code (RFC 6455 §7.4.1) each way
//! an rpc connection can end. Byte-stream transports have no close frame; the codes still
//! name why a connection ended in [`Event::Close`](crate::Event::Close) and in errors.
//!
//! ```
//! use bistream_rpc_proto::close;
//! assert_eq!(
//!     (close::NORMAL, close::POLICY_VIOLATION, close::MESSAGE_TOO_BIG),
//!     (1000, 1008, 1009)
//! );
//! ```

/// A normal end: the last handle was dropped, `close()` was called, or the peer went away
/// cleanly.
pub const NORMAL: u16 = 1000;

/// The peer broke the protocol's rules: too many invalid frames in a row, or it does not read
/// its replies.
pub const POLICY_VIOLATION: u16 = 1008;

/// A frame larger than the connection's `max_frame_bytes`.
pub const MESSAGE_TOO_BIG: u16 = 1009;
