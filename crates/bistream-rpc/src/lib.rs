//! Slipstream-compatible rpc over one multiplexed connection: request/response,
//! request/stream, stream/stream and fire-and-forget, callable and servable from both ends.
//!
//! - [`Router`]: handlers by operation name, typed through serde;
//! - [`Connection`]: the caller API, state and end of one connection;
//! - transports ([`transport`]): WebSocket ([`ws`]: axum-mountable server, standalone
//!   server, client with rustls TLS and extra headers) and length-delimited frames over any
//!   byte stream ([`stream_io`]: TCP, Unix sockets, stdio).
//!
//! The protocol itself (frames, engine) is `bistream-rpc-proto`; the wire is specified in
//! `docs/protocol/rpc.md`.
//!
//! # Example
//!
//! ```
//! use bistream_rpc::{start, HandlerError, Router, RpcConfig, Side};
//! use bistream_rpc::transport::LengthDelimited;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bistream_rpc::RpcError> {
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let router = Router::new()
//!     .request_response("add", |(x, y): (i64, i64)| async move { Ok::<_, HandlerError>(x + y) });
//! let _server = start(LengthDelimited::new(b, 1 << 20), Side::Acceptor, router, RpcConfig::default());
//! let client = start(LengthDelimited::new(a, 1 << 20), Side::Initiator, Router::new(), RpcConfig::default());
//! // `data` must be an object: the router's typed handlers see the whole object.
//! let r: Result<i64, _> = client.request_response("add", &serde_json::json!({"x": 1})).await;
//! assert_eq!(r.unwrap_err().remote_code(), Some(bistream_rpc::ErrorCode::InvalidRequest));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod caller;
mod conn;
mod data;
pub mod demo;
mod error;
pub mod queue;
mod router;
mod shared;
mod stream;
pub mod stream_io;
pub mod transport;
mod writer;
pub mod ws;
pub mod wsraw;

pub use bistream_rpc_proto::{close, ErrorCode, Limits, Model, Side};
pub use caller::Connection;
pub use conn::{start, RpcConfig, HARD_CAP, HIGH_WATER};
pub use data::request_data;
pub use error::{ConnState, HandlerError, RpcError};
pub use router::{Raw, Router};
pub use stream::{BiSender, ResponseStream, ServeReceiver, ServeSender};
