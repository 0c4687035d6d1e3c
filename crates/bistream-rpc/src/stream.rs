//! Stream halves: [`ResponseStream`] (items a call receives), [`BiSender`] (items a bi-stream
//! call sends), and for handlers [`ServeReceiver`] / [`ServeSender`]. Receivers grant credit
//! as they are drained; senders wait for credit when it is in force.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bistream_rpc_proto::{from_item, ServeKey, Target};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::queue::QueueRx;
use crate::router::Raw;
use crate::shared::{Cmd, Ctl, Outcome, Shared};
use crate::{HandlerError, RpcError};

/// Receiving half shared by calls and handlers: delivery, end/failure, credit grants.
pub(crate) struct Items {
    rx: QueueRx,
    outcome: Outcome,
    target: Target,
    shared: Arc<Shared>,
    /// Items consumed and not yet granted back.
    owed: u32,
    /// Recent item size in bytes: the largest seen, decaying by 1/8 per item.
    size: u64,
    done: bool,
}

impl Items {
    pub(crate) fn new(
        queue: QueueRx,
        outcome: Outcome,
        target: Target,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            rx: queue,
            outcome,
            target,
            shared,
            owed: 0,
            size: 0,
            done: false,
        }
    }

    /// Accounts for one consumed item of `len` bytes; returns the credit to grant now, if any.
    ///
    /// The peer may have `window - owed` items queued or in flight. Grants aim that at
    /// `target` items: the whole window for small items, fewer when `target` items of the
    /// recent size would pass `window_bytes` (never below one, so a stream of huge items
    /// still moves). A grant goes out once it is worth half the target (one `request_n` per
    /// half window: granting at a quarter measured no faster, with twice the frames).
    fn grant_after(&mut self, len: usize) -> Option<u32> {
        let w = self.shared.window;
        self.owed = (self.owed + 1).min(w);
        let len = len as u64;
        self.size = len.max(self.size - self.size / 8);
        let fit = self.shared.window_bytes / self.size.max(1);
        let target = u32::try_from(fit).unwrap_or(u32::MAX).clamp(1, w);
        let g = (target + self.owed).saturating_sub(w);
        if g >= (target / 2).max(1) {
            self.owed -= g;
            Some(g)
        } else {
            None
        }
    }

    /// Next raw item; `Some(Err)` once on failure, then `None`.
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Raw, RpcError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(raw)) => {
                if self.shared.credit_on() {
                    if let Some(n) = self.grant_after(raw.get().len()) {
                        let _ = self.shared.ctl.send(Ctl::Grant(self.target.clone(), n));
                    }
                }
                Poll::Ready(Some(Ok(raw)))
            }
            Poll::Ready(None) => self.ended(),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Every raw item that is ready (at least one, at most `max`), appended to `out`, with one
    /// credit grant for the lot; then as [`Items::poll_raw`]: `Some(Err)` once, then `None`.
    fn poll_raw_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Raw>,
        max: usize,
    ) -> Poll<Option<Result<(), RpcError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let before = out.len();
        match self.rx.poll_recv_many(cx, out, max.max(1)) {
            Poll::Ready(0) => self.ended().map(|r| r.map(|r| r.map(|_| ()))),
            Poll::Ready(_) => {
                if self.shared.credit_on() {
                    let mut grant = 0u32;
                    for raw in &out[before..] {
                        if let Some(n) = self.grant_after(raw.get().len()) {
                            grant = grant.saturating_add(n);
                        }
                    }
                    if grant > 0 {
                        let _ = self.shared.ctl.send(Ctl::Grant(self.target.clone(), grant));
                    }
                }
                Poll::Ready(Some(Ok(())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The queue closed: the stream's outcome, once.
    fn ended(&mut self) -> Poll<Option<Result<Raw, RpcError>>> {
        self.done = true;
        match self.outcome.get() {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(e.clone()))),
            None => Poll::Ready(Some(Err(self.shared.cause()))),
        }
    }
}

/// The items a request/stream or stream/stream call receives, as a `Stream` of
/// `Result<T, RpcError>`. It ends after the callee's `stream_end`, or after one `Err`.
/// Dropping it before the end cancels the call (a `cancel` frame when negotiated).
pub struct ResponseStream<T> {
    items: Items,
    call: u64,
    idle: Option<Idle>,
    /// Raw items taken by [`ResponseStream::next_batch`] and not handed out yet (it stops
    /// at an item that does not parse, which the next call returns as its error).
    raws: Vec<Raw>,
    /// How many of `raws` were handed out.
    taken: usize,
    _t: PhantomData<fn() -> T>,
}

/// The idle timeout of a response stream. The timer is moved lazily (when it fires early),
/// not on every item: re-arming a timer per item costs more than the item.
struct Idle {
    limit: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    last: tokio::time::Instant,
}

impl<T> std::fmt::Debug for ResponseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("call", &self.call)
            .finish()
    }
}

