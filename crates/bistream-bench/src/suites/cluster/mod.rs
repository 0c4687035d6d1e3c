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

use anyhow::anyhow;

use super::{first_line, Runs};
use crate::report::{Against, Row, Target};
use crate::{Ctx, Series, SuiteDef, SuiteOutput};

mod measure;
mod procs;

use measure::{measured_run, pairs_run};
use procs::{node_workers, setup};

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

/// Messages each pair keeps in flight in the throughput runs, every layout alike: twice the
/// relay suite's, so that the longer cross-node path (four processes instead of two) is
/// measured at saturation too; the one node is as fast or faster at 32 as at 16 (D42,
/// figures at 8, 16, 32 and 64 for both columns).
const THROUGHPUT_IN_FLIGHT: usize = 32;

/// Optional: messages in flight per pair in the throughput runs (every layout alike), to
/// measure both columns at other offered loads.
const IN_FLIGHT_ENV: &str = "BISTREAM_BENCH_CLUSTER_IN_FLIGHT";

fn in_flight() -> usize {
    std::env::var(IN_FLIGHT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=4096).contains(n))
        .unwrap_or(THROUGHPUT_IN_FLIGHT)
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
    let in_flight = in_flight();
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
                measured_run(ctx, a, b, PAIRS, in_flight, &watch).await
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
                    pairs_run(ctx, addr, addr, PAIRS, in_flight)
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
         with --cluster on that Redis, one without. Throughput: {PAIRS} pairs keep {in_flight} messages each in \
         flight (the relay suite's clients); cross-node puts every A on node 1 and every B on node 2. \
         Latency: one pair, one message in flight (whatever {IN_FLIGHT_ENV} says). All on one shared machine: Redis, three relays and the \
         load generator compete for the same cores. Runtime threads: each relay process gets the \
         machine's cores divided by the relay nodes carrying the load (docs/cluster.md, \
         \"Co-located nodes\"): --worker-threads {} for each of the two clustered nodes, the \
         default (all cores) for the one node.",
        node_workers()
    ));
    out
}
