//! [`PacketConnection`]: a cs.packetstream connection over any `AsyncRead` + `AsyncWrite` pair.
//!
//! Per connection: one reader task (decodes packets from a `BytesMut` without copying
//! payloads, completes our pending requests, dispatches the peer's requests), one writer task
//! (drains a bounded queue and coalesces everything queued into one vectored write), one task
//! per running handler (bounded), and a driver task that runs the shutdown sequence of the
//! original: ERQ, drain local handlers, EOF, wait for the peer's EOF.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::IoSlice;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::codec::{Decoder, Packet, DEFAULT_MAX_PACKET};
use crate::error::{CloseReason, EncodeError, HandlerError, PacketError};
use crate::handler::{IncomingRequest, Reply, RequestHandler};
use crate::pool;

/// Failure reasons sent to the peer: the exact texts of cs.packetstream 20240630.
pub mod reasons {
    /// The handler returned an error or panicked (also: unknown rq_type).
    pub const EXCEPTION: &str = "exception during handler";
    /// This side has no request handler.
    pub const NO_HANDLER: &str = "no request handler";
    /// The request arrived after the peer's ERQ.
    pub const NOT_ALLOWED: &str = "requests no longer allowed";
    /// The request arrived while this side was shutting down.
    pub const SHUTTING_DOWN: &str = "rejecting request: runstate.cancelled";
    /// Too many distinct channels (Python's literal, unformatted text).
    pub const UNKNOWN_CHANNEL: &str = "unknown channel %d";
}

/// The number of recent tags remembered per receive channel to detect reuse. A tag more than
/// this far below the highest tag seen on its channel counts as reused.
pub const TAG_WINDOW: u64 = 4096;

/// Connection settings. Build with `Config::default()` and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name used in logs.
    pub name: String,
    /// Coalescing delay of the writer: after draining the queue, wait this long for more
    /// packets before writing. Default 0: write as soon as the queue is empty (Python's
    /// default is 10 ms, which costs ~10 ms per direction on every lone packet).
    pub packet_grace: Duration,
    /// Largest packet body accepted or sent (default [`DEFAULT_MAX_PACKET`], 16 MiB).
    pub max_packet: usize,
    /// Our requests awaiting a response; `submit` waits beyond this (default 4096).
    pub max_in_flight: usize,
    /// Handlers running at once (default 64; Python runs 4).
    pub max_handlers: usize,
    /// Peer requests accepted and not yet answered (running or waiting to run); the reader
    /// stops reading beyond this (default 1024).
    pub max_queued_requests: usize,
    /// Capacity of the send queue, in packets (default 1024; Python uses 16).
    pub send_queue: usize,
    /// Distinct channels the peer may send requests on (default 256); requests on further
    /// channels get the failure `unknown channel %d`.
    pub max_rx_channels: usize,
    /// How long a closing connection waits for the peer's EOF after sending its own before it
    /// drops the transport (default 30 s).
    pub close_timeout: Duration,
    /// Let the task that makes a lone request or response write it itself when the send
    /// side is idle, instead of handing it to the writer task (default true; saves a task
    /// switch per round trip; packets under load always go through the writer).
    pub direct_writes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "packet".into(),
            packet_grace: Duration::ZERO,
            max_packet: DEFAULT_MAX_PACKET,
            max_in_flight: 4096,
            max_handlers: 64,
            max_queued_requests: 1024,
            send_queue: 1024,
            max_rx_channels: 256,
            close_timeout: Duration::from_secs(30),
            direct_writes: true,
        }
    }
}

impl Config {
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    pub fn with_packet_grace(mut self, d: Duration) -> Self {
        self.packet_grace = d;
        self
    }
    pub fn with_max_packet(mut self, n: usize) -> Self {
        self.max_packet = n;
        self
    }
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }
    pub fn with_max_handlers(mut self, n: usize) -> Self {
        self.max_handlers = n;
        self
    }
    pub fn with_max_queued_requests(mut self, n: usize) -> Self {
        self.max_queued_requests = n;
        self
    }
    pub fn with_send_queue(mut self, n: usize) -> Self {
        self.send_queue = n;
        self
    }
    pub fn with_max_rx_channels(mut self, n: usize) -> Self {
        self.max_rx_channels = n;
        self
    }
    pub fn with_close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }
    pub fn with_direct_writes(mut self, on: bool) -> Self {
        self.direct_writes = on;
        self
    }

    /// Semaphore sizes are `u32`; keep every bound in 1..=2^20.
    fn clamp(mut self) -> Self {
        let c = |n: usize| n.clamp(1, 1 << 20);
        self.max_in_flight = c(self.max_in_flight);
        self.max_handlers = c(self.max_handlers);
        self.max_queued_requests = c(self.max_queued_requests);
        self.send_queue = c(self.send_queue);
        self.max_rx_channels = c(self.max_rx_channels);
        self
    }
}

/// A response to one of our requests, as Python's `(ok, flags, payload)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub ok: bool,
    pub flags: u64,
    pub payload: Bytes,
}

/// Counters of one connection (all monotonic).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_sent: AtomicU64,
    pub responses_received: AtomicU64,
    pub requests_received: AtomicU64,
    pub responses_sent: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub handler_errors: AtomicU64,
    /// Responses for a (channel, tag) we have no pending request for: logged and dropped.
    pub unknown_responses: AtomicU64,
    /// Requests reusing a tag: answered with `tag already in use`.
    pub duplicate_tags: AtomicU64,
    /// Packets that could not be queued because the sender had already finished.
    pub dropped_packets: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Packets written by the task that made them (see [`Config::direct_writes`]).
    pub direct_writes: AtomicU64,
}

