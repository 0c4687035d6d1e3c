//! The writer task: takes frames from the driver, fragments those over the frame limit,
//! encodes and writes them in batches (one flush per batch), and accounts the queued bytes so
//! the driver can hold local producers back. After a write error it keeps draining.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bistream_rsocket_proto::{encode, fragment, Frame};
use futures_util::SinkExt;
use tokio::sync::{mpsc, Notify};

use crate::transport::FrameSink;

pub(crate) struct Budget {
    pub(crate) bytes: AtomicUsize,
    pub(crate) notify: Notify,
}

pub(crate) enum WOut {
    Frame(Frame),
    Close,
}

fn release(budget: &Budget, n: usize) {
    budget.bytes.fetch_sub(n, Ordering::AcqRel);
    // `notify_one`, not `notify_waiters`: the driver (the only waiter) reads the budget before
    // its `select!` creates the `notified()` future, so a release in between would be lost
    // with `notify_waiters` (it stores nothing) and the driver could stall over budget.
    // `notify_one` keeps a permit; a stale one only costs the driver one more look.
    budget.notify.notify_one();
}

pub(crate) async fn write_loop(
    mut w: FrameSink,
    mut rx: mpsc::UnboundedReceiver<WOut>,
    budget: Arc<Budget>,
    mtu: usize,
    dead: tokio::sync::oneshot::Sender<String>,
) {
    let mut failed: Option<String> = None;
    while let Some(m) = rx.recv().await {
        let mut bytes = 0usize;
        let mut next = Some(m);
        while let Some(m) = next.take() {
            match m {
                WOut::Frame(f) => {
                    bytes += f.encoded_len();
                    if failed.is_none() {
                        for part in fragment(f, mtu) {
                            if let Err(e) = w.feed(encode(&part).freeze()).await {
                                failed = Some(e.to_string());
                                break;
                            }
                        }
                    }
                }
                WOut::Close => {
                    if failed.is_none() {
                        let _ = w.flush().await;
                        let _ = w.close().await;
                    }
                    release(&budget, bytes);
                    return;
                }
            }
            if bytes < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if failed.is_none() {
            if let Err(e) = w.flush().await {
                failed = Some(e.to_string());
            }
        }
        release(&budget, bytes);
        if let Some(f) = &failed {
            let _ = dead.send(f.clone());
            while let Some(m) = rx.recv().await {
                if let WOut::Frame(f) = m {
                    release(&budget, f.encoded_len());
                }
            }
            return;
        }
    }
}

/// Why the writer stopped, from its `dead` signal: its write error, or (the signal dropped
/// unsent: the writer task ended some other way) a plain statement of that. The driver
/// returns on either, so it never polls the finished signal again (which would panic).
pub(crate) fn why_stopped(r: Result<String, tokio::sync::oneshot::error::RecvError>) -> String {
    r.unwrap_or_else(|_| "the connection's writer task ended".to_owned())
}
