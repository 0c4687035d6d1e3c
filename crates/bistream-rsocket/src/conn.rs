//! The connection driver: one task reads frames (reassembling fragments), answers SETUP,
//! KEEPALIVE and connection-level errors, routes stream frames to requests and responder tasks,
//! and hands outgoing frames to a writer task (which fragments them). It never waits on the
//! writer for frames caused by reading; local producers wait while more than [`HIGH_WATER`]
//! bytes are queued, and a peer that does not read past [`HARD_CAP`] is disconnected.
//! Items go into each stream's queue, bounded in items and bytes; when one is full the driver
//! stops reading until its consumer drains (`conn/deliver.rs`, DECISIONS D40).
//! Serving the peer's requests is in `conn/serve.rs`, our own requests and controls in
//! `conn/local.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use bistream_core::logsafe::{client_text, LogLimiter};
use bistream_rpc::queue::{QueueTx, TrySend};
use bistream_rpc::{Connection, Router};
use bistream_rsocket_proto::{
    decode, ErrorCode, Frame, Payload, Reassembler, Setup, MIME_COMPOSITE, MIME_JSON, MIME_ROUTING,
    VERSION,
};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::config::RsConfig;
use crate::shared::{add_credit, Cmd, Ctl, Inb, Shared};
use crate::transport::{FrameStream, Framed, TransportError};
use crate::writer::{write_loop, Budget, WOut};
use crate::{RSocket, RsError};

mod deliver;

/// Lines a peer can cause at will (requests on a stream id in use, refused fire-and-forget,
/// failed reassembly, a connection error of its making) pass one process-wide rate limit, so
/// a flood cannot flood the log; the peer's text in them is escaped and cut.
static PEER_LOG: LazyLock<LogLimiter> = LazyLock::new(|| LogLimiter::new("rsocket"));
mod local;
mod serve;

/// Bytes queued for the writer above which local producers wait.
pub const HIGH_WATER: usize = 1 << 20;
/// Bytes queued for the writer above which the peer is judged not to read: disconnect.
pub const HARD_CAP: usize = 64 << 20;

/// Which end of the connection we are: the client sends SETUP and uses odd stream ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection: sends SETUP and KEEPALIVEs, odd stream ids.
    Client,
    /// Accepted it: waits for SETUP, answers KEEPALIVEs, even stream ids.
    Server,
}

struct Slot {
    responder: bool,
    abort: Option<AbortHandle>,
    /// Our outbound credit (peer's initial N and REQUEST_N).
    credit: Option<Arc<Semaphore>>,
    /// Where the peer's items go (request/stream and channel answers, channel inbound).
    inbound: Option<QueueTx<Inb>>,
    rr: Option<tokio::sync::oneshot::Sender<Result<Payload, RsError>>>,
}

/// Starts an RSocket connection over `framed` serving `router`; returns its handle. As
/// [`Role::Client`] it sends SETUP at once. Must be called inside a tokio runtime.
pub fn start(framed: Framed, role: Role, router: Router, cfg: RsConfig) -> RSocket {
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (closed, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        cmd: cmd_tx,
        ctl: ctl_tx,
        closed,
        cause: OnceLock::new(),
        window: cfg.window.max(2),
        queue_bytes: cfg.stream_queue_bytes.max(1),
        timeout: cfg.timeout,
    });
    let budget = Arc::new(Budget {
        bytes: AtomicUsize::new(0),
        notify: Notify::new(),
    });
    let (wtx, wrx) = mpsc::unbounded_channel();
    let (wdead_tx, wdead_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(write_loop(
        framed.tx,
        wrx,
        budget.clone(),
        cfg.max_frame_bytes,
        wdead_tx,
    ));
    let mut d = Driver {
        role,
        rx: framed.rx,
        wtx,
        budget,
        cmd_rx,
        ctl_rx,
        shared: shared.clone(),
        ff_running: Arc::new(Semaphore::new(cfg.max_streams)),
        router,
        rpc: None,
        streams: HashMap::new(),
        tasks: JoinSet::new(),
        task_stream: HashMap::new(),
        reasm: Reassembler::new(cfg.max_message_bytes, cfg.max_reassembly_bytes),
        next_id: if role == Role::Client { 1 } else { 2 },
        setup_done: role == Role::Client,
        routing_only: false,
        last_rx: Instant::now(),
        lifetime: cfg.max_lifetime,
        keepalive: (role == Role::Client).then_some(cfg.keepalive),
        held: None,
        dropped: 0,
        cfg,
    };
    if role == Role::Client {
        d.send(Frame::Setup(Setup {
            version: VERSION,
            keepalive_ms: d.cfg.keepalive.as_millis().min(i32::MAX as u128) as u32,
            max_lifetime_ms: d.cfg.max_lifetime.as_millis().min(i32::MAX as u128) as u32,
            resume_token: None,
            lease: false,
            metadata_mime: MIME_COMPOSITE.into(),
            data_mime: MIME_JSON.into(),
            payload: Payload::default(),
        }));
    }
    tokio::spawn(d.run(wdead_rx));
    RSocket::new(shared)
}