/// A cheap hasher for `(channel, tag)` keys; the maps it serves are bounded, so hash flooding
/// can only slow a bounded map.
#[derive(Default, Clone, Copy)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type TagMap<V> = HashMap<(u64, u64), V, BuildHasherDefault<TagHasher>>;

struct PendingEntry {
    tx: oneshot::Sender<Result<Response, PacketError>>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct State {
    pending: TagMap<PendingEntry>,
    next_tag: HashMap<u64, u64>,
    /// Set once: why the connection can no longer complete requests.
    dead: Option<CloseReason>,
    /// Local close started: no new submits.
    no_submits: bool,
}

/// Receive-side tag bookkeeping: a window of recently seen tags per channel, and the requests
/// in progress (with a "poisoned" mark when a duplicate arrived while it ran).
struct RxTags {
    channels: HashMap<u64, RxChannel>,
    in_progress: TagMap<bool>,
    max_channels: usize,
}

struct RxChannel {
    max: u64,
    bits: Vec<u64>,
}

enum Admit {
    Ok,
    Duplicate,
    TooManyChannels,
}

impl RxChannel {
    fn new(tag: u64) -> RxChannel {
        let mut c = RxChannel {
            max: tag,
            bits: vec![0; (TAG_WINDOW / 64) as usize],
        };
        c.set(tag, true);
        c
    }
    fn idx(tag: u64) -> (usize, u64) {
        let i = tag % TAG_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }
    fn get(&self, tag: u64) -> bool {
        let (w, m) = Self::idx(tag);
        self.bits.get(w).is_some_and(|x| x & m != 0)
    }
    fn set(&mut self, tag: u64, on: bool) {
        let (w, m) = Self::idx(tag);
        if let Some(x) = self.bits.get_mut(w) {
            if on {
                *x |= m
            } else {
                *x &= !m
            }
        }
    }
    fn admit(&mut self, tag: u64) -> bool {
        if tag > self.max {
            if tag - self.max >= TAG_WINDOW {
                self.bits.iter_mut().for_each(|x| *x = 0);
            } else {
                for t in self.max + 1..tag {
                    self.set(t, false);
                }
            }
            self.max = tag;
            self.set(tag, true);
            true
        } else if self.max - tag >= TAG_WINDOW || self.get(tag) {
            false
        } else {
            self.set(tag, true);
            true
        }
    }
}

impl RxTags {
    fn admit(&mut self, channel: u64, tag: u64) -> Admit {
        let full = self.channels.len() >= self.max_channels;
        let ok = match self.channels.get_mut(&channel) {
            Some(c) => c.admit(tag),
            None if full => return Admit::TooManyChannels,
            None => {
                self.channels.insert(channel, RxChannel::new(tag));
                true
            }
        };
        if ok {
            self.in_progress.insert((channel, tag), false);
            Admit::Ok
        } else {
            if let Some(p) = self.in_progress.get_mut(&(channel, tag)) {
                *p = true;
            }
            Admit::Duplicate
        }
    }
    /// Ends a request; true when a duplicate poisoned it (its response must not be sent).
    fn finish(&mut self, channel: u64, tag: u64) -> bool {
        self.in_progress.remove(&(channel, tag)).unwrap_or(false)
    }
}

enum Outgoing {
    Packet(Packet),
    /// Write EOF after everything queued before this, then stop.
    Finish,
}

struct Shared {
    cfg: Config,
    tx: mpsc::Sender<Outgoing>,
    state: Mutex<State>,
    rx_tags: Mutex<RxTags>,
    handler: Option<Arc<dyn RequestHandler>>,
    in_flight: Arc<Semaphore>,
    handlers_running: Arc<Semaphore>,
    handlers_queued: Arc<Semaphore>,
    /// Local close requested (by `close`, by the last handle dropping, or by a transport end).
    close_req: watch::Sender<bool>,
    /// Hard stop requested: skip the graceful steps.
    abort_req: watch::Sender<bool>,
    /// The reader holds more received bytes than the packet it is handling.
    rx_more: std::sync::atomic::AtomicBool,
    /// The send side (see [`WriteState`]) and the writer task's wake-up for direct writes.
    wstate: Mutex<WriteState>,
    kick: Notify,
    /// The reader and writer tasks, for `abort`.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set by the driver once everything has stopped.
    done: watch::Sender<Option<CloseReason>>,
    pending_empty: Notify,
    /// The peer sent ERQ.
    peer_erq: std::sync::atomic::AtomicBool,
    /// We are past the point of accepting new peer requests.
    reject_incoming: std::sync::atomic::AtomicBool,
    stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent in a way that matters
    // more than stopping the connection would; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Marks the connection dead (first reason wins), fails every pending request, asks the
    /// driver to shut down.
    fn fail_all(&self, reason: CloseReason) {
        let drained: Vec<PendingEntry> = {
            let mut st = lock(&self.state);
            if st.dead.is_none() {
                st.dead = Some(reason.clone());
            }
            st.pending.drain().map(|(_, e)| e).collect()
        };
        if !drained.is_empty() {
            tracing::debug!(conn = %self.cfg.name, n = drained.len(), %reason, "failing pending requests");
        }
        for e in drained {
            let _ = e.tx.send(Err(PacketError::Closed(reason.clone())));
        }
        self.in_flight.close();
        self.pending_empty.notify_waiters();
        self.close_req.send_replace(true);
    }

