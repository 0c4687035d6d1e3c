//! A stream's inbound queue, bounded twice: in items (`Limits::window`) and in bytes
//! (`Limits::stream_queue_bytes`). The driver puts items in; when either bound is reached it
//! waits for the consumer (and so stops reading the transport: backpressure). A single item
//! larger than the byte bound still passes when the queue is empty, so a stream of huge items
//! moves one item at a time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::router::Raw;

/// Bytes queued in one stream's queue, shared by its two ends.
#[derive(Debug)]
pub(crate) struct Gauge {
    queued: AtomicUsize,
    bound: usize,
    /// The driver waits for room: the consumer wakes it once it takes something.
    waiting: AtomicBool,
    notify: Notify,
}

impl Gauge {
    /// Whether an item of `len` bytes may be queued now.
    fn fits(&self, len: usize) -> bool {
        let q = self.queued.load(Ordering::SeqCst);
        q == 0 || q.saturating_add(len) <= self.bound
    }

    /// The consumer took items of `len` bytes in all.
    pub(crate) fn taken(&self, len: usize) {
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
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// The driver's end of a stream queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<Raw>,
    gauge: Arc<Gauge>,
}

/// The consumer's end: the items and the gauge to report what was taken.
pub(crate) struct QueueRx {
    pub(crate) rx: mpsc::Receiver<Raw>,
    pub(crate) gauge: Arc<Gauge>,
}

/// Why [`QueueTx::try_send`] did not queue an item.
pub(crate) enum TrySend {
    /// A bound is reached: wait with [`QueueTx::send`].
    Full(Raw),
    /// The consumer is gone: the item is dropped.
    Closed,
}

/// A queue of at most `items` items and `bytes` bytes (or one larger item).
pub(crate) fn queue(items: usize, bytes: usize) -> (QueueTx, QueueRx) {
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

impl QueueTx {
    /// Queues `item` if both bounds allow it now.
    pub(crate) fn try_send(&self, item: Raw) -> Result<(), TrySend> {
        let len = item.get().len();
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
    pub(crate) async fn send(&self, item: Raw) -> bool {
        let len = item.get().len();
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
        let (tx, mut rx) = queue(100, 1000);
        assert!(tx.try_send(item(600)).is_ok());
        assert!(matches!(tx.try_send(item(600)), Err(TrySend::Full(_))));
        assert!(tx.try_send(item(400)).is_ok());
        assert_eq!(rx.gauge.queued(), 1000);
        let a = rx.rx.recv().await.unwrap();
        rx.gauge.taken(a.get().len());
        let b = rx.rx.recv().await.unwrap();
        rx.gauge.taken(b.get().len());
        // Empty: an item larger than the bound passes alone.
        assert!(tx.try_send(item(5000)).is_ok());
        assert!(matches!(tx.try_send(item(2)), Err(TrySend::Full(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn send_waits_for_the_consumer() {
        let (tx, mut rx) = queue(100, 1000);
        assert!(tx.try_send(item(900)).is_ok());
        let t = tokio::spawn(async move { tx.send(item(900)).await });
        tokio::task::yield_now().await;
        assert!(!t.is_finished());
        let a = rx.rx.recv().await.unwrap();
        rx.gauge.taken(a.get().len());
        assert!(tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap());
        assert_eq!(rx.gauge.queued(), 900);
    }

    #[tokio::test(start_paused = true)]
    async fn send_ends_when_the_consumer_goes() {
        let (tx, rx) = queue(100, 1000);
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
