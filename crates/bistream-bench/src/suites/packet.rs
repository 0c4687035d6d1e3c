//! `packet` suite: sequential small request/response latency, pipelined small requests/s and
//! 1 MiB echo throughput, for `bistream packet serve --demo` and a stock `cs.packetstream`
//! server (both driven by our Rust `PacketConnection` as the client), against raw TCP
//! (ping-pong and copy through an echo server). The stock Python client is also run against
//! both servers, so each implementation is measured on each side of the connection.
//!
//! Python runs with `packet_grace=0` on both sides (its default 0.01 s would cap a sequential
//! client near 50 requests/s); ours flushes when its queue drains (its default).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use serde::Deserialize;

use bistream_packet::{Builder, PacketConnection};

use super::{python_missing, spawn_floor, spawn_ours, Runs, READY_TIMEOUT};
use crate::floor::FloorKind;
use crate::hist::Histogram;
use crate::load::{self, drive, now_ns, Phase, RunOut, WorkerOut};
use crate::proc::{parse_addr, Server};
use crate::report::{Against, Row, Target};
use crate::{Ctx, Series, SuiteDef, SuiteOutput};

/// The `packet` suite.
pub const SUITE: SuiteDef = SuiteDef {
    name: "packet",
    about: "packet request latency, pipelined rate and 1 MiB throughput vs cs.packetstream",
    run: start,
};

fn start(ctx: &Ctx) -> Pin<Box<dyn Future<Output = SuiteOutput> + Send + '_>> {
    Box::pin(run(ctx))
}

const NAME: &str = "packet";
const SERVER_PY: &str = include_str!("../../python/packet_server.py");
const CLIENT_PY: &str = include_str!("../../python/packet_client.py");

/// Payload of the "small" requests.
const SMALL: usize = 16;
/// Requests in flight for the pipelined small workload.
const PIPELINE: usize = 64;
/// Payload of the bulk requests.
const BIG: usize = 1 << 20;
/// Requests in flight for the bulk workload.
const BIG_IN_FLIGHT: usize = 8;

/// (payload size, requests in flight) of each workload, in row order.
const WORKLOADS: [(usize, usize); 3] = [(SMALL, 1), (SMALL, PIPELINE), (BIG, BIG_IN_FLIGHT)];

async fn start_ours(ctx: &Ctx) -> anyhow::Result<(Server, String)> {
    spawn_ours(
        ctx,
        "bistream packet serve",
        &["packet", "serve", "127.0.0.1:0", "--demo"],
    )
    .await
}

async fn start_python(ctx: &Ctx) -> anyhow::Result<(Server, String)> {
    if let Some(why) = python_missing(&ctx.cfg.packet_python) {
        bail!(why);
    }
    let script = ctx.script("packet_server.py", SERVER_PY)?;
    let mut cmd = tokio::process::Command::new(&ctx.cfg.packet_python);
    cmd.arg(script).args(["127.0.0.1", "0"]);
    let mut s = Server::spawn("cs.packetstream server", cmd)?;
    let addr = s.wait_line(READY_TIMEOUT, parse_addr).await?;
    Ok((s, addr))
}

/// Figures of one workload on one setup, over runs.
#[derive(Default)]
struct Figures {
    rate: Runs,
    mbps: Runs,
    p50: Runs,
    p99: Runs,
    hist: Histogram,
}

impl Figures {
    fn push(&mut self, r: anyhow::Result<RunOut>) {
        match r {
            Ok(o) => {
                self.rate.push(Ok(o.rate()));
                self.mbps.push(Ok(o.mb_per_s()));
                self.p50
                    .push(o.quantile_us(0.5).ok_or_else(|| anyhow!("no samples")));
                self.p99
                    .push(o.quantile_us(0.99).ok_or_else(|| anyhow!("no samples")));
                self.hist.merge(&o.hist);
            }
            Err(e) => self.fail(&super::first_line(&format!("{e:#}"))),
        }
    }

    fn fail(&mut self, why: &str) {
        self.rate.fail(why);
        self.mbps.fail(why);
        self.p50.fail(why);
        self.p99.fail(why);
    }
}