    async fn queue(&self, p: Packet) {
        if self.tx.send(Outgoing::Packet(p)).await.is_err() {
            self.stats.dropped_packets.fetch_add(1, Relaxed);
            tracing::debug!(conn = %self.cfg.name, "packet not queued: the sender has finished");
        }
    }

    async fn reject(&self, channel: u64, tag: u64, reason: &str) {
        self.stats.requests_rejected.fetch_add(1, Relaxed);
        tracing::debug!(conn = %self.cfg.name, channel, tag, reason, "rejecting request");
        self.queue(Packet::failure(channel, tag, reason)).await;
    }

    async fn wait_pending_empty(&self) {
        loop {
            let notified = self.pending_empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = lock(&self.state);
                if st.pending.is_empty() {
                    return;
                }
            }
            notified.await;
        }
    }
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The last user handle is gone: shut down gracefully in the background.
        self.shared.close_req.send_replace(true);
    }
}

/// A bidirectional packet connection, byte-compatible with cs.packetstream 20240630.
///
/// Cheap to clone (all clones share one connection). When the last clone is dropped the
/// connection shuts down gracefully in the background; [`PacketConnection::close`] does the
/// same and waits for the end.
#[derive(Clone)]
pub struct PacketConnection {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for PacketConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketConnection")
            .field("name", &self.handle.shared.cfg.name)
            .finish_non_exhaustive()
    }
}

/// The future of one response: resolves to `Ok(Response)` (`ok` may be false) or to
/// `Err(PacketError::Closed(_))` when the connection ends first. Dropping it abandons the
/// request (its response will be discarded).
#[derive(Debug)]
pub struct ResponseFuture {
    rx: oneshot::Receiver<Result<Response, PacketError>>,
}

impl std::future::Future for ResponseFuture {
    type Output = Result<Response, PacketError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.rx
            .poll_unpin(cx)
            .map(|r| r.unwrap_or(Err(PacketError::Closed(CloseReason::Local))))
    }
}

impl PacketConnection {
    /// Starts a connection over `reader`/`writer` with `cfg` and an optional request handler.
    /// Must be called within a Tokio runtime. See [`crate::Builder`] for the convenient forms.
    pub fn start<R, W>(
        reader: R,
        writer: W,
        cfg: Config,
        handler: Option<Arc<dyn RequestHandler>>,
    ) -> PacketConnection
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let cfg = cfg.clamp();
        let (tx, rx) = mpsc::channel(cfg.send_queue);
        let shared = Arc::new(Shared {
            tx,
            state: Mutex::new(State::default()),
            rx_tags: Mutex::new(RxTags {
                channels: HashMap::new(),
                in_progress: TagMap::default(),
                max_channels: cfg.max_rx_channels,
            }),
            handler,
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            handlers_running: Arc::new(Semaphore::new(cfg.max_handlers)),
            handlers_queued: Arc::new(Semaphore::new(cfg.max_queued_requests)),
            close_req: watch::channel(false).0,
            abort_req: watch::channel(false).0,
            wstate: Mutex::new(WriteState {
                w: Box::pin(writer),
                out: OutBuf::new(),
                need_flush: false,
                closed: false,
                error: None,
                draining: false,
            }),
            kick: Notify::new(),
            rx_more: false.into(),
            tasks: Mutex::new(Vec::new()),
            done: watch::channel(None).0,
            pending_empty: Notify::new(),
            peer_erq: false.into(),
            reject_incoming: false.into(),
            stats: Stats::default(),
            cfg,
        });
        let reader_task = tokio::spawn(read_loop(shared.clone(), reader));
        let writer_task = tokio::spawn(write_loop(shared.clone(), rx));
        *lock(&shared.tasks) = vec![reader_task.abort_handle(), writer_task.abort_handle()];
        tokio::spawn(drive(shared.clone(), reader_task, writer_task));
        PacketConnection {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The connection's settings.
    pub fn config(&self) -> &Config {
        &self.shared().cfg
    }

    /// The connection's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared().stats
    }

