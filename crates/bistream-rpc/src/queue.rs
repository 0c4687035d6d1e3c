//! A stream's inbound queue, bounded twice: in items (`Limits::window`) and in bytes
//! (`Limits::stream_queue_bytes`). The driver puts entries in; when either bound is reached it
//! waits for the consumer (and so stops reading the transport: backpressure). An entry may
//! carry several items (the rpc crate queues one [`TextBatch`] per burst of a stream's items,
//! DECISIONS D48): both bounds count its items and their bytes, not entries. An entry
//! larger than a bound still passes when the queue is empty, so a stream of huge items moves
//! one item at a time (the engine makes batches no larger than the bounds, so only a single
//! item can be). Entries of zero bytes (end and error markers) always pass the byte bound.
//! Generic over the entry ([`QueueItem`]): the rpc crate queues item batches, the RSocket
//! crate its payloads one by one (DECISIONS D35, D40).
//!
//! ```
//! use bistream_rpc::queue::{queue, TrySend};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, mut rx) = queue::<Vec<u8>>(16, 1000);
//! assert!(tx.try_send(vec![0; 600]).is_ok());
//! // 600 + 600 > 1000 bytes: the driver must wait (`tx.send(..).await`).
//! assert!(matches!(tx.try_send(vec![0; 600]), Err(TrySend::Full(_))));
//! assert_eq!(rx.recv().await.map(|v| v.len()), Some(600));
//! assert!(tx.try_send(vec![0; 600]).is_ok());
//! # }
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bistream_rpc_proto::TextBatch;
use tokio::sync::{mpsc, Notify};

use crate::router::Raw;

/// What a queue counts of an entry: its items and their size in bytes.
pub trait QueueItem {
    /// The bytes this entry holds (counted against the byte bound).
    fn queue_len(&self) -> usize;

    /// The items this entry holds (counted against the item bound); one by default.
    fn queue_count(&self) -> usize {
        1
    }
}

impl QueueItem for TextBatch {
    fn queue_len(&self) -> usize {
        self.bytes()
    }

    fn queue_count(&self) -> usize {
        self.len()
    }
}

impl QueueItem for Raw {
    fn queue_len(&self) -> usize {
        self.get().len()
    }
}

impl QueueItem for Vec<u8> {
    fn queue_len(&self) -> usize {
        self.len()
    }
}

/// Items and bytes queued in one stream's queue, shared by its two ends.
#[derive(Debug)]
pub struct Gauge {
    queued: AtomicUsize,
    bound: usize,
    items: AtomicUsize,
    item_bound: usize,
    /// The driver waits for room: the consumer wakes it once it takes something.
    waiting: AtomicBool,
    notify: Notify,
}

impl Gauge {
    /// Whether an entry of `count` items and `len` bytes may be queued now.
    fn fits(&self, len: usize, count: usize) -> bool {
        let n = self.items.load(Ordering::SeqCst);
        if n != 0 && n.saturating_add(count) > self.item_bound {
            return false;
        }
        if len == 0 {
            return true;
        }
        let q = self.queued.load(Ordering::SeqCst);
        q == 0 || q.saturating_add(len) <= self.bound
    }

    /// Counts an entry in (before it can be taken, so the consumer's subtraction never goes
    /// below zero).
    fn add(&self, len: usize, count: usize) {
        self.items.fetch_add(count, Ordering::SeqCst);
        if len > 0 {
            self.queued.fetch_add(len, Ordering::SeqCst);
        }
    }

    /// The consumer took entries of `count` items and `len` bytes in all.
    fn taken(&self, len: usize, count: usize) {
        if len == 0 && count == 0 {
            return;
        }
        self.items.fetch_sub(count, Ordering::SeqCst);
        if len > 0 {
            self.queued.fetch_sub(len, Ordering::SeqCst);
        }
        // Paired with `send`'s store-then-load: either it sees our subtraction or we see
        // its flag (both sequentially consistent), so it is never left asleep.
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Items queued now.
    pub fn queued_items(&self) -> usize {
        self.items.load(Ordering::SeqCst)
    }
}

/// The driver's end of a stream queue.
#[derive(Debug)]
pub struct QueueTx<T = TextBatch> {
    tx: mpsc::Sender<T>,
    gauge: Arc<Gauge>,
}

impl<T> Clone for QueueTx<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            gauge: self.gauge.clone(),
        }
    }
}

