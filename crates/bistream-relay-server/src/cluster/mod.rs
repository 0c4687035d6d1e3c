//! Relay clustering: several relay processes act as one relay, with Redis as the backplane
//! (registrations as keys with a TTL, cross-node messages over pub/sub). See `docs/cluster.md`.
//!
//! The rest of the server sees a narrow interface, reached through the registry:
//! * a registration is claimed cluster-wide ([`Cluster::claim`]): the UUID may be refused
//!   (another user holds it) or taken from another node (whose socket then closes 4004);
//! * a connection that ends releases its claim ([`Cluster::release`]);
//! * a forward whose target is not on this node goes to [`Cluster::forward`], which queues it
//!   for the publisher task; bounces come back into the sender's own queue.
//!
//! Everything that talks to Redis runs in the tasks of [`backplane`]: the supervisor (one
//! subscriber connection, reconnects, inbound messages), the [`publisher`] (pipelined
//! forwards, in order, on cached routes) and the heartbeat (refreshes and re-publishes this
//! node's registrations).

mod backplane;
pub mod config;
mod link;
mod publisher;
mod resp;
mod stats;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use bistream_relay_proto::{
    cluster_overloaded_error, cluster_unavailable_error, RelayMessage,
    DUPLICATE_REGISTRATION_REASON,
};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::auth::User;
use crate::conn::Shared;
use crate::registry::{ForwardOutcome, Registry};

pub use config::{ClusterConfig, ClusterSection};
pub(crate) use stats::ClusterStats;

/// Cross-node forwards waiting for the publisher; beyond this they bounce (counted).
const JOB_QUEUE: usize = 64 * 1024;

/// A registration this process holds (or will publish once Redis is back).
#[derive(Debug, Clone)]
struct Owned {
    user: User,
    conn: u64,
    /// Claimed in Redis (else the heartbeat claims it: registered while Redis was down).
    published: bool,
}

/// A message for a client on another process.
#[derive(Debug)]
struct Fwd {
    target: Uuid,
    user: User,
    text: Utf8Bytes,
    /// The sender's process when it is not this one: the message reached this process for a
    /// client it no longer has and goes through the forward script again (bounces go back to
    /// `origin`).
    origin: Option<Box<str>>,
    /// Ask Redis where the target is (a cached route reached nobody).
    no_cache: bool,
}

/// Work for the publisher task, in arrival order.
#[derive(Debug)]
enum Job {
    Forward(Fwd),
    /// Publish a bounce to the sender's node.
    Bounce {
        channel: String,
        payload: Vec<u8>,
    },
    /// Delete our registration (if still ours).
    Release {
        key: String,
        value: String,
    },
}

/// One relay process's membership in a cluster.
pub(crate) struct Cluster {
    cfg: ClusterConfig,
    /// Unique per process (16 hex digits): names this process's channel and its registrations.
    instance: String,
    channel_prefix: String,
    jobs: mpsc::Sender<Job>,
    jobs_rx: Mutex<Option<mpsc::Receiver<Job>>>,
    /// The command connection while the backplane is up, with its generation (so a failure
    /// seen late on an old connection does not tear down its successor).
    conn: Mutex<Option<(u64, redis::aio::MultiplexedConnection)>>,
    /// The publisher's own connection of the current generation, until it takes it.
    publisher_link: Mutex<Option<(u64, link::Link)>>,
    up: AtomicBool,
    /// Why the backplane is down (shown in bounces), without credentials.
    cause: Mutex<String>,
    /// Wakes the supervisor when another task saw a connection fail...
    failed: Notify,
    /// ... of this generation (a late wake-up about an older one is ignored).
    failed_generation: AtomicU64,
    /// Wakes the heartbeat to re-publish everything at once (after a reconnect).
    republish: Notify,
    owned: Mutex<HashMap<Uuid, Owned>>,
    scripts: Scripts,
    pub(crate) stats: ClusterStats,
}

