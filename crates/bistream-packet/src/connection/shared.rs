//! The state shared by a connection's tasks ([`Shared`]): pending requests, the send queue,
//! shutdown signals; and [`drive`], the phase-by-phase shutdown sequence.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::config::{Config, Response, Stats};
use super::rx_tags::RxTags;
use super::writer::WriteState;
use crate::codec::Packet;
use crate::error::{CloseReason, PacketError};
use crate::handler::RequestHandler;

/// A cheap hasher for `(channel, tag)` keys; the maps it serves are bounded, so hash flooding
/// can only slow a bounded map.
#[derive(Default, Clone, Copy)]
pub(super) struct TagHasher(u64);

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

pub(super) type TagMap<V> = HashMap<(u64, u64), V, BuildHasherDefault<TagHasher>>;

pub(super) struct PendingEntry {
    pub(super) tx: oneshot::Sender<Result<Response, PacketError>>,
    pub(super) _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) pending: TagMap<PendingEntry>,
    pub(super) next_tag: HashMap<u64, u64>,
    /// Set once: why the connection can no longer complete requests.
    pub(super) dead: Option<CloseReason>,
    /// Local close started: no new submits.
    pub(super) no_submits: bool,
}

pub(super) enum Outgoing {
    /// A packet and the bytes of [`Shared::send_bytes`] charged for it (given back once
    /// written).
    Packet(Packet, usize),
    /// Write EOF after everything queued before this, then stop.
    Finish,
}

pub(super) struct Shared {
    pub(super) cfg: Config,
    pub(super) tx: mpsc::Sender<Outgoing>,
    pub(super) state: Mutex<State>,
    pub(super) rx_tags: Mutex<RxTags>,
    pub(super) handler: Option<Arc<dyn RequestHandler>>,
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) handlers_running: Arc<Semaphore>,
    pub(super) handlers_queued: Arc<Semaphore>,
    /// Byte budget of the send side ([`Config::send_buffer`]): taken when a packet is queued,
    /// given back once it is written. Closed when the writer stops.
    pub(super) send_bytes: Semaphore,
    /// Byte budget of accepted peer requests ([`Config::max_queued_request_bytes`]).
    pub(super) rx_bytes: Arc<Semaphore>,
    /// Local close requested (by `close`, by the last handle dropping, or by a transport end).
    pub(super) close_req: watch::Sender<bool>,
    /// Hard stop requested: skip the graceful steps.
    pub(super) abort_req: watch::Sender<bool>,
    /// The reader holds more received bytes than the packet it is handling.
    pub(super) rx_more: std::sync::atomic::AtomicBool,
    /// The send side (see [`WriteState`]) and the writer task's wake-up for direct writes.
    pub(super) wstate: Mutex<WriteState>,
    pub(super) kick: Notify,
    /// The reader and writer tasks, for `abort`.
    pub(super) tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set by the driver once everything has stopped.
    pub(super) done: watch::Sender<Option<CloseReason>>,
    pub(super) pending_empty: Notify,
    /// The peer sent ERQ.
    pub(super) peer_erq: std::sync::atomic::AtomicBool,
    /// We are past the point of accepting new peer requests.
    pub(super) reject_incoming: std::sync::atomic::AtomicBool,
    pub(super) stats: Stats,
}

/// Send budget taken by a task that may still give up before queuing: given back on drop
/// unless [`SendCharge::keep`] hands it to the queued packet.
pub(super) struct SendCharge<'a> {
    sem: &'a Semaphore,
    n: usize,
}

impl<'a> SendCharge<'a> {
    pub(super) fn new(sem: &'a Semaphore, n: usize) -> Self {
        SendCharge { sem, n }
    }
    /// The charge now travels with the packet.
    pub(super) fn keep(mut self) -> usize {
        std::mem::take(&mut self.n)
    }
}

impl Drop for SendCharge<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.sem.add_permits(self.n);
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent in a way that matters
    // more than stopping the connection would; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Marks the connection dead (first reason wins), fails every pending request, asks the
    /// driver to shut down.
    pub(super) fn fail_all(&self, reason: CloseReason) {
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

    /// The send budget charged for `p`: its wire size, capped at the whole budget so that a
    /// packet larger than [`Config::send_buffer`] can still go (alone).
    pub(super) fn charge_of(&self, p: &Packet) -> usize {
        // The header is at most 4 varints of 10 bytes; an estimate is fine, the same number
        // is given back.
        (p.payload.len() + 40).min(self.cfg.send_buffer)
    }

    /// Takes `n` bytes of the send budget; false when the send side has stopped.
    pub(super) async fn charge(&self, n: usize) -> bool {
        // n <= send_buffer <= 2^30 (see Config::clamp), so it fits in u32.
        match self.send_bytes.try_acquire_many(n as u32) {
            Ok(p) => {
                p.forget();
                return true;
            }
            Err(tokio::sync::TryAcquireError::Closed) => return false,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.stats.send_waits.fetch_add(1, Relaxed);
            }
        }
        match self.send_bytes.acquire_many(n as u32).await {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Queues `p` for the writer, waiting for send budget and queue room (backpressure).
    pub(super) async fn queue(&self, p: Packet) {
        let n = self.charge_of(&p);
        if !self.charge(n).await {
            self.stats.dropped_packets.fetch_add(1, Relaxed);
            tracing::debug!(conn = %self.cfg.name, "packet not queued: the send side has stopped");
            return;
        }
        if self.tx.send(Outgoing::Packet(p, n)).await.is_err() {
            self.send_bytes.add_permits(n);
            self.stats.dropped_packets.fetch_add(1, Relaxed);
            tracing::debug!(conn = %self.cfg.name, "packet not queued: the sender has finished");
        }
    }

    /// Bytes queued for sending and not yet written.
    pub(super) fn queued_send_bytes(&self) -> usize {
        if self.send_bytes.is_closed() {
            return 0;
        }
        self.cfg
            .send_buffer
            .saturating_sub(self.send_bytes.available_permits())
    }

    pub(super) async fn reject(&self, channel: u64, tag: u64, reason: &str) {
        self.stats.requests_rejected.fetch_add(1, Relaxed);
        tracing::debug!(conn = %self.cfg.name, channel, tag, reason, "rejecting request");
        self.queue(Packet::failure(channel, tag, reason)).await;
    }

    pub(super) async fn wait_pending_empty(&self) {
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

/// Phase by phase shutdown; see [`PacketConnection::close`].
pub(super) async fn drive(
    sh: Arc<Shared>,
    mut reader: JoinHandle<()>,
    writer: JoinHandle<Result<(), CloseReason>>,
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
    if let Ok(Err(r)) = &write_res {
        sh.fail_all(r.clone());
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
