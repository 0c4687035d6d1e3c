//! A byte-compatible, fast Rust implementation of the bidirectional packet connection of
//! Python's `cs.packetstream` (version 20240630).
//!
//! - [`codec`]: the sans-IO wire format ([`Packet`], [`Decoder`], [`varint`]).
//! - [`PacketConnection`]: requests and responses over any `AsyncRead` + `AsyncWrite` pair,
//!   many in flight, completed out of order, on any channel.
//! - [`RequestHandler`] / [`handler_fn`] / [`Reply`]: serving the peer's requests.
//! - [`typed`]: request types that encode/decode themselves ([`BaseRequest`], [`Fulfil`],
//!   [`RequestTypes`]), like Python's `BaseRequest` / `HasPacketConnection`.
//! - [`Builder`], [`OnDemand`], [`serve`]: TCP, Unix sockets, stdio, child processes,
//!   on-demand connections and an accept loop.
//! - [`limits`]: the file-descriptor limit from which [`serve`] derives its connection cap.
//! - [`demo`]: the built-in test service of `bistream packet serve --demo`.
//!
//! ```
//! use bistream_packet::{handler_fn, serve, Builder, Listener, ServeOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A server: rq_type 0 echoes, everything else fails.
//! let listener = Listener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr_string()?;
//! let handler = handler_fn(|rq_type, flags, payload: bytes::Bytes| async move {
//!     match rq_type {
//!         0 => Ok((flags, payload)),
//!         _ => Err("unsupported rq_type"),
//!     }
//! });
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(
//!     listener,
//!     Builder::new().handler(handler),
//!     ServeOptions::default(),
//!     async move { let _ = stopped.await; },
//! ));
//!
//! // A client.
//! let conn = Builder::new().connect_tcp(addr.as_str()).await?;
//! let (flags, payload) = conn.call(0, 5, &b"hi"[..], 0).await?;
//! assert_eq!((flags, &payload[..]), (5, &b"hi"[..]));
//!
//! // Pipelining: submit many, then await the responses.
//! let mut futs = Vec::new();
//! for i in 0..100u64 {
//!     futs.push(conn.submit(0, i, bytes::Bytes::new(), 0).await?);
//! }
//! for (i, f) in futs.into_iter().enumerate() {
//!     assert_eq!(f.await?.flags, i as u64);
//! }
//!
//! // A failure carries Python's reason text.
//! let err = conn.call(7, 0, bytes::Bytes::new(), 0).await.unwrap_err();
//! assert_eq!(err.failure_reason().as_deref(), Some("exception during handler"));
//!
//! conn.close().await; // ERQ, EOF, wait for the server's EOF
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod codec;
pub mod connection;
pub mod demo;
pub mod error;
pub mod handler;
pub mod limits;
mod pool;
pub mod transport;
pub mod typed;
pub mod varint;

pub use bytes;
pub use codec::{Decoder, Packet, DEFAULT_MAX_PACKET};
pub use connection::{reasons, Config, PacketConnection, Response, ResponseFuture, Stats};
pub use demo::demo_service;
pub use error::{CloseReason, DecodeError, EncodeError, HandlerError, PacketError};
pub use handler::{handler_fn, FnHandler, IncomingRequest, Reply, RequestHandler};
pub use transport::{serve, Builder, Listener, OnDemand, ServeOptions, ServeStats};
pub use typed::{BaseRequest, Fulfil, RequestTypes};