async fn run(ctx: &Ctx) -> SuiteOutput {
    let runs = ctx.runs();
    let steps = (WORKLOADS.len() * 3 * runs + 2) as u64;
    let pb = ctx.bar(NAME, steps);
    pb.set_message("starting servers");
    let ours = start_ours(ctx).await;
    let python = start_python(ctx).await;
    let floor = spawn_floor(ctx, FloorKind::TcpEcho).await;
    let why = |r: &anyhow::Result<(Server, String)>| match r {
        Ok((_, a)) => Ok(a.clone()),
        Err(e) => Err(super::first_line(&format!("{e:#}"))),
    };
    let (ours_addr, py_addr, floor_addr) = (why(&ours), why(&python), why(&floor));

    // [workload][0 = Rust client → ours, 1 = Rust client → Python, 2 = raw TCP floor]
    let mut figs: Vec<[Figures; 3]> = WORKLOADS.iter().map(|_| Default::default()).collect();
    for run_i in 0..runs {
        for (w, (size, in_flight)) in WORKLOADS.iter().enumerate() {
            for (col, (label, addr)) in [("ours", &ours_addr), ("python server", &py_addr)]
                .into_iter()
                .enumerate()
            {
                pb.set_message(format!(
                    "{} B × {in_flight}, {label}, run {}/{runs}",
                    size,
                    run_i + 1
                ));
                match addr {
                    Ok(a) => figs[w][col].push(rust_client(ctx, a, *size, *in_flight).await),
                    Err(e) => figs[w][col].fail(e),
                }
                pb.inc(1);
            }
            pb.set_message(format!("{size} B floor, run {}/{runs}", run_i + 1));
            let floor_run = match &floor_addr {
                Ok(a) if *in_flight == 1 => {
                    Some(load::tcp_ping_pong(a, *size, ctx.cfg.warmup, ctx.cfg.duration).await)
                }
                Ok(a) if *size == BIG => {
                    Some(load::tcp_copy(a, *size, ctx.cfg.warmup, ctx.cfg.duration).await)
                }
                Ok(_) => None,
                Err(e) => Some(Err(anyhow!("{e}"))),
            };
            if let Some(r) = floor_run {
                figs[w][2].push(r);
            }
            pb.inc(1);
        }
    }

    // The stock Python client against both servers.
    let mut py_client: Vec<[Figures; 2]> = WORKLOADS.iter().map(|_| Default::default()).collect();
    for (col, (label, addr)) in [("ours", &ours_addr), ("python server", &py_addr)]
        .into_iter()
        .enumerate()
    {
        pb.set_message(format!("python client → {label}"));
        match addr {
            Ok(a) => match python_client(ctx, a).await {
                Ok(results) => {
                    for (w, spec) in WORKLOADS.iter().enumerate() {
                        let mine: Vec<&PyRun> = results
                            .iter()
                            .filter(|r| (r.size, r.in_flight) == *spec)
                            .collect();
                        if mine.is_empty() {
                            py_client[w][col].fail("the Python client reported nothing");
                        }
                        for r in mine {
                            py_client[w][col].push(r.to_run_out(spec.0));
                        }
                    }
                }
                Err(e) => {
                    let e = super::first_line(&format!("{e:#}"));
                    for f in py_client.iter_mut() {
                        f[col].fail(&e);
                    }
                }
            },
            Err(e) => {
                for f in py_client.iter_mut() {
                    f[col].fail(e);
                }
            }
        }
        pb.inc(1);
    }
    for s in [ours, python, floor].into_iter().flatten() {
        s.0.stop().await;
    }

    let mut out = SuiteOutput::default();
    let [seq, pipe, big] = [0, 1, 2];
    let f = &figs;
    out.rows.push(
        Row::new(
            NAME,
            format!("sequential {SMALL} B request/response p50"),
            "µs",
            false,
        )
        .ours(f[seq][0].p50.cell())
        .peer(f[seq][1].p50.cell())
        .floor(f[seq][2].p50.cell())
        .ratio(Against::Floor)
        .target(Target::RatioAtMost {
            against: Against::Floor,
            x: 1.5,
        }),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("sequential {SMALL} B request/response p99"),
            "µs",
            false,
        )
        .ours(f[seq][0].p99.cell())
        .peer(f[seq][1].p99.cell())
        .floor(f[seq][2].p99.cell())
        .ratio(Against::Floor),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("sequential {SMALL} B requests/s"),
            "req/s",
            true,
        )
        .ours(f[seq][0].rate.cell())
        .peer(f[seq][1].rate.cell())
        .floor(f[seq][2].rate.cell())
        .ratio(Against::Peer),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("pipelined {SMALL} B requests/s ({PIPELINE} in flight, one connection)"),
            "req/s",
            true,
        )
        .ours(f[pipe][0].rate.cell())
        .peer(f[pipe][1].rate.cell())
        .ratio(Against::Peer)
        .target(Target::AtLeast { x: 300_000.0 }),
    );
    // "≥ 50× the Python implementation": against Python on both ends (usually faster than a
    // Rust client driving the Python server, so this is the stricter comparison).
    out.rows.push(
        Row::new(
            NAME,
            format!(
                "pipelined {SMALL} B requests/s: all-Rust vs all-Python ({PIPELINE} in flight)"
            ),
            "req/s",
            true,
        )
        .ours(f[pipe][0].rate.cell())
        .peer(py_client[pipe][1].rate.cell())
        .ratio(Against::Peer)
        .target(Target::RatioAtLeast {
            against: Against::Peer,
            x: 50.0,
        }),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("1 MiB echo ({BIG_IN_FLIGHT} in flight), each way"),
            "MB/s",
            true,
        )
        .ours(f[big][0].mbps.cell())
        .peer(f[big][1].mbps.cell())
        .floor(f[big][2].mbps.cell())
        .ratio(Against::Peer)
        .target(Target::AtLeast { x: 1500.0 }),
    );
    let pc = &py_client;
    out.rows.push(
        Row::new(
            NAME,
            format!("Python client: sequential {SMALL} B p50"),
            "µs",
            false,
        )
        .ours(pc[seq][0].p50.cell())
        .peer(pc[seq][1].p50.cell())
        .ratio(Against::Peer),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("Python client: pipelined {SMALL} B requests/s ({PIPELINE} in flight)"),
            "req/s",
            true,
        )
        .ours(pc[pipe][0].rate.cell())
        .peer(pc[pipe][1].rate.cell())
        .ratio(Against::Peer),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("Python client: 1 MiB echo ({BIG_IN_FLIGHT} in flight), each way"),
            "MB/s",
            true,
        )
        .ours(pc[big][0].mbps.cell())
        .peer(pc[big][1].mbps.cell())
        .ratio(Against::Peer),
    );

    let [a, b, c] = std::mem::take(&mut figs[seq]);
    let [d, e] = std::mem::take(&mut py_client[seq]);
    for (fig, label) in [
        (a, "Rust client → bistream packet serve"),
        (b, "Rust client → cs.packetstream server"),
        (c, "raw TCP ping-pong (floor)"),
        (d, "Python client → bistream packet serve"),
        (e, "Python client → cs.packetstream server"),
    ] {
        out.series.push(Series {
            chart: NAME.into(),
            label: format!("{label}, {SMALL} B sequential"),
            hist: fig.hist,
        });
    }
    out.notes.push(format!(
        "rows without a prefix: the client is our Rust PacketConnection (the load generator); ours = `bistream packet \
         serve --demo`, peer = a stock cs.packetstream server (Python threads, packet_grace=0); floor = raw TCP through \
         an echo server (ping-pong of {SMALL} B for the sequential rows, a full-duplex 1 MiB-write copy for the MB/s \
         row). The all-Rust vs all-Python row compares our client and server with the stock Python client and server \
         (the figures of the first pipelined row and of the Python-client pipelined row). \"Python client:\" rows: the stock Python client (packet_grace=0) against ours (ours column) and against \
         the Python server (peer column); those runs are not interleaved with the others. Echo = rq_type 0, flags and \
         payload sent back. MB/s = 10^6 payload bytes per second in one direction while the same flows back."
    ));
    out.notes.push(
        "the stock Python server is often slower under our fast Rust client than under the (slower) Python \
         client: each request runs on a new handler thread and the next request arrives while the previous \
         threads still contend for the GIL, whose forced hand-off interval is 5 ms. Both are real behaviours of \
         the peer; the all-Rust vs all-Python row uses the Python client's figure."
            .to_string(),
    );
    pb.finish_with_message("done");
    out
}