struct Driver {
    role: Role,
    rx: FrameStream,
    wtx: mpsc::UnboundedSender<WOut>,
    budget: Arc<Budget>,
    cmd_rx: mpsc::Receiver<Cmd>,
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    shared: Arc<Shared>,
    router: Router,
    /// Fire-and-forget handlers running (at most `max_streams`; more are dropped, logged).
    ff_running: Arc<Semaphore>,
    /// The in-process rpc pair (caller end, serving end) for channels, made on the first one.
    rpc: Option<(Connection, Connection)>,
    streams: HashMap<u32, Slot>,
    tasks: JoinSet<()>,
    task_stream: HashMap<tokio::task::Id, u32>,
    reasm: Reassembler,
    next_id: u32,
    setup_done: bool,
    /// SETUP named the routing MIME type itself (not composite) for metadata.
    routing_only: bool,
    last_rx: Instant,
    lifetime: Duration,
    keepalive: Option<Duration>,
    /// An item read but not yet queued: its stream's queue is full, so nothing more is read
    /// until it is (see `conn/deliver.rs`).
    held: Option<deliver::Held>,
    /// The peer's requests dropped without an answer (a request on a stream id in use, a
    /// refused fire-and-forget): each is logged within [`PEER_LOG`]'s budget, and the count is
    /// logged when the connection ends.
    dropped: u64,
    cfg: RsConfig,
}

/// How the main loop ends: the cause, and a connection ERROR to send first.
struct Stop {
    cause: RsError,
    error: Option<(ErrorCode, String)>,
}

fn conn_error(code: ErrorCode, msg: impl Into<String>) -> Option<Stop> {
    let msg = msg.into();
    bistream_core::limited!(PEER_LOG, WARN, %code, reason = %client_text(&msg), "rsocket connection error");
    Some(Stop {
        cause: RsError::Lost(format!("{code}: {msg}")),
        error: Some((code, msg)),
    })
}

impl Driver {
    fn send(&mut self, f: Frame) {
        self.budget
            .bytes
            .fetch_add(f.encoded_len(), Ordering::AcqRel);
        let _ = self.wtx.send(WOut::Frame(f));
    }

    fn stream_error(&mut self, stream: u32, code: ErrorCode, message: impl Into<String>) {
        self.send(Frame::Error {
            stream,
            code,
            message: message.into(),
        });
    }

