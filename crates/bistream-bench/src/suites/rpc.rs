//! `rpc` suite: `bistream rpc serve` (WebSocket) driven by our Rust client, against the raw
//! WebSocket echo floor (request/response p50), jsonrpsee's WebSocket server and client
//! (64 concurrent calls on one connection), and the Python example peer
//! (`examples/python/slipstream_peer.py`: its server for streams read by our client, its client
//! and server for the all-Python stream and concurrent-call figures). Each server runs as its
//! own process.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{python_missing, spawn_floor, spawn_ours, Runs, READY_TIMEOUT};
use crate::floor::FloorKind;
use crate::hist::Histogram;
use crate::load::{drive, now_ns, phase, RunOut, WorkerOut};
use crate::proc::{parse_addr, Server};
use crate::report::{Against, Row, Target};
use crate::{Ctx, Series, SuiteDef, SuiteOutput};

/// The `rpc` suite.
pub const SUITE: SuiteDef = SuiteDef {
    name: "rpc",
    about: "rpc request/response latency, 64 concurrent calls and stream items/s vs jsonrpsee and the Python peer",
    run: start,
};

fn start(ctx: &Ctx) -> Pin<Box<dyn Future<Output = SuiteOutput> + Send + '_>> {
    Box::pin(run(ctx))
}

const NAME: &str = "rpc";
const PEER_PY: &str = include_str!("../../../../examples/python/slipstream_peer.py");
/// Calls in flight on one connection for the concurrency rows.
const CONCURRENT: usize = 64;
/// Most stream items the stream row takes per `next_batch`.
const STREAM_BATCH: usize = 1024;

fn payload() -> Value {
    json!({"k": 1, "s": "sixteen byte str"})
}

async fn start_python(ctx: &Ctx) -> anyhow::Result<(Server, String)> {
    if let Some(why) = python_missing(&ctx.cfg.relay_python) {
        bail!(why);
    }
    let script = ctx.script("slipstream_peer.py", PEER_PY)?;
    let mut cmd = tokio::process::Command::new(&ctx.cfg.relay_python);
    cmd.arg(script).args(["serve", "127.0.0.1", "0"]);
    let mut s = Server::spawn("python slipstream peer", cmd)?;
    let addr = s.wait_line(READY_TIMEOUT, parse_addr).await?;
    Ok((s, addr))
}

async fn client(addr: &str) -> anyhow::Result<bistream_rpc::Connection> {
    let url = format!("ws://{addr}/");
    let c = bistream_rpc::ws::connect(&url, Default::default()).await?;
    Ok(c)
}

/// `in_flight` workers looping echo calls on one connection.
async fn rpc_calls(ctx: &Ctx, addr: &str, in_flight: usize) -> anyhow::Result<RunOut> {
    let conn = client(addr).await?;
    let (p, ctl) = phase();
    let workers = (0..in_flight)
        .map(|_| {
            let conn = conn.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let data = payload();
                let mut out = WorkerOut::default();
                while !p.stopped() {
                    let t = now_ns();
                    let v: Value = conn.request_response("echo", &data).await?;
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
    conn.close().await;
    r
}

/// One connection reading a long `count` stream with `next_batch` (every item that is ready
/// at once); each item counts and is checked to be the next integer. The latency histogram
/// records the wait per batch.
///
/// The reading client runs on a current-thread tokio runtime on a thread of its own: one
/// thread, as the Python peer's client runs on one asyncio loop. On the bench's shared
/// multi-thread runtime about half of the client's CPU per item went to the kernel's
/// scheduler (its connection driver and the reader handing items across worker threads):
/// 1,000 against 360–490 ns of client CPU per item (DECISIONS D31).
async fn rpc_stream(ctx: &Ctx, addr: &str) -> anyhow::Result<RunOut> {
    let (p, ctl) = phase();
    let addr = addr.to_owned();
    let w = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(read_stream(addr, p))
    });
    drive(ctl, ctx.cfg.warmup, ctx.cfg.duration, vec![w]).await
}

/// The stream row's reader (see [`rpc_stream`]).
async fn read_stream(addr: String, mut p: crate::load::Phase) -> anyhow::Result<WorkerOut> {
    let conn = client(&addr).await?;
    let read = async {
        let mut s = conn
            .request_stream::<_, u64>("count", &json!({"n": 1_000_000_000_000u64}))
            .await?;
        let mut out = WorkerOut::default();
        let mut batch = Vec::with_capacity(STREAM_BATCH);
        let mut expect = 0u64;
        loop {
            let t = now_ns();
            tokio::select! {
                n = s.next_batch(&mut batch, STREAM_BATCH) => match n {
                    Some(n) => { n?; }
                    None => bail!("stream ended early"),
                },
                _ = p.until_stop() => break,
            }
            let n = batch.len() as u64;
            for v in batch.drain(..) {
                if v != expect {
                    bail!("stream item {v} where {expect} was due");
                }
                expect += 1;
            }
            if p.measuring() {
                out.count += n;
                out.hist.record(now_ns().saturating_sub(t));
            }
        }
        Ok(out)
    };
    let r = read.await;
    conn.close().await;
    r
}

/// Raw WebSocket ping-pong with a message the size of our request frame.
async fn ws_ping_pong(ctx: &Ctx, addr: &str, size: usize) -> anyhow::Result<RunOut> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    let (mut p, ctl) = phase();
    let w = tokio::spawn(async move {
        let msg = "x".repeat(size);
        let mut out = WorkerOut::default();
        while !p.stopped() {
            let t = now_ns();
            ws.send(Message::text(msg.clone())).await?;
            tokio::select! {
                m = ws.next() => { m.ok_or_else(|| anyhow!("floor closed"))??; }
                _ = p.until_stop() => break,
            }
            out.complete(&p, t, 0);
        }
        Ok(out)
    });
    drive(ctl, ctx.cfg.warmup, ctx.cfg.duration, vec![w]).await
}

