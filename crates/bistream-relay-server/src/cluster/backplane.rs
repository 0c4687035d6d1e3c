//! The three tasks that talk to Redis.
//!
//! * The supervisor owns the node's one subscriber connection: it (re)connects the three
//!   connections (commands, publisher, subscriber), loads the scripts, subscribes, delivers
//!   inbound messages into local queues as it reads them, and logs each up/down transition
//!   once.
//! * The publisher ([`super::publisher`]) drains the job queue onto its own connection, in
//!   order, without waiting for replies between batches.
//! * The heartbeat refreshes the TTL of every registration this node holds, re-publishes
//!   the missing ones (after a Redis restart or an expiry) and closes local sockets whose UUID
//!   was meanwhile taken elsewhere.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_proto::{not_reading_error, other_user_error, unknown_peer_error};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::link::Link;
use super::wire::{self, NodeMessage};
use super::{bounce_of, lock, Cluster, ClusterStats, Fwd, Job};
use crate::auth::User;
use crate::conn::Shared;
use crate::registry::ForwardOutcome;

/// Most registrations refreshed in one pipeline.
const HEARTBEAT_CHUNK: usize = 1000;
/// Reconnect delays: from the first to the last (the recovery target is 15 s).
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(super) fn spawn(shared: Arc<Shared>, c: Arc<Cluster>) -> Vec<tokio::task::JoinHandle<()>> {
    let rx = lock(&c.jobs_rx).take();
    let mut tasks = vec![
        tokio::spawn(supervise(shared.clone(), c.clone())),
        tokio::spawn(heartbeat(shared.clone(), c.clone())),
    ];
    if let Some(rx) = rx {
        tasks.push(tokio::spawn(super::publisher::run(shared, c, rx)));
    }
    tasks
}

/// The node's three connections: commands (claims, heartbeats), the publisher's, and the
/// subscriber (already subscribed to this process's channel).
async fn connect(c: &Cluster) -> Result<(MultiplexedConnection, Link, Link), redis::RedisError> {
    let t = c.cfg.redis_timeout;
    let client = redis::Client::open(c.cfg.url.as_str())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(t))
        .set_response_timeout(Some(t));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    for s in [&c.scripts.forward, &c.scripts.claim, &c.scripts.release] {
        s.prepare_invoke().load_async(&mut conn).await?;
    }
    let info = client.get_connection_info();
    let publisher = Link::open(info, t).await?;
    let mut subscriber = Link::open(info, t).await?;
    subscriber.subscribe(&c.own_channel(), t).await?;
    Ok((conn, publisher, subscriber))
}

fn set_down(c: &Cluster, cause: String, since: &mut Option<Instant>) {
    let was_up = c.up.swap(false, Relaxed);
    *lock(&c.conn) = None;
    *lock(&c.publisher_link) = None;
    if was_up {
        c.stats.up.store(0, Relaxed);
        ClusterStats::inc(&c.stats.down_transitions);
        tracing::error!(node = %c.cfg.node_id, cause = %cause, "relay cluster backplane lost: cross-node forwards bounce until Redis is back; same-node forwarding continues");
        *since = Some(Instant::now());
    } else if since.is_none() {
        // First failure at startup: also logged once.
        tracing::error!(node = %c.cfg.node_id, cause = %cause, "relay cluster backplane unreachable: serving same-node clients, retrying");
        *since = Some(Instant::now());
    }
    *lock(&c.cause) = cause;
}

async fn supervise(shared: Arc<Shared>, c: Arc<Cluster>) {
    let stop = shared.hard_stop.clone();
    let mut backoff = BACKOFF_MIN;
    let mut generation = 0u64;
    let mut down_since: Option<Instant> = None;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = connect(&c) => r,
        };
        let (conn, publisher, mut subscriber) = match attempt {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "Redis connection attempt failed");
                set_down(
                    &c,
                    format!("Redis at {}: {e}", c.cfg.endpoint),
                    &mut down_since,
                );
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        generation += 1;
        *lock(&c.publisher_link) = Some((generation, publisher));
        *lock(&c.conn) = Some((generation, conn));
        c.up.store(true, Relaxed);
        c.stats.up.store(1, Relaxed);
        ClusterStats::inc(&c.stats.connects);
        match down_since.take() {
            Some(t) => {
                tracing::info!(node = %c.cfg.node_id, redis = %c.cfg.redacted_url(), down_for = ?t.elapsed(), "relay cluster backplane restored: re-publishing registrations")
            }
            None => {
                tracing::info!(node = %c.cfg.node_id, redis = %c.cfg.redacted_url(), "relay cluster backplane connected")
            }
        }
        c.republish.notify_one();
        // Created once per connection, not per read: each would register a waiter anew.
        let cancelled = stop.cancelled();
        let failed = c.failed.notified();
        tokio::pin!(cancelled, failed);
        let mut payloads = Vec::new();
        let cause = loop {
            tokio::select! {
                _ = &mut cancelled => return,
                // A wake-up left over from the previous connections is not about these.
                _ = &mut failed => {
                    if c.failed_generation.load(Relaxed) == generation {
                        break lock(&c.cause).clone();
                    }
                    failed.set(c.failed.notified());
                }
                r = subscriber.fill() => {
                    if let Err(e) = r.and_then(|()| deliver_pushes(&shared, &c, &mut subscriber, &mut payloads)) {
                        break format!("Redis at {}: subscriber connection: {e}", c.cfg.endpoint);
                    }
                }
            }
        };
        set_down(&c, cause, &mut down_since);
    }
}

