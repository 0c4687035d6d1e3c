//! The connection driver: one task owns the [`Engine`], reads the transport, takes commands
//! from handles and handlers, starts handler tasks, and hands encoded frames to a writer task.
//! It never waits on the writer for frames caused by reading (so two peers writing at once
//! cannot deadlock); local producers wait while more than [`HIGH_WATER`] bytes are queued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bistream_rpc_proto::{
    CallFailure, Engine, EngineConfig, Event, Limits, Model, Negotiated, ServeKey, Side, Target,
};
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

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
    inbound: Option<(mpsc::Sender<Raw>, Outcome)>,
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
        calls: HashMap::new(),
        serving: HashMap::new(),
        tasks: JoinSet::new(),
        ff_tasks: JoinSet::new(),
        task_keys: HashMap::new(),
        keepalive: cfg.keepalive,
        keepalive_on: false,
        last_rx: Instant::now(),
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
    calls: HashMap<u64, CallSink>,
    serving: HashMap<ServeKey, Serving>,
    tasks: JoinSet<()>,
    /// Fire-and-forget handlers: apart from `tasks` because they outlive the connection.
    ff_tasks: JoinSet<()>,
    task_keys: HashMap<tokio::task::Id, ServeKey>,
    keepalive: Option<Duration>,
    keepalive_on: bool,
    last_rx: Instant,
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
                let _ = self.wtx.send(WOut::Close(1000, String::new()));
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
        tracing::debug!(peer = %self.shared.peer_id, %cause, stats = ?self.engine.stats(), "rpc connection ended");
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
        let frames = self.engine.take_output();
        let n = frames.iter().map(String::len).sum();
        // Count before sending so the writer's subtraction never goes below zero.
        self.budget.bytes.fetch_add(n, Ordering::AcqRel);
        let _ = self.wtx.send(WOut::Frames(frames));
    }

    async fn main_loop(&mut self, wdead: &mut tokio::sync::oneshot::Receiver<String>) -> Stop {
        let period = self.keepalive.unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            if let Some(stop) = self.drain_events().await {
                return stop;
            }
            self.flush();
            if self.budget.bytes.load(Ordering::Acquire) > HARD_CAP {
                return Stop::Local {
                    code: 1008,
                    reason: "peer does not read its replies".into(),
                };
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
                    if let Some(stop) = self.on_inbound(msg) {
                        return stop;
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
                    None => return Stop::Local { code: 1000, reason: String::new() },
                },
                _ = self.budget.notify.notified(), if !budget_ok => {}
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.on_task_done(done);
                }
                Ok(e) = &mut *wdead => return Stop::Peer(RpcError::Lost(e)),
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
        self.last_rx = Instant::now();
        let router = self.router.clone();
        match msg {
            Inbound::Text(t) => self.engine.on_frame(&t, &|op| router.model(op)),
            Inbound::Binary(n) => self.engine.on_binary(n),
            Inbound::TooLarge(why) => {
                tracing::warn!(peer = %self.shared.peer_id, %why, "rpc frame too large");
                return Some(Stop::Local {
                    code: 1009,
                    reason: "frame too large".into(),
                });
            }
            Inbound::Closed { code, reason } => {
                return Some(Stop::Peer(RpcError::Closed { code, reason }))
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

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start {
                id,
                model,
                data,
                sink,
            } => match self.engine.start_call(id, model, &data) {
                Ok(()) => {
                    self.calls.insert(id, sink);
                    if self.engine.credit_in_force() {
                        let w = self.shared.peer_window.load(Ordering::Acquire);
                        self.grant_local(&Target::Call(id), u64::from(w));
                    }
                }
                Err(e) => fail_sink(sink, RpcError::Limit(e.to_string())),
            },
            Cmd::Ff { data } => {
                let _ = self.engine.fire_and_forget(&data);
            }
            Cmd::Items {
                target,
                data,
                credited,
            } => {
                let sent = self.engine.send_items(&target, &data).is_ok();
                // Items sent without credit count against the peer's window all the same once
                // credit is (or may become) in force: charge them to the stream.
                let may_apply = self.engine.credit_in_force()
                    || *self.engine.negotiated() == Negotiated::Pending;
                if sent && !credited && may_apply {
                    if let Some((sem, debt)) = self.credit_mut(&target) {
                        *debt += data.len() as u64;
                        let paid = sem.forget_permits(usize::try_from(*debt).unwrap_or(usize::MAX));
                        *debt -= paid as u64;
                    }
                }
            }
            Cmd::End { target } => {
                if self.engine.end(&target).is_ok() {
                    match &target {
                        Target::Serve(k) => {
                            self.serving.remove(k);
                        }
                        Target::Call(id) => {
                            let remove = match self.calls.get_mut(id) {
                                Some(CallSink::Stream {
                                    tx, local_ended, ..
                                }) => {
                                    *local_ended = true;
                                    tx.is_none()
                                }
                                _ => false,
                            };
                            if remove {
                                self.calls.remove(id);
                            }
                        }
                    }
                }
            }
            Cmd::Respond { key, data } => {
                if self.engine.respond(&key, &data).is_ok() {
                    self.serving.remove(&key);
                }
            }
            Cmd::Fail { key, code, message } => {
                if self.engine.fail(&key, code, &message).is_ok() {
                    self.serving.remove(&key);
                }
            }
            Cmd::FfDone => self.engine.fire_and_forget_done(),
        }
    }

    fn on_task_done(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let (id, panicked) = match done {
            Ok((id, ())) => (id, false),
            Err(e) => (e.id(), e.is_panic()),
        };
        let Some(key) = self.task_keys.remove(&id) else {
            return;
        };
        if panicked {
            tracing::error!(request = ?key, "rpc handler panicked");
            if self
                .engine
                .fail(
                    &key,
                    bistream_rpc_proto::ErrorCode::HandlerFailed,
                    "handler panicked",
                )
                .is_ok()
            {
                self.serving.remove(&key);
            }
        }
    }

    /// Handles engine events; returns when the connection must stop.
    async fn drain_events(&mut self) -> Option<Stop> {
        while let Some(ev) = self.engine.next_event() {
            match ev {
                Event::Negotiated(n) => self.on_negotiated(n),
                Event::Response { call, data } => {
                    if let Some(CallSink::Rr(tx)) = self.calls.remove(&call) {
                        let _ = tx.send(Ok(data));
                    }
                }
                Event::Item { call, data } => {
                    let full = match self.calls.get(&call) {
                        Some(CallSink::Stream { tx: Some(tx), .. }) => match tx.try_send(data) {
                            Err(mpsc::error::TrySendError::Full(d)) => Some((tx.clone(), d)),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some((tx, data)) = full {
                        if let Some(stop) = self.deliver(tx, data).await {
                            return Some(stop);
                        }
                    }
                }
                Event::End { call } => {
                    let remove = match self.calls.get_mut(&call) {
                        Some(CallSink::Stream {
                            tx,
                            outcome,
                            local_ended,
                            ..
                        }) => {
                            let _ = outcome.set(Ok(()));
                            *tx = None;
                            *local_ended
                        }
                        _ => false,
                    };
                    if remove {
                        self.calls.remove(&call);
                    }
                }
                Event::Failed { call, failure } => {
                    if let Some(sink) = self.calls.remove(&call) {
                        let e = match failure {
                            CallFailure::Remote { code, message } => {
                                RpcError::Remote { code, message }
                            }
                            CallFailure::Protocol(p) => RpcError::Protocol(p),
                        };
                        fail_sink(sink, e);
                    }
                }
                Event::Serve {
                    key,
                    model,
                    op,
                    data,
                } => self.serve(key, model, &op, data),
                Event::FireAndForget { op, data } => {
                    if let Some(Handler::Ff(h)) = self.router.get(&op) {
                        let fut = h(data);
                        let cmd = self.shared.cmd.clone();
                        // Reap finished ones so the set stays as small as the engine's limit.
                        while self.ff_tasks.try_join_next().is_some() {}
                        self.ff_tasks.spawn(async move {
                            fut.await;
                            let _ = cmd.send(Cmd::FfDone).await;
                        });
                    }
                }
                Event::ServeItem { key, data } => {
                    if let Some((tx, _)) = self.serving.get(&key).and_then(|s| s.inbound.as_ref()) {
                        let tx = tx.clone();
                        if let Some(stop) = self.deliver(tx, data).await {
                            return Some(stop);
                        }
                    }
                }
                Event::ServeEnd { key } => {
                    if let Some(s) = self.serving.get_mut(&key) {
                        if let Some((_, outcome)) = s.inbound.take() {
                            let _ = outcome.set(Ok(()));
                        }
                    }
                }
                Event::ServeCancelled { key } => {
                    if let Some(s) = self.serving.remove(&key) {
                        if let Some(a) = s.abort {
                            a.abort();
                        }
                        if let Some((_, outcome)) = s.inbound {
                            let _ = outcome.set(Err(RpcError::Cancelled));
                        }
                    }
                }
                Event::Credit { target, n } => self.grant_local(&target, u64::from(n)),
                Event::Dropped { reason } => {
                    tracing::debug!(peer = %self.shared.peer_id, %reason, "rpc frame dropped");
                }
                Event::Close { code, reason } => {
                    tracing::warn!(peer = %self.shared.peer_id, %reason, "closing rpc connection");
                    return Some(Stop::Local { code, reason });
                }
            }
        }
        None
    }

    fn on_negotiated(&mut self, n: Negotiated) {
        tracing::debug!(peer = %self.shared.peer_id, negotiated = ?n, "rpc negotiation");
        if let Negotiated::Extended {
            request_n,
            keepalive,
            window,
            ..
        } = n
        {
            self.keepalive_on = keepalive && self.keepalive.is_some();
            if request_n {
                self.shared.peer_window.store(window, Ordering::Release);
                self.shared.credit_on.store(true, Ordering::Release);
                // Streams opened before negotiation settled get their initial window now
                // (less what they already sent).
                let targets: Vec<Target> = self
                    .calls
                    .iter()
                    .filter(|(_, s)| matches!(s, CallSink::Stream { credit: Some(_), .. }))
                    .map(|(id, _)| Target::Call(*id))
                    .chain(
                        self.serving
                            .iter()
                            .filter(|(_, s)| s.credit.is_some())
                            .map(|(k, _)| Target::Serve(k.clone())),
                    )
                    .collect();
                for t in targets {
                    self.grant_local(&t, u64::from(window));
                }
            }
        }
    }

    /// A new producer's credit: the peer's window when credit is in force.
    fn initial_credit(&self) -> Arc<Semaphore> {
        let n = if self.engine.credit_in_force() {
            self.shared.peer_window.load(Ordering::Acquire)
        } else {
            0
        };
        Arc::new(Semaphore::new(n as usize))
    }

    /// The credit of one of our producers and its debt.
    fn credit_mut(&mut self, target: &Target) -> Option<(&Arc<Semaphore>, &mut u64)> {
        match target {
            Target::Call(id) => match self.calls.get_mut(id) {
                Some(CallSink::Stream {
                    credit: Some(c),
                    debt,
                    ..
                }) => Some((c, debt)),
                _ => None,
            },
            Target::Serve(k) => match self.serving.get_mut(k) {
                Some(Serving {
                    credit: Some(c),
                    debt,
                    ..
                }) => Some((c, debt)),
                _ => None,
            },
        }
    }

    /// Gives one of our producers `n` credits (a grant from the peer, or the initial window),
    /// paying its debt first.
    fn grant_local(&mut self, target: &Target, n: u64) {
        if let Some((sem, debt)) = self.credit_mut(target) {
            let pay = n.min(*debt);
            *debt -= pay;
            let add = usize::try_from(n - pay).unwrap_or(usize::MAX);
            if add > 0 && sem.available_permits() < Semaphore::MAX_PERMITS / 2 {
                sem.add_permits(add.min(Semaphore::MAX_PERMITS / 2));
            }
        }
    }

    /// Delivers one item into a bounded queue; when it is full, stops reading the transport
    /// (backpressure) but keeps serving commands until there is room.
    async fn deliver(&mut self, tx: mpsc::Sender<Raw>, item: Raw) -> Option<Stop> {
        let item = match tx.try_send(item) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return None,
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        let mut item = Some(item);
        loop {
            self.flush();
            let budget_ok = self.budget_ok();
            tokio::select! {
                biased;
                permit = tx.reserve() => {
                    if let (Ok(p), Some(i)) = (permit, item.take()) {
                        p.send(i);
                    }
                    return None;
                }
                Some(ctl) = self.ctl_rx.recv() => {
                    if let Some(stop) = self.on_ctl(ctl) {
                        return Some(stop);
                    }
                }
                Some(cmd) = self.cmd_rx.recv(), if budget_ok => self.on_cmd(cmd),
                _ = self.budget.notify.notified(), if !budget_ok => {}
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.on_task_done(done);
                }
            }
        }
    }

    fn serve(&mut self, key: ServeKey, model: Model, op: &str, data: Raw) {
        let Some(h) = self.router.get(op).cloned() else {
            return;
        };
        let shared = self.shared.clone();
        let cmd = shared.cmd.clone();
        let mut slot = Serving {
            abort: None,
            inbound: None,
            credit: None,
            debt: 0,
        };
        let k = key.clone();
        let abort = match (h, model) {
            (Handler::Rr(h), _) => {
                let mut fut = h(data);
                // Most handlers answer without waiting (echo): answer at once, without a task.
                let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
                let first = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
                let answer = match first {
                    Ok(Poll::Pending) => None,
                    Ok(Poll::Ready(r)) => Some(r),
                    Err(_) => {
                        tracing::error!(request = ?key, "rpc handler panicked");
                        Some(Err(HandlerError::failed("handler panicked")))
                    }
                };
                if let Some(r) = answer {
                    let _ = match r {
                        Ok(v) => self.engine.respond(&key, v.get()),
                        Err(e) => self.engine.fail(&key, e.code, &e.message),
                    };
                    return;
                }
                self.tasks.spawn(async move {
                    let c = match fut.await {
                        Ok(v) => Cmd::Respond {
                            key: k,
                            data: String::from(Box::<str>::from(v)),
                        },
                        Err(e) => Cmd::Fail {
                            key: k,
                            code: e.code,
                            message: e.message,
                        },
                    };
                    let _ = cmd.send(c).await;
                })
            }
            (Handler::Rs(h), _) => {
                let credit = self.initial_credit();
                slot.credit = Some(credit.clone());
                let items = h(data);
                self.tasks.spawn(produce(
                    items,
                    Producer::new(Target::Serve(k.clone()), shared.clone(), credit, None),
                    k,
                    cmd,
                ))
            }
            (Handler::Ss(h), _) => {
                let credit = self.initial_credit();
                slot.credit = Some(credit.clone());
                let (tx, rx) = mpsc::channel(shared.window as usize);
                let outcome: Outcome = Arc::new(OnceLock::new());
                slot.inbound = Some((tx, outcome.clone()));
                let items = Items::new(rx, outcome, Target::Serve(k.clone()), shared.clone());
                let sender = ServeSender::new(k.clone(), shared.clone(), credit);
                let fut = h(data, ServeReceiver::new(items), sender);
                self.tasks.spawn(async move {
                    let c = match fut.await {
                        Ok(()) => Cmd::End {
                            target: Target::Serve(k),
                        },
                        Err(e) => Cmd::Fail {
                            key: k,
                            code: e.code,
                            message: e.message,
                        },
                    };
                    let _ = cmd.send(c).await;
                })
            }
            (Handler::Ff(_), _) => return,
        };
        self.task_keys.insert(abort.id(), key.clone());
        slot.abort = Some(abort);
        self.serving.insert(key, slot);
    }
}

/// Items a request/stream handler may hand over in one command.
const BATCH: usize = 64;

/// Runs a request/stream handler's items to the end: takes every item that is ready at once
/// (up to [`BATCH`]) and sends them in one command, so a fast stream costs one hand-off per
/// batch, not per item.
async fn produce(mut items: RawItems, mut p: Producer, key: ServeKey, cmd: mpsc::Sender<Cmd>) {
    let mut batch: Vec<String> = Vec::with_capacity(BATCH);
    loop {
        let mut end = match items.next().await {
            Some(Ok(v)) => {
                batch.push(String::from(Box::<str>::from(v)));
                None
            }
            Some(Err(e)) => Some(Err(e)),
            None => Some(Ok(())),
        };
        let room = p.room(BATCH);
        while end.is_none() && batch.len() < room {
            match items.next().now_or_never() {
                Some(Some(Ok(v))) => batch.push(String::from(Box::<str>::from(v))),
                Some(Some(Err(e))) => end = Some(Err(e)),
                Some(None) => end = Some(Ok(())),
                None => break,
            }
        }
        if !batch.is_empty() && p.send_many(&mut batch).await.is_err() {
            return;
        }
        match end {
            None => {}
            Some(Ok(())) => {
                let _ = p.end().await;
                return;
            }
            Some(Err(e)) => {
                let _ = cmd
                    .send(Cmd::Fail {
                        key,
                        code: e.code,
                        message: e.message,
                    })
                    .await;
                return;
            }
        }
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