/// jsonrpsee's WebSocket client: `in_flight` workers on one connection.
async fn jsonrpsee_calls(ctx: &Ctx, addr: &str, in_flight: usize) -> anyhow::Result<RunOut> {
    use jsonrpsee::core::client::ClientT;
    let client = jsonrpsee::ws_client::WsClientBuilder::default()
        .max_concurrent_requests(4096)
        .build(format!("ws://{addr}"))
        .await
        .context("jsonrpsee client")?;
    let client = std::sync::Arc::new(client);
    let (p, ctl) = phase();
    let workers = (0..in_flight)
        .map(|_| {
            let client = client.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let mut out = WorkerOut::default();
                while !p.stopped() {
                    let t = now_ns();
                    let mut params = jsonrpsee::core::params::ObjectParams::new();
                    params.insert("k", 1)?;
                    params.insert("s", "sixteen byte str")?;
                    let v: Value = client.request("echo", params).await?;
                    if v["k"] != 1 {
                        bail!("bad echo {v}");
                    }
                    out.complete(&p, t, 0);
                }
                Ok(out)
            })
        })
        .collect();
    drive(ctl, ctx.cfg.warmup, ctx.cfg.duration, workers).await
}

/// The jsonrpsee WebSocket server (`bench floor-server jsonrpsee-echo`): method `echo`
/// returns its params.
pub async fn jsonrpsee_server(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let server = jsonrpsee::server::Server::builder()
        .build(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    let mut module = jsonrpsee::RpcModule::new(());
    module.register_method("echo", |params, _, _| params.parse::<Value>())?;
    println!("jsonrpsee-echo listening on {}", server.local_addr()?);
    let handle = server.start(module);
    handle.stopped().await;
    Ok(())
}

/// The Python example's client against its own server (`bench` mode prints calls/s).
async fn python_calls(ctx: &Ctx, addr: &str) -> anyhow::Result<f64> {
    let concurrent = CONCURRENT.to_string();
    python_rate(
        ctx,
        "bench",
        addr,
        &[&concurrent],
        "calls_per_sec",
        "python bench client",
    )
    .await
}

/// The Python example's client reading its own server's `count` stream (`bench-stream`
/// mode prints items/s): the all-Python side of the stream comparison.
async fn python_stream(ctx: &Ctx, addr: &str) -> anyhow::Result<f64> {
    python_rate(
        ctx,
        "bench-stream",
        addr,
        &[],
        "items_per_sec",
        "python stream client",
    )
    .await
}

/// Runs the Python example in `mode` against `ws://addr/` for the measured time (plus
/// warm-up) and reads the rate it prints on its `key VALUE` line.
async fn python_rate(
    ctx: &Ctx,
    mode: &str,
    addr: &str,
    extra: &[&str],
    key: &str,
    what: &str,
) -> anyhow::Result<f64> {
    let script = ctx.script("slipstream_peer.py", PEER_PY)?;
    let secs = (ctx.cfg.duration + ctx.cfg.warmup).as_secs_f64();
    let out = tokio::time::timeout(
        Duration::from_secs_f64(secs + 30.0),
        tokio::process::Command::new(&ctx.cfg.relay_python)
            .arg(script)
            .args([mode, &format!("ws://{addr}/"), &format!("{secs}")])
            .args(extra)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("{what} timed out"))??;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .ok_or_else(|| {
            anyhow!(
                "{what} printed no rate: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[derive(Default)]
struct Figures {
    rate: Runs,
    p50: Runs,
    p99: Runs,
    hist: Histogram,
}

impl Figures {
    fn push(&mut self, r: anyhow::Result<RunOut>) {
        match r {
            Ok(o) => {
                self.rate.push(Ok(o.rate()));
                self.p50
                    .push(o.quantile_us(0.5).ok_or_else(|| anyhow!("no samples")));
                self.p99
                    .push(o.quantile_us(0.99).ok_or_else(|| anyhow!("no samples")));
                self.hist.merge(&o.hist);
            }
            Err(e) => {
                let why = super::first_line(&format!("{e:#}"));
                self.rate.fail(&why);
                self.p50.fail(&why);
                self.p99.fail(&why);
            }
        }
    }
}

fn addr_of(r: &anyhow::Result<(Server, String)>) -> Result<String, String> {
    match r {
        Ok((_, a)) => Ok(a.clone()),
        Err(e) => Err(super::first_line(&format!("{e:#}"))),
    }
}

async fn run(ctx: &Ctx) -> SuiteOutput {
    let runs = ctx.runs();
    let pb = ctx.bar(NAME, (runs * 9) as u64);
    pb.set_message("starting servers");
    let ours = spawn_ours(ctx, "bistream rpc serve", &["rpc", "serve", "127.0.0.1:0"]).await;
    let python = start_python(ctx).await;
    let floor = spawn_floor(ctx, FloorKind::WsEcho).await;
    let jrpc = spawn_floor(ctx, FloorKind::JsonrpseeEcho).await;
    let (o, py, fl, jr) = (
        addr_of(&ours),
        addr_of(&python),
        addr_of(&floor),
        addr_of(&jrpc),
    );
    // The request frame our client sends for `echo` (for the floor's message size).
    let frame_len = 120;

    let (mut seq_ours, mut seq_py, mut seq_floor) =
        (Figures::default(), Figures::default(), Figures::default());
    let (mut conc_ours, mut conc_jr) = (Figures::default(), Figures::default());
    let (mut stream_ours, mut stream_py) = (Figures::default(), Figures::default());
    let mut py_conc = Runs::default();
    let mut py_stream = Runs::default();
    for i in 0..runs {
        let step = |what: &str| pb.set_message(format!("{what}, run {}/{runs}", i + 1));
        step("sequential echo, ours");
        match &o {
            Ok(a) => seq_ours.push(rpc_calls(ctx, a, 1).await),
            Err(e) => seq_ours.push(Err(anyhow!("{e}"))),
        }
        pb.inc(1);
        step("sequential echo, python");
        match &py {
            Ok(a) => seq_py.push(rpc_calls(ctx, a, 1).await),
            Err(e) => seq_py.push(Err(anyhow!("{e}"))),
        }
        pb.inc(1);
        step("ws ping-pong floor");
        match &fl {
            Ok(a) => seq_floor.push(ws_ping_pong(ctx, a, frame_len).await),
            Err(e) => seq_floor.push(Err(anyhow!("{e}"))),
        }
        pb.inc(1);
        step("64 concurrent, ours");
        match &o {
            Ok(a) => conc_ours.push(rpc_calls(ctx, a, CONCURRENT).await),
            Err(e) => conc_ours.push(Err(anyhow!("{e}"))),
        }
        pb.inc(1);
        step("64 concurrent, jsonrpsee");
        match &jr {
            Ok(a) => conc_jr.push(jsonrpsee_calls(ctx, a, CONCURRENT).await),
            Err(e) => conc_jr.push(Err(anyhow!("{e}"))),
        }
        pb.inc(1);
        step("stream items, ours");
        match &o {
            Ok(a) => stream_ours.push(rpc_stream(ctx, a).await),
            Err(e) => stream_ours.push(Err(anyhow!("{e}"))),
        }
        pb.inc(1);
        step("stream items, python");
        match &py {
            Ok(a) => stream_py.push(rpc_stream(ctx, a).await),
            Err(e) => stream_py.push(Err(anyhow!("{e}"))),
        }
        pb.inc(1);
        step("stream items, all-python");
        match &py {
            Ok(a) => py_stream.push(python_stream(ctx, a).await),
            Err(e) => py_stream.fail(e),
        }
        pb.inc(1);
        step("64 concurrent, all-python");
        match &py {
            Ok(a) => py_conc.push(python_calls(ctx, a).await),
            Err(e) => py_conc.fail(e),
        }
        pb.inc(1);
    }
    for s in [ours, python, floor, jrpc].into_iter().flatten() {
        s.0.stop().await;
    }

    let mut out = SuiteOutput::default();
    out.rows.push(
        Row::new(NAME, "sequential echo request/response p50", "µs", false)
            .ours(seq_ours.p50.cell())
            .peer(seq_py.p50.cell())
            .floor(seq_floor.p50.cell())
            .ratio(Against::Floor)
            .target(Target::RatioAtMost {
                against: Against::Floor,
                x: 2.0,
            })
            .note(
                "peer: Python example server; floor: raw WebSocket echo of a 120-byte text message",
            ),
    );
    out.rows.push(
        Row::new(NAME, "sequential echo request/response p99", "µs", false)
            .ours(seq_ours.p99.cell())
            .peer(seq_py.p99.cell())
            .floor(seq_floor.p99.cell())
            .ratio(Against::Floor),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("{CONCURRENT} concurrent echo calls/s, one connection, vs jsonrpsee"),
            "calls/s",
            true,
        )
        .ours(conc_ours.rate.cell())
        .peer(conc_jr.rate.cell())
        .ratio(Against::Peer)
        .target(Target::RatioAtLeast {
            against: Against::Peer,
            x: 1.5,
        })
        .note("peer: jsonrpsee 0.26 WebSocket server and client"),
    );
    let stream_rate = stream_ours.rate.cell();
    out.rows.push(
        Row::new(NAME, "stream items/s, one connection", "items/s", true)
            .ours(stream_rate.clone())
            .peer(stream_py.rate.cell())
            .ratio(Against::Peer)
            .target(Target::AtLeast { x: 1_000_000.0 })
            .note("peer: Python example server's count, read by our client"),
    );
    // The "≥ 30× the Python example peer" follows its stream items/s target: the same
    // workload (one connection reading one `count` stream) done all-Rust and all-Python.
    out.rows.push(
        Row::new(
            NAME,
            "stream items/s, one connection: all-Rust vs all-Python",
            "items/s",
            true,
        )
        .ours(stream_rate)
        .peer(py_stream.cell())
        .ratio(Against::Peer)
        .target(Target::RatioAtLeast {
            against: Against::Peer,
            x: 30.0,
        })
        .note("peer: the Python example's client reading its own server's count (docs/rpc.md)"),
    );
    out.rows.push(
        Row::new(
            NAME,
            format!("{CONCURRENT} concurrent echo calls/s: all-Rust vs all-Python"),
            "calls/s",
            true,
        )
        .ours(conc_ours.rate.cell())
        .peer(py_conc.cell())
        .ratio(Against::Peer)
        .note("informative: the 30× target is read on stream items/s (docs/rpc.md)"),
    );
    for (fig, label) in [
        (seq_ours, "Rust client → bistream rpc serve"),
        (seq_py, "Rust client → Python example server"),
        (seq_floor, "raw WebSocket echo (floor)"),
    ] {
        out.series.push(Series {
            chart: NAME.into(),
            label: label.into(),
            hist: fig.hist,
        });
    }
    out.notes.push(format!(
        "rpc: echo data {}; {CONCURRENT} concurrent calls share one connection; stream items are bare integers",
        payload()
    ));
    super::rpc_rsocket::run(ctx, &mut out).await;
    out
}