/// Delivers every complete pub/sub message read so far. The messages' texts are handed on
/// as slices of the read chunk, not copied.
fn deliver_pushes(
    shared: &Shared,
    c: &Cluster,
    sub: &mut Link,
    payloads: &mut Vec<std::ops::Range<usize>>,
) -> std::io::Result<()> {
    let Some(chunk) = sub.take_messages(payloads)? else {
        return Ok(());
    };
    // Most messages of a read belong to a few users: one `User` per run of the same user.
    let mut user = None;
    for range in payloads.iter() {
        if let Some(payload) = chunk.get(range.clone()) {
            inbound(shared, c, &chunk, payload, &mut user);
        }
    }
    Ok(())
}

/// `last` if it is `id`, else a new `User` for `id` (kept in `last`); `None` if `id` is not
/// UTF-8. Only a new user is checked: the records of a read mostly share a few users.
fn user_of(id: &[u8], last: &mut Option<User>) -> Option<User> {
    match last {
        Some(u) if u.id().as_bytes() == id => Some(u.clone()),
        _ => {
            let id = std::str::from_utf8(id).ok()?;
            Some(last.insert(User::new(id)).clone())
        }
    }
}

/// Delivers one payload (a part of `chunk`) from another node: a batch of forwards, or one
/// bounce or takeover.
fn inbound(shared: &Shared, c: &Cluster, chunk: &Bytes, payload: &[u8], user: &mut Option<User>) {
    if wire::is_batch(payload) {
        for rec in wire::batch_records(payload) {
            match rec {
                Ok(rec) if matches!(rec.first(), Some(b'F' | b'R')) => {
                    inbound_one(shared, c, chunk, rec, user)
                }
                Ok(_) | Err(_) => {
                    ClusterStats::inc(&c.stats.inbound_dropped);
                    tracing::warn!(
                        bytes = payload.len(),
                        "malformed batch on the cluster channel: rest dropped"
                    );
                    return;
                }
            }
        }
    } else {
        inbound_one(shared, c, chunk, payload, user);
    }
}

/// `text` (a part of `chunk`) as a message to queue, sharing `chunk`'s memory; `None` if it
/// is not UTF-8 (the one check of it on this node).
fn shared_text(chunk: &Bytes, text: &[u8]) -> Option<Utf8Bytes> {
    Utf8Bytes::try_from(chunk.slice_ref(text)).ok()
}

