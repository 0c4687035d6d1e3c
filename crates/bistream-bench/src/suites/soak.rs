//! `soak` suite: the relay under churn and under attack, reported as counts rather than speeds.
//!
//! * **Churn:** N relay clients (10,000 in a full run, 300 in quick mode) as N/2 pairs, each
//!   pair looping for the whole run: connect and register two fresh UUIDs, exchange a few
//!   `peer_connection` messages per round for a random number of rounds, then leave (one time
//!   in eight by dropping TCP without a closing handshake) and start again. Both clients of a
//!   pair are registered for the whole exchange, so every forward must arrive: a bounce or a
//!   missing message counts as lost. The server's RSS is read before (after one warm-up
//!   client), at its peak, and after every client left.
//! * **Slow consumer, slowloris, bad frames:** see [`attacks`].
//!
//! File descriptors: the relay runs as its own process, so 10,000 clients cost ~10,000 fds in
//! the bench process and ~10,000 in the relay's (the hard limit is 20,000 on the test machine;
//! [`crate::raise_fd_limit`] raises the soft limit to it). The run is skipped with a clear
//! reason when the limit leaves no margin.

mod attacks;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use bistream_relay_proto::{DescriptionType, PeerConnectionRequest, RelayMessage};

use super::relay::{client, Side, Ws};
use super::{free_port, spawn_ours};
use crate::hist::Histogram;
use crate::load::now_ns;
use crate::proc::Server;
use crate::report::{Cell, Row, Target};
use crate::{Ctx, SuiteDef, SuiteOutput};

/// The `soak` suite.
pub const SUITE: SuiteDef = SuiteDef {
    name: "soak",
    about: "relay churn with 10,000 clients, slow consumer, slowloris and bad frames: losses, closes, RSS",
    run: start,
};

fn start(ctx: &Ctx) -> Pin<Box<dyn Future<Output = SuiteOutput> + Send + '_>> {
    Box::pin(run(ctx))
}

const NAME: &str = "soak";

/// The churn's size and pace.
struct Plan {
    /// Client pairs (clients = 2 × pairs).
    pairs: usize,
    /// Length of the churn, ramp-up included.
    length: Duration,
    /// Pair starts are spread over this.
    ramp: Duration,
    /// Messages each side sends per round.
    per_round: usize,
    /// Pause between rounds.
    gap: Duration,
    /// A life lasts 1..=this many rounds.
    max_rounds: u64,
    /// Longest wait for the relay's RSS to come back after the last client left.
    settle: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                pairs: 150,
                length: Duration::from_secs(4),
                ramp: Duration::from_secs(1),
                per_round: 2,
                gap: Duration::from_millis(200),
                max_rounds: 4,
                settle: Duration::from_secs(15),
            }
        } else {
            Plan {
                pairs: 5_000,
                length: Duration::from_secs(60),
                ramp: Duration::from_secs(15),
                per_round: 2,
                gap: Duration::from_millis(1000),
                max_rounds: 6,
                settle: Duration::from_secs(15),
            }
        }
    }
}

/// The relay's RSS after every client left should be back within this many MiB of its baseline.
const AFTER_TARGET_MIB: f64 = 16.0;

/// Counters shared by every pair task.
#[derive(Default)]
struct Counts {
    registrations: AtomicU64,
    sent: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    connect_failures: AtomicU64,
    abrupt: AtomicU64,
    live: AtomicI64,
    peak_live: AtomicI64,
}

impl Counts {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn live(&self, d: i64) {
        let now = self.live.fetch_add(d, Ordering::Relaxed) + d;
        self.peak_live.fetch_max(now, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> f64 {
        c.load(Ordering::Relaxed) as f64
    }
}

/// A started relay with an ops endpoint.
pub(super) struct Relay {
    pub server: Server,
    pub addr: String,
    pub ops: String,
}

/// Starts `bistream relay serve` on a free port with `/metrics` on another, plus `extra` flags.
pub(super) async fn start_relay(ctx: &Ctx, extra: &[&str]) -> anyhow::Result<Relay> {
    let ops = format!("127.0.0.1:{}", free_port()?);
    let mut args = vec![
        "relay",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-addr",
        &ops,
    ];
    args.extend_from_slice(extra);
    let (server, addr) = spawn_ours(ctx, "bistream relay serve", &args).await?;
    Ok(Relay { server, addr, ops })
}

impl Relay {
    /// One counter or gauge from `/metrics`, summed over its labels (0 when absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = http_get(&self.ops, "/metrics").await?;
        Ok(metric_value(&text, name))
    }

