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

use crate::shared::{Cmd, Ctl, Outcome, Shared};
use crate::{HandlerError, RpcError};

mod items;
pub(crate) use items::{Fill, Items};

/// The items a request/stream or stream/stream call receives, as a `Stream` of
/// `Result<T, RpcError>`. It ends after the callee's `stream_end`, or after one `Err`.
/// Dropping it before the end cancels the call (a `cancel` frame when negotiated).
pub struct ResponseStream<T> {
    items: Items,
    call: u64,
    idle: Option<Idle>,
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
        let r = self.take_batch(cx, out, max);
        // One grant for the items this call consumed.
        self.items.send_grant();
        r
    }

    fn take_batch(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        max: usize,
    ) -> Poll<Option<Result<usize, RpcError>>> {
        if self.items.done {
            return Poll::Ready(None);
        }
        let mut n = 0;
        while n < max {
            match self.items.fill(cx) {
                Fill::Ready => {}
                // The outcome waits for the next call when items come first.
                Fill::Closed if n > 0 => break,
                Fill::Closed => return Poll::Ready(self.items.ended().map(Err)),
                Fill::Pending { drained } => {
                    if drained {
                        touch(&mut self.idle);
                    }
                    if n > 0 {
                        break;
                    }
                    return self.poll_idle(cx).map(|e| Some(Err(e)));
                }
            }
            // Walk the batch in place; the consumed items are accounted for after.
            let (first, mut start) = (self.items.next, self.items.start);
            let mut next = first;
            let mut bad = None;
            let text = self.items.batch.as_str();
            for &end in self.items.batch.ends().get(first..).unwrap_or_default() {
                if n == max {
                    break;
                }
                let raw = text.get(start..end).unwrap_or_default();
                match from_item(raw) {
                    Ok(v) => out.push(v),
                    Err(e) if n == 0 => {
                        bad = Some(e);
                        next += 1;
                        start = end;
                        break;
                    }
                    // The bad item is the next call's answer.
                    Err(_) => break,
                }
                n += 1;
                next += 1;
                start = end;
            }
            self.items.consumed(next, start);
            if let Some(e) = bad {
                return Poll::Ready(Some(Err(RpcError::Data(e.to_string()))));
            }
            if next < self.items.batch.len() {
                // Stopped at `max` or before a bad item.
                break;
            }
        }
        Poll::Ready(Some(Ok(n)))
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

/// The consumer used up what it had and starts waiting: the idle time counts from now (read
/// once per batch, not per item).
fn touch(idle: &mut Option<Idle>) {
    if let Some(idle) = idle {
        idle.last = tokio::time::Instant::now();
    }
}

impl<T: DeserializeOwned> Stream for ResponseStream<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.items.done {
            return Poll::Ready(None);
        }
        match this.items.fill(cx) {
            Fill::Ready => {}
            Fill::Closed => return Poll::Ready(this.items.ended().map(Err)),
            Fill::Pending { drained } => {
                if drained {
                    touch(&mut this.idle);
                }
                return this.poll_idle(cx).map(|e| Some(Err(e)));
            }
        }
        let item = match this.items.peek() {
            Some(raw) => from_item(raw).map_err(|e| RpcError::Data(e.to_string())),
            None => Err(RpcError::Protocol("stream item missing".into())),
        };
        this.items.advance();
        this.items.send_grant();
        Poll::Ready(Some(item))
    }
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
        std::future::poll_fn(|cx| {
            let items = &mut self.items;
            if items.done {
                return Poll::Ready(None);
            }
            match items.fill(cx) {
                Fill::Ready => {}
                Fill::Closed => {
                    return Poll::Ready(items.ended().map(|e| Err(HandlerError::failed(e))))
                }
                Fill::Pending { .. } => return Poll::Pending,
            }
            let item = match items.peek() {
                Some(raw) => from_item(raw)
                    .map_err(|e| HandlerError::invalid(format!("invalid stream item: {e}"))),
                None => Err(HandlerError::invalid("stream item missing")),
            };
            items.advance();
            items.send_grant();
            Poll::Ready(Some(item))
        })
        .await
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
