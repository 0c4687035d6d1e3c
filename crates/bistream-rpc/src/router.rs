//! The router: handlers by operation name, one per interaction model, typed through serde
//! (`Box<RawValue>` or `serde_json::Value` work too). A connection consults it to answer
//! `unknown_operation` / wrong-model errors and to start handlers; other protocols' front ends
//! (RSocket) start request/response, request/stream and fire-and-forget handlers directly
//! with [`Router::invoke_unary`], [`Router::invoke_stream`] and [`Router::invoke_ff`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bistream_rpc_proto::{from_item, Model};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::stream::{ServeReceiver, ServeSender};
use crate::HandlerError;

/// A JSON value kept as raw text.
pub type Raw = Box<RawValue>;
pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A request/stream handler's items as JSON text (a `String`, not a [`Raw`]: boxing the text
/// into a `RawValue` shrinks its buffer, a `realloc` per item that was a quarter of the
/// server's CPU on a fast stream, D29).
pub(crate) type RawItems = Pin<Box<dyn Stream<Item = Result<String, HandlerError>> + Send>>;

type RrFn = dyn Fn(Raw) -> BoxFut<Result<Raw, HandlerError>> + Send + Sync;
type RsFn = dyn Fn(Raw) -> RawItems + Send + Sync;
type SsFn = dyn Fn(Raw, ServeReceiver<Raw>, ServeSender<Raw>) -> BoxFut<Result<(), HandlerError>>
    + Send
    + Sync;
type FfFn = dyn Fn(Raw) -> BoxFut<()> + Send + Sync;

#[derive(Clone)]
pub(crate) enum Handler {
    Rr(Arc<RrFn>),
    Rs(Arc<RsFn>),
    Ss(Arc<SsFn>),
    Ff(Arc<FfFn>),
}

impl Handler {
    fn model(&self) -> Model {
        match self {
            Self::Rr(_) => Model::RequestResponse,
            Self::Rs(_) => Model::RequestStream,
            Self::Ss(_) => Model::StreamStream,
            Self::Ff(_) => Model::FireAndForget,
        }
    }
}

/// Handlers by operation name.
///
/// ```
/// use bistream_rpc::{HandlerError, Router};
/// use futures_util::stream;
///
/// #[derive(serde::Deserialize)]
/// struct Count { n: u64 }
///
/// let router = Router::new()
///     .request_response("echo", |v: serde_json::Value| async move { Ok::<_, HandlerError>(v) })
///     .request_stream("count", |c: Count| stream::iter((0..c.n).map(Ok::<_, HandlerError>)))
///     .fire_and_forget("log", |v: serde_json::Value| async move { println!("{v}") });
/// assert!(router.has("echo"));
/// ```
#[derive(Clone, Default)]
pub struct Router {
    ops: HashMap<String, Handler>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.ops.keys().collect();
        names.sort();
        f.debug_struct("Router").field("ops", &names).finish()
    }
}

fn parse<T: DeserializeOwned>(raw: &RawValue) -> Result<T, HandlerError> {
    from_item(raw.get()).map_err(|e| HandlerError::invalid(format!("invalid data: {e}")))
}

/// The request for a handler taking `T`: a raw handler (`T` = [`Raw`]) gets the bytes as they
/// came, without a second parse and copy.
fn parse_owned<T: DeserializeOwned + 'static>(raw: Raw) -> Result<T, HandlerError> {
    if TypeId::of::<T>() != TypeId::of::<Raw>() {
        return parse(&raw);
    }
    let any: Box<dyn Any> = Box::new(raw);
    match any.downcast::<T>() {
        Ok(t) => Ok(*t),
        Err(any) => match any.downcast::<Raw>() {
            Ok(raw) => parse(&raw),
            Err(_) => Err(HandlerError::failed("request data lost its type")),
        },
    }
}

pub(crate) fn to_raw<T: Serialize>(v: &T) -> Result<Raw, HandlerError> {
    serde_json::value::to_raw_value(v)
        .map_err(|e| HandlerError::failed(format!("cannot serialize the result: {e}")))
}

/// A stream item as JSON text: a [`Raw`] item passes through as it is (no copy).
fn to_json_text<T: Serialize + 'static>(v: T) -> Result<String, HandlerError> {
    if TypeId::of::<T>() != TypeId::of::<Raw>() {
        return serde_json::to_string(&v)
            .map_err(|e| HandlerError::failed(format!("cannot serialize the result: {e}")));
    }
    to_raw_owned(v).map(|raw| String::from(Box::<str>::from(raw)))
}

