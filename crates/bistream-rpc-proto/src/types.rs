//! The engine's vocabulary: configuration and limits, negotiation outcome, the events it
//! reports, its errors and counters.

use serde_json::value::RawValue;

use crate::batch::TextBatch;
use crate::frame::{Model, RequestId};

/// Which end of the connection this engine is: only the initiator may send the first `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opened the connection (client).
    Initiator,
    /// Accepted the connection (server).
    Acceptor,
}

/// Per-connection limits. Defaults are stated in `docs/protocol/rpc.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes (default 4 MiB).
    pub max_frame_bytes: usize,
    /// Requests served at once (all models) before `overloaded` (default 1,024).
    pub max_in_flight: usize,
    /// Request/stream and stream/stream calls served at once before `overloaded` (default 256).
    pub max_streams: usize,
    /// Our own calls awaiting a reply at once (default 65,536).
    pub max_pending_calls: usize,
    /// Invalid frames in a row before the connection is closed with 1008 (default 100).
    pub max_invalid_in_row: u32,
    /// Items per stream we accept before granting more credit (default 4,096: DECISIONS
    /// D37); also the per-stream queue size (which `stream_queue_bytes` bounds in bytes).
    pub window: u32,
    /// Bytes of items per stream we let the peer have queued or in flight once the first
    /// window is used (default 1 MiB): grants shrink the window to about this many bytes of
    /// items of the sizes seen (never below one item).
    pub window_bytes: u64,
    /// Bytes of items one stream's inbound queue may hold (default 1 MiB): past it the
    /// connection stops reading until the consumer takes items (backpressure through the
    /// transport, as when the queue holds `window` items). An item larger than this still
    /// passes when the queue is empty, so a queue holds at most this many bytes or one item.
    pub stream_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 4 * 1024 * 1024,
            max_in_flight: 1024,
            max_streams: 256,
            max_pending_calls: 65_536,
            max_invalid_in_row: 100,
            window: 4096,
            window_bytes: 1024 * 1024,
            stream_queue_bytes: 1024 * 1024,
        }
    }
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Our side.
    pub side: Side,
    /// Our peer id (sent in every frame, first element of our request ids).
    pub peer_id: String,
    /// Limits.
    pub limits: Limits,
    /// Offer (initiator) or accept (acceptor) the extensions. Off: a pure base peer.
    pub extensions: bool,
    /// Keepalive interval we announce, in milliseconds (extension).
    pub keepalive_ms: Option<u64>,
}

impl EngineConfig {
    /// Defaults: extensions on, no keepalive, default limits.
    pub fn new(side: Side, peer_id: impl Into<String>) -> Self {
        Self {
            side,
            peer_id: peer_id.into(),
            limits: Limits::default(),
            extensions: true,
            keepalive_ms: None,
        }
    }
}

/// Outcome of negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    /// Not known yet (we sent or wait for the first frame).
    Pending,
    /// The peer speaks the base protocol only: no extension frame is ever sent.
    Base,
    /// Both sides said `hello`.
    Extended {
        /// `cancel` frames are understood.
        cancel: bool,
        /// `request_n` credit is in force; the peer accepts `window` items per stream first.
        request_n: bool,
        /// `keepalive` frames are understood.
        keepalive: bool,
        /// The peer's initial per-stream window.
        window: u32,
        /// The peer's keepalive interval, if it announced one.
        keepalive_ms: Option<u64>,
    },
}

/// A request we serve, keyed by the caller's request id.
pub type ServeKey = RequestId;

/// The stream a local action or a credit grant refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One of our calls.
    Call(u64),
    /// A request we serve.
    Serve(ServeKey),
}