    /// Fails when the relay exited or printed a panic.
    pub fn check_healthy(&mut self) -> anyhow::Result<()> {
        self.server.check_alive()?;
        if self.server.output_tail().contains("panicked") {
            bail!("the relay panicked: {}", self.server.output_tail());
        }
        Ok(())
    }
}

/// Sum of the samples of `name` (with or without labels) in a Prometheus text page.
pub(super) fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.1 GET with a 10 s bound; the body.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        body.ok_or_else(|| anyhow!("no HTTP body from {addr}{path}"))
    })
    .await
    .map_err(|_| anyhow!("GET {addr}{path} timed out"))?
}

/// MiB from KiB.
pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A row with one figure of ours.
pub(super) fn row(metric: &str, unit: &str, v: anyhow::Result<f64>) -> Row {
    let cell = match v {
        Ok(x) => Cell::from_runs(&[x], ""),
        Err(e) => Cell::NotAvailable(super::first_line(&format!("{e:#}"))),
    };
    Row::new(NAME, metric, unit, false).ours(cell)
}

async fn run(ctx: &Ctx) -> SuiteOutput {
    let pb = ctx.bar(NAME, 4);
    let mut out = SuiteOutput::default();
    let plan = Plan::new(ctx.cfg.quick);
    pb.set_message(format!("churn, {} clients", plan.pairs * 2));
    match churn(ctx, &plan).await {
        Ok((rows, note)) => {
            out.rows.extend(rows);
            out.notes.push(note);
        }
        Err(e) => out.rows.push(row("churn", "", Err(e))),
    }
    pb.inc(1);
    pb.set_message("slow consumer");
    out.rows
        .extend(attacks::slow_consumer(ctx, &mut out.notes).await);
    pb.inc(1);
    pb.set_message("slowloris");
    out.rows
        .extend(attacks::slowloris(ctx, &mut out.notes).await);
    pb.inc(1);
    pb.set_message("bad frames");
    out.rows
        .extend(attacks::bad_frames(ctx, &mut out.notes).await);
    pb.finish_with_message("done");
    out
}