    async fn run(mut self, mut wdead: tokio::sync::oneshot::Receiver<String>) {
        let stop = self.main_loop(&mut wdead).await;
        if matches!(stop.cause, RsError::Closed(_)) {
            // Frames queued before a local close (a fire-and-forget) still go out.
            while let Ok(cmd) = self.cmd_rx.try_recv() {
                self.on_cmd(cmd);
            }
        }
        if let Some((code, message)) = stop.error {
            self.send(Frame::Error {
                stream: 0,
                code,
                message,
            });
        }
        let _ = self.wtx.send(WOut::Close);
        if self.dropped > 0 {
            tracing::info!(cause = %stop.cause, dropped = self.dropped, "rsocket connection ended");
        } else {
            tracing::debug!(cause = %stop.cause, "rsocket connection ended");
        }
        let _ = self.shared.cause.set(stop.cause.clone());
        self.cmd_rx.close();
        let _ = self.shared.closed.send_replace(true);
        for (_, s) in self.streams.drain() {
            if let Some(a) = s.abort {
                a.abort();
            }
            if let Some(c) = s.credit {
                c.close();
            }
            if let Some(tx) = s.rr {
                let _ = tx.send(Err(stop.cause.clone()));
            }
            if let Some(tx) = s.inbound {
                let _ = tx.try_send(Inb::Error(stop.cause.clone()));
            }
        }
        self.tasks.abort_all();
        if let Some((rpc, _)) = self.rpc.take() {
            rpc.close().await;
        }
    }

