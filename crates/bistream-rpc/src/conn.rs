//! The connection driver: one task owns the [`Engine`], reads the transport, takes commands
//! from handles and handlers, starts handler tasks, and hands encoded frames to a writer task.
//! It never waits on the writer for frames caused by reading (so two peers writing at once
//! cannot deadlock); local producers wait while more than [`HIGH_WATER`] bytes are queued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use bistream_rpc_proto::{
    CallFailure, CallMap, Engine, EngineConfig, Event, Limits, Model, Negotiated, ServeKey, Side,
    Target, TextBatch,
};
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use bistream_core::logsafe::{client_text, LogLimiter};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::queue::{QueueTx, TrySend};
use crate::router::{Handler, Raw, RawItems};
use crate::shared::{CallSink, Cmd, Ctl, Outcome, Shared};
use crate::stream::{Items, Producer, ServeReceiver, ServeSender};
use crate::transport::{FrameReader, Inbound, Transport};
use crate::writer::{write_loop, Budget, WOut};
use crate::{ConnState, Connection, HandlerError, Router, RpcError};

/// Bytes queued for the writer above which local producers wait.
pub const HIGH_WATER: usize = 1 << 20;
/// Bytes queued for the writer above which the peer is judged not to read: close 1008.
pub const HARD_CAP: usize = 64 << 20;
/// Frames the driver takes from the transport in one go when they are already there (no
/// wait) before it delivers what they carry (DECISIONS D25).
const READ_BURST: usize = 64;

/// Frames a peer makes us drop (invalid, unmatched, over a limit) are its doing: their WARN
/// lines pass one process-wide rate limit, so a flood of bad frames cannot flood the log. Each
/// connection counts all of them in its statistics, logged when it ends.
static DROPPED_LOG: LazyLock<LogLimiter> = LazyLock::new(|| {
    LogLimiter::new("rpc").counted_in("each connection's statistics, logged when it ends")
});
/// Bytes of frames a burst may take before delivering (the engine holds their items until
/// then, so this bounds them too when a stream's queue is full).
const READ_BURST_BYTES: usize = 1 << 20;
/// How long fire-and-forget handlers may keep running after their connection ended.
pub const FF_GRACE: Duration = Duration::from_secs(10);

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Protocol limits (frame size, in-flight, streams, window).
    pub limits: Limits,
    /// Offer/accept the extensions (hello, cancel, request_n, keepalive).
    pub extensions: bool,
    /// Send keepalives this often once negotiated; the connection is lost after three
    /// intervals of silence.
    pub keepalive: Option<Duration>,
    /// Default per-call timeout (600 s, as the seed).
    pub timeout: Duration,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            extensions: true,
            keepalive: None,
            timeout: Duration::from_secs(600),
        }
    }
}

struct Serving {
    abort: Option<AbortHandle>,
    inbound: Option<(QueueTx, Outcome)>,
    credit: Option<Arc<Semaphore>>,
    /// See `CallSink::Stream::debt`.
    debt: u64,
}

