//! The typed layer, like Python's `BaseRequest` / `HasPacketConnection`: request types that
//! encode and decode themselves, registered by rq_type in a [`RequestTypes`] table (which is a
//! [`RequestHandler`]) and fulfilled against a shared context; [`PacketConnection::do_remote`]
//! runs one remotely and decodes its response.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use bistream_packet::{bytes::Bytes, BaseRequest, Builder, Fulfil, HandlerError, Reply, RequestTypes};
//!
//! struct Store { items: Mutex<Vec<Bytes>> }
//!
//! /// Adds an item; the response is the number of items.
//! struct Add(Bytes);
//!
//! impl BaseRequest for Add {
//!     const RQ_TYPE: u64 = 0;
//!     type Response = u64;
//!     fn to_payload(&self) -> Bytes { self.0.clone() }
//!     fn from_request(_flags: u64, payload: Bytes) -> Result<Self, HandlerError> { Ok(Add(payload)) }
//!     fn decode_response(flags: u64, _payload: Bytes) -> Result<u64, HandlerError> { Ok(flags) }
//! }
//!
//! impl Fulfil<Store> for Add {
//!     async fn fulfil(self, store: Arc<Store>) -> Result<Reply, HandlerError> {
//!         let mut items = store.items.lock().map_err(|_| "poisoned")?;
//!         items.push(self.0);
//!         Ok(Reply::Flags(items.len() as u64))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = Arc::new(Store { items: Mutex::new(Vec::new()) });
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let (ar, aw) = tokio::io::split(a);
//! let (br, bw) = tokio::io::split(b);
//! let _server = Builder::new().handler(RequestTypes::new(store).register::<Add>()).start(br, bw);
//! let client = Builder::new().start(ar, aw);
//! assert_eq!(client.do_remote(&Add(Bytes::from_static(b"x"))).await.unwrap(), 1);
//! assert_eq!(client.do_remote(&Add(Bytes::from_static(b"y"))).await.unwrap(), 2);
//! client.close().await;
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::connection::{PacketConnection, ResponseFuture};
use crate::error::{HandlerError, PacketError};
use crate::handler::{IncomingRequest, Reply, RequestHandler};

/// A request type: its rq_type, how it is encoded as `(flags, payload)`, how it is decoded at
/// the receiving end, and how its response is decoded (Python's `decode_response_payload`).
pub trait BaseRequest: Sized + Send + 'static {
    /// The user rq_type this request is sent as.
    const RQ_TYPE: u64;
    /// The decoded response.
    type Response: Send + 'static;
    /// The request flags (default 0).
    fn flags(&self) -> u64 {
        0
    }
    /// The request payload.
    fn to_payload(&self) -> Bytes;
    /// Decodes a received request (Python's `from_request_payload`).
    fn from_request(flags: u64, payload: Bytes) -> Result<Self, HandlerError>;
    /// Decodes a successful response.
    fn decode_response(flags: u64, payload: Bytes) -> Result<Self::Response, HandlerError>;
}

/// Fulfils a request at the receiving end against a context `C` (Python's `fulfil(context)`).
/// The result maps to the response as a handler's does ([`Reply`]); an error becomes the
/// failure `exception during handler`.
pub trait Fulfil<C: Send + Sync + 'static>: BaseRequest {
    /// Runs the request against `ctx` and returns its reply.
    fn fulfil(self, ctx: Arc<C>) -> impl Future<Output = Result<Reply, HandlerError>> + Send;
}

type Dispatch<C> = Arc<
    dyn Fn(Arc<C>, u64, Bytes) -> BoxFuture<'static, Result<Reply, HandlerError>> + Send + Sync,
>;

/// A table of request types by rq_type with a shared context: the handler side of
/// `HasPacketConnection`. Unknown rq_types fail with `exception during handler`, as Python's
/// `KeyError` does.
pub struct RequestTypes<C> {
    ctx: Arc<C>,
    by_type: HashMap<u64, Dispatch<C>>,
}

impl<C: Send + Sync + 'static> RequestTypes<C> {
    /// An empty table over `ctx`.
    pub fn new(ctx: Arc<C>) -> Self {
        RequestTypes {
            ctx,
            by_type: HashMap::new(),
        }
    }

    /// Registers `R` under `R::RQ_TYPE` (replacing any earlier registration of that type).
    pub fn register<R: Fulfil<C>>(mut self) -> Self {
        let d: Dispatch<C> = Arc::new(|ctx, flags, payload| {
            async move {
                let rq = R::from_request(flags, payload)?;
                rq.fulfil(ctx).await
            }
            .boxed()
        });
        self.by_type.insert(R::RQ_TYPE, d);
        self
    }

    /// The registered rq_types.
    pub fn rq_types(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_type.keys().copied()
    }
}

impl<C: Send + Sync + 'static> RequestHandler for RequestTypes<C> {
    fn handle(&self, rq: IncomingRequest) -> BoxFuture<'static, Result<Reply, HandlerError>> {
        match self.by_type.get(&rq.rq_type) {
            Some(d) => d(self.ctx.clone(), rq.flags, rq.payload),
            None => {
                let t = rq.rq_type;
                async move { Err(format!("unknown rq_type {t}").into()) }.boxed()
            }
        }
    }
}

impl PacketConnection {
    /// Submits a typed request (Python's `conn_submit`); the future yields the raw response.
    pub async fn submit_request<R: BaseRequest>(
        &self,
        rq: &R,
        channel: u64,
    ) -> Result<ResponseFuture, PacketError> {
        self.submit(R::RQ_TYPE, rq.flags(), rq.to_payload(), channel)
            .await
    }

    /// Runs a typed request remotely (Python's `conn_do_remote`): `Err(Failed)` if the
    /// response is not ok, else `R::decode_response(flags, payload)`.
    pub async fn do_remote<R: BaseRequest>(&self, rq: &R) -> Result<R::Response, PacketError> {
        self.call_decode(
            R::RQ_TYPE,
            rq.flags(),
            rq.to_payload(),
            0,
            R::decode_response,
        )
        .await
    }
}
