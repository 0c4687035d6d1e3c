//! `relay` suite: forwarded messages/s with 1, 10 and 100 client pairs, one-hop forward latency,
//! and RSS per idle registered client, for `bistream relay serve` and the real Python
//! `proxystore-relay`, against a raw WebSocket echo (the floor).
//!
//! Load: each pair registers two raw WebSocket clients (A, B) and keeps a fixed number of
//! `peer_connection` messages in flight between them; every received message is sent straight
//! back to the other side through the relay. A message carries its send time, so the receiver
//! measures one hop (sender → relay → receiver). The floor runs the same clients against an
//! echo server (one message in and one out per hop, like a forward).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::{free_port, python_missing, spawn_floor, spawn_ours, Runs, READY_TIMEOUT};
use crate::floor::FloorKind;
use crate::load::{self, drive, RunOut};
use crate::proc::Server;
use crate::report::{Against, Cell, Row, Target};
use crate::{Ctx, Series, SuiteDef, SuiteOutput};

mod clients;

pub(super) use clients::{bouncer, client, connect_all};

/// The `relay` suite.
pub const SUITE: SuiteDef = SuiteDef {
    name: "relay",
    about: "relay forwarding rate, one-hop latency and idle memory vs proxystore-relay",
    run: start,
};

fn start(ctx: &Ctx) -> Pin<Box<dyn Future<Output = SuiteOutput> + Send + '_>> {
    Box::pin(run(ctx))
}

const NAME: &str = "relay";
/// Client pair counts of the throughput rows.
const PAIRS: [usize; 3] = [1, 10, 100];
/// Messages in flight per pair.
pub(super) const IN_FLIGHT: usize = 16;
/// Bytes of padding in each description (after the 20-digit timestamp).
const PAD: usize = 100;
/// Concurrent connection attempts while setting up clients.
pub(super) const CONNECT_CONCURRENCY: usize = 64;

pub(super) type Ws = WebSocketStream<TcpStream>;

/// Which server a measurement drives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Ours,
    Peer,
    Floor,
}

struct Servers {
    ours: Result<(Server, String), String>,
    peer: Result<(Server, String), String>,
    floor: Result<(Server, String), String>,
}

impl Servers {
    fn addr(&self, side: Side) -> Result<&str, &str> {
        let s = match side {
            Side::Ours => &self.ours,
            Side::Peer => &self.peer,
            Side::Floor => &self.floor,
        };
        s.as_ref().map(|(_, a)| a.as_str()).map_err(|e| e.as_str())
    }

    async fn stop(self) {
        for (s, _) in [self.ours, self.peer, self.floor].into_iter().flatten() {
            s.stop().await;
        }
    }
}

async fn start_ours(ctx: &Ctx) -> anyhow::Result<(Server, String)> {
    spawn_ours(
        ctx,
        "bistream relay serve",
        &["relay", "serve", "--host", "127.0.0.1", "--port", "0"],
    )
    .await
}

async fn start_peer(ctx: &Ctx) -> anyhow::Result<(Server, String)> {
    if let Some(why) = python_missing(&ctx.cfg.relay_python) {
        bail!(why);
    }
    let port = free_port()?;
    let mut cmd = tokio::process::Command::new(&ctx.cfg.relay_python);
    cmd.arg("-c")
        .arg(
            "import sys\nfrom proxystore.p2p.relay.run import cli\n\
             sys.argv[0] = 'proxystore-relay'\nsys.exit(cli())",
        )
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        // Both servers run without per-message logging (Python logs every forward at INFO).
        .args(["--log-level", "WARNING"]);
    let mut s = Server::spawn("proxystore-relay", cmd)?;
    let addr = format!("127.0.0.1:{port}");
    s.wait_port(&addr, READY_TIMEOUT).await?;
    Ok((s, addr))
}

fn err_string(r: anyhow::Result<(Server, String)>) -> Result<(Server, String), String> {
    r.map_err(|e| super::first_line(&format!("{e:#}")))
}