    /// Sends a request and returns the future of its response, once the request is queued.
    /// Waits while [`Config::max_in_flight`] requests are outstanding or the send queue is
    /// full. `rq_type` is the user value (the wire carries `rq_type + 1`). Tags are allocated
    /// per channel, monotonically (channel 0 starts at 2), and never reused. Every channel
    /// works (a stock Python peer rejects channels other than 0 with `unknown channel %d`).
    pub async fn submit(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
    ) -> Result<ResponseFuture, PacketError> {
        let sh = self.shared();
        // Validate with the largest possible tag: the real header can only be shorter, so the
        // writer never meets a packet it cannot encode.
        let mut packet = Packet::request(channel, u64::MAX, rq_type, flags, payload.into())?;
        let (body, _) = packet.encoded_len()?;
        if body > sh.cfg.max_packet {
            return Err(EncodeError::PacketTooLarge {
                len: body,
                max: sh.cfg.max_packet,
            }
            .into());
        }
        let closed = || {
            let st = lock(&sh.state);
            PacketError::Closed(st.dead.clone().unwrap_or(CloseReason::Local))
        };
        let permit = sh
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        // Reserve the queue slot first so that tag order and queue order agree.
        let slot = sh.tx.reserve().await.map_err(|_| closed())?;
        let (tx, rx) = oneshot::channel();
        let solo = {
            let mut st = lock(&sh.state);
            if let Some(r) = &st.dead {
                return Err(PacketError::Closed(r.clone()));
            }
            if st.no_submits {
                return Err(PacketError::Closed(CloseReason::Local));
            }
            let next = st
                .next_tag
                .entry(channel)
                .or_insert(if channel == 0 { 2 } else { 0 });
            let tag = *next;
            *next = next
                .checked_add(1)
                .ok_or(PacketError::TagsExhausted(channel))?;
            packet.tag = tag;
            st.pending.insert(
                (channel, tag),
                PendingEntry {
                    tx,
                    _permit: permit,
                },
            );
            st.pending.len() == 1
        };
        sh.stats.requests_sent.fetch_add(1, Relaxed);
        // A lone request (nothing else in flight) is written right here; under load requests
        // go through the queue so the writer coalesces them.
        if solo {
            match sh.try_direct(packet, 1) {
                Ok(()) => return Ok(ResponseFuture { rx }),
                Err(p) => packet = p,
            }
        }
        slot.send(Outgoing::Packet(packet));
        Ok(ResponseFuture { rx })
    }

    /// Sends a request and waits for its response; `ok == false` becomes
    /// [`PacketError::Failed`] (whose payload is the peer's reason). Returns `(flags, payload)`.
    pub async fn call(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
    ) -> Result<(u64, Bytes), PacketError> {
        let r = self.submit(rq_type, flags, payload, channel).await?.await?;
        if r.ok {
            Ok((r.flags, r.payload))
        } else {
            Err(PacketError::Failed {
                flags: r.flags,
                payload: r.payload,
            })
        }
    }

    /// [`PacketConnection::call`] with a `decode_response(flags, payload)` applied to a
    /// successful response (Python's `decode_response=`).
    pub async fn call_decode<T>(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
        decode_response: impl FnOnce(u64, Bytes) -> Result<T, HandlerError>,
    ) -> Result<T, PacketError> {
        let (f, p) = self.call(rq_type, flags, payload, channel).await?;
        decode_response(f, p).map_err(PacketError::DecodeResponse)
    }

    /// Graceful shutdown, as Python's last close: no new requests; wait for our outstanding
    /// requests to be answered (or failed by a receive-side end); send ERQ; wait for the
    /// running handlers and send their responses; send EOF; wait (up to
    /// [`Config::close_timeout`]) for the peer's EOF. Returns why receiving ended.
    pub async fn close(&self) -> CloseReason {
        self.shared().close_req.send_replace(true);
        self.closed().await
    }

    /// Hard stop: drops the transport now without ERQ/EOF; pending requests fail with
    /// `Closed(Local)`, running handlers' responses are discarded. Returns at once; use
    /// [`PacketConnection::closed`] to wait for the end.
    pub fn abort(&self) {
        let sh = self.shared();
        sh.abort_req.send_replace(true);
        for t in lock(&sh.tasks).iter() {
            t.abort();
        }
        sh.drop_transport();
        sh.fail_all(CloseReason::Local);
    }

    /// Waits until the connection has fully stopped (after the peer's EOF and our own, or an
    /// error) without starting a shutdown. Servers use this as Python's `join_recv`.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.shared().done.subscribe();
        let reason = match rx.wait_for(|d| d.is_some()).await {
            Ok(d) => d.clone().unwrap_or(CloseReason::Local),
            Err(_) => CloseReason::Local,
        };
        reason
    }

    /// Whether the connection can still send requests.
    pub fn is_open(&self) -> bool {
        let st = lock(&self.shared().state);
        st.dead.is_none() && !st.no_submits
    }

    /// Number of our requests awaiting a response.
    pub fn pending(&self) -> usize {
        lock(&self.shared().state).pending.len()
    }

    /// Queues an ERQ now (Python's `send_erq`): tells the peer we will send no more requests.
    /// Our own later submits fail. (Another ERQ is sent at shutdown, as Python does.)
    pub async fn send_erq(&self) {
        lock(&self.shared().state).no_submits = true;
        self.shared().queue(Packet::erq()).await;
    }
}

/// Phase by phase shutdown; see [`PacketConnection::close`].
async fn drive(
    sh: Arc<Shared>,
    mut reader: JoinHandle<()>,
    writer: JoinHandle<Result<(), std::io::Error>>,
) {
    let mut close_rx = sh.close_req.subscribe();
    let _ = close_rx.wait_for(|c| *c).await;
    lock(&sh.state).no_submits = true;
    sh.wait_pending_empty().await;
    sh.reject_incoming.store(true, Relaxed);
    sh.queue(Packet::erq()).await;
    // Drain the accepted requests: their responses are queued before EOF.
    let all = sh.cfg.max_queued_requests as u32;
    let mut abort_rx = sh.abort_req.subscribe();
    tokio::select! {
        p = sh.handlers_queued.acquire_many(all) => drop(p),
        _ = abort_rx.wait_for(|a| *a) => {}
    }
    if sh.tx.send(Outgoing::Finish).await.is_err() {
        tracing::debug!(conn = %sh.cfg.name, "sender already finished");
    }
    let write_res = writer.await;
    let write_failed = !matches!(write_res, Ok(Ok(())));
    if let Ok(Err(e)) = &write_res {
        sh.fail_all(CloseReason::Io(e.to_string()));
    }
    if write_failed {
        reader.abort();
        let _ = (&mut reader).await;
    } else if tokio::time::timeout(sh.cfg.close_timeout, &mut reader)
        .await
        .is_err()
    {
        tracing::warn!(conn = %sh.cfg.name, timeout = ?sh.cfg.close_timeout, "no EOF from the peer; dropping the transport");
        reader.abort();
        let _ = (&mut reader).await;
    }
    sh.fail_all(CloseReason::Local);
    sh.drop_transport();
    let reason = lock(&sh.state).dead.clone().unwrap_or(CloseReason::Local);
    tracing::debug!(conn = %sh.cfg.name, %reason, "connection closed");
    sh.done.send_replace(Some(reason));
}