impl<T> ResponseStream<T> {
    pub(crate) fn new(items: Items, call: u64, idle: Option<Duration>) -> Self {
        Self {
            items,
            call,
            idle: idle.map(|limit| Idle {
                limit,
                sleep: Box::pin(tokio::time::sleep(limit)),
                last: tokio::time::Instant::now(),
            }),
            raws: Vec::new(),
            taken: 0,
            _t: PhantomData,
        }
    }

    /// Our request id counter for this call.
    pub fn call_id(&self) -> u64 {
        self.call
    }
}

impl<T: DeserializeOwned> ResponseStream<T> {
    /// Waits for the next items and appends every one that is ready, at most `max` (at least
    /// one), to `out`: one wake-up and one credit grant per batch instead of per item, for
    /// fast streams. `Some(Ok(n))` for `n` items; `Some(Err(e))` as the `Stream` would yield
    /// it (an item that does not parse as `T` — the items before it come first, the stream
    /// goes on after it — or the final failure, after which it is `None`); `None` at the end.
    /// Order, credit and cancellation are the same as with `next()`; both may be mixed.
    ///
    /// ```no_run
    /// # async fn run(conn: bistream_rpc::Connection) -> Result<(), bistream_rpc::RpcError> {
    /// let mut items = conn
    ///     .request_stream::<_, u64>("count", &serde_json::json!({"n": 1000}))
    ///     .await?;
    /// let mut batch = Vec::new();
    /// let mut sum = 0;
    /// while let Some(n) = items.next_batch(&mut batch, 1024).await {
    ///     n?;
    ///     sum += batch.drain(..).sum::<u64>();
    /// }
    /// assert_eq!(sum, 499_500);
    /// # Ok(()) }
    /// ```
    pub async fn next_batch(
        &mut self,
        out: &mut Vec<T>,
        max: usize,
    ) -> Option<Result<usize, RpcError>> {
        std::future::poll_fn(|cx| self.poll_batch(cx, out, max.max(1))).await
    }

    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        max: usize,
    ) -> Poll<Option<Result<usize, RpcError>>> {
        if self.taken == self.raws.len() {
            self.raws.clear();
            self.taken = 0;
            match self.items.poll_raw_many(cx, &mut self.raws, max) {
                Poll::Ready(Some(Ok(()))) => self.touch(),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return self.poll_idle(cx).map(|e| Some(Err(e))),
            }
        }
        let mut n = 0;
        while n < max {
            let Some(raw) = self.raws.get(self.taken) else {
                break;
            };
            match from_item(raw.get()) {
                Ok(v) => {
                    out.push(v);
                    self.taken += 1;
                    n += 1;
                }
                Err(e) if n == 0 => {
                    self.taken += 1;
                    return Poll::Ready(Some(Err(RpcError::Data(e.to_string()))));
                }
                // The bad item is the next call's answer.
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Ok(n)))
    }

    fn touch(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last = tokio::time::Instant::now();
        }
    }

    /// While no item is ready: the idle timeout (then the call is cancelled).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<RpcError> {
        if let Some(idle) = &mut self.idle {
            while idle.sleep.as_mut().poll(cx).is_ready() {
                let due = idle.last + idle.limit;
                if due > idle.sleep.deadline() {
                    // Items came since the timer was set: wait from the last one.
                    idle.sleep.as_mut().reset(due);
                    continue;
                }
                self.items.done = true;
                let _ = self.items.shared.ctl.send(Ctl::Cancel(self.call));
                return Poll::Ready(RpcError::Timeout(idle.limit));
            }
        }
        Poll::Pending
    }
}

