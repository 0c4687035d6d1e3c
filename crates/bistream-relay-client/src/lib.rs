//! Reconnecting ProxyStore relay client.
#![forbid(unsafe_code)]
