//! The three tasks that talk to Redis.
//!
//! * The supervisor owns the node's one subscriber connection: it (re)connects both
//!   connections, loads the scripts, subscribes, delivers inbound messages into local queues,
//!   and logs each up/down transition once.
//! * The publisher drains the job queue in batches, one pipeline (one round trip) per batch,
//!   one batch at a time: messages leave in the order they were accepted, which gives the
//!   per-pair ordering guarantee.
//! * The heartbeat refreshes the TTL of every registration this node holds, re-publishes
//!   the missing ones (after a Redis restart or an expiry) and closes local sockets whose UUID
//!   was meanwhile taken elsewhere.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_proto::{other_user_error, unknown_peer_error};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::wire::{self, NodeMessage};
use super::{bounce_of, lock, Cluster, ClusterStats, Job};
use crate::auth::User;
use crate::conn::Shared;
use crate::registry::ForwardOutcome;

/// Most jobs in one pipeline.
const BATCH: usize = 512;
/// Most registrations refreshed in one pipeline.
const HEARTBEAT_CHUNK: usize = 1000;
/// Reconnect delays: from the first to the last (the recovery target is 15 s).
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long the publisher keeps flushing releases after the hard stop.
const FLUSH_ON_STOP: Duration = Duration::from_secs(1);

pub(super) fn spawn(shared: Arc<Shared>, c: Arc<Cluster>) -> Vec<tokio::task::JoinHandle<()>> {
    let rx = lock(&c.jobs_rx).take();
    let mut tasks = vec![
        tokio::spawn(supervise(shared.clone(), c.clone())),
        tokio::spawn(heartbeat(shared.clone(), c.clone())),
    ];
    if let Some(rx) = rx {
        tasks.push(tokio::spawn(publish(shared, c, rx)));
    }
    tasks
}

async fn connect(c: &Cluster) -> Result<(MultiplexedConnection, PubSubStream), redis::RedisError> {
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
    let timed_out = || {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ))
    };
    let mut pubsub = tokio::time::timeout(t, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    tokio::time::timeout(t, pubsub.subscribe(c.own_channel()))
        .await
        .map_err(|_| timed_out())??;
    Ok((conn, pubsub.into_on_message()))
}

fn set_down(c: &Cluster, cause: String, since: &mut Option<Instant>) {
    let was_up = c.up.swap(false, Relaxed);
    *lock(&c.conn) = None;
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
        let (conn, mut stream) = match attempt {
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
        let cause = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = c.failed.notified() => break lock(&c.cause).clone(),
                m = stream.next() => match m {
                    Some(msg) => inbound(&shared, &c, msg.get_payload_bytes()),
                    None => break format!("Redis at {}: subscriber connection closed", c.cfg.endpoint),
                },
            }
        };
        set_down(&c, cause, &mut down_since);
    }
}