async fn run(ctx: &Ctx) -> SuiteOutput {
    let runs = ctx.runs();
    let steps = (PAIRS.len() * 3 * runs + 3 * runs + 2 * ctx.cfg.idle_clients.len()) as u64;
    let pb = ctx.bar(NAME, steps);
    pb.set_message("starting servers");
    let servers = Servers {
        ours: err_string(start_ours(ctx).await),
        peer: err_string(start_peer(ctx).await),
        floor: err_string(spawn_floor(ctx, FloorKind::WsEcho).await),
    };
    let mut out = SuiteOutput::default();
    let sides = [
        (Side::Ours, "ours"),
        (Side::Peer, "peer"),
        (Side::Floor, "floor"),
    ];

    // Throughput: runs interleaved across the three servers so drifting machine load hits all.
    for pairs in PAIRS {
        let mut cols: [Runs; 3] = Default::default();
        for run_i in 0..runs {
            for (i, (side, label)) in sides.iter().enumerate() {
                pb.set_message(format!("{pairs} pairs, {label}, run {}/{runs}", run_i + 1));
                match servers.addr(*side) {
                    Ok(addr) => cols[i].push(throughput(ctx, *side, addr, pairs).await),
                    Err(why) => cols[i].fail(why),
                }
                pb.inc(1);
            }
        }
        let mut row = Row::new(
            NAME,
            format!("forwarded messages/s, {pairs} client pair(s)"),
            "msg/s",
            true,
        )
        .ours(cols[0].cell())
        .peer(cols[1].cell())
        .floor(cols[2].cell())
        .ratio(Against::Peer);
        if pairs == 100 {
            row = row.target(Target::RatioAtLeast {
                against: Against::Peer,
                x: 30.0,
            });
        }
        out.rows.push(row);
    }

    // Latency: one pair, one message in flight.
    let mut p50: [Runs; 3] = Default::default();
    let mut p99: [Runs; 3] = Default::default();
    let mut hists: [crate::hist::Histogram; 3] = Default::default();
    for run_i in 0..runs {
        for (i, (side, label)) in sides.iter().enumerate() {
            pb.set_message(format!("latency, {label}, run {}/{runs}", run_i + 1));
            match servers.addr(*side) {
                Ok(addr) => match latency(ctx, *side, addr).await {
                    Ok(r) => {
                        p50[i].push(r.quantile_us(0.5).ok_or_else(|| anyhow!("no samples")));
                        p99[i].push(r.quantile_us(0.99).ok_or_else(|| anyhow!("no samples")));
                        hists[i].merge(&r.hist);
                    }
                    Err(e) => {
                        let why = super::first_line(&format!("{e:#}"));
                        p50[i].fail(&why);
                        p99[i].fail(&why);
                    }
                },
                Err(why) => {
                    p50[i].fail(why);
                    p99[i].fail(why);
                }
            }
            pb.inc(1);
        }
    }
    out.rows.push(
        Row::new(NAME, "one-hop forward latency p50", "µs", false)
            .ours(p50[0].cell())
            .peer(p50[1].cell())
            .floor(p50[2].cell())
            .ratio(Against::Floor)
            .target(Target::RatioAtMost {
                against: Against::Floor,
                x: 2.0,
            })
            .note("floor = raw WebSocket echo round trip"),
    );
    out.rows.push(
        Row::new(NAME, "one-hop forward latency p99", "µs", false)
            .ours(p99[0].cell())
            .peer(p99[1].cell())
            .floor(p99[2].cell())
            .ratio(Against::Floor),
    );
    let labels = [
        "bistream relay (one hop)",
        "proxystore-relay (one hop)",
        "raw WebSocket echo round trip (floor)",
    ];
    for (h, l) in hists.into_iter().zip(labels) {
        out.series.push(Series {
            chart: NAME.into(),
            label: l.into(),
            hist: h,
        });
    }
    servers.stop().await;

    // Memory: fresh server processes, idle registered clients.
    let ours_rss = idle_rss(ctx, Side::Ours, &pb).await;
    let peer_rss = idle_rss(ctx, Side::Peer, &pb).await;
    let max_n = ctx.cfg.idle_clients.iter().copied().max().unwrap_or(0);
    for (i, n) in ctx.cfg.idle_clients.iter().enumerate() {
        let cell = |r: &Result<Vec<Result<f64, String>>, String>| match r {
            Err(e) => Cell::NotAvailable(e.clone()),
            Ok(v) => match v.get(i) {
                Some(Ok(x)) => Cell::from_runs(&[*x], ""),
                Some(Err(e)) => Cell::NotAvailable(e.clone()),
                None => Cell::NotAvailable("not measured".into()),
            },
        };
        let mut row = Row::new(
            NAME,
            format!("RSS per idle registered client, {n} clients"),
            "KiB/client",
            false,
        )
        .ours(cell(&ours_rss))
        .peer(cell(&peer_rss))
        .ratio(Against::Peer);
        if *n == max_n {
            row = row.target(Target::AtMost { x: 15.0 });
        }
        out.rows.push(row);
    }
    pb.finish_with_message("done");
    out.notes.push(format!(
        "throughput: each pair keeps {IN_FLIGHT} peer_connection messages ({} bytes of description) in flight, \
         each received message is forwarded straight back; floor = the same clients against a WebSocket echo server \
         ({IN_FLIGHT}/2 in flight on each of the 2×pairs connections). Latency: one pair, one message in flight, \
         receiver time − sender time (same process clock). Both relays run with logging at warning level.",
        20 + PAD
    ));
    out.notes.push(format!(
        "memory: VmRSS of a fresh server process after one warm-up client, then after registering N idle clients \
         (one measurement per N, clients added cumulatively); per client = ΔRSS / N. The ≤ 15 KiB target is set at \
         10,000 clients{}.",
        if max_n < 10_000 {
            format!(" (this run measured at most {max_n}: quick mode)")
        } else {
            String::new()
        }
    ));
    out
}