struct Scripts {
    forward: redis::Script,
    claim: redis::Script,
    release: redis::Script,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of plain data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the bounce of a forwarded message: the same message with `error` set, addressed
/// back to its sender (`source_uuid`, which the sender's node wrote).
pub(crate) fn bounce_of(text: &str, error: String) -> Option<(Uuid, Utf8Bytes)> {
    match RelayMessage::decode(text) {
        Ok(RelayMessage::PeerConnection(mut req)) => {
            req.error = Some(error);
            let sender = req.source_uuid;
            Some((sender, RelayMessage::PeerConnection(req).encode().into()))
        }
        _ => None,
    }
}

impl Cluster {
    fn new(cfg: ClusterConfig) -> Cluster {
        let (jobs, rx) = mpsc::channel(JOB_QUEUE);
        let instance = Uuid::new_v4().simple().to_string()[..16].to_string();
        Cluster {
            channel_prefix: wire::channel_prefix(cfg.db),
            cause: Mutex::new(format!("not connected yet to Redis at {}", cfg.endpoint)),
            cfg,
            instance,
            jobs,
            jobs_rx: Mutex::new(Some(rx)),
            conn: Mutex::new(None),
            publisher_link: Mutex::new(None),
            up: AtomicBool::new(false),
            failed: Notify::new(),
            failed_generation: AtomicU64::new(0),
            republish: Notify::new(),
            owned: Mutex::new(HashMap::new()),
            scripts: Scripts {
                forward: redis::Script::new(wire::FORWARD_LUA),
                claim: redis::Script::new(wire::CLAIM_LUA),
                release: redis::Script::new(wire::RELEASE_LUA),
            },
            stats: ClusterStats::default(),
        }
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    /// Whether Redis is reachable and this node is subscribed.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    fn own_channel(&self) -> String {
        format!("{}{}", self.channel_prefix, self.instance)
    }

    fn value(&self, conn: u64, user: &User) -> String {
        wire::registration_value(&self.instance, conn, &self.cfg.node_id, user.id())
    }

    fn connection(&self) -> Option<(u64, redis::aio::MultiplexedConnection)> {
        lock(&self.conn).clone()
    }

    /// The generation of the current connections (`None` while the backplane is down).
    fn generation(&self) -> Option<u64> {
        lock(&self.conn).as_ref().map(|(g, _)| *g)
    }

    /// The error text of a cross-node forward that cannot be attempted now.
    fn unavailable_error(&self, target: &Uuid) -> String {
        cluster_unavailable_error(target, &lock(&self.cause))
    }

    /// Called by another task whose Redis command on connection `generation` failed: the
    /// supervisor reconnects.
    fn command_failed(&self, generation: u64, e: &redis::RedisError) {
        ClusterStats::inc(&self.stats.redis_errors);
        let current = lock(&self.conn).as_ref().map(|(g, _)| *g);
        if self.up.load(Relaxed) && current == Some(generation) {
            *lock(&self.cause) = format!("Redis at {}: {e}", self.cfg.endpoint);
            self.failed_generation.store(generation, Relaxed);
            self.failed.notify_one();
        }
    }

    /// Claims `uuid` for `conn` cluster-wide. `false`: another user holds it (refuse 4002).
    /// With Redis unreachable the registration is kept locally and published on recovery.
    pub(crate) async fn claim(&self, uuid: Uuid, user: &User, conn: u64) -> bool {
        let mut published = false;
        if let Some((generation, mut c)) = self.connection() {
            let res = tokio::time::timeout(
                self.cfg.redis_timeout,
                self.scripts
                    .claim
                    .key(wire::client_key(&uuid))
                    .arg(self.value(conn, user))
                    .arg(self.cfg.registration_ttl.as_millis() as u64)
                    .arg(user.id())
                    .arg(&self.channel_prefix)
                    .arg(uuid.to_string())
                    .arg("claim")
                    .invoke_async::<i64>(&mut c),
            )
            .await;
            match res {
                Ok(Ok(0)) => {
                    ClusterStats::inc(&self.stats.claims_refused);
                    return false;
                }
                Ok(Ok(_)) => {
                    ClusterStats::inc(&self.stats.claims);
                    published = true;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%uuid, error = %e, "cluster claim failed: kept locally, published on recovery");
                    self.command_failed(generation, &e);
                    ClusterStats::inc(&self.stats.claims_deferred);
                }
                Err(_) => {
                    tracing::debug!(%uuid, "cluster claim timed out: kept locally, published on recovery");
                    ClusterStats::inc(&self.stats.claims_deferred);
                }
            }
        } else {
            ClusterStats::inc(&self.stats.claims_deferred);
        }
        lock(&self.owned).insert(
            uuid,
            Owned {
                user: user.clone(),
                conn,
                published,
            },
        );
        true
    }

    /// The connection `conn` no longer holds `uuid` on this node: drop the claim.
    pub(crate) fn release(&self, uuid: &Uuid, conn: u64) {
        let owned = {
            let mut owned = lock(&self.owned);
            match owned.get(uuid) {
                Some(o) if o.conn == conn => owned.remove(uuid),
                _ => None,
            }
        };
        let Some(o) = owned else { return };
        if !self.is_up() {
            // Not published or soon expired: nothing to delete.
            return;
        }
        let job = Job::Release {
            key: wire::client_key(uuid),
            value: self.value(conn, &o.user),
        };
        if self.jobs.try_send(job).is_err() {
            // The entry expires with its TTL instead.
            ClusterStats::inc(&self.stats.jobs_dropped);
        }
    }