/// A handler's result as raw JSON: a [`Raw`] result passes through as it is.
fn to_raw_owned<T: Serialize + 'static>(v: T) -> Result<Raw, HandlerError> {
    if TypeId::of::<T>() != TypeId::of::<Raw>() {
        return to_raw(&v);
    }
    let any: Box<dyn Any> = Box::new(v);
    match any.downcast::<Raw>() {
        Ok(raw) => Ok(*raw),
        Err(any) => match any.downcast::<T>() {
            Ok(v) => to_raw(&*v),
            Err(_) => Err(HandlerError::failed("result lost its type")),
        },
    }
}

impl Router {
    /// An empty router (every request is answered `unknown_operation`).
    pub fn new() -> Self {
        Self::default()
    }

    /// True if `op` has a handler.
    pub fn has(&self, op: &str) -> bool {
        self.ops.contains_key(op)
    }

    /// The model of `op`'s handler.
    pub fn model(&self, op: &str) -> Option<Model> {
        self.ops.get(op).map(Handler::model)
    }

    pub(crate) fn get(&self, op: &str) -> Option<&Handler> {
        self.ops.get(op)
    }

    /// The error for calling `op` as `want` when it is not served that way: the same codes
    /// the rpc protocol answers (`unknown_operation`, or `invalid_request` for the wrong
    /// model).
    fn not_served(&self, op: &str, want: Model) -> HandlerError {
        match self.model(op) {
            None => HandlerError::new(
                crate::ErrorCode::UnknownOperation,
                format!("unknown operation {op:?}"),
            ),
            Some(m) => HandlerError::invalid(format!("operation {op:?} is {m:?}, not {want:?}")),
        }
    }