/// The churn run; its rows and a note with the figures that are not rows.
async fn churn(ctx: &Ctx, plan: &Plan) -> anyhow::Result<(Vec<Row>, String)> {
    let clients = plan.pairs * 2;
    let soft = bistream_core::fdlimit::nofile_limit().soft.unwrap_or(0);
    if (soft as usize) < clients + 512 {
        bail!("open-file limit {soft} is too low for {clients} clients in this process (raise `ulimit -n`)");
    }
    // Keepalive off: a pair task reads only its own messages, so a ping to a client between
    // rounds may wait; churn measures forwarding, not keepalive.
    let mut relay = start_relay(ctx, &["--ping-interval", "0"]).await?;
    let mut warm = client(Side::Ours, &relay.addr, "warm-up", Uuid::new_v4(), 4096).await?;
    let _ = warm.close(None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = relay.server.rss_kib()?;
    let counts = Arc::new(Counts::default());
    let hist = Arc::new(std::sync::Mutex::new(Histogram::default()));
    let t0 = Instant::now();
    let end = t0 + plan.length;
    let mut tasks = Vec::with_capacity(plan.pairs);
    for i in 0..plan.pairs {
        let delay = plan.ramp.mul_f64(i as f64 / plan.pairs as f64);
        let (addr, counts, hist) = (relay.addr.clone(), counts.clone(), hist.clone());
        let (per_round, gap, max_rounds) = (plan.per_round, plan.gap, plan.max_rounds);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x2545_f491));
            let mut h = Histogram::default();
            while Instant::now() < end {
                let rounds = 1 + rng.next() % max_rounds;
                let abrupt = rng.next() % 8 == 0;
                let life = Life {
                    addr: &addr,
                    counts: &counts,
                    per_round,
                    gap,
                    rounds,
                    abrupt,
                    end,
                };
                if life.run(&mut h, &mut rng).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if let Ok(mut all) = hist.lock() {
                all.merge(&h);
            }
        }));
    }
    // Sample the relay's RSS while the pairs churn.
    let mut peak = base;
    let sampler_end = end + Duration::from_secs(30);
    let mut panicked = 0.0;
    while Instant::now() < sampler_end && tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match relay.server.rss_kib() {
            Ok(r) => peak = peak.max(r),
            Err(_) => {
                panicked = 1.0;
                break;
            }
        }
    }
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .is_err()
        {
            abort.abort();
            Counts::add(&counts.lost, 0);
        }
    }
    let churn_secs = t0.elapsed().as_secs_f64();
    // Read the RSS every second until it is back within the target of the baseline (an
    // allocator returns freed pages after a decay delay, not at once) or `settle` passed.
    let left_at = Instant::now();
    let mut after = relay.server.rss_kib().unwrap_or(0);
    let mut back_after: Option<Duration> = None;
    loop {
        if mib(after.saturating_sub(base)) <= AFTER_TARGET_MIB {
            back_after = Some(left_at.elapsed());
            break;
        }
        if left_at.elapsed() >= plan.settle {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = relay.server.rss_kib().unwrap_or(0);
    }
    let waited = left_at.elapsed();
    let healthy = relay.check_healthy();
    if healthy.is_err() {
        panicked = 1.0;
    }
    let left = relay.metric("relay_registered_clients").await;
    let open = relay.metric("relay_connections_open").await;
    let forwarded = relay.metric("relay_messages_forwarded_total").await;
    let client_closes = relay.metric("relay_client_closes_total").await;
    let c = &counts;
    let (p50, p99) = match hist.lock() {
        Ok(h) => (h.quantile(0.5), h.quantile(0.99)),
        Err(_) => (None, None),
    };
    relay.server.stop().await;
    let us = |q: Option<u64>| {
        q.map(|n| n as f64 / 1000.0)
            .ok_or_else(|| anyhow!("no samples"))
    };
    let rows = vec![
        row(
            &format!("churn {clients} clients: registrations"),
            "count",
            Ok(Counts::get(&c.registrations)),
        ),
        row(
            "churn: forwards sent between live clients",
            "count",
            Ok(Counts::get(&c.sent)),
        ),
        row(
            "churn: forwards lost (bounced or missing)",
            "count",
            Ok(Counts::get(&c.lost)),
        )
        .target(Target::AtMost { x: 0.0 }),
        row("churn: forward latency p50", "µs", us(p50)),
        row("churn: forward latency p99", "µs", us(p99)),
        row("churn: relay panics or exits", "count", Ok(panicked))
            .target(Target::AtMost { x: 0.0 }),
        row(
            "churn: relay RSS peak over baseline",
            "MiB",
            Ok(mib(peak.saturating_sub(base))),
        ),
        row(
            "churn: relay RSS after all clients left, over baseline",
            "MiB",
            Ok(mib(after.saturating_sub(base))),
        )
        .target(Target::AtMost {
            x: AFTER_TARGET_MIB,
        }),
        row(
            "churn: seconds until RSS back within 16 MiB of baseline",
            "s",
            back_after
                .map(|d| d.as_secs_f64())
                .ok_or_else(|| anyhow!("not back after {:.0} s", waited.as_secs_f64())),
        ),
        row(
            "churn: clients still registered after all left",
            "count",
            left.map(|v| v.max(open.as_ref().map(|o| *o).unwrap_or(0.0))),
        )
        .target(Target::AtMost { x: 0.0 }),
    ];
    let note = format!(
        "churn: {clients} clients as {} pairs for {:.1} s (starts spread over {:?}); per life 1–{} rounds of {} \
         messages each way, {:?} apart; one life in eight ends with a TCP drop instead of a close. Clients \
         connected at once: peak {}. Connect/registration failures retried: {}. Abrupt drops: {}. Delivered {} of {} \
         sent. Relay counters: {} forwarded, {} client closes. RSS baseline {:.1} MiB, peak {:.1} MiB, {:.1} s after \
         the last client left {:.1} MiB (read every second for up to {:?}, until within {} MiB of the baseline). Relay with --ping-interval 0 (pair tasks read only during their rounds).",
        plan.pairs,
        churn_secs,
        plan.ramp,
        plan.max_rounds,
        plan.per_round,
        plan.gap,
        c.peak_live.load(Ordering::Relaxed),
        Counts::get(&c.connect_failures),
        Counts::get(&c.abrupt),
        Counts::get(&c.delivered),
        Counts::get(&c.sent),
        forwarded.unwrap_or(f64::NAN),
        client_closes.unwrap_or(f64::NAN),
        mib(base),
        mib(peak),
        waited.as_secs_f64(),
        mib(after),
        plan.settle,
        AFTER_TARGET_MIB,
    );
    match healthy {
        Ok(()) => Ok((rows, note)),
        Err(e) => Ok((
            rows,
            format!(
                "{note} RELAY FAILED: {}",
                super::first_line(&format!("{e:#}"))
            ),
        )),
    }
}

/// A small xorshift generator (the churn's pattern only needs to vary, not to be secure).
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// One life of a pair: register both, exchange rounds, leave.
struct Life<'a> {
    addr: &'a str,
    counts: &'a Counts,
    per_round: usize,
    gap: Duration,
    rounds: u64,
    abrupt: bool,
    end: Instant,
}

