//! [`PacketConnection`]: a cs.packetstream connection over any `AsyncRead` + `AsyncWrite` pair.
//!
//! Per connection: one reader task (decodes packets from a `BytesMut` without copying
//! payloads, completes our pending requests, dispatches the peer's requests), one writer task
//! (drains a bounded queue and coalesces everything queued into one vectored write), one task
//! per running handler (bounded), and a driver task that runs the shutdown sequence of the
//! original: ERQ, drain local handlers, EOF, wait for the peer's EOF.

mod config;
mod dispatch;
mod reader;
mod rx_tags;
mod shared;
mod writer;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};

use bistream_core::logsafe::LogLimiter;
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

pub use config::{reasons, Config, Response, Stats};
pub use rx_tags::TAG_WINDOW;

use crate::codec::Packet;
use crate::error::{CloseReason, EncodeError, HandlerError, PacketError};
use crate::handler::RequestHandler;
use reader::read_loop;
use rx_tags::RxTags;

/// Lines a peer can cause per packet (unknown responses, reused tags) pass one process-wide
/// rate limit, so a flood of such packets cannot flood the log; each is counted in
/// [`Stats`] whether or not its line is written.
static PEER_LOG: LazyLock<LogLimiter> = LazyLock::new(|| {
    LogLimiter::new("packet")
        .counted_in("the connection's Stats (unknown_responses, duplicate_tags)")
});
use shared::{drive, lock, Outgoing, PendingEntry, SendCharge, Shared, State, TagMap};
use writer::{write_loop, OutBuf, WriteState};

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
            send_bytes: Semaphore::new(cfg.send_buffer),
            rx_bytes: Arc::new(Semaphore::new(cfg.max_queued_request_bytes)),
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

    /// Bytes queued for sending and not yet written (at most about
    /// [`Config::send_buffer`]).
    pub fn queued_send_bytes(&self) -> usize {
        self.shared().queued_send_bytes()
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
        // Send budget, then the queue slot (reserved before the tag so that tag order and
        // queue order agree).
        let charge = sh.charge_of(&packet);
        if !sh.charge(charge).await {
            return Err(closed());
        }
        let charge = SendCharge::new(&sh.send_bytes, charge);
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
                // `charge` is given back on drop: the packet is written (or left, at most
                // 64 KiB, in the output buffer).
                Ok(()) => return Ok(ResponseFuture { rx }),
                Err(p) => packet = p,
            }
        }
        slot.send(Outgoing::Packet(packet, charge.keep()));
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