/// Our PacketConnection as the client: keeps `in_flight` echo requests outstanding.
async fn rust_client(
    ctx: &Ctx,
    addr: &str,
    size: usize,
    in_flight: usize,
) -> anyhow::Result<RunOut> {
    let sock = load::connect(addr).await?;
    let conn = Builder::new().tcp(sock);
    let (phase, ctl) = load::phase();
    let c2 = conn.clone();
    let w = tokio::spawn(async move { pump(c2, size, in_flight, phase).await });
    let r = drive(ctl, ctx.cfg.warmup, ctx.cfg.duration, vec![w]).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.close()).await;
    r
}

async fn pump(
    conn: PacketConnection,
    size: usize,
    in_flight: usize,
    mut phase: Phase,
) -> anyhow::Result<WorkerOut> {
    let payload = Bytes::from(vec![7u8; size]);
    let mut out = WorkerOut::default();
    let mut q = VecDeque::with_capacity(in_flight);
    while !phase.stopped() {
        while q.len() < in_flight {
            // Time from before submit: submit may wait (queue space, or a yield) and the
            // response can arrive before it returns.
            let t = now_ns();
            let f = conn.submit(0, 0, payload.clone(), 0).await?;
            q.push_back((t, f));
        }
        let Some((t, f)) = q.pop_front() else { break };
        let r = tokio::select! {
            r = f => r?,
            _ = phase.until_stop() => break,
        };
        if !r.ok || r.payload.len() != size {
            bail!(
                "bad echo: ok={} len={} ({})",
                r.ok,
                r.payload.len(),
                String::from_utf8_lossy(&r.payload[..r.payload.len().min(80)])
            );
        }
        out.complete(&phase, t, size as u64);
    }
    // Let the outstanding responses arrive before the connection closes.
    for (_, f) in q {
        let _ = tokio::time::timeout(Duration::from_secs(5), f).await;
    }
    Ok(out)
}