enum Step {
    Continue,
    Stop(CloseReason),
}

async fn read_loop<R: AsyncRead + Unpin>(sh: Arc<Shared>, mut rd: R) {
    let reason = read_packets(&sh, &mut rd).await;
    match &reason {
        CloseReason::PeerEof | CloseReason::TransportEof => {
            tracing::debug!(conn = %sh.cfg.name, %reason, "receive side ended")
        }
        _ => tracing::warn!(conn = %sh.cfg.name, %reason, "receive side ended"),
    }
    sh.fail_all(reason);
}

async fn read_packets<R: AsyncRead + Unpin>(sh: &Arc<Shared>, rd: &mut R) -> CloseReason {
    const READ_CHUNK: usize = 64 * 1024;
    let dec = Decoder::new(sh.cfg.max_packet);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        loop {
            // A large body that has not fully arrived is read straight into a pooled buffer
            // sized for it (see `crate::pool`) instead of growing `buf`.
            match dec.peek_len(&buf) {
                Ok(Some((hdr, len))) if len >= pool::LARGE_BODY && buf.len() < hdr + len => {
                    let p = match read_large_body(sh, rd, &mut buf, hdr, len).await {
                        Ok(p) => p,
                        Err(r) => return r,
                    };
                    sh.rx_more.store(false, Relaxed);
                    if let Step::Stop(r) = on_packet(sh, p).await {
                        return r;
                    }
                    continue;
                }
                Err(e) => return CloseReason::Protocol(e.to_string()),
                _ => {}
            }
            match dec.decode(&mut buf) {
                Ok(Some(p)) => {
                    sh.rx_more.store(!buf.is_empty(), Relaxed);
                    if let Step::Stop(r) = on_packet(sh, p).await {
                        return r;
                    }
                }
                Ok(None) => break,
                Err(e) => return CloseReason::Protocol(e.to_string()),
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => return CloseReason::TransportEof,
            Ok(0) => return CloseReason::TruncatedPacket,
            Ok(n) => {
                sh.stats.bytes_received.fetch_add(n as u64, Relaxed);
            }
            Err(e) => return CloseReason::Io(e.to_string()),
        }
    }
}

/// Reads the rest of a large packet whose `hdr`-byte length prefix and first bytes are in
/// `buf` (which holds nothing beyond this packet) into a pooled buffer, and decodes it. The
/// reads never go past the packet's end.
///
/// Placement: the frame goes at an address congruent modulo 64 to its offset in the byte
/// stream (up to 63 bytes of padding in front). The kernel's socket-to-user copy is sensitive
/// to the destination's alignment relative to its source: with the body simply at offset 0,
/// the copy measured ~1.5× slower on the 2-core AMD VM (sequential 1 MiB echo, client CPU
/// 0.65–0.86 vs 0.44–0.47 ms per MiB); stream-congruent placement was as fast as the old
/// `BytesMut` layout there and the fastest of the layouts tried with 8 in flight.
async fn read_large_body<R: AsyncRead + Unpin>(
    sh: &Shared,
    rd: &mut R,
    buf: &mut BytesMut,
    hdr: usize,
    len: usize,
) -> Result<Packet, CloseReason> {
    // Stream offset of the frame's first byte (only this task counts received bytes).
    let at = (sh.stats.bytes_received.load(Relaxed)).wrapping_sub(buf.len() as u64);
    let mut body = pool::take(hdr + len + 63);
    let pad = (at as usize).wrapping_sub(body.as_ptr() as usize) % 64;
    body.resize(pad, 0);
    let total = pad + hdr + len;
    body.extend_from_slice(buf);
    buf.clear();
    while body.len() < total {
        let want = total - body.len();
        let mut dst = (&mut body).limit(want);
        match rd.read_buf(&mut dst).await {
            Ok(0) => return Err(CloseReason::TruncatedPacket),
            Ok(n) => {
                sh.stats.bytes_received.fetch_add(n as u64, Relaxed);
            }
            Err(e) => return Err(CloseReason::Io(e.to_string())),
        }
    }
    Packet::decode_body(pool::freeze(body).slice(pad + hdr..))
        .map_err(|e| CloseReason::Protocol(e.to_string()))
}

async fn on_packet(sh: &Arc<Shared>, p: Packet) -> Step {
    if !p.is_request {
        on_response(sh, p);
        return Step::Continue;
    }
    if p.is_eof() {
        return Step::Stop(CloseReason::PeerEof);
    }
    if p.is_erq() {
        sh.peer_erq.store(true, Relaxed);
        return Step::Continue;
    }
    let Some(rq_type) = p.user_rq_type() else {
        return Step::Stop(CloseReason::Protocol(format!(
            "malformed EOF packet (wire rq_type 0): channel {} tag {} flags {} payload {} bytes",
            p.channel,
            p.tag,
            p.flags,
            p.payload.len()
        )));
    };
    on_request(sh, p, rq_type).await;
    Step::Continue
}

