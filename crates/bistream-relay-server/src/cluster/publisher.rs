//! The publisher task: drains the job queue onto its own raw Redis connection.
//!
//! * **No round trip awaited.** Each batch is written as one pipeline as soon as it is taken
//!   from the queue; the replies are matched to their commands in order as they come back
//!   (up to [`MAX_PENDING_JOBS`] unanswered), so the queue never waits for Redis to answer.
//!   (Holding the queue while earlier writes await replies doubled the messages per `PUBLISH`
//!   but saved no CPU per message: Redis already reads many pipelines at once. D24.)
//! * **Cached routes.** A forward whose target was recently found on another process (and for
//!   the same user) is a plain `PUBLISH` to that process's channel, the batch's messages to one
//!   process concatenated into one payload. Other forwards go through the forward script, whose
//!   reply fills the cache. A stale route is harmless: the process that receives a message for
//!   a client it no longer has sends it through the script again (see `backplane::inbound`),
//!   and a `PUBLISH` that reached no process is retried through the script. What the script
//!   routes is final: a message is sent at most twice, and only when the first send provably
//!   reached no client.
//! * **Order.** One connection, commands written in the order their jobs were queued, and a
//!   target's messages of one batch all take the same path: Redis publishes them in order.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_proto::{cluster_failed_error, other_user_error, unknown_peer_error};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::link::Link;
use super::resp::{self, Reply};
use super::{bounce_of, lock, wire, Cluster, ClusterStats, Fwd, Job};
use crate::auth::User;
use crate::conn::Shared;

/// Most jobs taken from the queue at once.
const BATCH: usize = 512;
/// Most message bytes in one pipeline write.
const BATCH_BYTES: usize = 1024 * 1024;
/// Most jobs written and not yet answered; beyond, the queue waits (and fills).
const MAX_PENDING_JOBS: usize = 16 * 1024;
/// How long a found route is used without asking Redis again.
const ROUTE_TTL: Duration = Duration::from_secs(1);
/// Most cached routes (the cache is emptied when full).
const MAX_ROUTES: usize = 64 * 1024;
/// How long the publisher keeps flushing releases after the hard stop.
const FLUSH_ON_STOP: Duration = Duration::from_secs(1);

struct Route {
    instance: Box<str>,
    user: User,
    until: Instant,
}

/// A command written and not answered yet.
struct Waiting {
    sent: Instant,
    what: What,
}

enum What {
    /// The forward script: its reply has a status and an instance per forward.
    Script(Vec<Fwd>),
    /// A `PUBLISH` of forwards on a cached route: its reply is the number of receivers.
    Route(Vec<Fwd>),
    /// A bounce or a release: nothing to do with the reply.
    Other,
}

impl What {
    /// How many jobs this command carries.
    fn jobs(&self) -> usize {
        match self {
            What::Script(f) | What::Route(f) => f.len(),
            What::Other => 1,
        }
    }
}

struct Publisher {
    shared: Arc<Shared>,
    c: Arc<Cluster>,
    link: Option<(u64, Link)>,
    waiting: VecDeque<Waiting>,
    waiting_jobs: usize,
    routes: HashMap<Uuid, Route>,
    /// Jobs made while handling replies (retries, bounces to other nodes): sent first next time.
    later: Vec<Job>,
    out: Vec<u8>,
}

