//! RSocket 1.0 for bistream: the same `bistream_rpc::Router` handlers served (and called) over
//! RSocket, so one handler serves both protocols with the same serde types.
//!
//! - [`start`]: a connection over any [`transport::Framed`], as [`Role::Client`] (sends SETUP,
//!   KEEPALIVEs) or [`Role::Server`]; both ends can request and serve;
//! - [`RSocket`]: the requester API (request/response, request/stream, request/channel,
//!   fire-and-forget, metadata push), routed by composite routing metadata, JSON data;
//! - [`serve_tcp`], [`serve_ws`], [`connect_tcp`], [`connect_ws`]: TCP with the 3-byte length
//!   prefix, WebSocket with one frame per binary message at `/`.
//!
//! Frames live in `bistream-rsocket-proto`; what is supported, refused and different from the
//! spec is in `docs/protocol/rsocket.md`.
//!
//! # Example
//!
//! ```
//! use bistream_rpc::{HandlerError, Router};
//! use bistream_rsocket::{start, transport::length_prefixed, Role, RsConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bistream_rsocket::RsError> {
//! let router = Router::new()
//!     .request_response("add", |p: (i64, i64)| async move { Ok::<_, HandlerError>(p.0 + p.1) });
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let _server = start(length_prefixed(b, 1 << 20), Role::Server, router, RsConfig::default());
//! let client = start(length_prefixed(a, 1 << 20), Role::Client, Router::new(), RsConfig::default());
//! // Data is a JSON object whose fields (plus `"operation"`) the handler parses: `{"x": 1}` is
//! // not a pair, so the handler answers INVALID.
//! let e = client.request_response::<_, i64>("add", &serde_json::json!({"x": 1})).await.unwrap_err();
//! assert_eq!(e.remote_code(), Some(bistream_rsocket_proto::ErrorCode::Invalid));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod bridge;
mod config;
mod conn;
mod error;
mod net;
mod requester;
mod responder;
mod shared;
pub mod transport;
mod writer;

pub use bistream_rsocket_proto as proto;
pub use config::RsConfig;
pub use conn::{start, Role, HARD_CAP, HIGH_WATER};
pub use error::RsError;
pub use net::{connect_tcp, connect_ws, serve_tcp, serve_ws};
pub use requester::{ChannelSender, ItemStream, RSocket};