impl<T: DeserializeOwned> Stream for ResponseStream<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(raw) = this.raws.get(this.taken) {
            this.taken += 1;
            return Poll::Ready(Some(
                from_item(raw.get()).map_err(|e| RpcError::Data(e.to_string())),
            ));
        }
        match this.items.poll_raw(cx) {
            Poll::Ready(Some(Ok(raw))) => {
                this.touch();
                Poll::Ready(Some(
                    from_item(raw.get()).map_err(|e| RpcError::Data(e.to_string())),
                ))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map(|_| unreachable_item()))),
            Poll::Pending => this.poll_idle(cx).map(|e| Some(Err(e))),
        }
    }
}

#[allow(clippy::unreachable)]
fn unreachable_item<T>() -> T {
    // poll_raw yields Ok only with Some(raw), handled above.
    unreachable!("ok items are handled by the first arm")
}

impl<T> Drop for ResponseStream<T> {
    fn drop(&mut self) {
        if !self.items.done {
            let _ = self.items.shared.ctl.send(Ctl::Cancel(self.call));
        }
    }
}

/// Sending half of a producer (call side or handler side).
pub(crate) struct Producer {
    target: Target,
    shared: Arc<Shared>,
    credit: Arc<Semaphore>,
    outcome: Option<Outcome>,
    ended: bool,
}

impl Producer {
    pub(crate) fn new(
        target: Target,
        shared: Arc<Shared>,
        credit: Arc<Semaphore>,
        outcome: Option<Outcome>,
    ) -> Self {
        Self {
            target,
            shared,
            credit,
            outcome,
            ended: false,
        }
    }

    pub(crate) async fn send_raw(&mut self, data: String) -> Result<(), RpcError> {
        self.send_many(&mut vec![data]).await
    }

    /// How many items to take from a source now: up to `max`, but no more than the credit
    /// in hand when credit is in force (at least one, which then waits for credit), so the
    /// producer never runs ahead of its consumer.
    pub(crate) fn room(&self, max: usize) -> usize {
        if self.shared.credit_on() {
            self.credit.available_permits().clamp(1, max)
        } else {
            max
        }
    }

    /// Sends `items` in order, as few commands as credit allows (one when it does not bind).
    pub(crate) async fn send_many(&mut self, items: &mut Vec<String>) -> Result<(), RpcError> {
        if self.ended {
            return Err(RpcError::Protocol(
                "this side of the stream has ended".into(),
            ));
        }
        if let Some(Some(r)) = self.outcome.as_ref().map(|o| o.get()) {
            return Err(r.clone().err().unwrap_or(RpcError::Cancelled));
        }
        while !items.is_empty() {
            let credited = self.shared.credit_on();
            let n = if credited {
                match self.credit.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return Err(self.shared.cause()),
                }
                let more = self.credit.available_permits().min(items.len() - 1);
                match u32::try_from(more).map(|m| self.credit.try_acquire_many(m)) {
                    Ok(Ok(p)) if more > 0 => {
                        p.forget();
                        1 + more
                    }
                    _ => 1,
                }
            } else {
                items.len()
            };
            let data = if n >= items.len() {
                std::mem::take(items)
            } else {
                items.drain(..n).collect()
            };
            self.shared
                .cmd
                .send(Cmd::Items {
                    target: self.target.clone(),
                    data,
                    credited,
                })
                .await
                .map_err(|_| self.shared.cause())?;
        }
        Ok(())
    }

    pub(crate) async fn end(&mut self) -> Result<(), RpcError> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        self.shared
            .cmd
            .send(Cmd::End {
                target: self.target.clone(),
            })
            .await
            .map_err(|_| self.shared.cause())
    }
}

