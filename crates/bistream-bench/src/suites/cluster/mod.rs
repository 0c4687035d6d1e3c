//! `cluster` suite: cross-node forwarding (two `bistream relay serve --cluster` nodes on a
//! private redis-server) against one node with `--cluster` off, in the same run: throughput
//! with 10 client pairs and one-hop latency; plus same-node forwarding on a clustered node, to
//! show that the local fast path pays nothing for clustering.
//!
//! Load: the relay suite's clients (`bouncer`): A keeps messages in flight to B, each
//! received message is sent straight back. Cross-node: every A on node 1, every B on node 2,
//! so each message crosses the backplane; both nodes work.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use bistream_relay_proto::{DescriptionType, PeerConnectionRequest, RelayMessage};

use super::relay::{bouncer, client, Side, Ws, CONNECT_CONCURRENCY, IN_FLIGHT};
use super::{first_line, free_port, spawn_ours, Runs, READY_TIMEOUT};
use crate::load::{self, drive, RunOut};
use crate::proc::Server;
use crate::report::{Against, Row, Target};
use crate::{Ctx, Series, SuiteDef, SuiteOutput};

/// The `cluster` suite.
pub const SUITE: SuiteDef = SuiteDef {
    name: "cluster",
    about: "cross-node relay forwarding over Redis vs a single node (throughput, latency)",
    run: start,
};

fn start(ctx: &Ctx) -> Pin<Box<dyn Future<Output = SuiteOutput> + Send + '_>> {
    Box::pin(run(ctx))
}

const NAME: &str = "cluster";
const PAIRS: usize = 10;

/// Optional: another `bistream` build (e.g. from before clustering existed) whose single node
/// is measured in the same run, to show the local fast path did not get slower.
const BASELINE_ENV: &str = "BISTREAM_BENCH_BASELINE_EXE";

struct Setup {
    redis: Server,
    single: (Server, String),
    baseline: Option<(Server, String)>,
    n1: (Server, String),
    n2: (Server, String),
}

impl Setup {
    async fn stop(self) {
        let base = self.baseline.map(|b| b.0);
        for s in [self.single.0, self.n1.0, self.n2.0, self.redis]
            .into_iter()
            .chain(base)
        {
            s.stop().await;
        }
    }
}

async fn start_redis() -> anyhow::Result<(Server, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--loglevel", "warning"]);
    let mut s = Server::spawn("redis-server", cmd)
        .context("redis-server not available (run scripts/setup-test-env)")?;
    s.wait_port(&format!("127.0.0.1:{port}"), READY_TIMEOUT)
        .await?;
    Ok((s, port))
}

/// Relay nodes the load is spread over in the cross-node layout.
const NODES: usize = 2;

/// The runtime threads of each relay process: the machine's cores shared among the relay
/// processes that carry the load together (the documented setting for co-located nodes,
/// docs/cluster.md). The one node has the machine to itself: all cores, the default.
fn node_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / NODES).max(1)
}

async fn node(ctx: &Ctx, port: u16, id: &str) -> anyhow::Result<(Server, String)> {
    let url = format!("redis://127.0.0.1:{port}");
    let mut cmd = Command::new(&ctx.cfg.exe);
    cmd.args([
        "relay",
        "serve",
        "--port",
        "0",
        "--cluster",
        &url,
        "--node-id",
        id,
    ])
    .args(["--log-level", "warn"]);
    cmd.arg("--worker-threads").arg(node_workers().to_string());
    let name = format!("bistream relay serve --cluster ({id})");
    let mut s = Server::spawn(&name, cmd)?;
    let addr = s
        .wait_line(READY_TIMEOUT, crate::proc::parse_addr)
        .await
        .with_context(|| format!("{name} did not print its address"))?;
    Ok((s, addr))
}