/// The consumer's end: its `recv` methods report the items and bytes they take to the gauge.
#[derive(Debug)]
pub struct QueueRx<T = TextBatch> {
    rx: mpsc::Receiver<T>,
    gauge: Arc<Gauge>,
}

/// Why [`QueueTx::try_send`] did not queue an entry.
#[derive(Debug)]
pub enum TrySend<T = TextBatch> {
    /// A bound is reached: wait with [`QueueTx::send`].
    Full(T),
    /// The consumer is gone: the entry is dropped.
    Closed,
}

/// A queue of at most `items` items and `bytes` bytes (or one larger entry).
pub fn queue<T: QueueItem>(items: usize, bytes: usize) -> (QueueTx<T>, QueueRx<T>) {
    // Every entry holds at least one item (or is a marker the item bound counts as one), so
    // the channel's own bound of `items` entries never binds before the gauge's.
    let (tx, rx) = mpsc::channel(items.max(1));
    let gauge = Arc::new(Gauge {
        queued: AtomicUsize::new(0),
        bound: bytes.max(1),
        items: AtomicUsize::new(0),
        item_bound: items.max(1),
        waiting: AtomicBool::new(false),
        notify: Notify::new(),
    });
    (
        QueueTx {
            tx,
            gauge: gauge.clone(),
        },
        QueueRx { rx, gauge },
    )
}

impl<T: QueueItem> QueueRx<T> {
    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.gauge.queued()
    }

    /// Items queued now.
    pub fn queued_items(&self) -> usize {
        self.gauge.queued_items()
    }

    /// The next entry (`None` once every sender is gone and the queue is empty).
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next entry, reporting its items and bytes as taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let r = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(item)) = &r {
            self.gauge.taken(item.queue_len(), item.queue_count());
        }
        r
    }

    /// Polls for every ready entry (at least one, at most `max`), appended to `out`,
    /// reporting their items and bytes as taken; `Ready(0)` once every sender is gone and
    /// the queue is empty.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        max: usize,
    ) -> Poll<usize> {
        let before = out.len();
        let r = self.rx.poll_recv_many(cx, out, max);
        if let Poll::Ready(n) = r {
            if n > 0 {
                let (len, count) = out[before..]
                    .iter()
                    .fold((0, 0), |(l, c), i| (l + i.queue_len(), c + i.queue_count()));
                self.gauge.taken(len, count);
            }
        }
        r
    }
}

impl<T: QueueItem> QueueTx<T> {
    /// Items that may still be queued now (the item bound only).
    pub fn item_room(&self) -> usize {
        self.gauge
            .item_bound
            .saturating_sub(self.gauge.queued_items())
    }