pub(super) async fn run(shared: Arc<Shared>, c: Arc<Cluster>, mut rx: mpsc::Receiver<Job>) {
    let stop = shared.hard_stop.clone();
    let mut p = Publisher {
        shared,
        c,
        link: None,
        waiting: VecDeque::new(),
        waiting_jobs: 0,
        routes: HashMap::new(),
        later: Vec::new(),
        out: Vec::new(),
    };
    let mut jobs = Vec::with_capacity(BATCH);
    // Created once: a new cancellation or timer future per loop turn would register (and
    // unregister) a waiter each time. Replies are checked against the timeout a few times per
    // timeout instead of with a timer per command.
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let mut check =
        tokio::time::interval((p.c.cfg.redis_timeout / 4).max(Duration::from_millis(1)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = p.waiting_jobs < MAX_PENDING_JOBS || p.link.is_none();
        tokio::select! {
            biased;
            _ = &mut cancelled => break,
            r = fill(&mut p.link) => match r {
                Ok(()) => p.on_replies().await,
                Err(e) => p.link_failed(&e),
            },
            n = rx.recv_many(&mut jobs, BATCH), if room => {
                if n == 0 {
                    return;
                }
                // Let the tasks already runnable on this worker (other clients forwarding in
                // the same wave) run first, then take what they queued: one `PUBLISH` per
                // wave, not one per client. Without it, tokio's LIFO slot runs this task right
                // after each forwarding client and batches stay small (D39).
                tokio::task::yield_now().await;
                while jobs.len() < BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                p.send(&mut jobs).await;
            }
            _ = check.tick(), if !p.waiting.is_empty() => {
                let timeout = p.c.cfg.redis_timeout;
                if p.waiting.front().is_some_and(|w| w.sent + timeout <= Instant::now()) {
                    p.link_failed(&io::Error::new(io::ErrorKind::TimedOut, "no reply in time"));
                }
            }
        }
    }
    // Stopping: flush what is queued (releases of the clients that just closed), briefly.
    let _ = tokio::time::timeout(FLUSH_ON_STOP, async {
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        p.send(&mut jobs).await;
        while !p.waiting.is_empty() {
            match fill(&mut p.link).await {
                Ok(()) => p.on_replies().await,
                Err(_) => break,
            }
        }
    })
    .await;
}

async fn fill(link: &mut Option<(u64, Link)>) -> io::Result<()> {
    match link {
        Some((_, l)) => l.fill().await,
        None => std::future::pending().await,
    }
}

impl Publisher {
    /// Uses the connection of the backplane's current generation (dropping an older one).
    fn sync_link(&mut self) {
        let current = self.c.generation();
        if self.link.as_ref().map(|(g, _)| *g) == current && current.is_some() {
            return;
        }
        if self.link.is_some() {
            self.drop_link("the connection was replaced");
        }
        let Some(current) = current else { return };
        let mut slot = lock(&self.c.publisher_link);
        if slot.as_ref().is_some_and(|(g, _)| *g == current) {
            self.link = slot.take();
        }
    }

    /// The connection failed: the supervisor reconnects; unanswered forwards bounce.
    fn link_failed(&mut self, e: &io::Error) {
        if let Some((generation, _)) = &self.link {
            let e = redis::RedisError::from(io::Error::new(e.kind(), e.to_string()));
            self.c.command_failed(*generation, &e);
        }
        self.drop_link(&e.to_string());
    }

    fn drop_link(&mut self, why: &str) {
        self.link = None;
        self.waiting_jobs = 0;
        let cause = format!("Redis at {}: {why}", self.c.cfg.endpoint);
        for w in std::mem::take(&mut self.waiting) {
            if let What::Script(fwds) | What::Route(fwds) = w.what {
                for f in fwds {
                    ClusterStats::inc(&self.c.stats.bounced_down);
                    let error = cluster_failed_error(&f.target, &cause);
                    self.bounce(f, error);
                }
            }
        }
    }

    /// Sends `f`'s bounce to its sender: on this node, or through Redis to its node.
    fn bounce(&mut self, f: Fwd, error: String) {
        match f.origin {
            Some(origin) if *origin != *self.c.instance => {
                let Some((sender, text)) = bounce_of(&f.text, error) else {
                    ClusterStats::inc(&self.c.stats.inbound_dropped);
                    return;
                };
                self.later.push(Job::Bounce {
                    channel: format!("{}{origin}", self.c.channel_prefix),
                    payload: wire::encode_bounce(&sender, f.user.id(), &text),
                });
            }
            _ => self.c.bounce_local(
                &self.shared.registry,
                &f.user,
                &f.text,
                error,
                self.shared.config.send_queue_bytes,
            ),
        }
    }

    /// Writes `jobs` (after the jobs made meanwhile) as pipelines.
    async fn send(&mut self, jobs: &mut Vec<Job>) {
        self.sync_link();
        let mut all = std::mem::take(&mut self.later);
        all.append(jobs);
        if all.is_empty() {
            return;
        }
        if self.link.is_none() {
            for job in all {
                self.fail(job);
            }
            // Bounces to other nodes cannot go out either.
            for job in std::mem::take(&mut self.later) {
                self.fail(job);
            }
            return;
        }
        let now = Instant::now();
        self.out.clear();
        // Sized once: growing it (and the per-destination lists below) job by job cost more
        // than the encoding itself.
        let mut chunk = Vec::with_capacity(all.len());
        let mut bytes = 0;
        for job in all {
            bytes += match &job {
                Job::Forward(f) => f.text.len(),
                Job::Bounce { payload, .. } => payload.len(),
                Job::Release { .. } => 0,
            };
            chunk.push(job);
            if bytes >= BATCH_BYTES {
                self.encode(&mut chunk, now);
                bytes = 0;
            }
        }
        self.encode(&mut chunk, now);
        let Some((_, link)) = &mut self.link else {
            return;
        };
        let res = tokio::time::timeout(self.c.cfg.redis_timeout, link.write.write_all(&self.out))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")));
        if self.out.capacity() > 4 * BATCH_BYTES {
            self.out = Vec::new();
        }
        if let Err(e) = res {
            self.link_failed(&e);
        }
    }

    /// A job that cannot be sent: forwards bounce, the rest is counted.
    fn fail(&mut self, job: Job) {
        match job {
            Job::Forward(f) => {
                ClusterStats::inc(&self.c.stats.bounced_down);
                let error = self.c.unavailable_error(&f.target);
                self.bounce(f, error);
            }
            Job::Bounce { .. } => ClusterStats::inc(&self.c.stats.inbound_dropped),
            Job::Release { .. } => {}
        }
    }

    /// Encodes `chunk` into `out` (one script call for the uncached forwards, one `PUBLISH`
    /// per destination for the cached ones, then bounces and releases).
    fn encode(&mut self, chunk: &mut Vec<Job>, now: Instant) {
        let c = self.c.clone();
        let mut script: Vec<Fwd> = Vec::new();
        let mut routed: Vec<(Box<str>, Vec<Fwd>)> = Vec::new();
        let mut jobs = chunk.drain(..);
        while let Some(job) = jobs.next() {
            let left = jobs.len();
            match job {
                Job::Forward(f) => {
                    let route = (f.origin.is_none() && !f.no_cache)
                        .then(|| self.routes.get(&f.target))
                        .flatten()
                        .filter(|r| r.until > now && r.user == f.user);
                    match route {
                        Some(r) => match routed.iter_mut().find(|(i, _)| *i == r.instance) {
                            Some((_, v)) => v.push(f),
                            None => {
                                // Most batches go to one or two processes.
                                let mut v = Vec::with_capacity(left + 1);
                                v.push(f);
                                routed.push((r.instance.clone(), v));
                            }
                        },
                        None => script.push(f),
                    }
                }
                Job::Bounce { channel, payload } => {
                    let out = &mut self.out;
                    resp::command(out, 3);
                    resp::arg(out, b"PUBLISH");
                    resp::arg(out, channel.as_bytes());
                    resp::arg(out, &payload);
                    self.push_waiting(now, What::Other);
                }
                Job::Release { key, value } => {
                    let out = &mut self.out;
                    resp::command(out, 5);
                    resp::arg(out, b"EVALSHA");
                    resp::arg(out, c.scripts.release.get_hash().as_bytes());
                    resp::arg(out, b"1");
                    resp::arg(out, key.as_bytes());
                    resp::arg(out, value.as_bytes());
                    self.push_waiting(now, What::Other);
                }
            }
        }
        if !script.is_empty() {
            let out = &mut self.out;
            let n = script.len();
            resp::command(out, 4 + 3 * n);
            resp::arg(out, b"EVALSHA");
            resp::arg(out, c.scripts.forward.get_hash().as_bytes());
            resp::arg(out, n.to_string().as_bytes());
            for f in &script {
                resp::arg(out, wire::client_key(&f.target).as_bytes());
            }
            resp::arg(out, c.channel_prefix.as_bytes());
            for f in &script {
                resp::arg(out, f.user.id().as_bytes());
                let len = rec_len(f, &c.instance);
                resp::bulk_header(out, len);
                write_rec(out, f, &c.instance, true);
                resp::end_arg(out);
            }
            self.push_waiting(now, What::Script(script));
        }
        for (instance, fwds) in routed {
            let out = &mut self.out;
            resp::command(out, 3);
            resp::arg(out, b"PUBLISH");
            resp::bulk_header(out, c.channel_prefix.len() + instance.len());
            out.extend_from_slice(c.channel_prefix.as_bytes());
            out.extend_from_slice(instance.as_bytes());
            resp::end_arg(out);
            let len = fwds.iter().map(|f| rec_len(f, &c.instance)).sum();
            resp::bulk_header(out, len);
            for f in &fwds {
                write_rec(out, f, &c.instance, false);
            }
            resp::end_arg(out);
            self.push_waiting(now, What::Route(fwds));
        }
    }

    fn push_waiting(&mut self, sent: Instant, what: What) {
        self.waiting_jobs += what.jobs();
        self.waiting.push_back(Waiting { sent, what });
    }

    /// Handles every complete reply read so far, then sends what they made (retries, bounces).
    async fn on_replies(&mut self) {
        loop {
            let Some((generation, link)) = &mut self.link else {
                return;
            };
            let generation = *generation;
            let waiting = &mut self.waiting;
            let parsed = link.with_next(|r| match waiting.pop_front() {
                Some(w) => Ok((w.what, Outcome::of(&r))),
                None => Err(io::Error::other("reply to no command")),
            });
            let (what, outcome) = match parsed {
                Ok(None) => break,
                Ok(Some(Ok(x))) => x,
                Ok(Some(Err(e))) | Err(e) => {
                    self.link_failed(&e);
                    return;
                }
            };
            self.handle(generation, what, outcome);
        }
        if !self.later.is_empty() {
            self.send(&mut Vec::new()).await;
        }
    }

    fn handle(&mut self, generation: u64, what: What, outcome: Outcome) {
        let c = self.c.clone();
        self.waiting_jobs = self.waiting_jobs.saturating_sub(what.jobs());
        match (what, outcome) {
            (What::Other, Outcome::Error(e)) => {
                tracing::debug!(error = %e, "cluster bounce or release failed in Redis");
                ClusterStats::inc(&c.stats.redis_errors);
            }
            (What::Other, _) => {}
            (What::Route(fwds), Outcome::Int(n)) if n > 0 => {
                c.stats
                    .forwards_sent
                    .fetch_add(fwds.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            (What::Route(fwds), Outcome::Int(_)) => {
                // Nobody listens on that channel any more: ask Redis where the targets are now.
                for mut f in fwds {
                    self.routes.remove(&f.target);
                    f.no_cache = true;
                    self.later.push(Job::Forward(f));
                }
            }
            (What::Script(fwds), Outcome::Statuses(s)) if s.len() == fwds.len() => {
                let now = Instant::now();
                for (f, (status, instance)) in fwds.into_iter().zip(s) {
                    self.script_result(f, status, instance, now);
                }
            }
            (What::Script(fwds) | What::Route(fwds), outcome) => {
                // A script error (NOSCRIPT after SCRIPT FLUSH, ...) or a reply of the wrong
                // shape: the supervisor reconnects (and reloads the scripts).
                let why = match outcome {
                    Outcome::Error(e) => e,
                    _ => "unexpected reply".to_string(),
                };
                let e = redis::RedisError::from(io::Error::other(why.clone()));
                c.command_failed(generation, &e);
                for f in fwds {
                    ClusterStats::inc(&c.stats.bounced_down);
                    let error = cluster_failed_error(
                        &f.target,
                        &format!("Redis at {}: {why}", c.cfg.endpoint),
                    );
                    self.bounce(f, error);
                }
            }
        }
    }

    fn script_result(&mut self, f: Fwd, status: i64, instance: Option<Box<str>>, now: Instant) {
        let c = &self.c;
        let error = match status {
            n if n > 0 => {
                ClusterStats::inc(&c.stats.forwards_sent);
                if let (None, Some(instance)) = (&f.origin, instance) {
                    if self.routes.len() >= MAX_ROUTES {
                        self.routes.clear();
                    }
                    self.routes.insert(
                        f.target,
                        Route {
                            instance,
                            user: f.user.clone(),
                            until: now + ROUTE_TTL,
                        },
                    );
                }
                return;
            }
            // No registration, or its process is gone and the entry has not expired yet.
            -1 | 0 => {
                self.routes.remove(&f.target);
                ClusterStats::inc(&c.stats.bounced_unknown);
                unknown_peer_error(&f.target)
            }
            -2 => {
                self.routes.remove(&f.target);
                ClusterStats::inc(&c.stats.bounced_other_user);
                other_user_error(&f.target)
            }
            _ => {
                ClusterStats::inc(&c.stats.bounced_down);
                c.unavailable_error(&f.target)
            }
        };
        self.bounce(f, error);
    }
}

/// A forward's record names the sender's process: this one, or the one it came from.
fn origin_of<'a>(f: &'a Fwd, me: &'a str) -> &'a str {
    f.origin.as_deref().unwrap_or(me)
}

fn rec_len(f: &Fwd, me: &str) -> usize {
    wire::framed_forward_len(origin_of(f, me), f.user.id(), &f.text)
}

/// `by_script`: in the forward script's call (final at the receiver), else on a cached route.
fn write_rec(out: &mut Vec<u8>, f: &Fwd, me: &str, by_script: bool) {
    wire::write_framed_forward(
        out,
        by_script,
        &f.target,
        origin_of(f, me),
        f.user.id(),
        &f.text,
    );
}

/// What a reply said, owned (the reply borrows the read buffer).
enum Outcome {
    Int(i64),
    /// The forward script's reply: per forward, a status and the holder's instance.
    Statuses(Vec<(i64, Option<Box<str>>)>),
    Error(String),
    Other,
}

impl Outcome {
    fn of(r: &Reply<'_>) -> Outcome {
        match r {
            Reply::Int(n) => Outcome::Int(*n),
            Reply::Error(_) => Outcome::Error(r.error_text().unwrap_or_default()),
            Reply::Array(Some(items)) if items.len() % 2 == 0 => {
                let mut out = Vec::with_capacity(items.len() / 2);
                for pair in items.chunks(2) {
                    match pair {
                        [Reply::Int(n), Reply::Bulk(inst)] => out.push((
                            *n,
                            inst.and_then(|b| std::str::from_utf8(b).ok())
                                .filter(|s| !s.is_empty())
                                .map(Box::from),
                        )),
                        _ => return Outcome::Other,
                    }
                }
                Outcome::Statuses(out)
            }
            _ => Outcome::Other,
        }
    }
}
