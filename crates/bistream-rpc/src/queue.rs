//! A stream's inbound queue, bounded twice: in items (`Limits::window`) and in bytes
//! (`Limits::stream_queue_bytes`). The driver puts items in; when either bound is reached it
//! waits for the consumer (and so stops reading the transport: backpressure). A single item
//! larger than the byte bound still passes when the queue is empty, so a stream of huge items
//! moves one item at a time. Items of zero bytes (end and error markers) always pass the byte
//! bound. Generic over the item ([`QueueItem`]): the rpc crate queues JSON items, the RSocket
//! crate its payloads (DECISIONS D35, D40).
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

use tokio::sync::{mpsc, Notify};

use crate::router::Raw;

/// What a queue counts of an item: its size in bytes.
pub trait QueueItem {
    /// The bytes this item holds (counted against the byte bound).
    fn queue_len(&self) -> usize;
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

/// Bytes queued in one stream's queue, shared by its two ends.
#[derive(Debug)]
pub struct Gauge {
    queued: AtomicUsize,
    bound: usize,
    /// The driver waits for room: the consumer wakes it once it takes something.
    waiting: AtomicBool,
    notify: Notify,
}

impl Gauge {
    /// Whether an item of `len` bytes may be queued now.
    fn fits(&self, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        let q = self.queued.load(Ordering::SeqCst);
        q == 0 || q.saturating_add(len) <= self.bound
    }

    /// The consumer took items of `len` bytes in all.
    fn taken(&self, len: usize) {
        if len == 0 {
            return;
        }
        self.queued.fetch_sub(len, Ordering::SeqCst);
        // Paired with `reserve`'s store-then-load: either it sees our subtraction or we see
        // its flag (both sequentially consistent), so it is never left asleep.
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// The driver's end of a stream queue.
#[derive(Debug)]
pub struct QueueTx<T = Raw> {
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

/// The consumer's end: its `recv` methods report the bytes they take to the gauge.
#[derive(Debug)]
pub struct QueueRx<T = Raw> {
    rx: mpsc::Receiver<T>,
    gauge: Arc<Gauge>,
}

/// Why [`QueueTx::try_send`] did not queue an item.
#[derive(Debug)]
pub enum TrySend<T = Raw> {
    /// A bound is reached: wait with [`QueueTx::send`].
    Full(T),
    /// The consumer is gone: the item is dropped.
    Closed,
}

/// A queue of at most `items` items and `bytes` bytes (or one larger item).
pub fn queue<T: QueueItem>(items: usize, bytes: usize) -> (QueueTx<T>, QueueRx<T>) {
    let (tx, rx) = mpsc::channel(items.max(1));
    let gauge = Arc::new(Gauge {
        queued: AtomicUsize::new(0),
        bound: bytes.max(1),
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

    /// The next item (`None` once every sender is gone and the queue is empty).
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next item, reporting its bytes as taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let r = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(item)) = &r {
            self.gauge.taken(item.queue_len());
        }
        r
    }

    /// Polls for every ready item (at least one, at most `max`), appended to `out`, reporting
    /// their bytes as taken; `Ready(0)` once every sender is gone and the queue is empty.
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
                self.gauge
                    .taken(out[before..].iter().map(QueueItem::queue_len).sum());
            }
        }
        r
    }
}

impl<T: QueueItem> QueueTx<T> {
    /// Items that may still be queued now (the item bound only).
    pub fn item_room(&self) -> usize {
        self.tx.capacity()
    }

    /// Queues `item` if both bounds allow it now.
    pub fn try_send(&self, item: T) -> Result<(), TrySend<T>> {
        let len = item.queue_len();
        if !self.gauge.fits(len) {
            return if self.tx.is_closed() {
                Err(TrySend::Closed)
            } else {
                Err(TrySend::Full(item))
            };
        }
        // Counted before it can be taken, so the consumer's subtraction never goes below zero.
        self.gauge.queued.fetch_add(len, Ordering::SeqCst);
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.gauge.queued.fetch_sub(len, Ordering::SeqCst);
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
        let len = item.queue_len();
        loop {
            if self.gauge.fits(len) {
                let Ok(permit) = self.tx.reserve().await else {
                    return false;
                };
                // Only the consumer runs meanwhile: the queue can only have shrunk.
                self.gauge.queued.fetch_add(len, Ordering::SeqCst);
                permit.send(item);
                return true;
            }
            let notified = self.gauge.notify.notified();
            self.gauge.waiting.store(true, Ordering::SeqCst);
            if self.gauge.fits(len) {
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
