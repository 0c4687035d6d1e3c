//! The writer task of a connection: takes encoded frames from the driver, writes them in
//! batches (one flush per batch), and accounts the queued bytes so the driver can hold local
//! producers back. After a write error it keeps draining so nobody waits on a dead socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::transport::FrameWriter;

pub(crate) struct Budget {
    pub(crate) bytes: AtomicUsize,
    pub(crate) notify: Notify,
}

pub(crate) enum WOut {
    /// Frames to write in order (one batch from the driver, in one buffer).
    Frames(bistream_rpc_proto::TextBatch),
    /// A pong answering the peer's ping (WebSocket).
    Pong(bytes::Bytes),
    Close(u16, String),
}

pub(crate) async fn write_loop<W: FrameWriter>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<WOut>,
    budget: Arc<Budget>,
    dead: tokio::sync::oneshot::Sender<String>,
) {
    let mut failed: Option<String> = None;
    while let Some(m) = rx.recv().await {
        let mut bytes = 0usize;
        let mut next = Some(m);
        while let Some(m) = next.take() {
            match m {
                WOut::Frames(frames) => {
                    bytes += frames.bytes();
                    for s in frames.iter() {
                        if failed.is_some() {
                            break;
                        }
                        if let Err(e) = w.feed(s).await {
                            failed = Some(e.to_string());
                        }
                    }
                }
                WOut::Pong(payload) => {
                    if failed.is_none() {
                        if let Err(e) = w.pong(payload).await {
                            failed = Some(e.to_string());
                        }
                    }
                }
                WOut::Close(code, reason) => {
                    if failed.is_none() {
                        let _ = w.flush().await;
                        w.close(code, &reason).await;
                    }
                    budget.bytes.fetch_sub(bytes, Ordering::AcqRel);
                    budget.notify.notify_waiters();
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
        budget.bytes.fetch_sub(bytes, Ordering::AcqRel);
        budget.notify.notify_waiters();
        if let Some(f) = &failed {
            let _ = dead.send(f.clone());
            // Keep draining so producers never wait on a dead writer.
            while let Some(m) = rx.recv().await {
                if let WOut::Frames(frames) = m {
                    budget.bytes.fetch_sub(frames.bytes(), Ordering::AcqRel);
                    budget.notify.notify_waiters();
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