fn on_response(sh: &Shared, p: Packet) {
    let entry = {
        let mut st = lock(&sh.state);
        let e = st.pending.remove(&(p.channel, p.tag));
        if e.is_some() && st.no_submits && st.pending.is_empty() {
            sh.pending_empty.notify_waiters();
        }
        e
    };
    match entry {
        Some(e) => {
            sh.stats.responses_received.fetch_add(1, Relaxed);
            let _ = e.tx.send(Ok(Response {
                ok: p.ok(),
                flags: p.response_flags(),
                payload: p.payload,
            }));
        }
        None => {
            sh.stats.unknown_responses.fetch_add(1, Relaxed);
            tracing::warn!(conn = %sh.cfg.name, channel = p.channel, tag = p.tag, "response to unknown request dropped");
        }
    }
}

async fn on_request(sh: &Arc<Shared>, p: Packet, rq_type: u64) {
    sh.stats.requests_received.fetch_add(1, Relaxed);
    let (channel, tag) = (p.channel, p.tag);
    let Some(handler) = sh.handler.clone() else {
        return sh.reject(channel, tag, reasons::NO_HANDLER).await;
    };
    if sh.peer_erq.load(Relaxed) {
        return sh.reject(channel, tag, reasons::NOT_ALLOWED).await;
    }
    if sh.reject_incoming.load(Relaxed) {
        return sh.reject(channel, tag, reasons::SHUTTING_DOWN).await;
    }
    let admit = lock(&sh.rx_tags).admit(channel, tag);
    match admit {
        Admit::Ok => {}
        Admit::Duplicate => {
            sh.stats.duplicate_tags.fetch_add(1, Relaxed);
            tracing::warn!(conn = %sh.cfg.name, channel, tag, "protocol error: request reuses a tag");
            let reason = format!("channel {channel}: tag already in use: {tag}");
            return sh.reject(channel, tag, &reason).await;
        }
        Admit::TooManyChannels => {
            return sh.reject(channel, tag, reasons::UNKNOWN_CHANNEL).await;
        }
    }
    // Backpressure: stop reading while too many accepted requests are unanswered.
    let Ok(queued) = sh.handlers_queued.clone().acquire_owned().await else {
        lock(&sh.rx_tags).finish(channel, tag);
        return sh.reject(channel, tag, reasons::SHUTTING_DOWN).await;
    };
    if sh.reject_incoming.load(Relaxed) {
        lock(&sh.rx_tags).finish(channel, tag);
        return sh.reject(channel, tag, reasons::SHUTTING_DOWN).await;
    }
    let rq = IncomingRequest {
        rq_type,
        flags: p.flags,
        payload: p.payload,
        channel,
        tag,
    };
    // Start the handler here: a handler that completes at its first poll (echo-like
    // services) is answered without a task switch; otherwise it continues in its own task.
    let (channel, tag, rq_type) = (rq.channel, rq.tag, rq.rq_type);
    let Ok(running) = sh.handlers_running.clone().try_acquire_owned() else {
        tokio::spawn(run_handler(sh.clone(), handler, rq, queued));
        return;
    };
    let mut fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(rq))) {
        Ok(f) => AssertUnwindSafe(f).catch_unwind(),
        Err(_) => {
            let p = response_packet(sh, channel, tag, rq_type, Err(()));
            return finish_request(sh, channel, tag, p).await;
        }
    };
    match futures_util::poll!(&mut fut) {
        Poll::Ready(res) => {
            let p = response_packet(sh, channel, tag, rq_type, res.map_err(|_| ()));
            finish_request(sh, channel, tag, p).await;
            drop((queued, running));
        }
        Poll::Pending => {
            let sh = sh.clone();
            tokio::spawn(async move {
                let res = fut.await;
                let p = response_packet(&sh, channel, tag, rq_type, res.map_err(|_| ()));
                finish_request(&sh, channel, tag, p).await;
                drop((queued, running));
            });
        }
    }
}

async fn run_handler(
    sh: Arc<Shared>,
    handler: Arc<dyn RequestHandler>,
    rq: IncomingRequest,
    _queued: OwnedSemaphorePermit,
) {
    let _running = sh.handlers_running.clone().acquire_owned().await.ok();
    let (channel, tag, rq_type) = (rq.channel, rq.tag, rq.rq_type);
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(rq))) {
        Ok(f) => AssertUnwindSafe(f).catch_unwind().await.map_err(|_| ()),
        Err(_) => Err(()),
    };
    let packet = response_packet(&sh, channel, tag, rq_type, result);
    finish_request(&sh, channel, tag, packet).await;
}

