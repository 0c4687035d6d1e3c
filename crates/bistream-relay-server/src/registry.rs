//! The registry of registered clients: `uuid → (user, connection)`, sharded by UUID so that
//! forwards to different targets rarely contend.
//!
//! Every change happens under the target shard's lock, which makes the three races of a relay
//! safe: a takeover (same user, same UUID, new socket) replaces the entry and tells the old
//! socket to close 4004; a connection that ends removes its entry only if the entry is still its
//! own; and a forward either finds the entry and queues into it, or does not find it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bistream_relay_proto::{CloseCode, DUPLICATE_REGISTRATION_REASON, SEND_QUEUE_FULL_REASON};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::auth::User;
use crate::cluster::Cluster;

const SHARDS: usize = 32;

/// A close request from elsewhere in the server (takeover, full queue), delivered to the
/// connection's task. The first request wins. Also tells a takeover when the old connection
/// has finished closing.
#[derive(Debug)]
pub(crate) struct Control {
    close: OnceLock<(CloseCode, &'static str)>,
    notify: Notify,
    finished: AtomicBool,
    finished_notify: Notify,
    /// Bytes currently waiting in the send queue.
    pub(crate) queued_bytes: AtomicUsize,
}

impl Control {
    pub(crate) fn new() -> Control {
        Control {
            close: OnceLock::new(),
            notify: Notify::new(),
            finished: AtomicBool::new(false),
            finished_notify: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
        }
    }

    /// Asks the connection to close with `code`/`reason` (no-op if already asked).
    pub(crate) fn request_close(&self, code: CloseCode, reason: &'static str) {
        if self.close.set((code, reason)).is_ok() {
            self.notify.notify_one();
        }
    }

    pub(crate) fn close_request(&self) -> Option<(CloseCode, &'static str)> {
        self.close.get().copied()
    }

    pub(crate) async fn closed(&self) {
        self.notify.notified().await
    }

    /// Marks the connection as done: its closing handshake is over (or failed) and its
    /// task is ending.
    pub(crate) fn mark_finished(&self) {
        self.finished.store(true, Ordering::Release);
        self.finished_notify.notify_waiters();
    }

    /// Waits until [`Control::mark_finished`] was called.
    pub(crate) async fn finished(&self) {
        loop {
            let wait = self.finished_notify.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            if self.finished.load(Ordering::Acquire) {
                return;
            }
            wait.await;
        }
    }
}

/// What the rest of the server can do to a registered connection.
#[derive(Debug, Clone)]
pub(crate) struct PeerHandle {
    pub(crate) conn_id: u64,
    pub(crate) tx: mpsc::Sender<Utf8Bytes>,
    pub(crate) ctl: Arc<Control>,
}

#[derive(Debug)]
struct Entry {
    user: User,
    name: Arc<str>,
    peer: PeerHandle,
}

/// Outcome of a registration attempt.
#[derive(Debug)]
pub(crate) enum RegisterOutcome {
    /// Registered; `replaced` is the other connection that held the UUID (now told to close).
    Registered { replaced: Option<Arc<Control>> },
    /// The UUID belongs to another user.
    OwnedByOtherUser,
}

/// Outcome of a forward.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ForwardOutcome {
    Queued,
    UnknownPeer,
    OtherUser,
    /// The target's queue was full: it was told to close, the message was not delivered.
    QueueFull,
}