    /// Queues `item` if both bounds allow it now.
    pub fn try_send(&self, item: T) -> Result<(), TrySend<T>> {
        let (len, count) = (item.queue_len(), item.queue_count());
        if !self.gauge.fits(len, count) {
            return if self.tx.is_closed() {
                Err(TrySend::Closed)
            } else {
                Err(TrySend::Full(item))
            };
        }
        self.gauge.add(len, count);
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.gauge.taken(len, count);
                match e {
                    mpsc::error::TrySendError::Full(item) => Err(TrySend::Full(item)),
                    mpsc::error::TrySendError::Closed(_) => Err(TrySend::Closed),
                }
            }
        }
    }

    /// Queues `item`, waiting for room in items and bytes; `false` when the consumer is gone
    /// (the item is dropped). Cancel-safe: dropping the future drops nothing queued.
    pub async fn send(&self, item: T) -> bool {
        let (len, count) = (item.queue_len(), item.queue_count());
        loop {
            if self.gauge.fits(len, count) {
                let Ok(permit) = self.tx.reserve().await else {
                    return false;
                };
                // Only the consumer runs meanwhile: the queue can only have shrunk.
                self.gauge.add(len, count);
                permit.send(item);
                return true;
            }
            let notified = self.gauge.notify.notified();
            self.gauge.waiting.store(true, Ordering::SeqCst);
            if self.gauge.fits(len, count) {
                continue;
            }
            tokio::select! {
                () = notified => {}
                () = self.tx.closed() => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::value::RawValue;

    fn item(len: usize) -> Raw {
        RawValue::from_string(format!("\"{}\"", "x".repeat(len - 2))).unwrap()
    }

    #[tokio::test]
    async fn byte_bound_holds_and_one_big_item_passes() {
        let (tx, mut rx) = queue::<Raw>(100, 1000);
        assert!(tx.try_send(item(600)).is_ok());
        assert!(matches!(tx.try_send(item(600)), Err(TrySend::Full(_))));
        assert!(tx.try_send(item(400)).is_ok());
        assert_eq!(rx.queued(), 1000);
        rx.recv().await.unwrap();
        rx.recv().await.unwrap();
        // Empty: an item larger than the bound passes alone.
        assert!(tx.try_send(item(5000)).is_ok());
        assert!(matches!(tx.try_send(item(2)), Err(TrySend::Full(_))));
    }

    #[tokio::test]
    async fn zero_byte_items_always_pass_the_byte_bound() {
        let (tx, mut rx) = queue::<Vec<u8>>(10, 100);
        assert!(tx.try_send(vec![1; 500]).is_ok());
        assert!(matches!(tx.try_send(vec![1; 1]), Err(TrySend::Full(_))));
        assert!(tx.try_send(Vec::new()).is_ok());
        assert_eq!(rx.queued(), 500);
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(500));
        assert_eq!(rx.queued(), 0);
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn send_waits_for_the_consumer() {
        let (tx, mut rx) = queue::<Raw>(100, 1000);
        assert!(tx.try_send(item(900)).is_ok());
        let t = tokio::spawn(async move { tx.send(item(900)).await });
        tokio::task::yield_now().await;
        assert!(!t.is_finished());
        rx.recv().await.unwrap();
        assert!(tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap());
        assert_eq!(rx.queued(), 900);
    }

    fn batch(items: &[&str]) -> TextBatch {
        let mut b = TextBatch::default();
        for i in items {
            b.push(i);
        }
        b
    }

    /// The item bound counts the items of each entry, not entries: a window of 4 holds at
    /// most 4 items however they are batched.
    #[tokio::test(start_paused = true)]
    async fn item_bound_counts_the_items_of_batches() {
        let (tx, mut rx) = queue::<TextBatch>(4, 1000);
        assert!(tx.try_send(batch(&["1", "2", "3"])).is_ok());
        assert_eq!(tx.item_room(), 1);
        assert!(matches!(
            tx.try_send(batch(&["4", "5"])),
            Err(TrySend::Full(_))
        ));
        assert!(tx.try_send(batch(&["4"])).is_ok());
        assert!(matches!(tx.try_send(batch(&["5"])), Err(TrySend::Full(_))));
        assert_eq!((rx.queued_items(), rx.queued()), (4, 4));
        let t = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(batch(&["5", "6", "7"])).await }
        });
        tokio::task::yield_now().await;
        assert!(!t.is_finished());
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(3));
        assert!(tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap());
        assert_eq!(rx.queued_items(), 4);
        // An empty queue takes a batch however large (the engine never makes one over the
        // window; this keeps a misconfigured producer from blocking forever).
        let mut out = Vec::new();
        let n = std::future::poll_fn(|cx| rx.poll_recv_many(cx, &mut out, 10)).await;
        assert_eq!(n, 2);
        assert_eq!((rx.queued_items(), rx.queued()), (0, 0));
        assert!(tx.try_send(batch(&["1", "2", "3", "4", "5"])).is_ok());
        assert_eq!(tx.item_room(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn send_ends_when_the_consumer_goes() {
        let (tx, rx) = queue::<Raw>(100, 1000);
        assert!(tx.try_send(item(900)).is_ok());
        let t = tokio::spawn(async move { tx.send(item(900)).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(!tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap());
    }
}
