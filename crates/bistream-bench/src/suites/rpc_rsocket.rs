//! The RSocket rows of the `rpc` suite: `bistream rpc serve --protocol rsocket` (TCP) against
//! the Python `rsocket` 0.4.20 server (`examples/python/rsocket_peer.py server tcp`), both
//! driven by the same load generator, our Rust RSocket client (`bistream-rsocket`): echo
//! request/response p50 with one call in flight, and echo calls/s with 64 in flight on one
//! connection. Each server runs as its own process.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use super::{python_missing, Runs, READY_TIMEOUT};
use crate::load::{drive, now_ns, phase, RunOut, WorkerOut};
use crate::proc::Server;
use crate::report::{Against, Row};
use crate::{Ctx, SuiteOutput};

const NAME: &str = "rpc";
const PEER_PY: &str = include_str!("../../../../examples/python/rsocket_peer.py");
/// Calls in flight on one connection for the throughput row.
const CONCURRENT: usize = 64;
/// Longest wait for one answer.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The venv with `rsocket==0.4.20` (made by scripts/setup-test-env): `BISTREAM_RSOCKET_PYTHON`,
/// else `.venv/rsocket` next to the relay venv.
fn rsocket_python(ctx: &Ctx) -> PathBuf {
    if let Some(p) = std::env::var_os("BISTREAM_RSOCKET_PYTHON") {
        return PathBuf::from(p);
    }
    let relay = &ctx.cfg.relay_python; // .venv/relay/bin/python
    match relay.ancestors().nth(3) {
        Some(venvs) => venvs.join("rsocket/bin/python"),
        None => PathBuf::from(".venv/rsocket/bin/python"),
    }
}

/// HOST:PORT from `rpc listening on tcp://HOST:PORT (rsocket)`.
fn our_addr(line: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("tcp://"))
        .map(str::to_string)
}

async fn start_ours(ctx: &Ctx) -> anyhow::Result<(Server, String)> {
    let mut cmd = tokio::process::Command::new(&ctx.cfg.exe);
    cmd.args([
        "rpc",
        "serve",
        "--protocol",
        "rsocket",
        "--transport",
        "tcp",
        "127.0.0.1:0",
        "--log-level",
        "warn",
    ]);
    let mut s = Server::spawn("bistream rpc serve --protocol rsocket", cmd)?;
    let addr = s
        .wait_line(READY_TIMEOUT, our_addr)
        .await
        .context("bistream rpc serve --protocol rsocket did not print its address")?;
    Ok((s, addr))
}

async fn start_python(ctx: &Ctx) -> anyhow::Result<(Server, String)> {
    let py = rsocket_python(ctx);
    if let Some(why) = python_missing(&py) {
        bail!(why);
    }
    let script = ctx.script("rsocket_peer.py", PEER_PY)?;
    let mut cmd = tokio::process::Command::new(&py);
    cmd.arg(script).args(["server", "tcp", "127.0.0.1", "0"]);
    let mut s = Server::spawn("python rsocket server", cmd)?;
    let port = s
        .wait_line(READY_TIMEOUT, |l| {
            l.trim().strip_prefix("listening ").map(str::to_string)
        })
        .await
        .context("the Python rsocket server did not print its port")?;
    Ok((s, format!("127.0.0.1:{port}")))
}

/// `in_flight` workers looping echo request/responses on one RSocket connection.
async fn calls(ctx: &Ctx, addr: &str, in_flight: usize) -> anyhow::Result<RunOut> {
    // A stalled server fails the run after 10 s instead of holding the bench for the default
    // 600 s call timeout.
    let cfg = bistream_rsocket::RsConfig {
        timeout: CALL_TIMEOUT,
        ..bistream_rsocket::RsConfig::default()
    };
    let rs = bistream_rsocket::connect_tcp(addr, bistream_rpc::Router::new(), cfg).await?;
    let (p, ctl) = phase();
    let workers = (0..in_flight)
        .map(|_| {
            let rs = rs.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let data = json!({"k": 1, "s": "sixteen byte str"});
                let mut out = WorkerOut::default();
                while !p.stopped() {
                    let t = now_ns();
                    let v: Value = rs.request_response("echo", &data).await?;
                    if v["k"] != 1 {
                        bail!("bad echo {v}");
                    }
                    out.complete(&p, t, 0);
                }
                Ok(out)
            })
        })
        .collect();
    let r = drive(ctl, ctx.cfg.warmup, ctx.cfg.duration, workers).await;
    rs.close().await;
    r
}

#[derive(Default)]
struct Figures {
    p50: Runs,
    rate: Runs,
}

impl Figures {
    fn push(&mut self, r: anyhow::Result<RunOut>) {
        match r {
            Ok(o) => {
                self.rate.push(Ok(o.rate()));
                self.p50
                    .push(o.quantile_us(0.5).ok_or_else(|| anyhow!("no samples")));
            }
            Err(e) => {
                let why = super::first_line(&format!("{e:#}"));
                self.rate.fail(&why);
                self.p50.fail(&why);
            }
        }
    }
}

async fn measure(
    ctx: &Ctx,
    server: &anyhow::Result<(Server, String)>,
    in_flight: usize,
) -> anyhow::Result<RunOut> {
    match server {
        Ok((_, addr)) => {
            let limit = ctx.cfg.warmup + ctx.cfg.duration + CALL_TIMEOUT * 2;
            tokio::time::timeout(limit, calls(ctx, addr, in_flight))
                .await
                .map_err(|_| anyhow!("run did not finish within {limit:?}"))?
        }
        Err(e) => Err(anyhow!("{}", super::first_line(&format!("{e:#}")))),
    }
}

/// Measures and appends the RSocket rows to the `rpc` suite's output.
pub async fn run(ctx: &Ctx, out: &mut SuiteOutput) {
    let runs = ctx.runs();
    let pb = ctx.bar("rsocket", (runs * 4) as u64);
    pb.set_message("starting servers");
    let ours = start_ours(ctx).await;
    let python = start_python(ctx).await;
    let (mut seq_ours, mut seq_py) = (Figures::default(), Figures::default());
    let (mut conc_ours, mut conc_py) = (Figures::default(), Figures::default());
    for i in 0..runs {
        let step = |what: &str| pb.set_message(format!("{what}, run {}/{runs}", i + 1));
        step("rsocket sequential echo, ours");
        seq_ours.push(measure(ctx, &ours, 1).await);
        pb.inc(1);
        step("rsocket sequential echo, python");
        seq_py.push(measure(ctx, &python, 1).await);
        pb.inc(1);
        step("rsocket 64 concurrent, ours");
        conc_ours.push(measure(ctx, &ours, CONCURRENT).await);
        pb.inc(1);
        step("rsocket 64 concurrent, python");
        conc_py.push(measure(ctx, &python, CONCURRENT).await);
        pb.inc(1);
    }
    for s in [ours, python].into_iter().flatten() {
        s.0.stop().await;
    }
    pb.finish_and_clear();

    let note =
        "RSocket over TCP; peer: Python rsocket 0.4.20 server (examples/python/rsocket_peer.py); \
                load generator for both: our Rust RSocket client";
    out.rows.push(
        Row::new(NAME, "RSocket echo request/response p50", "µs", false)
            .ours(seq_ours.p50.cell())
            .peer(seq_py.p50.cell())
            .ratio(Against::Peer)
            .note(note),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("RSocket {CONCURRENT} concurrent echo calls/s, one connection"),
            "calls/s",
            true,
        )
        .ours(conc_ours.rate.cell())
        .peer(conc_py.rate.cell())
        .ratio(Against::Peer)
        .note(note),
    );
}