/// Why one of our calls failed, as decided by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The peer answered an `error` frame.
    Remote {
        /// `data.code`.
        code: String,
        /// `data.message`.
        message: String,
    },
    /// The peer broke the protocol for this call.
    Protocol(String),
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum Event {
    /// Negotiation is settled.
    Negotiated(Negotiated),
    /// Reply to a request/response call.
    Response {
        /// Our call id.
        call: u64,
        /// The response value.
        data: Box<RawValue>,
    },
    /// Items of a stream or bi-stream call, in order: the consecutive `stream_data` frames
    /// of one call received before the events were taken (at most `Limits::window` items and
    /// `Limits::stream_queue_bytes` bytes, or one larger item).
    Items {
        /// Our call id.
        call: u64,
        /// The items.
        items: TextBatch,
    },
    /// The callee ended its side of a stream or bi-stream.
    End {
        /// Our call id.
        call: u64,
    },
    /// One of our calls failed (final).
    Failed {
        /// Our call id.
        call: u64,
        /// Why.
        failure: CallFailure,
    },
    /// Start a handler for a request we serve.
    Serve {
        /// The caller's request id (reply under it).
        key: ServeKey,
        /// The model it was called under (it matches the handler's).
        model: Model,
        /// `data.operation`.
        op: String,
        /// The whole `data`.
        data: Box<RawValue>,
    },
    /// Run a fire-and-forget handler; call [`Engine::fire_and_forget_done`] when it ends.
    FireAndForget {
        /// `data.operation`.
        op: String,
        /// The whole `data`.
        data: Box<RawValue>,
    },
    /// Items from the caller of a bi-stream we serve, in order (bounded as [`Event::Items`]).
    ServeItems {
        /// The request.
        key: ServeKey,
        /// The items.
        items: TextBatch,
    },
    /// The caller ended its side of a bi-stream we serve.
    ServeEnd {
        /// The request.
        key: ServeKey,
    },
    /// The caller cancelled a request we serve: stop its handler (no reply is sent).
    ServeCancelled {
        /// The request.
        key: ServeKey,
    },
    /// The peer granted `n` more items on a stream we produce.
    Credit {
        /// The stream.
        target: Target,
        /// Items granted.
        n: u32,
    },
    /// A message was dropped (invalid, unmatched or over a limit); log and count it.
    Dropped {
        /// What and why.
        reason: String,
    },
    /// Close the connection (too many invalid frames in a row).
    Close {
        /// Close code ([`close::POLICY_VIOLATION`](crate::close::POLICY_VIOLATION)).
        code: u16,
        /// Reason text.
        reason: String,
    },
}

/// A local action that the protocol state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine has closed.
    #[error("connection is closing")]
    Closed,
    /// No such call or served request (it ended, failed or was cancelled).
    #[error("no open call or request for that id")]
    NotOpen,
    /// The action does not fit the call's model or state.
    #[error("{0}")]
    WrongState(&'static str),
    /// Too many of our calls are pending.
    #[error("too many calls pending on this connection (limit {0})")]
    TooManyCalls(usize),
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received.
    pub frames_in: u64,
    /// Frames produced.
    pub frames_out: u64,
    /// Invalid messages received.
    pub invalid: u64,
    /// Replies for no known call (late after a cancel or timeout) and other unmatched frames.
    pub unmatched: u64,
    /// Requests answered with `overloaded` or fire-and-forget dropped over the limit.
    pub overloaded: u64,
    /// Fire-and-forget messages dropped for naming an unknown operation or one of another model.
    pub ff_refused: u64,
    /// Streams cut because their consumer left a full inbound queue undrained for the
    /// connection's timeout ([`Engine::cut_stalled`](crate::Engine::cut_stalled)).
    pub stalled: u64,
}

/// A map keyed by our own call ids. The ids are a counter we pick, never the peer's input, so
/// a multiplicative hash is safe from collision floods; SipHash per received item was about
/// 5% of the reading side's CPU on a fast stream (D30).
pub type CallMap<V> =
    std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<CallIdHasher>>;

/// The hasher of [`CallMap`]: one multiplication by a large odd constant per `u64`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallIdHasher(u64);

impl std::hash::Hasher for CallIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
