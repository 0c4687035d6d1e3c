//! ProxyStore-compatible relay (signaling) server.
#![forbid(unsafe_code)]
