//! [`Connection`]: the caller API of one connection (request/response, request/stream,
//! stream/stream, fire-and-forget, each with a timeout), its state and its end.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bistream_rpc_proto::{from_item, Model, Target};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::data::request_data;
use crate::shared::{CallSink, Cmd, Ctl, Outcome, Shared};
use crate::stream::{BiSender, Items, Producer, ResponseStream};
use crate::{ConnState, RpcError};

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: close the connection (1000).
        let _ = self.shared.ctl.send(Ctl::Close {
            code: bistream_rpc_proto::close::NORMAL,
            reason: String::new(),
        });
    }
}

/// One rpc connection: both ends can call and serve. Clones share the connection; dropping
/// the last clone closes it. Every call fails at once with the cause when the connection
/// ends.
///
/// ```no_run
/// # async fn demo() -> Result<(), bistream_rpc::RpcError> {
/// use futures_util::StreamExt;
/// let conn = bistream_rpc::ws::connect("ws://127.0.0.1:8701", Default::default()).await?;
/// let v: serde_json::Value = conn.request_response("echo", &serde_json::json!({"x": 1})).await?;
/// let mut s = conn.request_stream::<_, u64>("count", &serde_json::json!({"n": 3})).await?;
/// while let Some(n) = s.next().await { println!("{}", n?); }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer_id", &self.inner.shared.peer_id)
            .field("state", &self.state())
            .finish()
    }
}

struct CancelGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.shared.ctl.send(Ctl::Cancel(self.id));
        }
    }
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<String, RpcError> {
    serde_json::to_string(v).map_err(|e| RpcError::Data(e.to_string()))
}

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner { shared }),
            timeout,
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// A handle whose calls use `timeout` (request/response: the whole call; streams: the
    /// wait for each item).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// Our peer id on this connection.
    pub fn peer_id(&self) -> &str {
        &self.inner.shared.peer_id
    }

    /// The current state.
    pub fn state(&self) -> ConnState {
        *self.shared().state.borrow()
    }

    /// Watches state changes.
    pub fn watch_state(&self) -> watch::Receiver<ConnState> {
        self.shared().state.subscribe()
    }

    /// Waits for the connection to end; returns the cause.
    pub async fn closed(&self) -> RpcError {
        let mut rx = self.watch_state();
        let _ = rx.wait_for(|s| *s == ConnState::Closed).await;
        self.shared().cause()
    }

    /// Closes the connection (close code 1000) and waits for its end.
    pub async fn close(&self) {
        let _ = self.shared().ctl.send(Ctl::Close {
            code: bistream_rpc_proto::close::NORMAL,
            reason: "closing".into(),
        });
        self.closed().await;
    }

    async fn start(
        &self,
        model: Model,
        op: &str,
        data: &str,
        sink: CallSink,
    ) -> Result<u64, RpcError> {
        let data = request_data(op, data)?;
        let id = self.shared().next_id();
        self.shared()
            .cmd
            .send(Cmd::Start {
                id,
                model,
                data,
                sink,
            })
            .await
            .map_err(|_| self.shared().cause())?;
        Ok(id)
    }

    /// Request/response: sends `{"operation": op, ...data}` and waits for the response.
    pub async fn request_response<Req, Resp>(&self, op: &str, data: &Req) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let json = to_json(data)?;
        let (tx, rx) = oneshot::channel();
        let id = self
            .start(Model::RequestResponse, op, &json, CallSink::Rr(tx))
            .await?;
        let mut guard = CancelGuard {
            shared: self.shared(),
            id,
            armed: true,
        };
        let r = tokio::time::timeout(self.timeout, rx).await;
        let raw = match r {
            Err(_) => return Err(RpcError::Timeout(self.timeout)),
            Ok(Err(_)) => {
                guard.armed = false;
                return Err(self.shared().cause());
            }
            Ok(Ok(r)) => {
                guard.armed = false;
                r?
            }
        };
        from_item(raw.get()).map_err(|e| RpcError::Data(e.to_string()))
    }

    fn stream_parts(&self, credit: bool) -> (CallSink, crate::queue::QueueRx, Outcome) {
        let (tx, rx) = self.shared().stream_queue();
        let outcome: Outcome = Arc::new(OnceLock::new());
        let sink = CallSink::Stream {
            tx: Some(tx),
            outcome: outcome.clone(),
            credit: credit.then(|| self.shared().new_credit()),
            debt: 0,
            local_ended: !credit,
        };
        (sink, rx, outcome)
    }

    /// Request/stream: the items as a `Stream`; dropping it cancels the call.
    pub async fn request_stream<Req, Item>(
        &self,
        op: &str,
        data: &Req,
    ) -> Result<ResponseStream<Item>, RpcError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned,
    {
        let json = to_json(data)?;
        let (sink, rx, outcome) = self.stream_parts(false);
        let id = self.start(Model::RequestStream, op, &json, sink).await?;
        let items = Items::new(rx, outcome, Target::Call(id), self.shared().clone());
        Ok(ResponseStream::new(items, id, Some(self.timeout)))
    }

    /// Stream/stream: a sender for our items and the stream of the callee's items. Dropping
    /// the receiver cancels the call; ending (or dropping) the sender ends our side.
    pub async fn stream_stream<Req, In, Out>(
        &self,
        op: &str,
        data: &Req,
    ) -> Result<(BiSender<In>, ResponseStream<Out>), RpcError>
    where
        Req: Serialize + ?Sized,
        In: Serialize,
        Out: DeserializeOwned,
    {
        let json = to_json(data)?;
        let (sink, rx, outcome) = self.stream_parts(true);
        let credit = match &sink {
            CallSink::Stream {
                credit: Some(c), ..
            } => c.clone(),
            _ => self.shared().new_credit(),
        };
        let id = self.start(Model::StreamStream, op, &json, sink).await?;
        let shared = self.shared().clone();
        let items = Items::new(rx, outcome.clone(), Target::Call(id), shared.clone());
        let producer = Producer::new(Target::Call(id), shared, credit, Some(outcome));
        Ok((
            BiSender::new(producer),
            ResponseStream::new(items, id, Some(self.timeout)),
        ))
    }

    /// Fire-and-forget: queues the request (`"requestId": null`); nothing comes back.
    pub async fn fire_and_forget<Req: Serialize + ?Sized>(
        &self,
        op: &str,
        data: &Req,
    ) -> Result<(), RpcError> {
        let data = request_data(op, &to_json(data)?)?;
        let send = self.shared().cmd.send(Cmd::Ff { data });
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.shared().cause()),
            Err(_) => Err(RpcError::Timeout(self.timeout)),
        }
    }
}