/// The response packet for a handler outcome (`Err(())`: the handler panicked).
fn response_packet(
    sh: &Shared,
    channel: u64,
    tag: u64,
    rq_type: u64,
    result: Result<Result<Reply, HandlerError>, ()>,
) -> Packet {
    match result {
        Ok(Ok(reply)) => {
            let (flags, payload) = reply.into_parts();
            match Packet::response(channel, tag, true, flags, payload) {
                Ok(p)
                    if p.encoded_len().map(|l| l.0).unwrap_or(usize::MAX) <= sh.cfg.max_packet =>
                {
                    p
                }
                Ok(_) => {
                    sh.stats.handler_errors.fetch_add(1, Relaxed);
                    tracing::warn!(conn = %sh.cfg.name, channel, tag, rq_type, "handler response exceeds max_packet");
                    Packet::failure(channel, tag, reasons::EXCEPTION)
                }
                Err(e) => {
                    sh.stats.handler_errors.fetch_add(1, Relaxed);
                    tracing::warn!(conn = %sh.cfg.name, channel, tag, rq_type, error = %e, "handler response cannot be encoded");
                    Packet::failure(channel, tag, reasons::EXCEPTION)
                }
            }
        }
        Ok(Err(e)) => {
            sh.stats.handler_errors.fetch_add(1, Relaxed);
            tracing::debug!(conn = %sh.cfg.name, channel, tag, rq_type, error = %e, "handler failed");
            Packet::failure(channel, tag, reasons::EXCEPTION)
        }
        Err(()) => {
            sh.stats.handler_errors.fetch_add(1, Relaxed);
            tracing::error!(conn = %sh.cfg.name, channel, tag, rq_type, "handler panicked");
            Packet::failure(channel, tag, reasons::EXCEPTION)
        }
    }
}

/// Ends a request: queues its response unless a duplicate tag poisoned it.
async fn finish_request(sh: &Shared, channel: u64, tag: u64, packet: Packet) {
    let poisoned = lock(&sh.rx_tags).finish(channel, tag);
    if poisoned {
        // A duplicate of this tag was already answered with "tag already in use"; exactly one
        // response per (channel, tag) goes out.
        tracing::debug!(conn = %sh.cfg.name, channel, tag, "response suppressed after a duplicate tag");
        return;
    }
    sh.stats.responses_sent.fetch_add(1, Relaxed);
    // Only request in progress and nothing more received: answer directly.
    let solo = !sh.rx_more.load(Relaxed)
        && sh.handlers_queued.available_permits() + 1 >= sh.cfg.max_queued_requests;
    sh.send_now_or_queue(packet, solo).await;
}

/// Encoded packets waiting to be written: small packets are copied into `head`; a large
/// payload is referenced as its own chunk and written with a vectored write (no copy).
struct OutBuf {
    head: BytesMut,
    chunks: VecDeque<Bytes>,
    len: usize,
}

/// Payloads up to this size are copied into the coalescing buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// Largest payload written by the direct-write path.
const DIRECT_LIMIT: usize = 64 * 1024;
/// Stop collecting packets for one write beyond this many bytes.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

