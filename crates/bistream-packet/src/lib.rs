//! Byte-compatible cs.packetstream packet connection.
#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod varint;

pub use codec::{Decoder, Packet, DEFAULT_MAX_PACKET};
pub use error::{CloseReason, DecodeError, EncodeError, HandlerError, PacketError};
