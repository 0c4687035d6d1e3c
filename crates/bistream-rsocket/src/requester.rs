//! [`RSocket`]: the requester API of one connection (request/response, request/stream,
//! request/channel, fire-and-forget, metadata push), routed by composite metadata, JSON data.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bistream_rpc::queue::QueueRx;
use bistream_rsocket_proto::metadata::composite_routing;
use bistream_rsocket_proto::{ErrorCode, Frame, Payload};
use bytes::Bytes;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, Semaphore};

use crate::shared::{Cmd, Ctl, Inb, Kind, Shared, Sink};
use crate::RsError;

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.shared.ctl.send(Ctl::Close("handle dropped".into()));
    }
}

/// One RSocket connection: both ends can request and serve. Clones share the connection;
/// dropping the last clone closes it.
///
/// ```no_run
/// # async fn demo() -> Result<(), bistream_rsocket::RsError> {
/// use futures_util::StreamExt;
/// let rs = bistream_rsocket::connect_tcp("127.0.0.1:7878", Default::default(), Default::default()).await?;
/// let v: serde_json::Value = rs.request_response("echo", &serde_json::json!({"x": 1})).await?;
/// let mut s = rs.request_stream::<_, u64>("count", &serde_json::json!({"n": 3})).await?;
/// while let Some(n) = s.next().await { println!("{}", n?); }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RSocket {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RSocket")
            .field("closed", &*self.inner.shared.closed.borrow())
            .finish()
    }
}

fn to_payload<T: Serialize + ?Sized>(route: &str, v: &T) -> Result<Payload, RsError> {
    let data = serde_json::to_vec(v).map_err(|e| RsError::Data(e.to_string()))?;
    Ok(Payload::new(
        Some(Bytes::from(composite_routing(route))),
        Bytes::from(data),
    ))
}

fn from_payload<T: DeserializeOwned>(p: &Payload) -> Result<T, RsError> {
    let d: &[u8] = if p.data.is_empty() { b"null" } else { &p.data };
    serde_json::from_slice(d).map_err(|e| RsError::Data(e.to_string()))
}

impl RSocket {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            inner: Arc::new(Inner { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.shared().closed.borrow()
    }

    /// Waits for the connection to end; returns the cause.
    pub async fn closed(&self) -> RsError {
        let mut rx = self.shared().closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
        self.shared().cause()
    }

    /// Closes the connection and waits for its end.
    pub async fn close(&self) {
        let _ = self.shared().ctl.send(Ctl::Close("closed locally".into()));
        self.closed().await;
    }

    async fn start(&self, kind: Kind, payload: Payload, sink: Sink) -> Result<u32, RsError> {
        let (id_tx, id_rx) = oneshot::channel();
        self.shared()
            .cmd
            .send(Cmd::Start {
                kind,
                payload,
                sink,
                id: id_tx,
            })
            .await
            .map_err(|_| self.shared().cause())?;
        id_rx.await.map_err(|_| self.shared().cause())
    }

    /// Request/response with raw metadata and data.
    pub async fn request_response_payload(&self, payload: Payload) -> Result<Payload, RsError> {
        let (tx, rx) = oneshot::channel();
        let id = self.start(Kind::Response, payload, Sink::Rr(tx)).await?;
        match tokio::time::timeout(self.shared().timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.shared().cause()),
            Err(_) => {
                let _ = self.shared().ctl.send(Ctl::Cancel(id));
                Err(RsError::Timeout(self.shared().timeout))
            }
        }
    }

    /// Request/response on `route`: `data` as JSON, the answer parsed as `Resp`.
    pub async fn request_response<Req, Resp>(
        &self,
        route: &str,
        data: &Req,
    ) -> Result<Resp, RsError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let p = self
            .request_response_payload(to_payload(route, data)?)
            .await?;
        from_payload(&p)
    }

    /// Request/stream on `route`: the items as a `Stream`; dropping it cancels (CANCEL).
    pub async fn request_stream<Req, Item>(
        &self,
        route: &str,
        data: &Req,
    ) -> Result<ItemStream<Item>, RsError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned,
    {
        let (tx, rx) = self.shared().inbound_queue();
        let sink = Sink::Items { tx, credit: None };
        let id = self
            .start(Kind::Stream, to_payload(route, data)?, sink)
            .await?;
        Ok(ItemStream::new(id, rx, self.shared().clone()))
    }

    /// Request/channel on `route`: `first` is our first item (carried by REQUEST_CHANNEL);
    /// returns a sender for the others and the responder's items. Dropping the stream cancels.
    pub async fn request_channel<In, Out>(
        &self,
        route: &str,
        first: &In,
    ) -> Result<(ChannelSender<In>, ItemStream<Out>), RsError>
    where
        In: Serialize,
        Out: DeserializeOwned,
    {
        let (tx, rx) = self.shared().inbound_queue();
        let credit = Arc::new(Semaphore::new(0));
        let sink = Sink::Items {
            tx,
            credit: Some(credit.clone()),
        };
        let kind = Kind::Channel { complete: false };
        let id = self.start(kind, to_payload(route, first)?, sink).await?;
        let sender = ChannelSender {
            stream: id,
            credit,
            shared: self.shared().clone(),
            ended: false,
            _t: PhantomData,
        };
        Ok((sender, ItemStream::new(id, rx, self.shared().clone())))
    }

    /// Fire-and-forget on `route`.
    pub async fn fire_and_forget<Req: Serialize + ?Sized>(
        &self,
        route: &str,
        data: &Req,
    ) -> Result<(), RsError> {
        let p = to_payload(route, data)?;
        self.shared()
            .cmd
            .send(Cmd::Fnf(p))
            .await
            .map_err(|_| self.shared().cause())
    }

    /// METADATA_PUSH.
    pub async fn metadata_push(&self, metadata: Bytes) -> Result<(), RsError> {
        self.shared()
            .cmd
            .send(Cmd::MetadataPush(metadata))
            .await
            .map_err(|_| self.shared().cause())
    }
}