impl Life<'_> {
    /// Errors are connection failures before both clients were registered (retried by the
    /// caller, nothing was sent yet); losses after that are counted, not returned.
    async fn run(&self, h: &mut Histogram, rng: &mut Rng) -> anyhow::Result<()> {
        let (ua, ub) = (Uuid::new_v4(), Uuid::new_v4());
        let connected = tokio::try_join!(
            client(Side::Ours, self.addr, "soak-a", ua, 4096),
            client(Side::Ours, self.addr, "soak-b", ub, 4096),
        );
        let (mut a, mut b) = match connected {
            Ok(p) => p,
            Err(e) => {
                Counts::add(&self.counts.connect_failures, 1);
                return Err(e);
            }
        };
        Counts::add(&self.counts.registrations, 2);
        self.counts.live(2);
        let mut seq = 0u64;
        for _ in 0..self.rounds {
            if Instant::now() >= self.end {
                break;
            }
            let r = self.round(&mut a, ua, &mut b, ub, &mut seq, h).await;
            if r.is_err() {
                break;
            }
            let jitter = Duration::from_millis(rng.next() % 100);
            tokio::time::sleep(self.gap + jitter).await;
        }
        if self.abrupt {
            Counts::add(&self.counts.abrupt, 2);
            drop((a, b));
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                let _ = tokio::join!(a.close(None), b.close(None));
                // Read to the end so the close handshake completes.
                let _ = tokio::join!(drain(&mut a), drain(&mut b));
            })
            .await;
        }
        self.counts.live(-2);
        Ok(())
    }

    /// Each side sends `per_round` messages to the other, then reads the other's; what does
    /// not arrive within 30 s, or comes back bounced, is lost.
    async fn round(
        &self,
        a: &mut Ws,
        ua: Uuid,
        b: &mut Ws,
        ub: Uuid,
        seq: &mut u64,
        h: &mut Histogram,
    ) -> anyhow::Result<()> {
        let first = *seq;
        *seq += self.per_round as u64;
        for s in first..*seq {
            a.feed(message(ua, ub, s)).await?;
            b.feed(message(ub, ua, s)).await?;
        }
        tokio::try_join!(a.flush(), b.flush())?;
        Counts::add(&self.counts.sent, 2 * self.per_round as u64);
        let (ra, rb) = tokio::join!(
            receive(b, ua, first, self.per_round),
            receive(a, ub, first, self.per_round)
        );
        let mut result = Ok(());
        for r in [ra, rb] {
            let (got, lat) = r;
            Counts::add(&self.counts.delivered, got.len() as u64);
            Counts::add(&self.counts.lost, (self.per_round - got.len()) as u64);
            for l in lat {
                h.record(l);
            }
            if got.len() < self.per_round {
                result = Err(anyhow!("lost"));
            }
        }
        result
    }
}

/// A `peer_connection` carrying `seq` and the send time.
pub(super) fn message(from: Uuid, to: Uuid, seq: u64) -> Message {
    Message::text(
        RelayMessage::PeerConnection(PeerConnectionRequest {
            source_uuid: from,
            source_name: "soak".into(),
            peer_uuid: to,
            description_type: DescriptionType::Offer,
            description: format!("{seq:020}{:020}", now_ns()),
            error: None,
        })
        .encode(),
    )
}

/// Reads until `n` messages from `from` with sequence numbers `first..first + n` arrived (in
/// order), a bounce arrives, or 30 s pass. Returns the sequence numbers and latencies.
pub(super) async fn receive(ws: &mut Ws, from: Uuid, first: u64, n: usize) -> (Vec<u64>, Vec<u64>) {
    let mut got = Vec::new();
    let mut lat = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < n {
            let Some(Ok(m)) = ws.next().await else { return };
            let Message::Text(t) = m else { continue };
            let Ok(RelayMessage::PeerConnection(p)) = RelayMessage::decode(&t) else {
                return;
            };
            if p.error.is_some() || p.source_uuid != from {
                return;
            }
            let (Some(s), Some(at)) = (
                p.description.get(..20).and_then(|s| s.parse::<u64>().ok()),
                p.description
                    .get(20..40)
                    .and_then(|s| s.parse::<u64>().ok()),
            ) else {
                return;
            };
            if s != first + got.len() as u64 {
                return;
            }
            got.push(s);
            lat.push(now_ns().saturating_sub(at));
        }
    })
    .await;
    (got, lat)
}

/// Reads until the connection ends.
async fn drain(ws: &mut Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_summed_over_labels() {
        let page = "# HELP relay_closes_total x\nrelay_closes_total{code=\"1008\"} 2\n\
                    relay_closes_total{code=\"4000\"} 3\nrelay_closes_total_other 9\nrelay_open 4\n";
        assert_eq!(metric_value(page, "relay_closes_total"), 5.0);
        assert_eq!(metric_value(page, "relay_open"), 4.0);
        assert_eq!(metric_value(page, "missing"), 0.0);
    }
}