/// Starts a connection over `transport`, serving `router`; returns its handle.
/// Must be called inside a tokio runtime.
pub fn start<T: Transport>(transport: T, side: Side, router: Router, cfg: RpcConfig) -> Connection {
    let peer_id = uuid::Uuid::new_v4().to_string();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (state, _) = watch::channel(ConnState::Open);
    let shared = Arc::new(Shared {
        peer_id: peer_id.clone(),
        cmd: cmd_tx,
        ctl: ctl_tx,
        next_id: AtomicU64::new(0),
        credit_on: AtomicBool::new(false),
        peer_window: AtomicU32::new(0),
        window: cfg.limits.window.max(1),
        window_bytes: cfg.limits.window_bytes.max(1),
        queue_bytes: cfg.limits.stream_queue_bytes.max(1),
        state,
        cause: OnceLock::new(),
    });
    let mut ecfg = EngineConfig::new(side, peer_id);
    ecfg.limits = cfg.limits.clone();
    ecfg.extensions = cfg.extensions;
    ecfg.keepalive_ms = cfg.keepalive.map(|d| d.as_millis() as u64);
    let (reader, writer) = transport.split();
    let budget = Arc::new(Budget {
        bytes: AtomicUsize::new(0),
        notify: Notify::new(),
    });
    let (wtx, wrx) = mpsc::unbounded_channel();
    let (wdead_tx, wdead_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(write_loop(writer, wrx, budget.clone(), wdead_tx));
    let driver = Driver {
        engine: Engine::new(ecfg),
        reader,
        wtx,
        budget,
        cmd_rx,
        ctl_rx,
        shared: shared.clone(),
        router: Arc::new(router),
        calls: CallMap::default(),
        serving: HashMap::new(),
        tasks: JoinSet::new(),
        ff_tasks: JoinSet::new(),
        task_keys: HashMap::new(),
        keepalive: cfg.keepalive,
        keepalive_on: false,
        hold_limit: cfg.timeout,
        last_rx: Instant::now(),
        stashed: None,
    };
    tokio::spawn(driver.run(wdead_rx));
    Connection::new(shared, cfg.timeout)
}

struct Driver<R> {
    engine: Engine,
    reader: R,
    wtx: mpsc::UnboundedSender<WOut>,
    budget: Arc<Budget>,
    cmd_rx: mpsc::Receiver<Cmd>,
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    shared: Arc<Shared>,
    router: Arc<Router>,
    calls: CallMap<CallSink>,
    serving: HashMap<ServeKey, Serving>,
    tasks: JoinSet<()>,
    /// Fire-and-forget handlers: apart from `tasks` because they outlive the connection.
    ff_tasks: JoinSet<()>,
    task_keys: HashMap<tokio::task::Id, ServeKey>,
    keepalive: Option<Duration>,
    keepalive_on: bool,
    /// How long one item may wait for room in a full stream queue (`RpcConfig::timeout`).
    hold_limit: Duration,
    last_rx: Instant,
    /// A non-frame message (close, error) met while reading a burst: handled next turn.
    stashed: Option<Inbound>,
}

/// How the main loop ends.
enum Stop {
    Peer(RpcError),
    Local { code: u16, reason: String },
}

impl<R: FrameReader> Driver<R> {
    async fn run(mut self, mut wdead: tokio::sync::oneshot::Receiver<String>) {
        let stop = self.main_loop(&mut wdead).await;
        let cause = match stop {
            Stop::Peer(e) => {
                // Answer a close frame with its own code (RFC 6455 §5.5.1), else 1000.
                let code = match &e {
                    RpcError::Closed { code: Some(c), .. }
                        if bistream_rpc_proto::ws::close_code_valid(*c) =>
                    {
                        *c
                    }
                    _ => bistream_rpc_proto::close::NORMAL,
                };
                let _ = self.wtx.send(WOut::Close(code, String::new()));
                e
            }
            Stop::Local { code, reason } => {
                let _ = self.shared.state.send_replace(ConnState::Closing);
                // Frames queued before the close (e.g. a fire-and-forget) still go out.
                while let Ok(cmd) = self.cmd_rx.try_recv() {
                    self.on_cmd(cmd);
                }
                self.flush();
                let _ = self.wtx.send(WOut::Close(code, reason.clone()));
                // Wait briefly for the peer's close so the handshake completes.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        match self.reader.next().await {
                            Inbound::Closed { .. } | Inbound::Lost(_) => break,
                            _ => {}
                        }
                    }
                })
                .await;
                RpcError::Closed {
                    code: Some(code),
                    reason,
                }
            }
        };
        self.finish(cause);
    }

    fn finish(&mut self, cause: RpcError) {
        let stats = self.engine.stats().clone();
        if stats.invalid + stats.unmatched + stats.overloaded + stats.ff_refused + stats.stalled > 0
        {
            // The count of every dropped frame, also of those the rate limit kept out of the log.
            tracing::info!(peer = %self.shared.peer_id, %cause, ?stats, "rpc connection ended");
        } else {
            tracing::debug!(peer = %self.shared.peer_id, %cause, ?stats, "rpc connection ended");
        }
        let _ = self.shared.cause.set(cause.clone());
        self.engine.close();
        self.cmd_rx.close();
        let _ = self.shared.state.send_replace(ConnState::Closed);
        for (_, sink) in self.calls.drain() {
            fail_sink(sink, cause.clone());
        }
        for (_, s) in self.serving.drain() {
            if let Some(a) = s.abort {
                a.abort();
            }
            if let Some(c) = s.credit {
                c.close();
            }
        }
        self.tasks.abort_all();
        self.let_fire_and_forget_finish();
    }

    /// A fire-and-forget frame that arrived is the peer's last word: its handler runs to the
    /// end even when the connection closes right after it (a caller sends and hangs up), but
    /// only for [`FF_GRACE`]; the engine's fire-and-forget limit bounds how many there are.
    fn let_fire_and_forget_finish(&mut self) {
        let mut running = std::mem::take(&mut self.ff_tasks);
        if running.is_empty() {
            return;
        }
        let peer = self.shared.peer_id.clone();
        tokio::spawn(async move {
            let drained = tokio::time::timeout(FF_GRACE, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(%peer, left = running.len(), grace = ?FF_GRACE,
                    "fire-and-forget handlers still running after the connection ended: aborted");
                running.abort_all();
            }
        });
    }

    fn budget_ok(&self) -> bool {
        self.budget.bytes.load(Ordering::Acquire) < HIGH_WATER
    }

    /// Moves the engine's frames to the writer.
    fn flush(&mut self) {
        if !self.engine.has_output() {
            return;
        }
        let frames = self.engine.take_frames();
        let n = frames.bytes();
        // Count before sending so the writer's subtraction never goes below zero.
        self.budget.bytes.fetch_add(n, Ordering::AcqRel);
        let _ = self.wtx.send(WOut::Frames(frames));
    }

    async fn main_loop(&mut self, wdead: &mut tokio::sync::oneshot::Receiver<String>) -> Stop {
        let period = self.keepalive.unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            if let Some(stop) = self.drain_events(&mut tick, wdead).await {
                return stop;
            }
            self.flush();
            if self.budget.bytes.load(Ordering::Acquire) > HARD_CAP {
                return Stop::Local {
                    code: bistream_rpc_proto::close::POLICY_VIOLATION,
                    reason: "peer does not read its replies".into(),
                };
            }
            if let Some(msg) = self.stashed.take() {
                if let Some(stop) = self.on_inbound(msg) {
                    return stop;
                }
                continue;
            }
            let budget_ok = self.budget_ok();
            tokio::select! {
                biased;
                Some(ctl) = self.ctl_rx.recv() => {
                    if let Some(stop) = self.on_ctl(ctl) {
                        return stop;
                    }
                }
                msg = self.reader.next() => {
                    // Once per burst, not per frame: reading the clock was 4.5% of a fast
                    // stream reader's CPU (D32).
                    self.last_rx = Instant::now();
                    let mut bytes = text_len(&msg);
                    if let Some(stop) = self.on_inbound(msg) {
                        return stop;
                    }
                    // Take the frames already read (up to READ_BURST) before delivering: their
                    // items reach each consumer together, one wake-up per burst, not per item.
                    for _ in 1..READ_BURST {
                        if self.engine.pending_events() >= READ_BURST || bytes >= READ_BURST_BYTES {
                            break;
                        }
                        match self.reader.next().now_or_never() {
                            Some(msg @ (Inbound::Text(_) | Inbound::Shared(_))) => {
                                bytes += text_len(&msg);
                                if let Some(stop) = self.on_inbound(msg) {
                                    return stop;
                                }
                            }
                            // A close or error waits until what came before it is delivered
                            // (a fire-and-forget just before a hang-up still runs).
                            Some(msg) => {
                                self.stashed = Some(msg);
                                break;
                            }
                            None => break,
                        }
                    }
                }
                cmd = self.cmd_rx.recv(), if budget_ok => match cmd {
                    Some(cmd) => {
                        self.on_cmd(cmd);
                        // Take what else is queued so its frames go out in one batch.
                        for _ in 0..255 {
                            match self.cmd_rx.try_recv() {
                                Ok(cmd) => self.on_cmd(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return Stop::Local { code: bistream_rpc_proto::close::NORMAL, reason: String::new() },
                },
                _ = self.budget.notify.notified(), if !budget_ok => {}
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.on_task_done(done);
                }
                r = &mut *wdead => return Stop::Peer(RpcError::Lost(crate::writer::why_stopped(r))),
                _ = tick.tick(), if self.keepalive_on => {
                    if self.last_rx.elapsed() > period * 3 {
                        return Stop::Peer(RpcError::Lost(format!(
                            "no frame from the peer for {:?} (keepalive)", period * 3
                        )));
                    }
                    self.engine.keepalive();
                }
            }
        }
    }

    fn on_inbound(&mut self, msg: Inbound) -> Option<Stop> {
        // The closures borrow only the router field (no Arc clone per frame).
        match msg {
            Inbound::Text(t) => self.engine.on_frame(&t, &|op| self.router.model(op)),
            Inbound::Shared(t) => {
                if let Err(e) = self.engine.on_text(&t, &|op| self.router.model(op)) {
                    let code = bistream_rpc_proto::ws::INVALID_PAYLOAD;
                    tracing::warn!(peer = %self.shared.peer_id, code, reason = %e, "rpc websocket framing broken");
                    return Some(Stop::Local {
                        code,
                        reason: e.to_string(),
                    });
                }
            }
            Inbound::Binary(n) => self.engine.on_binary(n),
            Inbound::TooLarge(why) => {
                tracing::warn!(peer = %self.shared.peer_id, %why, "rpc frame too large");
                return Some(Stop::Local {
                    code: bistream_rpc_proto::close::MESSAGE_TOO_BIG,
                    reason: "frame too large".into(),
                });
            }
            Inbound::Closed { code, reason } => {
                return Some(Stop::Peer(RpcError::Closed { code, reason }))
            }
            Inbound::Ping(payload) => {
                let _ = self.wtx.send(WOut::Pong(payload));
            }
            Inbound::Violation { code, reason } => {
                tracing::warn!(peer = %self.shared.peer_id, code, %reason, "rpc websocket framing broken");
                return Some(Stop::Local { code, reason });
            }
            Inbound::Lost(e) => return Some(Stop::Peer(RpcError::Lost(e))),
        }
        None
    }

    fn on_ctl(&mut self, ctl: Ctl) -> Option<Stop> {
        match ctl {
            Ctl::Cancel(id) => {
                if let Some(sink) = self.calls.remove(&id) {
                    fail_sink(sink, RpcError::Cancelled);
                }
                self.engine.cancel_call(id);
            }
            Ctl::Grant(t, n) => self.engine.grant(&t, n),
            Ctl::Close { code, reason } => return Some(Stop::Local { code, reason }),
        }
        None
    }
}

/// The length of a text frame (0 for anything else).
fn text_len(msg: &Inbound) -> usize {
    match msg {
        Inbound::Text(t) => t.len(),
        Inbound::Shared(t) => t.len(),
        _ => 0,
    }
}

fn fail_sink(sink: CallSink, e: RpcError) {
    match sink {
        CallSink::Rr(tx) => {
            let _ = tx.send(Err(e));
        }
        CallSink::Stream {
            outcome, credit, ..
        } => {
            let _ = outcome.set(Err(e));
            if let Some(c) = credit {
                c.close();
            }
        }
    }
}

mod deliver;
mod events;
mod local;
mod serve;