    /// Runs `op`'s request/response handler on `data` directly, without a connection: for
    /// other protocols' front ends (the RSocket server uses it) and tests. Returns the
    /// handler's answer; an unknown `op` is `unknown_operation`, another model
    /// `invalid_request`. The handler starts when the future is first polled. `data` goes to
    /// the handler as it is: to give it what it gets over the rpc protocol (the caller's
    /// object with `"operation"` first), build it with [`crate::request_data`].
    ///
    /// ```
    /// use bistream_rpc::{ErrorCode, HandlerError, Raw, Router};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let router = Router::new()
    ///     .request_response("add", |(x, y): (i64, i64)| async move { Ok::<_, HandlerError>(x + y) });
    /// let data: Raw = serde_json::value::RawValue::from_string("[2, 3]".into()).unwrap();
    /// let answer = router.invoke_unary("add", data.clone()).await.unwrap();
    /// assert_eq!(answer.get(), "5");
    /// let e = router.invoke_unary("nope", data).await.unwrap_err();
    /// assert_eq!(e.code, ErrorCode::UnknownOperation);
    /// # }
    /// ```
    pub fn invoke_unary(
        &self,
        op: &str,
        data: Raw,
    ) -> impl Future<Output = Result<Raw, HandlerError>> + Send + 'static {
        let r = match self.ops.get(op) {
            Some(Handler::Rr(f)) => Ok(f(data)),
            _ => Err(self.not_served(op, Model::RequestResponse)),
        };
        async move { r?.await }
    }

    /// Starts `op`'s request/stream handler on `data` directly (see [`Router::invoke_unary`]):
    /// its items as raw JSON, an `Err` item ending the stream. The caller applies its own
    /// flow control by polling.
    ///
    /// ```
    /// use bistream_rpc::{HandlerError, Raw, Router};
    /// use futures_util::{stream, StreamExt};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Count { n: u64 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let router = Router::new()
    ///     .request_stream("count", |c: Count| stream::iter((0..c.n).map(Ok::<_, HandlerError>)));
    /// let data: Raw = serde_json::value::RawValue::from_string(r#"{"n": 3}"#.into()).unwrap();
    /// let items: Vec<String> = router
    ///     .invoke_stream("count", data)
    ///     .unwrap()
    ///     .map(|i| i.unwrap().get().to_string())
    ///     .collect()
    ///     .await;
    /// assert_eq!(items, ["0", "1", "2"]);
    /// # }
    /// ```
    pub fn invoke_stream(
        &self,
        op: &str,
        data: Raw,
    ) -> Result<impl Stream<Item = Result<Raw, HandlerError>> + Send + 'static, HandlerError> {
        match self.ops.get(op) {
            Some(Handler::Rs(f)) => Ok(f(data).map(|item| {
                item.and_then(|text| {
                    RawValue::from_string(text)
                        .map_err(|e| HandlerError::failed(format!("stream item is not JSON: {e}")))
                })
            })),
            _ => Err(self.not_served(op, Model::RequestStream)),
        }
    }

    /// Starts `op`'s fire-and-forget handler on `data` directly (see
    /// [`Router::invoke_unary`]): the returned future runs it (data that does not parse is
    /// logged and dropped, as over the rpc protocol).
    ///
    /// ```
    /// use bistream_rpc::{Raw, Router};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let router = Router::new().fire_and_forget("log", |v: serde_json::Value| async move {
    ///     assert_eq!(v["line"], "hello");
    /// });
    /// let data: Raw = serde_json::value::RawValue::from_string(r#"{"line": "hello"}"#.into()).unwrap();
    /// router.invoke_ff("log", data).unwrap().await;
    /// # }
    /// ```
    pub fn invoke_ff(
        &self,
        op: &str,
        data: Raw,
    ) -> Result<impl Future<Output = ()> + Send + 'static, HandlerError> {
        match self.ops.get(op) {
            Some(Handler::Ff(f)) => Ok(f(data)),
            _ => Err(self.not_served(op, Model::FireAndForget)),
        }
    }

    /// Request/response: the handler gets the whole `data` and returns the response value.
    pub fn request_response<Req, Resp, F, Fut>(mut self, op: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, HandlerError>> + Send + 'static,
    {
        let h = move |raw: Raw| -> BoxFut<Result<Raw, HandlerError>> {
            match parse_owned::<Req>(raw) {
                Ok(req) => {
                    let fut = f(req);
                    Box::pin(async move { to_raw_owned(fut.await?) })
                }
                Err(e) => Box::pin(async move { Err(e) }),
            }
        };
        self.ops.insert(op.to_string(), Handler::Rr(Arc::new(h)));
        self
    }

    /// Request/stream: the handler returns a `Stream` of items; an `Err` item ends the stream
    /// with an `error` frame.
    pub fn request_stream<Req, Item, F, S>(mut self, op: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + 'static,
        F: Fn(Req) -> S + Send + Sync + 'static,
        S: Stream<Item = Result<Item, HandlerError>> + Send + 'static,
    {
        let h = move |raw: Raw| -> RawItems {
            match parse_owned::<Req>(raw) {
                Ok(req) => Box::pin(f(req).map(|r| r.and_then(to_json_text))),
                Err(e) => Box::pin(futures_util::stream::once(async move { Err(e) })),
            }
        };
        self.ops.insert(op.to_string(), Handler::Rs(Arc::new(h)));
        self
    }

    /// Stream/stream: the handler gets the opening `data`, a receiver of the caller's items
    /// and a sender for its own; returning ends its side (`stream_end`), an `Err` ends the
    /// exchange with an `error` frame.
    pub fn stream_stream<Req, In, Out, F, Fut>(mut self, op: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        In: DeserializeOwned + Send + 'static,
        Out: Serialize + Send + Sync + 'static,
        F: Fn(Req, ServeReceiver<In>, ServeSender<Out>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let h = move |raw: Raw,
                      rx: ServeReceiver<Raw>,
                      tx: ServeSender<Raw>|
              -> BoxFut<Result<(), HandlerError>> {
            match parse_owned::<Req>(raw) {
                Ok(req) => Box::pin(f(req, rx.typed(), tx.typed())),
                Err(e) => Box::pin(async move { Err(e) }),
            }
        };
        self.ops.insert(op.to_string(), Handler::Ss(Arc::new(h)));
        self
    }

    /// Fire-and-forget: the handler gets `data`; nothing is answered (bad data is logged).
    pub fn fire_and_forget<Req, F, Fut>(mut self, op: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let op_name = op.to_string();
        let h = move |raw: Raw| -> BoxFut<()> {
            match parse_owned::<Req>(raw) {
                Ok(req) => Box::pin(f(req)),
                Err(e) => {
                    tracing::warn!(op = %op_name, error = %e, "fire_and_forget dropped");
                    Box::pin(async {})
                }
            }
        };
        self.ops.insert(op.to_string(), Handler::Ff(Arc::new(h)));
        self
    }
}