impl OutBuf {
    fn new() -> OutBuf {
        OutBuf {
            head: BytesMut::with_capacity(64 * 1024),
            chunks: VecDeque::new(),
            len: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0 && self.head.is_empty() && self.chunks.is_empty()
    }

    fn push(&mut self, p: &Packet, max_packet: usize) -> Result<(), EncodeError> {
        let before = self.head.len();
        p.encode_header(&mut self.head, max_packet)?;
        self.len += self.head.len() - before + p.payload.len();
        if p.payload.len() <= COPY_LIMIT {
            self.head.extend_from_slice(&p.payload);
        } else {
            self.chunks.push_back(self.head.split().freeze());
            self.chunks.push_back(p.payload.clone());
        }
        Ok(())
    }
}

/// The send side, shared by the writer task and the direct-write fast path (a request or
/// response sent while the connection is otherwise idle is written by the task that makes
/// it, saving a task switch). Only polled under the mutex, never awaited while locked; a
/// partial write leaves the rest in `out` for the writer task, so nothing is ever cut.
struct WriteState {
    w: Pin<Box<dyn AsyncWrite + Send>>,
    out: OutBuf,
    need_flush: bool,
    /// EOF queued: nothing more may be added.
    closed: bool,
    /// A write failed (the writer task reports it).
    error: Option<std::io::Error>,
    /// The writer task is waiting on the transport: its waker is registered there, and a
    /// direct write (polling with a no-op waker) would replace it.
    draining: bool,
}

impl WriteState {
    /// Writes `out` until it is empty and flushed, or until the writer is not ready
    /// (`Pending`, progress kept).
    fn poll_drain(&mut self, cx: &mut Context<'_>, stats: &Stats) -> Poll<std::io::Result<()>> {
        loop {
            if !self.out.head.is_empty() {
                let h = self.out.head.split().freeze();
                self.out.chunks.push_back(h);
            }
            if self.out.chunks.is_empty() {
                break;
            }
            let res = if self.out.chunks.len() > 1 && self.w.is_write_vectored() {
                let mut iov = [IoSlice::new(&[]); 64];
                let mut k = 0;
                for (slot, c) in iov.iter_mut().zip(self.out.chunks.iter()) {
                    *slot = IoSlice::new(c);
                    k += 1;
                }
                self.w.as_mut().poll_write_vectored(cx, &iov[..k])
            } else {
                match self.out.chunks.front() {
                    Some(c) => self.w.as_mut().poll_write(cx, c),
                    None => Poll::Ready(Ok(0)),
                }
            };
            let n = match res {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => n,
            };
            stats.bytes_sent.fetch_add(n as u64, Relaxed);
            let mut left = n;
            while left > 0 {
                let Some(front) = self.out.chunks.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.out.chunks.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        self.out.len = 0;
        if self.out.head.capacity() > 4 * WRITE_HIGH_WATER {
            self.out.head = BytesMut::new();
        }
        if self.need_flush {
            match self.w.as_mut().poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => self.need_flush = false,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Shared {
    /// Closes our write half now (tasks still holding `Shared` must not keep it open).
    fn drop_transport(&self) {
        let mut st = lock(&self.wstate);
        st.closed = true;
        st.out = OutBuf::new();
        st.w = Box::pin(tokio::io::sink());
    }

    /// Writes `p` from the calling task when nothing else is queued or being written; gives
    /// the packet back otherwise (the caller queues it).
    /// `held` is the number of queue slots the caller itself has reserved.
    fn try_direct(&self, p: Packet, held: usize) -> Result<(), Packet> {
        // Large payloads are bandwidth-bound: the writer task handles them.
        if !self.cfg.direct_writes
            || p.payload.len() > DIRECT_LIMIT
            || self.tx.capacity() + held != self.tx.max_capacity()
        {
            return Err(p);
        }
        let Ok(mut st) = self.wstate.try_lock() else {
            return Err(p);
        };
        if st.closed || st.error.is_some() || st.draining || st.need_flush || !st.out.is_empty() {
            return Err(p);
        }
        if st.out.push(&p, self.cfg.max_packet).is_err() {
            return Err(p);
        }
        st.need_flush = true;
        self.stats.direct_writes.fetch_add(1, Relaxed);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match st.poll_drain(&mut cx, &self.stats) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => {
                drop(st);
                self.kick.notify_one();
            }
            Poll::Ready(Err(e)) => {
                st.error = Some(e);
                drop(st);
                self.kick.notify_one();
            }
        }
        Ok(())
    }

    /// Sends `p` directly when `solo` (nothing else in flight) and possible, else queues it.
    async fn send_now_or_queue(&self, p: Packet, solo: bool) {
        let p = if solo {
            match self.try_direct(p, 0) {
                Ok(()) => return,
                Err(p) => p,
            }
        } else {
            p
        };
        self.queue(p).await;
    }
}

async fn drain_out(sh: &Shared) -> std::io::Result<()> {
    std::future::poll_fn(|cx| {
        let mut st = lock(&sh.wstate);
        if let Some(e) = st.error.take() {
            st.draining = false;
            return Poll::Ready(Err(e));
        }
        let r = st.poll_drain(cx, &sh.stats);
        st.draining = r.is_pending();
        r
    })
    .await
}

async fn write_loop(sh: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>) -> std::io::Result<()> {
    let mut finish = false;
    let res = write_packets(&sh, &mut rx, &mut finish).await;
    if let Err(e) = &res {
        tracing::warn!(conn = %sh.cfg.name, error = %e, "send side failed");
        {
            let mut st = lock(&sh.wstate);
            st.closed = true;
            st.error = None;
        }
        sh.fail_all(CloseReason::Io(e.to_string()));
        // Keep draining until Finish (unless already seen) so nobody waits on a full queue.
        while let Some(m) = if finish { None } else { rx.recv().await } {
            if matches!(m, Outgoing::Finish) {
                break;
            }
            sh.stats.dropped_packets.fetch_add(1, Relaxed);
        }
        return res;
    }
    let _ = std::future::poll_fn(|cx| lock(&sh.wstate).w.as_mut().poll_shutdown(cx)).await;
    res
}

async fn write_packets(
    sh: &Shared,
    rx: &mut mpsc::Receiver<Outgoing>,
    finish: &mut bool,
) -> std::io::Result<()> {
    let max = sh.cfg.max_packet;
    let grace = sh.cfg.packet_grace;
    let take = |m: Outgoing, out: &mut OutBuf, finish: &mut bool| match m {
        Outgoing::Packet(p) => {
            if let Err(e) = out.push(&p, max) {
                // Unreachable for packets built by this crate (checked when made).
                sh.stats.dropped_packets.fetch_add(1, Relaxed);
                tracing::error!(conn = %sh.cfg.name, error = %e, "packet dropped: cannot encode");
            }
        }
        Outgoing::Finish => *finish = true,
    };
    let collect = |rx: &mut mpsc::Receiver<Outgoing>, finish: &mut bool| {
        let mut st = lock(&sh.wstate);
        while !*finish && st.out.len < WRITE_HIGH_WATER {
            match rx.try_recv() {
                Ok(m) => take(m, &mut st.out, finish),
                Err(_) => break,
            }
        }
        st.need_flush = true;
    };
    while !*finish {
        tokio::select! {
            biased;
            m = rx.recv() => {
                match m {
                    Some(m) => take(m, &mut lock(&sh.wstate).out, finish),
                    None => *finish = true,
                }
            }
            // the direct path left a partial write (or an error) for us
            _ = sh.kick.notified() => {}
        }
        loop {
            collect(rx, finish);
            if grace.is_zero() || *finish || lock(&sh.wstate).out.len >= WRITE_HIGH_WATER {
                break;
            }
            // packet_grace: give more packets a moment to arrive before writing.
            tokio::time::sleep(grace).await;
            if rx.is_empty() {
                break;
            }
        }
        drain_out(sh).await?;
    }
    {
        let mut st = lock(&sh.wstate);
        st.closed = true;
        Packet::eof()
            .encode_header(&mut st.out.head, max)
            .map_err(std::io::Error::other)?;
        st.out.len += 4;
        st.need_flush = true;
    }
    drain_out(sh).await
}