    /// Forwards `text` to a target that is not registered on this node. The outcome is
    /// always `Queued`: a bounce reaches the sender later, through its own queue.
    pub(crate) fn forward(
        &self,
        registry: &Registry,
        target: &Uuid,
        user: &User,
        text: Utf8Bytes,
        queue_bytes_limit: usize,
    ) -> ForwardOutcome {
        let (text, error) = if self.is_up() {
            let job = Job::Forward(Fwd {
                target: *target,
                user: user.clone(),
                text,
                origin: None,
                no_cache: false,
            });
            match self.jobs.try_send(job) {
                Ok(()) => return ForwardOutcome::Queued,
                Err(e) => {
                    ClusterStats::inc(&self.stats.jobs_dropped);
                    match e.into_inner() {
                        Job::Forward(f) => (f.text, cluster_overloaded_error(target)),
                        _ => return ForwardOutcome::Queued,
                    }
                }
            }
        } else {
            ClusterStats::inc(&self.stats.bounced_down);
            (text, self.unavailable_error(target))
        };
        self.bounce_local(registry, user, &text, error, queue_bytes_limit);
        ForwardOutcome::Queued
    }

    /// Puts the bounce of `text` into its sender's queue on this node.
    fn bounce_local(
        &self,
        registry: &Registry,
        user: &User,
        text: &str,
        error: String,
        queue_bytes_limit: usize,
    ) {
        let Some((sender, bounce)) = bounce_of(text, error) else {
            ClusterStats::inc(&self.stats.inbound_dropped);
            return;
        };
        if registry.forward_local(&sender, user, bounce, queue_bytes_limit)
            != ForwardOutcome::Queued
        {
            // The sender left (or stopped reading) in the meantime.
            ClusterStats::inc(&self.stats.inbound_dropped);
        }
    }

    /// Records that the heartbeat claimed a registration made while Redis was down.
    fn mark_published(&self, uuid: &Uuid, conn: u64) {
        ClusterStats::inc(&self.stats.republished);
        if let Some(o) = lock(&self.owned).get_mut(uuid).filter(|o| o.conn == conn) {
            o.published = true;
        }
    }

    /// Closes the local connection `conn` for `uuid` (4004) after it lost the UUID.
    fn evict(&self, registry: &Registry, uuid: &Uuid, conn: u64) -> bool {
        {
            let mut owned = lock(&self.owned);
            if owned.get(uuid).is_some_and(|o| o.conn == conn) {
                owned.remove(uuid);
            }
        }
        registry.evict(uuid, conn, DUPLICATE_REGISTRATION_REASON)
    }
}

/// Appends the cluster's figures (if clustering is on) to the relay's rendered metrics.
pub(crate) fn render_metrics(shared: &Shared, mut out: String) -> String {
    if let Some(c) = shared.registry.cluster() {
        c.stats.owned.store(lock(&c.owned).len() as i64, Relaxed);
        c.stats.render(c.node_id(), &mut out);
    }
    out
}

/// Starts clustering for a server: attaches the backplane to the registry and spawns its
/// tasks (they end after the server's hard stop).
pub(crate) fn start(shared: &Arc<Shared>, cfg: ClusterConfig) -> Vec<tokio::task::JoinHandle<()>> {
    let cluster = Arc::new(Cluster::new(cfg));
    tracing::info!(
        node = %cluster.cfg.node_id,
        instance = %cluster.instance,
        redis = %cluster.cfg.redacted_url(),
        "relay cluster node starting"
    );
    shared.registry.set_cluster(cluster.clone());
    backplane::spawn(shared.clone(), cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounces_carry_the_error_and_go_back_to_the_sender() {
        let s = Uuid::new_v4();
        let p = Uuid::new_v4();
        let text = format!("{{\"message_type\":\"peer_connection\",\"source_uuid\":\"{s}\",\"source_name\":\"n\",\"peer_uuid\":\"{p}\",\"description_type\":\"offer\",\"description\":\"é\",\"error\":null}}");
        let (sender, b) = bounce_of(&text, "boom".into()).unwrap();
        assert_eq!(sender, s);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["error"], "boom");
        assert_eq!(v["description"], "é");
        assert!(bounce_of("{}", "x".into()).is_none());
    }
}