async fn setup(ctx: &Ctx) -> anyhow::Result<Setup> {
    let (redis, port) = start_redis().await?;
    let single = spawn_ours(
        ctx,
        "bistream relay serve",
        &["relay", "serve", "--port", "0"],
    )
    .await?;
    let n1 = node(ctx, port, "bench-1").await?;
    let n2 = node(ctx, port, "bench-2").await?;
    let baseline = match std::env::var_os(BASELINE_ENV) {
        Some(exe) => {
            let mut cmd = Command::new(exe);
            cmd.args(["relay", "serve", "--port", "0", "--log-level", "warn"]);
            let mut s = Server::spawn("baseline bistream relay serve", cmd)?;
            let addr = s
                .wait_line(READY_TIMEOUT, crate::proc::parse_addr)
                .await
                .context("the baseline build did not print its address")?;
            Some((s, addr))
        }
        None => None,
    };
    let s = Setup {
        redis,
        single,
        baseline,
        n1,
        n2,
    };
    // The nodes connect to Redis in the background: wait until a message crosses.
    if let Err(e) = crossing(&s.n1.1, &s.n2.1).await {
        s.stop().await;
        return Err(e);
    }
    Ok(s)
}

/// Waits (20 s at most) until a message from node `a` reaches a client of node `b`.
async fn crossing(a: &str, b: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let (ua, ub) = (Uuid::new_v4(), Uuid::new_v4());
    let mut wa = client(Side::Ours, a, "probe-a", ua, 4096).await?;
    let mut wb = client(Side::Ours, b, "probe-b", ub, 4096).await?;
    let probe = RelayMessage::PeerConnection(PeerConnectionRequest {
        source_uuid: ua,
        source_name: "probe-a".into(),
        peer_uuid: ub,
        description_type: DescriptionType::Offer,
        description: "probe".into(),
        error: None,
    })
    .encode();
    loop {
        wa.send(Message::text(probe.clone())).await?;
        let got = tokio::select! {
            m = next_text(&mut wb) => Some(m?),
            m = next_text(&mut wa) => { m?; None }, // bounced: not connected yet
            _ = tokio::time::sleep(Duration::from_secs(1)) => None,
        };
        if got.is_some() {
            let _ = wa.close(None).await;
            let _ = wb.close(None).await;
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster nodes did not connect through Redis within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            return Ok(t.to_string());
        }
    }
    Err(anyhow!("connection closed"))
}

/// The sum over every thread of process `pid` of `read(text)` of its `/proc/<pid>/task/*/FILE`.
/// A thread may end between the listing and the read: it no longer counts.
fn sum_over_threads(
    pid: u32,
    file: &str,
    read: impl Fn(&str) -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(s) = std::fs::read_to_string(t?.path().join(file)) else {
            continue;
        };
        total += read(&s)?;
    }
    Ok(total)
}

/// CPU time (ns) used so far by every thread of process `pid` (Linux
/// `/proc/<pid>/task/*/schedstat`, first field: nanoseconds on a CPU).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    sum_over_threads(pid, "schedstat", |s| {
        s.split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("unreadable schedstat of process {pid}"))
    })
}

/// Context switches (voluntary + involuntary) so far of every thread of process `pid`
/// (`/proc/<pid>/task/*/status`).
fn ctx_switches(pid: u32) -> anyhow::Result<u64> {
    sum_over_threads(pid, "status", |s| {
        Ok(s.lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            .sum())
    })
}

/// What one throughput run measured: the load generator's figures and, per server process
/// watched, the CPU nanoseconds it used and its context switches during the measured window.
struct Measured {
    run: RunOut,
    cpu_ns: Vec<u64>,
    switches: Vec<u64>,
}

impl Measured {
    /// CPU µs per completed message of the processes at `which` (indexes into the watched
    /// processes).
    fn cpu_us_per_msg(&self, which: &[usize]) -> anyhow::Result<f64> {
        if self.run.count == 0 {
            bail!("no messages completed");
        }
        let ns: u64 = which.iter().filter_map(|i| self.cpu_ns.get(*i)).sum();
        Ok(ns as f64 / 1000.0 / self.run.count as f64)
    }

    /// Context switches per completed message of the processes at `which`.
    fn switches_per_msg(&self, which: &[usize]) -> anyhow::Result<f64> {
        if self.run.count == 0 {
            bail!("no messages completed");
        }
        let n: u64 = which.iter().filter_map(|i| self.switches.get(*i)).sum();
        Ok(n as f64 / self.run.count as f64)
    }
}

