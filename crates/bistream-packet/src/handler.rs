//! Serving requests: the [`RequestHandler`] trait, the closure adaptor [`handler_fn`], and
//! [`Reply`], the five success shapes of a Python `request_handler` return value.

use std::future::Future;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::error::HandlerError;

/// One request received from the peer, as given to a [`RequestHandler`].
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// The user rq_type (the wire value minus one).
    pub rq_type: u64,
    /// The request flags.
    pub flags: u64,
    /// The request payload (shares the receive buffer; no copy).
    pub payload: Bytes,
    /// The channel the request came on.
    pub channel: u64,
    /// The request's tag on that channel.
    pub tag: u64,
}

/// A successful handler result, mapped to the response as Python maps a `request_handler`'s
/// return value: `None`→(0, b""), `int`→(n, b""), `bytes`→(0, b), `str`→(0, UTF-8),
/// `(int, bytes)`→as given. Build one with `.into()` from `()`, `u64`, `Bytes`, `Vec<u8>`,
/// `&'static [u8]`, `String`, `&'static str` or `(u64, Bytes | Vec<u8> | &'static [u8])`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reply {
    /// Flags 0, empty payload.
    #[default]
    Empty,
    /// These flags, empty payload.
    Flags(u64),
    /// Flags 0, this payload.
    Payload(Bytes),
    /// These flags and this payload.
    FlagsPayload(u64, Bytes),
}

impl Reply {
    /// The `(flags, payload)` of the success response.
    pub fn into_parts(self) -> (u64, Bytes) {
        match self {
            Reply::Empty => (0, Bytes::new()),
            Reply::Flags(f) => (f, Bytes::new()),
            Reply::Payload(p) => (0, p),
            Reply::FlagsPayload(f, p) => (f, p),
        }
    }
}

impl From<()> for Reply {
    fn from(_: ()) -> Self {
        Reply::Empty
    }
}
impl From<u64> for Reply {
    fn from(f: u64) -> Self {
        Reply::Flags(f)
    }
}
impl From<Bytes> for Reply {
    fn from(p: Bytes) -> Self {
        Reply::Payload(p)
    }
}
impl From<Vec<u8>> for Reply {
    fn from(p: Vec<u8>) -> Self {
        Reply::Payload(p.into())
    }
}
impl From<&'static [u8]> for Reply {
    fn from(p: &'static [u8]) -> Self {
        Reply::Payload(Bytes::from_static(p))
    }
}
impl From<String> for Reply {
    fn from(s: String) -> Self {
        Reply::Payload(s.into())
    }
}
impl From<&'static str> for Reply {
    fn from(s: &'static str) -> Self {
        Reply::Payload(Bytes::from_static(s.as_bytes()))
    }
}
impl From<(u64, Bytes)> for Reply {
    fn from((f, p): (u64, Bytes)) -> Self {
        Reply::FlagsPayload(f, p)
    }
}
impl From<(u64, Vec<u8>)> for Reply {
    fn from((f, p): (u64, Vec<u8>)) -> Self {
        Reply::FlagsPayload(f, p.into())
    }
}
impl From<(u64, &'static [u8])> for Reply {
    fn from((f, p): (u64, &'static [u8])) -> Self {
        Reply::FlagsPayload(f, Bytes::from_static(p))
    }
}

/// Serves the requests received on a connection. An `Err` (or a panic) becomes the failure
/// response `exception during handler`, as in Python; the error text is logged locally only.
///
/// Handlers run concurrently (up to [`crate::Config::max_handlers`] per connection), so
/// responses may complete out of order.
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, rq: IncomingRequest) -> BoxFuture<'static, Result<Reply, HandlerError>>;
}

/// A [`RequestHandler`] made from an async closure; see [`handler_fn`].
pub struct FnHandler<F>(F);

/// Makes a [`RequestHandler`] from `|rq_type, flags, payload| async move { ... }` returning
/// `Result<T, E>` with `T: Into<Reply>` and `E: Into<HandlerError>` (any error type, or a
/// `String`/`&str`).
///
/// ```
/// use bistream_packet::{handler_fn, Reply};
/// let echo = handler_fn(|_rq_type, flags, payload| async move {
///     Ok::<_, std::convert::Infallible>((flags, payload))
/// });
/// # let _ = echo;
/// ```
pub fn handler_fn<F, Fut, T, E>(f: F) -> FnHandler<F>
where
    F: Fn(u64, u64, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Into<Reply>,
    E: Into<HandlerError>,
{
    FnHandler(f)
}

impl<F, Fut, T, E> RequestHandler for FnHandler<F>
where
    F: Fn(u64, u64, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Into<Reply>,
    E: Into<HandlerError>,
{
    fn handle(&self, rq: IncomingRequest) -> BoxFuture<'static, Result<Reply, HandlerError>> {
        (self.0)(rq.rq_type, rq.flags, rq.payload)
            .map(|r| r.map(Into::into).map_err(Into::into))
            .boxed()
    }
}

impl<H: RequestHandler + ?Sized> RequestHandler for std::sync::Arc<H> {
    fn handle(&self, rq: IncomingRequest) -> BoxFuture<'static, Result<Reply, HandlerError>> {
        (**self).handle(rq)
    }
}
