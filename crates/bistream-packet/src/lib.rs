//! Byte-compatible cs.packetstream packet connection.
#![forbid(unsafe_code)]