/// Connects and registers `pairs` pairs (or 2×pairs echo clients) and runs the bouncers.
async fn run_pairs(
    ctx: &Ctx,
    side: Side,
    addr: &str,
    pairs: usize,
    in_flight: usize,
) -> anyhow::Result<RunOut> {
    let ids: Vec<(Uuid, Uuid)> = (0..pairs)
        .map(|_| (Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    let targets = ids
        .iter()
        .flat_map(|(a, b)| [(*a, addr.to_string()), (*b, addr.to_string())])
        .collect();
    let mut conns = connect_all(side, targets).await?.into_iter();
    let (phase, ctl) = load::phase();
    let mut workers = Vec::new();
    for (a, b) in ids {
        let (Some(wa), Some(wb)) = (conns.next(), conns.next()) else {
            bail!("lost a connection");
        };
        let (ia, ib) = if side == Side::Floor {
            // Echo: each connection bounces its own messages; split the window.
            (in_flight / 2, in_flight - in_flight / 2)
        } else {
            (in_flight, 0)
        };
        let (ta, tb) = if side == Side::Floor { (a, b) } else { (b, a) };
        workers.push(tokio::spawn(bouncer(wa, a, ta, ia, phase.clone())));
        workers.push(tokio::spawn(bouncer(wb, b, tb, ib, phase.clone())));
    }
    drive(ctl, ctx.cfg.warmup, ctx.cfg.duration, workers).await
}

async fn throughput(ctx: &Ctx, side: Side, addr: &str, pairs: usize) -> anyhow::Result<f64> {
    Ok(run_pairs(ctx, side, addr, pairs, IN_FLIGHT).await?.rate())
}

async fn latency(ctx: &Ctx, side: Side, addr: &str) -> anyhow::Result<RunOut> {
    if side == Side::Floor {
        // One echo connection with one message in flight: the raw round trip.
        let ws = client(side, addr, "", Uuid::nil(), 128 * 1024).await?;
        let (phase, ctl) = load::phase();
        let w = tokio::spawn(bouncer(ws, Uuid::new_v4(), Uuid::new_v4(), 1, phase));
        return drive(ctl, ctx.cfg.warmup, ctx.cfg.duration, vec![w]).await;
    }
    run_pairs(ctx, side, addr, 1, 1).await
}

type RssResult = Result<Vec<Result<f64, String>>, String>;

/// RSS per idle registered client at each configured count, on a fresh server process.
async fn idle_rss(ctx: &Ctx, side: Side, pb: &indicatif::ProgressBar) -> RssResult {
    let label = if side == Side::Ours { "ours" } else { "peer" };
    let started = match side {
        Side::Ours => start_ours(ctx).await,
        _ => start_peer(ctx).await,
    };
    let (mut server, addr) = started.map_err(|e| super::first_line(&format!("{e:#}")))?;
    let counts = ctx.cfg.idle_clients.clone();
    let soft = bistream_core::fdlimit::nofile_limit()
        .soft
        .unwrap_or(u64::MAX);
    let mut results = Vec::new();
    let warm = async {
        let mut ws = client(side, &addr, "warm-up", Uuid::new_v4(), 4096).await?;
        let _ = ws.close(None).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.rss_kib()
    }
    .await;
    let base = match warm {
        Ok(b) => b,
        Err(e) => {
            server.stop().await;
            return Err(super::first_line(&format!("{e:#}")));
        }
    };
    let mut held: Vec<Ws> = Vec::new();
    let budget = Duration::from_secs(if ctx.cfg.quick { 30 } else { 300 });
    for n in counts {
        pb.set_message(format!("memory, {label}, {n} idle clients"));
        if (soft as usize) < n + 200 {
            results.push(Err(format!(
                "open-file limit {soft} is too low for {n} clients (raise `ulimit -n`)"
            )));
            pb.inc(1);
            continue;
        }
        let need = n.saturating_sub(held.len());
        let t0 = std::time::Instant::now();
        let added: Vec<anyhow::Result<Ws>> = match tokio::time::timeout(
            budget,
            futures_util::stream::iter((0..need).map(|i| {
                let addr = addr.clone();
                async move { client(side, &addr, &format!("idle-{i}"), Uuid::new_v4(), 4096).await }
            }))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect(),
        )
        .await
        {
            Ok(v) => v,
            Err(_) => {
                results.push(Err(format!(
                    "registering {need} clients took over {budget:?}"
                )));
                pb.inc(1);
                break;
            }
        };
        let mut failed = None;
        for c in added {
            match c {
                Ok(ws) => held.push(ws),
                Err(e) => {
                    failed.get_or_insert(super::first_line(&format!("{e:#}")));
                }
            }
        }
        if let Some(e) = failed {
            results.push(Err(format!(
                "only {} of {n} clients registered: {e}",
                held.len()
            )));
            pb.inc(1);
            break;
        }
        tracing::debug!("{label}: {n} clients registered in {:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(if ctx.cfg.quick {
            300
        } else {
            1500
        }))
        .await;
        let r = server
            .check_alive()
            .and_then(|_| server.rss_kib())
            .map(|rss| (rss.saturating_sub(base)) as f64 / n as f64)
            .map_err(|e| super::first_line(&format!("{e:#}")));
        results.push(r);
        pb.inc(1);
    }
    drop(held);
    server.stop().await;
    Ok(results)
}