#[derive(Deserialize)]
struct PyRun {
    size: usize,
    in_flight: usize,
    count: u64,
    secs: f64,
    #[serde(default)]
    lat_ns: Vec<u64>,
}

impl PyRun {
    fn to_run_out(&self, size: usize) -> anyhow::Result<RunOut> {
        if self.count == 0 || self.secs <= 0.0 {
            bail!("the Python client completed nothing");
        }
        let mut hist = Histogram::new();
        for l in &self.lat_ns {
            hist.record(*l);
        }
        Ok(RunOut {
            count: self.count,
            bytes: self.count * size as u64,
            secs: self.secs,
            hist,
        })
    }
}

/// Runs the stock Python client against `addr` for every workload and run.
async fn python_client(ctx: &Ctx, addr: &str) -> anyhow::Result<Vec<PyRun>> {
    if let Some(why) = python_missing(&ctx.cfg.packet_python) {
        bail!(why);
    }
    let script = ctx.script("packet_client.py", CLIENT_PY)?;
    let mut cmd = tokio::process::Command::new(&ctx.cfg.packet_python);
    cmd.arg(script)
        .arg(addr)
        .arg(format!("{}", ctx.cfg.warmup.as_secs_f64()))
        .arg(format!("{}", ctx.cfg.duration.as_secs_f64()))
        .arg(ctx.runs().to_string());
    for (size, in_flight) in WORKLOADS {
        cmd.arg(format!("{size}:{in_flight}"));
    }
    cmd.kill_on_drop(true);
    let per_run = ctx.cfg.warmup + ctx.cfg.duration + Duration::from_secs(10);
    let budget = per_run * (ctx.runs() * WORKLOADS.len()) as u32 + Duration::from_secs(20);
    let out = tokio::time::timeout(budget, cmd.output())
        .await
        .map_err(|_| anyhow!("the Python client did not finish within {budget:?}"))?
        .context("cannot run the Python client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("the Python client failed ({}): {last}", out.status);
    }
    // cs.progress prints its own lines on stdout: keep only the JSON ones.
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad Python client line {l:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_scripts_are_the_helpers() {
        assert!(super::SERVER_PY.contains("packet_grace=GRACE"));
        assert!(super::CLIENT_PY.contains("json.dumps"));
    }
}