/// The items of a request/stream or request/channel, as a `Stream` of `Result<T, RsError>`.
/// It grants REQUEST_N as it is drained; dropping it before the end sends CANCEL.
pub struct ItemStream<T> {
    stream: u32,
    rx: QueueRx<Inb>,
    shared: Arc<Shared>,
    taken: u32,
    done: bool,
    idle: Pin<Box<tokio::time::Sleep>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ItemStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStream")
            .field("stream", &self.stream)
            .finish()
    }
}

impl<T> ItemStream<T> {
    fn new(stream: u32, rx: QueueRx<Inb>, shared: Arc<Shared>) -> Self {
        let idle = Box::pin(tokio::time::sleep(shared.timeout));
        Self {
            stream,
            rx,
            shared,
            taken: 0,
            done: false,
            idle,
            _t: PhantomData,
        }
    }

    /// The stream id.
    pub fn stream_id(&self) -> u32 {
        self.stream
    }
}

impl<T: DeserializeOwned> Stream for ItemStream<T> {
    type Item = Result<T, RsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Inb::Item(p))) => {
                this.taken += 1;
                if this.taken >= this.shared.window / 2 {
                    let n = std::mem::take(&mut this.taken);
                    let _ = this.shared.ctl.send(Ctl::RequestN(this.stream, n));
                }
                let t = this.shared.timeout;
                this.idle.as_mut().reset(tokio::time::Instant::now() + t);
                Poll::Ready(Some(from_payload(&p)))
            }
            Poll::Ready(Some(Inb::Complete)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Inb::Error(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(Some(Err(this.shared.cause())))
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    let _ = this.shared.ctl.send(Ctl::Cancel(this.stream));
                    return Poll::Ready(Some(Err(RsError::Timeout(this.shared.timeout))));
                }
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for ItemStream<T> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.shared.ctl.send(Ctl::Cancel(self.stream));
        }
    }
}

/// Sends our items of a request/channel within the responder's REQUEST_N credit.
/// [`ChannelSender::end`] (or dropping it) completes our side.
pub struct ChannelSender<T> {
    stream: u32,
    credit: Arc<Semaphore>,
    shared: Arc<Shared>,
    ended: bool,
    _t: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for ChannelSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSender")
            .field("stream", &self.stream)
            .finish()
    }
}

impl<T: Serialize> ChannelSender<T> {
    /// Sends one item once the responder has requested it.
    pub async fn send(&mut self, item: &T) -> Result<(), RsError> {
        let data = serde_json::to_vec(item).map_err(|e| RsError::Data(e.to_string()))?;
        match self.credit.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(self.shared.cause()),
        }
        self.frame(Frame::Payload {
            stream: self.stream,
            follows: false,
            complete: false,
            next: true,
            payload: Payload::data(data),
        })
        .await
    }

    async fn frame(&self, f: Frame) -> Result<(), RsError> {
        self.shared
            .cmd
            .send(Cmd::Frame(f))
            .await
            .map_err(|_| self.shared.cause())
    }

    /// Completes our side (PAYLOAD with COMPLETE).
    pub async fn end(mut self) -> Result<(), RsError> {
        self.ended = true;
        self.frame(complete_frame(self.stream)).await
    }

    /// Fails our side with an APPLICATION_ERROR (ends the whole channel).
    pub async fn error(mut self, message: &str) -> Result<(), RsError> {
        self.ended = true;
        self.frame(Frame::Error {
            stream: self.stream,
            code: ErrorCode::ApplicationError,
            message: message.to_string(),
        })
        .await
    }
}

fn complete_frame(stream: u32) -> Frame {
    Frame::Payload {
        stream,
        follows: false,
        complete: true,
        next: false,
        payload: Payload::default(),
    }
}

impl<T> Drop for ChannelSender<T> {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self
                .shared
                .cmd
                .try_send(Cmd::Frame(complete_frame(self.stream)));
        }
    }
}
