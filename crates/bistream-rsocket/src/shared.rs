//! State shared by a connection's driver, its handles and its stream tasks: the command
//! channels, what the peer sends a stream ([`Inb`]), and the connection's end.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bistream_rpc::queue::{queue, QueueItem, QueueRx, QueueTx};
use bistream_rsocket_proto::{Frame, Payload};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::RsError;

/// What the peer sends a stream we receive items on.
#[derive(Debug)]
pub(crate) enum Inb {
    Item(Payload),
    Complete,
    Error(RsError),
}

impl QueueItem for Inb {
    /// An item's metadata and data; the end markers hold no bytes (they always pass).
    fn queue_len(&self) -> usize {
        match self {
            Inb::Item(p) => p.data.len() + p.metadata.as_ref().map_or(0, Bytes::len),
            Inb::Complete | Inb::Error(_) => 0,
        }
    }
}

/// Where the driver delivers a request's answers.
pub(crate) enum Sink {
    Rr(oneshot::Sender<Result<Payload, RsError>>),
    Items {
        tx: QueueTx<Inb>,
        /// Credit for our own items (request/channel).
        credit: Option<Arc<Semaphore>>,
    },
}

/// Which request a [`Cmd::Start`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Response,
    Stream,
    Channel { complete: bool },
}

/// Data-path commands (bounded: producers wait when the writer is behind).
pub(crate) enum Cmd {
    /// A stream's frame; dropped when the stream is gone (e.g. cancelled).
    Frame(Frame),
    /// Opens a request; its stream id comes back through `id`.
    Start {
        kind: Kind,
        payload: Payload,
        sink: Sink,
        id: oneshot::Sender<u32>,
    },
    Fnf(Payload),
    MetadataPush(Bytes),
}

/// Control commands (unbounded, small; sent from `Drop` and consumers).
#[derive(Debug)]
pub(crate) enum Ctl {
    Cancel(u32),
    RequestN(u32, u32),
    Close(String),
}

pub(crate) struct Shared {
    pub cmd: mpsc::Sender<Cmd>,
    pub ctl: mpsc::UnboundedSender<Ctl>,
    /// True once the connection has ended.
    pub closed: watch::Sender<bool>,
    pub cause: OnceLock<RsError>,
    /// Items per stream we accept before granting more (also the queue size).
    pub window: u32,
    /// Bytes one stream's inbound queue may hold (or one larger item).
    pub queue_bytes: usize,
    pub timeout: Duration,
}

impl Shared {
    /// A stream's inbound queue: `window` items (+2 for the end markers, and so that a peer
    /// exceeding its credit is seen) and `queue_bytes` bytes.
    pub(crate) fn inbound_queue(&self) -> (QueueTx<Inb>, QueueRx<Inb>) {
        queue(self.window as usize + 2, self.queue_bytes)
    }

    pub(crate) fn cause(&self) -> RsError {
        self.cause
            .get()
            .cloned()
            .unwrap_or_else(|| RsError::Closed("connection ended".into()))
    }
}

/// Adds `n` permits, saturating well below the semaphore's maximum (REQUEST_N 2^31-1 means
/// "unbounded").
pub(crate) fn add_credit(sem: &Semaphore, n: u32) {
    let room = (Semaphore::MAX_PERMITS / 2).saturating_sub(sem.available_permits());
    sem.add_permits((n as usize).min(room));
}
