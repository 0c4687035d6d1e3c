//! The receiving half shared by calls and handlers ([`Items`]): it takes one batch of items
//! from the stream's queue at a time (DECISIONS D48), hands them out one by one, grants
//! credit for each item consumed and reports the stream's outcome once.

use std::sync::Arc;
use std::task::{Context, Poll};

use bistream_rpc_proto::{Target, TextBatch};

use crate::queue::QueueRx;
use crate::shared::{Ctl, Outcome, Shared};
use crate::RpcError;

/// Receiving half shared by calls and handlers: delivery, end/failure, credit grants. It takes
/// one batch of items from the queue at a time and hands them out one by one.
pub(crate) struct Items {
    rx: QueueRx,
    outcome: Outcome,
    target: Target,
    pub(super) shared: Arc<Shared>,
    /// The batch being handed out, the index of its next item and where that item starts.
    pub(super) batch: TextBatch,
    pub(super) next: usize,
    pub(super) start: usize,
    /// Credit earned by consumed items and not sent yet.
    grant: u32,
    /// Items consumed and not yet granted back.
    owed: u32,
    /// Recent item size in bytes: the largest seen, decaying by 1/8 per item.
    size: u64,
    /// The grant target for `size` (cached: a division per item showed in profiles).
    fit: (u64, u32),
    pub(super) done: bool,
}

/// What [`Items::fill`] found.
pub(crate) enum Fill {
    /// An item is ready ([`Items::peek`]).
    Ready,
    /// The queue is closed and empty: the stream's outcome follows ([`Items::ended`]).
    Closed,
    /// Nothing yet; `drained`: a batch was just used up (the consumer starts waiting now).
    Pending { drained: bool },
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
            batch: TextBatch::default(),
            next: 0,
            start: 0,
            grant: 0,
            owed: 0,
            size: 0,
            fit: (0, 1),
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
        if self.fit.0 != self.size {
            let fit = self.shared.window_bytes / self.size.max(1);
            self.fit = (
                self.size,
                u32::try_from(fit).unwrap_or(u32::MAX).clamp(1, w),
            );
        }
        let target = self.fit.1;
        let g = (target + self.owed).saturating_sub(w);
        if g >= (target / 2).max(1) {
            self.owed -= g;
            Some(g)
        } else {
            None
        }
    }

    /// Makes the next item ready, taking the next batch from the queue when this one is used
    /// up.
    pub(crate) fn fill(&mut self, cx: &mut Context<'_>) -> Fill {
        while self.next >= self.batch.len() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => {
                    self.batch = b;
                    self.next = 0;
                    self.start = 0;
                }
                Poll::Ready(None) => return Fill::Closed,
                Poll::Pending => {
                    let drained = !self.batch.is_empty();
                    if drained {
                        self.batch = TextBatch::default();
                        self.next = 0;
                        self.start = 0;
                    }
                    return Fill::Pending { drained };
                }
            }
        }
        Fill::Ready
    }

    /// The ready item's JSON text (after [`Items::fill`] said `Ready`).
    pub(crate) fn peek(&self) -> Option<&str> {
        let end = *self.batch.ends().get(self.next)?;
        self.batch.as_str().get(self.start..end)
    }

    /// Passes the ready item: it is consumed, and its credit is owed back (sent with
    /// [`Items::send_grant`]).
    pub(crate) fn advance(&mut self) {
        let end = self
            .batch
            .ends()
            .get(self.next)
            .copied()
            .unwrap_or(self.start);
        self.consumed(self.next + 1, end);
    }

    /// The items before index `next` (ending at byte `start`) are consumed: their credit is
    /// owed back (sent with [`Items::send_grant`]).
    pub(crate) fn consumed(&mut self, next: usize, start: usize) {
        if self.shared.credit_on() {
            let mut from = self.start;
            let batch = std::mem::take(&mut self.batch);
            for &end in batch.ends().get(self.next..next).unwrap_or_default() {
                if let Some(n) = self.grant_after(end - from) {
                    self.grant = self.grant.saturating_add(n);
                }
                from = end;
            }
            self.batch = batch;
        }
        self.next = next;
        self.start = start;
    }

    /// Sends the credit owed for the items consumed so far, if any (one `request_n` for
    /// several items).
    pub(crate) fn send_grant(&mut self) {
        if self.grant > 0 {
            let n = std::mem::take(&mut self.grant);
            let _ = self.shared.ctl.send(Ctl::Grant(self.target.clone(), n));
        }
    }

    /// The queue closed: the stream's outcome, once (`None` for a clean end).
    pub(super) fn ended(&mut self) -> Option<RpcError> {
        self.done = true;
        match self.outcome.get() {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.clone()),
            None => Some(self.shared.cause()),
        }
    }
}