    async fn main_loop(&mut self, wdead: &mut tokio::sync::oneshot::Receiver<String>) -> Stop {
        let period = match self.keepalive {
            Some(k) => k.min(self.lifetime / 2).max(Duration::from_millis(10)),
            None => (self.lifetime / 4).max(Duration::from_millis(10)),
        };
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        let setup_deadline = Instant::now() + self.cfg.setup_timeout;
        loop {
            if let Some(h) = self.held.take() {
                if let Some(stop) = self.deliver(h, &mut tick, wdead).await {
                    return stop;
                }
            }
            if self.budget.bytes.load(Ordering::Acquire) > HARD_CAP {
                return Stop {
                    cause: RsError::Lost("peer does not read its frames".into()),
                    error: Some((ErrorCode::ConnectionError, "peer does not read".into())),
                };
            }
            let budget_ok = self.budget.bytes.load(Ordering::Acquire) < HIGH_WATER;
            tokio::select! {
                biased;
                Some(ctl) = self.ctl_rx.recv() => {
                    if let Some(stop) = self.on_ctl(ctl) {
                        return stop;
                    }
                }
                msg = self.rx.next() => {
                    self.last_rx = Instant::now();
                    let stop = match msg {
                        None => Some(Stop { cause: RsError::Closed("peer closed".into()), error: None }),
                        Some(Err(TransportError::TooLarge(e))) => conn_error(ErrorCode::ConnectionError, format!("frame too large: {e}")),
                        Some(Err(TransportError::Text(n))) => conn_error(ErrorCode::ConnectionError, format!("text message of {n} bytes: RSocket frames are binary")),
                        Some(Err(TransportError::Io(e))) => Some(Stop { cause: RsError::Lost(e), error: None }),
                        Some(Ok(b)) => self.on_bytes(b),
                    };
                    if let Some(stop) = stop {
                        return stop;
                    }
                }
                cmd = self.cmd_rx.recv(), if budget_ok => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => return Stop { cause: RsError::Closed("closed".into()), error: None },
                },
                _ = self.budget.notify.notified(), if !budget_ok => {}
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.on_task_done(done);
                }
                r = &mut *wdead => return Stop { cause: RsError::Lost(crate::writer::why_stopped(r)), error: None },
                _ = tick.tick() => {
                    if !self.setup_done && Instant::now() >= setup_deadline {
                        return conn_error(ErrorCode::InvalidSetup, "no SETUP in time").unwrap_or(Stop { cause: RsError::Lost("no SETUP".into()), error: None });
                    }
                    if self.last_rx.elapsed() > self.lifetime {
                        return Stop {
                            cause: RsError::Lost(format!("no frame from the peer for {:?} (max lifetime)", self.lifetime)),
                            error: Some((ErrorCode::ConnectionError, "keepalive timeout".into())),
                        };
                    }
                    if self.keepalive.is_some() {
                        self.send(Frame::Keepalive { respond: true, position: 0, data: Bytes::new() });
                    }
                }
            }
        }
    }

    fn on_task_done(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let (id, panicked) = match done {
            Ok((id, ())) => (id, false),
            Err(e) => (e.id(), e.is_panic()),
        };
        // A finished task's last frames are already queued: send them before its slot goes,
        // or `on_cmd` would drop them (seen as a lost answer under 64 concurrent calls, where
        // `cmd_rx.recv()` can yield to tokio's coop budget while the join is reported).
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            self.on_cmd(cmd);
        }
        if let Some(s) = self.task_stream.remove(&id) {
            let ours = self
                .streams
                .get(&s)
                .is_some_and(|x| x.abort.as_ref().map(|a| a.id()) == Some(id));
            if ours {
                self.streams.remove(&s);
                self.reasm.remove(s);
                if panicked {
                    // The requester still waits: a panicking handler is a failed one.
                    tracing::warn!(stream = s, "rsocket handler panicked");
                    self.stream_error(s, ErrorCode::ApplicationError, "the handler panicked");
                }
            }
        }
    }

    fn on_bytes(&mut self, b: Bytes) -> Option<Stop> {
        let f = match decode(b) {
            Ok(f) => f,
            Err(e) => return conn_error(ErrorCode::ConnectionError, format!("bad frame: {e}")),
        };
        let stream = f.stream();
        match self.reasm.push(f) {
            Ok(Some(f)) => self.on_frame(f),
            Ok(None) => None,
            Err(e) => {
                // The stream fails; the connection goes on.
                bistream_core::limited!(PEER_LOG, WARN, stream, error = %client_text(&e.to_string()), "rsocket reassembly failed");
                self.fail_stream(stream, ErrorCode::Rejected, &e.to_string());
                None
            }
        }
    }

    /// Ends `stream` on our side with an ERROR to the peer.
    fn fail_stream(&mut self, stream: u32, code: ErrorCode, msg: &str) {
        if let Some(s) = self.streams.remove(&stream) {
            if let Some(a) = s.abort {
                a.abort();
            }
            let e = RsError::Protocol(msg.to_string());
            if let Some(tx) = s.rr {
                let _ = tx.send(Err(e.clone()));
            }
            if let Some(tx) = s.inbound {
                let _ = tx.try_send(Inb::Error(e));
            }
            self.send(Frame::Cancel { stream });
            if s.responder {
                self.stream_error(stream, code, msg);
            }
        } else {
            self.stream_error(stream, code, msg);
        }
    }

    fn on_setup(&mut self, s: Setup) -> Option<Stop> {
        if s.version.0 != VERSION.0 {
            return conn_error(
                ErrorCode::UnsupportedSetup,
                format!(
                    "version {}.{} is not supported (1.0)",
                    s.version.0, s.version.1
                ),
            );
        }
        if s.lease {
            return conn_error(ErrorCode::UnsupportedSetup, "LEASE is not supported");
        }
        if s.resume_token.is_some() {
            return conn_error(ErrorCode::UnsupportedSetup, "RESUME is not supported");
        }
        if s.keepalive_ms == 0 || s.max_lifetime_ms == 0 {
            return conn_error(
                ErrorCode::InvalidSetup,
                "keepalive and max lifetime must be > 0",
            );
        }
        match s.metadata_mime.as_str() {
            MIME_COMPOSITE => {}
            MIME_ROUTING => self.routing_only = true,
            other => {
                return conn_error(
                    ErrorCode::UnsupportedSetup,
                    format!("metadata MIME type {other:?} is not supported (use {MIME_COMPOSITE})"),
                )
            }
        }
        if s.data_mime != MIME_JSON {
            return conn_error(
                ErrorCode::UnsupportedSetup,
                format!(
                    "data MIME type {:?} is not supported (use {MIME_JSON})",
                    s.data_mime
                ),
            );
        }
        self.lifetime = Duration::from_millis(u64::from(s.max_lifetime_ms));
        self.setup_done = true;
        None
    }

    fn on_frame(&mut self, f: Frame) -> Option<Stop> {
        if !self.setup_done {
            return match f {
                Frame::Setup(s) => self.on_setup(s),
                Frame::Resume { .. } => {
                    conn_error(ErrorCode::RejectedResume, "resumption is not supported")
                }
                _ => conn_error(ErrorCode::InvalidSetup, "the first frame must be SETUP"),
            };
        }
        match f {
            Frame::Setup(_) => return conn_error(ErrorCode::InvalidSetup, "a second SETUP"),
            Frame::Lease { .. } => {
                return conn_error(ErrorCode::ConnectionError, "LEASE was not negotiated")
            }
            Frame::Resume { .. } => {
                return conn_error(ErrorCode::RejectedResume, "resumption is not supported")
            }
            Frame::ResumeOk { .. } => {
                return conn_error(ErrorCode::ConnectionError, "unexpected RESUME_OK")
            }
            Frame::Keepalive {
                respond,
                position,
                data,
            } => {
                if respond {
                    self.send(Frame::Keepalive {
                        respond: false,
                        position,
                        data,
                    });
                }
            }
            Frame::MetadataPush { metadata } => {
                tracing::debug!(bytes = metadata.len(), "rsocket METADATA_PUSH accepted");
            }
            Frame::Unknown {
                frame_type, ignore, ..
            } => {
                if !ignore {
                    return conn_error(
                        ErrorCode::ConnectionError,
                        format!("unknown frame type 0x{frame_type:02X}"),
                    );
                }
            }
            Frame::Error {
                stream: 0,
                code,
                message,
            } => {
                return Some(Stop {
                    cause: RsError::Remote { code, message },
                    error: None,
                })
            }
            Frame::Error {
                stream,
                code,
                message,
            } => {
                self.reasm.remove(stream);
                if let Some(s) = self.streams.remove(&stream) {
                    if let Some(a) = s.abort {
                        a.abort();
                    }
                    let e = RsError::Remote { code, message };
                    if let Some(tx) = s.rr {
                        let _ = tx.send(Err(e.clone()));
                    }
                    if let Some(tx) = s.inbound {
                        let _ = tx.try_send(Inb::Error(e));
                    }
                }
            }
            Frame::RequestN { stream, n } => {
                if let Some(c) = self.streams.get(&stream).and_then(|s| s.credit.as_ref()) {
                    add_credit(c, n);
                }
            }
            Frame::Cancel { stream } => {
                self.reasm.remove(stream);
                if let Some(s) = self.streams.remove(&stream) {
                    if let Some(a) = s.abort {
                        a.abort();
                    }
                    if let Some(tx) = s.inbound {
                        let _ = tx.try_send(Inb::Error(RsError::Cancelled));
                    }
                }
            }
            Frame::Payload {
                stream,
                complete,
                next,
                payload,
                ..
            } => self.on_payload(stream, complete, next, payload),
            req => self.on_request(req),
        }
        None
    }

    fn on_payload(&mut self, stream: u32, complete: bool, next: bool, payload: Payload) {
        let Some(slot) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(tx) = slot.rr.take() {
            let r = if next {
                Ok(payload)
            } else {
                Ok(Payload::default())
            };
            let _ = tx.send(r);
            self.streams.remove(&stream);
            return;
        }
        let Some(tx) = slot.inbound.clone() else {
            return;
        };
        if next {
            // The queue holds window + 2 items and the peer may have at most `window` in
            // flight: no room in items means it sent more than we requested.
            if tx.item_room() == 0 {
                self.fail_stream(stream, ErrorCode::Invalid, "more items than requested");
                return;
            }
            match tx.try_send(Inb::Item(payload)) {
                Ok(()) | Err(TrySend::Closed) => {}
                Err(TrySend::Full(item)) => {
                    // Over the byte bound: stop reading until the consumer drains.
                    self.held = Some(deliver::Held {
                        stream,
                        tx,
                        item,
                        complete,
                    });
                    return;
                }
            }
        }
        if complete {
            self.end_inbound(stream, &tx);
        }
    }

    /// The peer completed `stream`'s items (all of them already queued).
    fn end_inbound(&mut self, stream: u32, tx: &QueueTx<Inb>) {
        let _ = tx.try_send(Inb::Complete);
        if let Some(slot) = self.streams.get_mut(&stream) {
            slot.inbound = None;
            // A request/stream or channel we started is over when the peer completes and we
            // have nothing left to send.
            if !slot.responder && slot.credit.is_none() {
                self.streams.remove(&stream);
            }
        }
    }
}