pub(crate) struct Registry {
    shards: Vec<Mutex<HashMap<Uuid, Entry>>>,
    len: AtomicUsize,
    /// The cluster backplane, when clustering is on: consulted on unregister and on a forward
    /// whose target is not on this node.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            len: AtomicUsize::new(0),
            cluster: OnceLock::new(),
        }
    }

    /// Attaches the cluster backplane (once, before the server accepts connections).
    pub(crate) fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster backplane, if clustering is on.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    fn shard(&self, uuid: &Uuid) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // UUIDs are random (v4) in practice; fold all bytes anyway so crafted ones still spread.
        let v = uuid.as_u128();
        let h = (v ^ (v >> 64)) as u64;
        let h = h ^ (h >> 32) ^ (h >> 17);
        let i = (h as usize) % SHARDS;
        // A poisoned shard only means another task panicked mid-update of a plain map.
        match self.shards.get(i).unwrap_or(&self.shards[0]).lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Number of registered clients.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn register(
        &self,
        uuid: Uuid,
        name: Arc<str>,
        user: &User,
        peer: &PeerHandle,
    ) -> RegisterOutcome {
        let mut shard = self.shard(&uuid);
        let old = match shard.get(&uuid) {
            Some(e) if e.user != *user => return RegisterOutcome::OwnedByOtherUser,
            Some(e) if e.peer.conn_id != peer.conn_id => Some(e.peer.ctl.clone()),
            Some(_) => None,
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        shard.insert(
            uuid,
            Entry {
                user: user.clone(),
                name,
                peer: peer.clone(),
            },
        );
        drop(shard);
        if let Some(ctl) = &old {
            ctl.request_close(
                CloseCode::DuplicateRegistration,
                DUPLICATE_REGISTRATION_REASON,
            );
        }
        RegisterOutcome::Registered { replaced: old }
    }

    /// Removes `uuid` if it is still registered by connection `conn_id`.
    pub(crate) fn unregister(&self, uuid: &Uuid, conn_id: u64) -> bool {
        let mut shard = self.shard(uuid);
        if shard.get(uuid).is_some_and(|e| e.peer.conn_id == conn_id) {
            shard.remove(uuid);
            self.len.fetch_sub(1, Ordering::Relaxed);
            drop(shard);
            if let Some(c) = self.cluster.get() {
                c.release(uuid, conn_id);
            }
            true
        } else {
            false
        }
    }

    /// Closes connection `conn_id` with 4004 and `reason` and drops its entry, if it still
    /// holds `uuid` (the cluster moved the UUID to another node).
    pub(crate) fn evict(&self, uuid: &Uuid, conn_id: u64, reason: &'static str) -> bool {
        let mut shard = self.shard(uuid);
        match shard.get(uuid) {
            Some(e) if e.peer.conn_id == conn_id => {
                e.peer
                    .ctl
                    .request_close(CloseCode::DuplicateRegistration, reason);
                shard.remove(uuid);
                self.len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Queues `text` for `target` if it belongs to `user`; a target not on this node goes to
    /// the cluster backplane when there is one.
    pub(crate) fn forward(
        &self,
        target: &Uuid,
        user: &User,
        text: Utf8Bytes,
        queue_bytes_limit: usize,
    ) -> ForwardOutcome {
        if let Some(c) = self.cluster.get() {
            // The shard lock is released before the backplane runs (a bounce may lock again).
            let here = self.shard(target).contains_key(target);
            if !here {
                return c.forward(self, target, user, text, queue_bytes_limit);
            }
        }
        self.forward_local(target, user, text, queue_bytes_limit)
    }

    /// Queues `text` (`bytes` long) for `target` on this node if it belongs to `user`.
    pub(crate) fn forward_local(
        &self,
        target: &Uuid,
        user: &User,
        text: Utf8Bytes,
        queue_bytes_limit: usize,
    ) -> ForwardOutcome {
        let shard = self.shard(target);
        let Some(entry) = shard.get(target) else {
            return ForwardOutcome::UnknownPeer;
        };
        if entry.user != *user {
            return ForwardOutcome::OtherUser;
        }
        let len = text.len();
        let ctl = &entry.peer.ctl;
        let before = ctl.queued_bytes.fetch_add(len, Ordering::Relaxed);
        // One message may always be queued into an empty queue, whatever its size.
        if before > 0 && before + len > queue_bytes_limit {
            ctl.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            ctl.request_close(CloseCode::Policy, SEND_QUEUE_FULL_REASON);
            return ForwardOutcome::QueueFull;
        }
        match entry.peer.tx.try_send(text) {
            Ok(()) => ForwardOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                ctl.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                ctl.request_close(CloseCode::Policy, SEND_QUEUE_FULL_REASON);
                ForwardOutcome::QueueFull
            }
            // The target's task is ending and will remove the entry: as good as unknown.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ctl.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                ForwardOutcome::UnknownPeer
            }
        }
    }

    /// Up to `limit` registered clients as `(uuid, name, user)`, for the periodic log.
    pub(crate) fn sample(&self, limit: usize) -> Vec<(Uuid, Arc<str>, User)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = match shard.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for (uuid, e) in shard.iter() {
                if out.len() >= limit {
                    return out;
                }
                out.push((*uuid, e.name.clone(), e.user.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, cap: usize) -> (PeerHandle, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(cap);
        (
            PeerHandle {
                conn_id: id,
                tx,
                ctl: Arc::new(Control::new()),
            },
            rx,
        )
    }

    #[test]
    fn takeover_and_ownership() {
        let r = Registry::new();
        let u = Uuid::new_v4();
        let alice = User::new("alice");
        let (p1, _rx1) = peer(1, 4);
        let (p2, _rx2) = peer(2, 4);
        assert!(matches!(
            r.register(u, "a".into(), &alice, &p1),
            RegisterOutcome::Registered { replaced: None }
        ));
        assert!(matches!(
            r.register(u, "a".into(), &User::new("bob"), &p2),
            RegisterOutcome::OwnedByOtherUser
        ));
        assert!(p1.ctl.close_request().is_none());
        assert!(matches!(
            r.register(u, "a".into(), &alice, &p2),
            RegisterOutcome::Registered { replaced: Some(_) }
        ));
        assert_eq!(
            p1.ctl.close_request().map(|c| c.0),
            Some(CloseCode::DuplicateRegistration)
        );
        assert_eq!(r.len(), 1);
        // The old connection ending must not remove the new registration.
        assert!(!r.unregister(&u, 1));
        assert_eq!(r.len(), 1);
        assert!(r.unregister(&u, 2));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn forward_outcomes_and_queue_bounds() {
        let r = Registry::new();
        let u = Uuid::new_v4();
        let alice = User::new("alice");
        let (p, mut rx) = peer(1, 2);
        r.register(u, "a".into(), &alice, &p);
        assert_eq!(
            r.forward(&Uuid::new_v4(), &alice, "x".into(), 100),
            ForwardOutcome::UnknownPeer
        );
        assert_eq!(
            r.forward(&u, &User::new("bob"), "x".into(), 100),
            ForwardOutcome::OtherUser
        );
        assert_eq!(
            r.forward(&u, &alice, "x".into(), 100),
            ForwardOutcome::Queued
        );
        assert_eq!(
            r.forward(&u, &alice, "y".into(), 100),
            ForwardOutcome::Queued
        );
        assert_eq!(
            r.forward(&u, &alice, "z".into(), 100),
            ForwardOutcome::QueueFull
        );
        assert_eq!(p.ctl.close_request().map(|c| c.0), Some(CloseCode::Policy));
        assert_eq!(rx.try_recv().unwrap(), "x");

        // Byte budget: one large message fits an empty queue, a second one does not.
        let u2 = Uuid::new_v4();
        let (p2, _rx2) = peer(2, 10);
        r.register(u2, "b".into(), &alice, &p2);
        let big: Utf8Bytes = "x".repeat(150).into();
        assert_eq!(
            r.forward(&u2, &alice, big.clone(), 100),
            ForwardOutcome::Queued
        );
        assert_eq!(r.forward(&u2, &alice, big, 100), ForwardOutcome::QueueFull);
    }
}

#[cfg(test)]
mod control_tests {
    use super::*;

    #[tokio::test]
    async fn finished_wakes_waiters_before_and_after() {
        let c = Arc::new(Control::new());
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.finished().await }
        });
        tokio::task::yield_now().await;
        c.mark_finished();
        waiter.await.unwrap();
        // Already finished: returns at once.
        c.finished().await;
    }
}