/// `pairs` pairs, A on `a_addr` and B on `b_addr`, `in_flight` messages per pair.
async fn pairs_run(
    ctx: &Ctx,
    a_addr: &str,
    b_addr: &str,
    pairs: usize,
    in_flight: usize,
) -> anyhow::Result<RunOut> {
    Ok(measured_run(ctx, a_addr, b_addr, pairs, in_flight, &[])
        .await?
        .run)
}

/// [`pairs_run`], also sampling the CPU time of the processes `watch` at the start and the
/// end of the measured window (the same sleeps as [`drive`], started at the same moment).
async fn measured_run(
    ctx: &Ctx,
    a_addr: &str,
    b_addr: &str,
    pairs: usize,
    in_flight: usize,
    watch: &[u32],
) -> anyhow::Result<Measured> {
    let ids: Vec<(Uuid, Uuid)> = (0..pairs)
        .map(|_| (Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    let targets: Vec<(Uuid, String)> = ids
        .iter()
        .flat_map(|(a, b)| [(*a, a_addr.to_string()), (*b, b_addr.to_string())])
        .collect();
    let conns: Vec<anyhow::Result<Ws>> =
        futures_util::stream::iter(targets.into_iter().map(|(u, addr)| async move {
            let name = format!("bench-{}", &u.to_string()[..8]);
            client(Side::Ours, &addr, &name, u, 128 * 1024).await
        }))
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut conns = conns
        .into_iter()
        .collect::<anyhow::Result<Vec<Ws>>>()?
        .into_iter();
    let (phase, ctl) = load::phase();
    let mut workers = Vec::new();
    for (a, b) in ids {
        let (Some(wa), Some(wb)) = (conns.next(), conns.next()) else {
            bail!("lost a connection");
        };
        workers.push(tokio::spawn(bouncer(wa, a, b, in_flight, phase.clone())));
        workers.push(tokio::spawn(bouncer(wb, b, a, 0, phase.clone())));
    }
    let (warmup, duration) = (ctx.cfg.warmup, ctx.cfg.duration);
    let pids = watch.to_vec();
    let sampler = tokio::spawn(async move {
        let sample = |pids: &[u32], f: fn(u32) -> anyhow::Result<u64>| {
            pids.iter()
                .map(|p| f(*p))
                .collect::<anyhow::Result<Vec<u64>>>()
        };
        let delta = |end: Vec<u64>, start: Vec<u64>| -> Vec<u64> {
            end.iter()
                .zip(start)
                .map(|(e, s)| e.saturating_sub(s))
                .collect()
        };
        tokio::time::sleep(warmup).await;
        let (start, start_cs) = (sample(&pids, cpu_ns)?, sample(&pids, ctx_switches)?);
        tokio::time::sleep(duration).await;
        let (end, end_cs) = (sample(&pids, cpu_ns)?, sample(&pids, ctx_switches)?);
        Ok::<_, anyhow::Error>((delta(end, start), delta(end_cs, start_cs)))
    });
    let run = drive(ctl, warmup, duration, workers).await?;
    let (cpu_ns, switches) = sampler.await.context("the CPU sampler failed")??;
    Ok(Measured {
        run,
        cpu_ns,
        switches,
    })
}

async fn run(ctx: &Ctx) -> SuiteOutput {
    let runs = ctx.runs();
    let pb = ctx.bar(NAME, (5 * runs) as u64);
    pb.set_message("starting redis-server and three relay processes");
    let mut out = SuiteOutput::default();
    let setup = match setup(ctx).await {
        Ok(s) => s,
        Err(e) => {
            let why = first_line(&format!("{e:#}"));
            let mut r = Runs::default();
            r.fail(&why);
            for metric in [
                "cross-node forwarded messages/s, 10 pairs",
                "cross-node one-hop latency p50",
            ] {
                out.rows
                    .push(Row::new(NAME, metric, "", true).ours(r.cell()));
            }
            pb.finish_with_message("not available");
            return out;
        }
    };
    let (single, n1, n2) = (
        setup.single.1.clone(),
        setup.n1.1.clone(),
        setup.n2.1.clone(),
    );

    // The processes whose CPU time is sampled in each throughput run (the load generator is
    // this process).
    let watch: Vec<u32> = [&setup.n1.0, &setup.n2.0, &setup.redis, &setup.single.0]
        .into_iter()
        .filter_map(|s| s.pid().ok())
        .chain([std::process::id()])
        .collect();
    const N1: usize = 0;
    const N2: usize = 1;
    const REDIS: usize = 2;
    const SINGLE: usize = 3;
    const LOADGEN: usize = 4;

    // Throughput, interleaved: cross-node, same node with --cluster on, one node without.
    // Per layout: the server processes it runs on.
    let mut cols: [Runs; 3] = Default::default();
    let mut cpu: [Runs; 3] = Default::default();
    let mut cpu_redis = Runs::default();
    let mut switches: [Runs; 3] = Default::default();
    let mut cpu_loadgen: [Runs; 2] = Default::default();
    let layouts: [(&str, &str, &str, &[usize]); 3] = [
        ("cross-node", n1.as_str(), n2.as_str(), &[N1, N2, REDIS]),
        (
            "same node, --cluster on",
            n1.as_str(),
            n1.as_str(),
            &[N1, REDIS],
        ),
        (
            "one node, --cluster off",
            single.as_str(),
            single.as_str(),
            &[SINGLE],
        ),
    ];
    for run_i in 0..runs {
        for (i, (label, a, b, servers)) in layouts.iter().enumerate() {
            pb.set_message(format!("{PAIRS} pairs, {label}, run {}/{runs}", run_i + 1));
            let m = if watch.len() == LOADGEN + 1 {
                measured_run(ctx, a, b, PAIRS, IN_FLIGHT, &watch).await
            } else {
                Err(anyhow!("a server's process id is unknown"))
            };
            match m {
                Ok(m) => {
                    cols[i].push(Ok(m.run.rate()));
                    cpu[i].push(m.cpu_us_per_msg(servers));
                    // The relay processes only (Redis is a single thread).
                    let relays: Vec<usize> =
                        servers.iter().copied().filter(|s| *s != REDIS).collect();
                    switches[i].push(m.switches_per_msg(&relays));
                    if i == 0 {
                        cpu_redis.push(m.cpu_us_per_msg(&[REDIS]));
                    }
                    if i != 1 {
                        cpu_loadgen[i / 2].push(m.cpu_us_per_msg(&[LOADGEN]));
                    }
                }
                Err(e) => {
                    let why = first_line(&format!("{e:#}"));
                    cols[i].fail(&why);
                    cpu[i].fail(&why);
                    switches[i].fail(&why);
                }
            }
            pb.inc(1);
        }
    }
    out.rows.push(
        Row::new(
            NAME,
            format!("forwarded messages/s, {PAIRS} pairs, A on node 1 and B on node 2"),
            "msg/s",
            true,
        )
        .ours(cols[0].cell())
        .floor(cols[2].cell())
        .ratio(Against::Floor)
        .target(Target::RatioAtLeast {
            against: Against::Floor,
            x: 0.5,
        })
        .note("reference = one node with --cluster off, same load"),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("forwarded messages/s, {PAIRS} pairs, same node with --cluster on"),
            "msg/s",
            true,
        )
        .ours(cols[1].cell())
        .floor(cols[2].cell())
        .ratio(Against::Floor)
        .note(
            "reference = one node with --cluster off: the local path must not pay for clustering",
        ),
    );

    out.rows.push(
        Row::new(
            NAME,
            "server CPU per forwarded message, cross-node (node 1 + node 2 + Redis)",
            "µs",
            false,
        )
        .ours(cpu[0].cell())
        .floor(cpu[2].cell())
        .ratio(Against::Floor)
        .note(
            "CPU time of the server processes in the measured window ÷ messages: less \
             sensitive to the machine's load than msg/s; reference = the one node",
        ),
    );
    out.rows.push(
        Row::new(
            NAME,
            "server CPU per forwarded message, cross-node: Redis alone",
            "µs",
            false,
        )
        .ours(cpu_redis.cell())
        .floor(cpu[2].cell())
        .ratio(Against::Floor)
        .note("reference = the one node"),
    );
    out.rows.push(
        Row::new(
            NAME,
            "server CPU per forwarded message, same node with --cluster on",
            "µs",
            false,
        )
        .ours(cpu[1].cell())
        .floor(cpu[2].cell())
        .ratio(Against::Floor)
        .note("reference = the one node with --cluster off"),
    );
    out.rows.push(
        Row::new(
            NAME,
            "relay context switches per forwarded message, cross-node (node 1 + node 2)",
            "",
            false,
        )
        .ours(switches[0].cell())
        .floor(switches[2].cell())
        .ratio(Against::Floor)
        .note("voluntary + involuntary, all threads; reference = the one node"),
    );
    out.rows.push(
        Row::new(
            NAME,
            "load generator CPU per message, cross-node",
            "µs",
            false,
        )
        .ours(cpu_loadgen[0].cell())
        .floor(cpu_loadgen[1].cell())
        .ratio(Against::Floor)
        .note("this process; reference = its CPU per message against the one node"),
    );

    if let Some((_, base)) = &setup.baseline {
        let mut ab: [Runs; 2] = Default::default();
        for run_i in 0..runs {
            for (i, addr) in [single.as_str(), base.as_str()].into_iter().enumerate() {
                pb.set_message(format!(
                    "{PAIRS} pairs, this build vs baseline, run {}/{runs}",
                    run_i + 1
                ));
                ab[i].push(
                    pairs_run(ctx, addr, addr, PAIRS, IN_FLIGHT)
                        .await
                        .map(|r| r.rate()),
                );
            }
        }
        out.rows.push(
            Row::new(NAME, format!("forwarded messages/s, {PAIRS} pairs, one node --cluster off: this build vs {BASELINE_ENV}"), "msg/s", true)
                .ours(ab[0].cell())
                .floor(ab[1].cell())
                .ratio(Against::Floor)
                .note("reference = the baseline build's single node"),
        );
    }

    // Latency: one pair, one message in flight.
    let mut p50: [Runs; 2] = Default::default();
    let mut p99: [Runs; 2] = Default::default();
    let mut hists: [crate::hist::Histogram; 2] = Default::default();
    let lat_layouts = [
        ("cross-node", n1.as_str(), n2.as_str()),
        ("one node", single.as_str(), single.as_str()),
    ];
    for run_i in 0..runs {
        for (i, (label, a, b)) in lat_layouts.iter().enumerate() {
            pb.set_message(format!("latency, {label}, run {}/{runs}", run_i + 1));
            match pairs_run(ctx, a, b, 1, 1).await {
                Ok(r) => {
                    p50[i].push(r.quantile_us(0.5).ok_or_else(|| anyhow!("no samples")));
                    p99[i].push(r.quantile_us(0.99).ok_or_else(|| anyhow!("no samples")));
                    hists[i].merge(&r.hist);
                }
                Err(e) => {
                    let why = first_line(&format!("{e:#}"));
                    p50[i].fail(&why);
                    p99[i].fail(&why);
                }
            }
            pb.inc(1);
        }
    }
    out.rows.push(
        Row::new(NAME, "cross-node one-hop latency p50", "µs", false)
            .ours(p50[0].cell())
            .floor(p50[1].cell())
            .ratio(Against::Floor)
            .target(Target::RatioAtMost {
                against: Against::Floor,
                x: 3.0,
            })
            .note("reference = one node, --cluster off"),
    );
    out.rows.push(
        Row::new(NAME, "cross-node one-hop latency p99", "µs", false)
            .ours(p99[0].cell())
            .floor(p99[1].cell())
            .ratio(Against::Floor),
    );
    for (h, l) in hists.into_iter().zip([
        "cross-node (node 1 → Redis → node 2)",
        "one node (--cluster off)",
    ]) {
        out.series.push(Series {
            chart: NAME.into(),
            label: l.into(),
            hist: h,
        });
    }
    setup.stop().await;
    pb.finish_with_message("done");
    out.notes.push(format!(
        "cluster: a private redis-server (no persistence) and three `bistream relay serve` processes: two \
         with --cluster on that Redis, one without. Throughput: {PAIRS} pairs keep {IN_FLIGHT} messages each in \
         flight (the relay suite's clients); cross-node puts every A on node 1 and every B on node 2. \
         Latency: one pair, one message in flight. All on one shared machine: Redis, three relays and the \
         load generator compete for the same cores. Runtime threads: each relay process gets the \
         machine's cores divided by the relay nodes carrying the load (docs/cluster.md, \
         \"Co-located nodes\"): --worker-threads {} for each of the two clustered nodes, the \
         default (all cores) for the one node.",
        node_workers()
    ));
    out
}