fn inbound_one(
    shared: &Shared,
    c: &Cluster,
    chunk: &Bytes,
    payload: &[u8],
    last_user: &mut Option<User>,
) {
    let limit = shared.config.send_queue_bytes;
    let registry = &shared.registry;
    match NodeMessage::decode(payload) {
        Ok(NodeMessage::Forward {
            target,
            origin,
            user,
            text,
            by_script,
        }) => {
            // The origin is only read to send the message on or back (rare): checked then.
            let (Some(user), Some(text)) = (user_of(user, last_user), shared_text(chunk, text))
            else {
                ClusterStats::inc(&c.stats.inbound_dropped);
                tracing::warn!(
                    bytes = payload.len(),
                    "message on the cluster channel is not UTF-8: dropped"
                );
                return;
            };
            let error = match registry.forward_local(&target, &user, text.clone(), limit) {
                ForwardOutcome::Queued => {
                    ClusterStats::inc(&c.stats.forwards_received);
                    return;
                }
                ForwardOutcome::UnknownPeer if !by_script => {
                    // The sender's cached route is stale (the client left or moved): ask
                    // Redis where it is now; that answer is final.
                    let Ok(origin) = std::str::from_utf8(origin) else {
                        ClusterStats::inc(&c.stats.inbound_dropped);
                        return;
                    };
                    ClusterStats::inc(&c.stats.rerouted);
                    let job = Job::Forward(Fwd {
                        target,
                        user,
                        text,
                        origin: Some(origin.into()),
                        no_cache: true,
                    });
                    if c.jobs.try_send(job).is_err() {
                        ClusterStats::inc(&c.stats.jobs_dropped);
                    }
                    return;
                }
                ForwardOutcome::UnknownPeer => {
                    ClusterStats::inc(&c.stats.bounced_unknown);
                    unknown_peer_error(&target)
                }
                ForwardOutcome::OtherUser => {
                    ClusterStats::inc(&c.stats.bounced_other_user);
                    other_user_error(&target)
                }
                ForwardOutcome::QueueFull => {
                    ClusterStats::inc(&c.stats.bounced_queue_full);
                    not_reading_error(&target)
                }
            };
            let Some((sender, bounce)) = bounce_of(&text, error) else {
                ClusterStats::inc(&c.stats.inbound_dropped);
                return;
            };
            if origin == c.instance.as_bytes() {
                if registry.forward_local(&sender, &user, bounce, limit) != ForwardOutcome::Queued {
                    ClusterStats::inc(&c.stats.inbound_dropped);
                }
                return;
            }
            let Ok(origin) = std::str::from_utf8(origin) else {
                ClusterStats::inc(&c.stats.inbound_dropped);
                return;
            };
            let job = Job::Bounce {
                channel: format!("{}{origin}", c.channel_prefix),
                payload: wire::encode_bounce(&sender, user.id(), &bounce),
            };
            if c.jobs.try_send(job).is_err() {
                ClusterStats::inc(&c.stats.jobs_dropped);
            }
        }
        Ok(NodeMessage::Bounce { sender, user, text }) => {
            let out = match (user_of(user, last_user), shared_text(chunk, text)) {
                (Some(user), Some(text)) => registry.forward_local(&sender, &user, text, limit),
                _ => ForwardOutcome::UnknownPeer,
            };
            if out == ForwardOutcome::Queued {
                ClusterStats::inc(&c.stats.bounces_received);
            } else {
                ClusterStats::inc(&c.stats.inbound_dropped);
            }
        }
        Ok(NodeMessage::Takeover { uuid, conn }) => {
            if c.evict(registry, &uuid, conn) {
                ClusterStats::inc(&c.stats.evictions);
                crate::metrics::Metrics::inc(&shared.metrics.takeovers_total);
                tracing::info!(%uuid, node = %c.cfg.node_id, "client UUID registered on another relay node: closing this socket 4004");
            }
        }
        Err(e) => {
            ClusterStats::inc(&c.stats.inbound_dropped);
            tracing::warn!(error = %e, bytes = payload.len(), "undecodable message on the cluster channel: dropped");
        }
    }
}

async fn heartbeat(shared: Arc<Shared>, c: Arc<Cluster>) {
    let stop = shared.hard_stop.clone();
    let mut tick = tokio::time::interval(c.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = c.republish.notified() => {}
        }
        let owned: Vec<_> = lock(&c.owned)
            .iter()
            .map(|(u, o)| (*u, o.clone()))
            .collect();
        c.stats.owned.store(owned.len() as i64, Relaxed);
        let Some((generation, mut conn)) = c.connection() else {
            continue;
        };
        for chunk in owned.chunks(HEARTBEAT_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (uuid, o) in chunk {
                pipe.cmd("EVALSHA")
                    .arg(c.scripts.claim.get_hash())
                    .arg(1)
                    .arg(wire::client_key(uuid))
                    .arg(c.value(o.conn, &o.user))
                    .arg(c.cfg.registration_ttl.as_millis() as u64)
                    .arg(o.user.id())
                    .arg(&c.channel_prefix)
                    .arg(uuid.to_string())
                    // Registered while Redis was down: a claim (newest wins), not a refresh.
                    .arg(if o.published { "refresh" } else { "claim" });
            }
            let res = tokio::time::timeout(
                c.cfg.redis_timeout,
                pipe.query_async::<Vec<redis::RedisResult<i64>>>(&mut conn),
            )
            .await;
            let results = match res {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    c.command_failed(generation, &e);
                    break;
                }
                Err(_) => {
                    c.command_failed(
                        generation,
                        &redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "heartbeat: no reply in time",
                        )),
                    );
                    break;
                }
            };
            for ((uuid, o), r) in chunk.iter().zip(results) {
                match r {
                    Ok(1 | 2) if !o.published => c.mark_published(uuid, o.conn),
                    Ok(1) => {}
                    Ok(2) => ClusterStats::inc(&c.stats.republished),
                    Ok(0 | 3) => {
                        // Taken meanwhile (while this node was cut off): the newer holder wins.
                        if c.evict(&shared.registry, uuid, o.conn) {
                            ClusterStats::inc(&c.stats.evictions);
                            tracing::info!(%uuid, node = %c.cfg.node_id, "client UUID is now held elsewhere in the cluster: closing this socket 4004");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        c.command_failed(generation, &e);
                        break;
                    }
                }
            }
        }
    }
}