/// Delivers one payload from another node: a batch of forwards, or one bounce or takeover.
fn inbound(shared: &Shared, c: &Cluster, payload: &[u8]) {
    if wire::is_batch(payload) {
        for rec in wire::batch_records(payload) {
            match rec {
                Ok(rec) if rec.first() == Some(&b'F') => inbound_one(shared, c, rec),
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
        inbound_one(shared, c, payload);
    }
}

fn inbound_one(shared: &Shared, c: &Cluster, payload: &[u8]) {
    let limit = shared.config.send_queue_bytes;
    let registry = &shared.registry;
    match NodeMessage::decode(payload) {
        Ok(NodeMessage::Forward {
            target,
            origin,
            user,
            text,
        }) => {
            let user = User::new(user);
            let error = match registry.forward_local(
                &target,
                &user,
                Utf8Bytes::from(text.to_string()),
                limit,
            ) {
                ForwardOutcome::Queued => {
                    ClusterStats::inc(&c.stats.forwards_received);
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
                    format!("The requested peer {target} is not reading its messages and was disconnected.")
                }
            };
            let Some((sender, bounce)) = bounce_of(text, error) else {
                ClusterStats::inc(&c.stats.inbound_dropped);
                return;
            };
            if origin == c.instance {
                if registry.forward_local(&sender, &user, bounce, limit) != ForwardOutcome::Queued {
                    ClusterStats::inc(&c.stats.inbound_dropped);
                }
                return;
            }
            let job = Job::Bounce {
                channel: format!("{}{origin}", c.channel_prefix),
                payload: wire::encode_bounce(&sender, user.id(), &bounce),
            };
            if c.jobs.try_send(job).is_err() {
                ClusterStats::inc(&c.stats.jobs_dropped);
            }
        }
        Ok(NodeMessage::Bounce { sender, user, text }) => {
            let out = registry.forward_local(
                &sender,
                &User::new(user),
                Utf8Bytes::from(text.to_string()),
                limit,
            );
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

/// Returns a failed job to its sender (forwards only; the rest is dropped and counted).
fn fail(shared: &Shared, c: &Cluster, job: Job, error_of: impl Fn(&uuid::Uuid) -> String) {
    match job {
        Job::Forward { target, user, text } => {
            ClusterStats::inc(&c.stats.bounced_down);
            c.bounce_local(
                &shared.registry,
                &user,
                &text,
                error_of(&target),
                shared.config.send_queue_bytes,
            );
        }
        Job::Bounce { .. } => ClusterStats::inc(&c.stats.inbound_dropped),
        Job::Release { .. } => {}
    }
}

async fn publish(shared: Arc<Shared>, c: Arc<Cluster>, mut rx: tokio::sync::mpsc::Receiver<Job>) {
    let stop = shared.hard_stop.clone();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            j = rx.recv() => j,
            _ = stop.cancelled() => break,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        run_batch(&shared, &c, &mut batch).await;
    }
    // Stopping: flush what is queued (releases of the clients that just closed), briefly.
    let _ = tokio::time::timeout(FLUSH_ON_STOP, async {
        while let Ok(j) = rx.try_recv() {
            batch.push(j);
            if batch.len() >= BATCH {
                run_batch(&shared, &c, &mut batch).await;
            }
        }
        run_batch(&shared, &c, &mut batch).await;
    })
    .await;
}

async fn run_batch(shared: &Shared, c: &Cluster, batch: &mut Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    let Some((generation, mut conn)) = c.connection() else {
        for job in batch.drain(..) {
            fail(shared, c, job, |t| c.unavailable_error(t));
        }
        return;
    };
    // All forwards of the batch in ONE script call (one PUBLISH per destination process),
    // first in the pipeline; then bounces and releases.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let forwards = batch
        .iter()
        .filter(|j| matches!(j, Job::Forward { .. }))
        .count();
    if forwards > 0 {
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(c.scripts.forward.get_hash())
            .arg(forwards);
        for job in batch.iter() {
            if let Job::Forward { target, .. } = job {
                cmd.arg(wire::client_key(target));
            }
        }
        cmd.arg(&c.channel_prefix);
        for job in batch.iter() {
            if let Job::Forward { target, user, text } = job {
                cmd.arg(user.id())
                    .arg(wire::framed_forward(target, &c.instance, user.id(), text));
            }
        }
    }
    for job in batch.iter() {
        match job {
            Job::Forward { .. } => {}
            Job::Bounce { channel, payload } => {
                pipe.cmd("PUBLISH").arg(channel).arg(payload.as_slice());
            }
            Job::Release { key, value } => {
                pipe.cmd("EVALSHA")
                    .arg(c.scripts.release.get_hash())
                    .arg(1)
                    .arg(key)
                    .arg(value);
            }
        }
    }
    let expected = batch.len() - forwards + usize::from(forwards > 0);
    let res = tokio::time::timeout(
        c.cfg.redis_timeout,
        pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut conn),
    )
    .await;
    let mut results = match res {
        Ok(Ok(r)) if r.len() == expected => r.into_iter(),
        other => {
            let e = match other {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => {
                    redis::RedisError::from(std::io::Error::other("pipeline reply count mismatch"))
                }
                Err(_) => redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no reply in time",
                )),
            };
            // Whether these reached Redis is unknown: bounce them (at-most-once, never retried).
            c.command_failed(generation, &e);
            let cause = format!("Redis at {}: {e}", c.cfg.endpoint);
            for job in batch.drain(..) {
                fail(shared, c, job, |t| {
                    format!("Cannot forward peer connection message to peer {t}: the relay cluster backplane failed while forwarding it ({cause}).")
                });
            }
            return;
        }
    };
    if forwards == 0 {
        batch.clear();
        return;
    }
    let statuses: Result<Vec<i64>, String> = match results.next() {
        Some(Ok(v)) => redis::FromRedisValue::from_redis_value(v).map_err(|e| e.to_string()),
        Some(Err(e)) => {
            // A script error (NOSCRIPT after SCRIPT FLUSH, ...): the supervisor reconnects and
            // reloads the scripts.
            c.command_failed(generation, &e);
            Err(e.to_string())
        }
        None => Err("no reply".into()),
    };
    let statuses = statuses.ok().filter(|s| s.len() == forwards);
    let mut statuses = statuses.into_iter().flatten();
    for job in batch.drain(..) {
        let Job::Forward { target, user, text } = job else {
            continue;
        };
        let error = match statuses.next() {
            Some(n) if n > 0 => {
                ClusterStats::inc(&c.stats.forwards_sent);
                continue;
            }
            // No registration, or its process is gone and the entry has not expired yet.
            Some(-1 | 0) => {
                ClusterStats::inc(&c.stats.bounced_unknown);
                unknown_peer_error(&target)
            }
            Some(-2) => {
                ClusterStats::inc(&c.stats.bounced_other_user);
                other_user_error(&target)
            }
            _ => {
                ClusterStats::inc(&c.stats.bounced_down);
                c.unavailable_error(&target)
            }
        };
        c.bounce_local(
            &shared.registry,
            &user,
            &text,
            error,
            shared.config.send_queue_bytes,
        );
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
