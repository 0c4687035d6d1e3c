//! State shared between a connection's driver task and its handles: the command channels,
//! the call-id counter, credit mode and the connection state.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bistream_rpc_proto::{ErrorCode, Model, ServeKey, Target};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::queue::{queue, QueueRx, QueueTx};
use crate::router::Raw;
use crate::{ConnState, RpcError};

/// How a stream ended, set by the driver before it drops the item sender.
pub(crate) type Outcome = Arc<OnceLock<Result<(), RpcError>>>;

/// Where the driver delivers what a call receives.
pub(crate) enum CallSink {
    Rr(oneshot::Sender<Result<Raw, RpcError>>),
    Stream {
        /// Dropped (set to `None`) when the callee's side ends.
        tx: Option<QueueTx>,
        outcome: Outcome,
        /// Credit for our own items (bi-stream calls only).
        credit: Option<Arc<Semaphore>>,
        /// Items sent without credit that the peer counts against its window (sent before
        /// negotiation settled), still to be paid from the next grants.
        debt: u64,
        /// Our side of a bi-stream has ended (always true for request/stream).
        local_ended: bool,
    },
}

/// Data-path commands (bounded channel: handlers and callers wait when it is full).
pub(crate) enum Cmd {
    Start {
        id: u64,
        model: Model,
        data: String,
        sink: CallSink,
    },
    Ff {
        data: String,
    },
    /// Stream items in order; `credited` when the producer took one credit per item.
    Items {
        target: Target,
        data: Vec<String>,
        credited: bool,
    },
    End {
        target: Target,
    },
    Respond {
        key: ServeKey,
        data: String,
    },
    Fail {
        key: ServeKey,
        code: ErrorCode,
        message: String,
    },
    FfDone,
}

/// Control commands: small, sent from `Drop` and from consumers (cannot wait).
pub(crate) enum Ctl {
    Cancel(u64),
    Grant(Target, u32),
    Close { code: u16, reason: String },
}

pub(crate) struct Shared {
    pub peer_id: String,
    pub cmd: mpsc::Sender<Cmd>,
    pub ctl: mpsc::UnboundedSender<Ctl>,
    pub next_id: AtomicU64,
    /// `request_n` credit is in force (set when both sides said hello).
    pub credit_on: AtomicBool,
    /// The peer's initial per-stream window.
    pub peer_window: AtomicU32,
    /// Our per-stream window (queue size, grant unit).
    pub window: u32,
    /// Our per-stream byte budget for grants (see `Limits::window_bytes`).
    pub window_bytes: u64,
    /// Bytes one stream's inbound queue may hold (see `Limits::stream_queue_bytes`).
    pub queue_bytes: usize,
    pub state: watch::Sender<ConnState>,
    pub cause: OnceLock<RpcError>,
}

impl Shared {
    pub fn cause(&self) -> RpcError {
        self.cause
            .get()
            .cloned()
            .unwrap_or_else(|| RpcError::Lost("connection ended".into()))
    }

    pub fn credit_on(&self) -> bool {
        self.credit_on.load(Ordering::Acquire)
    }

    /// A producer's credit, empty: the driver grants the peer's window when it registers the
    /// stream (or when negotiation turns credit on), so no stream gets it twice or never.
    pub fn new_credit(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(0))
    }

    /// A new stream's inbound queue, bounded in items and bytes.
    pub fn stream_queue(&self) -> (QueueTx, QueueRx) {
        queue(self.window as usize, self.queue_bytes)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