fn encode<T: Serialize>(v: &T) -> Result<String, RpcError> {
    serde_json::to_string(v).map_err(|e| RpcError::Data(e.to_string()))
}

/// Sends the caller's items of a stream/stream call. [`BiSender::end`] (or dropping it) ends
/// the caller's side with `stream_end`.
pub struct BiSender<T> {
    p: Producer,
    _t: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for BiSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiSender")
            .field("target", &self.p.target)
            .finish()
    }
}

impl<T: Serialize> BiSender<T> {
    pub(crate) fn new(p: Producer) -> Self {
        Self { p, _t: PhantomData }
    }

    /// Sends one item (waits for credit when flow control is in force).
    pub async fn send(&mut self, item: &T) -> Result<(), RpcError> {
        let data = encode(item)?;
        self.p.send_raw(data).await
    }

    /// Ends our side (`stream_end`); the receiver still gets the callee's remaining items.
    pub async fn end(mut self) -> Result<(), RpcError> {
        self.p.end().await
    }
}

impl<T> Drop for BiSender<T> {
    fn drop(&mut self) {
        if !self.p.ended {
            self.p.ended = true;
            let target = self.p.target.clone();
            let _ = self.p.shared.cmd.try_send(Cmd::End { target });
        }
    }
}

/// A handler's receiver of the caller's bi-stream items: `recv` yields each item parsed as
/// `T` (an item that does not parse is an `invalid_request` error), `None` after the
/// caller's `stream_end`.
pub struct ServeReceiver<T> {
    items: Items,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ServeReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeReceiver").finish()
    }
}

impl<T: DeserializeOwned> ServeReceiver<T> {
    pub(crate) fn new(items: Items) -> Self {
        Self {
            items,
            _t: PhantomData,
        }
    }

    pub(crate) fn typed<U>(self) -> ServeReceiver<U> {
        ServeReceiver {
            items: self.items,
            _t: PhantomData,
        }
    }

    /// The next item.
    pub async fn recv(&mut self) -> Option<Result<T, HandlerError>> {
        std::future::poll_fn(|cx| self.items.poll_raw(cx))
            .await
            .map(|r| match r {
                Ok(raw) => from_item(raw.get())
                    .map_err(|e| HandlerError::invalid(format!("invalid stream item: {e}"))),
                Err(e) => Err(HandlerError::failed(e)),
            })
    }
}

/// A handler's sender of bi-stream items. The handler's return ends its side.
pub struct ServeSender<T> {
    p: Producer,
    _t: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for ServeSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSender").finish()
    }
}

impl<T: Serialize> ServeSender<T> {
    pub(crate) fn new(key: ServeKey, shared: Arc<Shared>, credit: Arc<Semaphore>) -> Self {
        Self {
            p: Producer::new(Target::Serve(key), shared, credit, None),
            _t: PhantomData,
        }
    }

    pub(crate) fn typed<U>(self) -> ServeSender<U> {
        ServeSender {
            p: self.p,
            _t: PhantomData,
        }
    }

    /// Sends one item to the caller (waits for credit when flow control is in force).
    pub async fn send(&mut self, item: &T) -> Result<(), HandlerError> {
        let data = encode(item).map_err(HandlerError::failed)?;
        self.p.send_raw(data).await.map_err(HandlerError::failed)
    }
}
