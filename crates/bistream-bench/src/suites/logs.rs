//! `logs` suite: lines/s through bistream-logs' limit-enforcing pipeline (line reassembly,
//! limit tracking, UTF-8 decoding) from a local WebSocket server (Ray's framing: 10 lines per
//! text frame) and a local chunked HTTP server (64 KiB chunks), against a raw read of the same
//! bytes over the same transport stack (the floor: tungstenite messages, reqwest body chunks;
//! the bare TCP read of the HTTP stream is given in a note) and the seed's Python approach (`websockets` message loop, `requests`
//! `iter_lines` loop, with the seed's limit checks) as the peer; and the peak RSS of
//! `bistream logs tail` for a stream and one 4× as long.
//!
//! The servers run in this process and send prebuilt bytes, so the client is what is measured.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use bistream_core::StreamLimits;
use bistream_logs::{Tail, TailOptions};

use super::{python_missing, Runs};
use crate::report::{Against, Cell, Row, Target};
use crate::{Ctx, SuiteDef, SuiteOutput};

/// The `logs` suite.
pub const SUITE: SuiteDef = SuiteDef {
    name: "logs",
    about:
        "log tail lines/s over WebSocket and chunked HTTP vs a raw read and the Python seed loop",
    run: start,
};

fn start(ctx: &Ctx) -> Pin<Box<dyn Future<Output = SuiteOutput> + Send + '_>> {
    Box::pin(run(ctx))
}

const NAME: &str = "logs";
const LINES_PER_FRAME: usize = 10;

const PEER_PY: &str = r#"
import sys, time, asyncio
mode, url, expect = sys.argv[1], sys.argv[2], int(sys.argv[3])
MAX_LINES, MAX_BYTES, MAX_MESSAGES, MAX_MESSAGE_SIZE = expect, 1 << 62, 1 << 62, 10240

def http():
    import requests
    lines = total = 0
    t = time.perf_counter()
    with requests.Session().get(url, stream=True, timeout=(5, 60)) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            lines += 1
            if lines > MAX_LINES:
                raise SystemExit("429 max_lines")
            if len(line) > MAX_MESSAGE_SIZE:
                continue
            total += len(line)
            if total > MAX_BYTES:
                raise SystemExit("429 max_bytes")
    return lines, time.perf_counter() - t

async def ws():
    import websockets
    lines = total = messages = 0
    t = time.perf_counter()
    async with websockets.connect(url, max_size=None, open_timeout=30) as conn:
        async for message in conn:
            messages += 1
            if messages > MAX_MESSAGES:
                raise SystemExit("429 max_messages")
            for line in message.splitlines():
                lines += 1
                if lines > MAX_LINES:
                    raise SystemExit("429 max_lines")
                if len(line) > MAX_MESSAGE_SIZE:
                    continue
                total += len(line)
                if total > MAX_BYTES:
                    raise SystemExit("429 max_bytes")
    return lines, time.perf_counter() - t

lines, secs = http() if mode == "http" else asyncio.run(ws())
if lines != expect:
    raise SystemExit(f"got {lines} lines, expected {expect}")
print(secs)
"#;

/// One 64 KiB-ish block of whole log lines, and its line count.
pub fn block() -> (Bytes, usize) {
    let mut b = String::with_capacity(70 * 1024);
    let mut n = 0;
    while b.len() < 64 * 1024 - 100 {
        b.push_str(&format!(
            "2026-11-30 02:00:{:02}.{:06} INFO worker.py:{:<4} -- processed item {n:08} of the batch\n",
            n % 60,
            n * 7 % 1_000_000,
            n % 997
        ));
        n += 1;
    }
    (Bytes::from(b), n)
}

/// Serves `blocks` blocks per connection: chunked HTTP on one port, WebSocket on another;
/// returns their URLs (`http://…/logs`, `ws://…/tail`). The servers run on the current runtime.
///
/// # Errors
/// Binding a listener failed.
pub async fn servers(blocks_per_conn: usize) -> anyhow::Result<(String, String)> {
    let (data, lines) = block();
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let ws = TcpListener::bind("127.0.0.1:0").await?;
    let (http_addr, ws_addr) = (http.local_addr()?, ws.local_addr()?);
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(b"\r\n");
    let chunk = Bytes::from(chunk);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = http.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..blocks_per_conn {
                    if tcp.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = tcp.write_all(b"0\r\n\r\n").await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    // Ray's framing: text frames of 10 lines.
    let text = std::str::from_utf8(&data)?.to_owned();
    let all: Vec<&str> = text.split_inclusive('\n').collect();
    let frames: Vec<String> = all.chunks(LINES_PER_FRAME).map(|c| c.concat()).collect();
    debug_assert_eq!(all.len(), lines);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = ws.accept().await {
            let frames = frames.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut conn) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                for _ in 0..blocks_per_conn {
                    for f in &frames {
                        if conn.feed(Message::text(f.as_str())).await.is_err() {
                            return;
                        }
                    }
                    if conn.flush().await.is_err() {
                        return;
                    }
                }
                let _ = conn.close(None).await;
            });
        }
    });
    Ok((
        format!("http://{http_addr}/logs"),
        format!("ws://{ws_addr}/tail"),
    ))
}

fn limits(lines: u64) -> anyhow::Result<StreamLimits> {
    Ok(StreamLimits::builder()
        .max_lines(lines)
        .max_messages(u64::MAX)
        .max_bytes(u64::MAX)
        .build()?)
}

/// How the bench takes lines out of the tail.
#[derive(Clone, Copy)]
enum Api {
    /// `Tail::next_lines`: every line of a chunk in one call (what `bistream logs tail` uses).
    Batch,
    /// `Tail::next_line_ref`: one borrowed line per call.
    Borrowed,
    /// `Tail::next_line`: a `String` per line (the `LogStream` and `BlockingLogs` item).
    Owned,
}

/// Ours: lines/s through the whole pipeline, taken out through `api`.
async fn ours(url: &str, lines: u64, api: Api) -> anyhow::Result<f64> {
    let opts = TailOptions::new("bench").limits(limits(lines)?);
    let mut tail = Tail::new(url, opts);
    let t = Instant::now();
    let mut n = 0u64;
    match api {
        Api::Batch => {
            while let Some(batch) = tail
                .next_lines(|line| {
                    n += 1;
                    std::hint::black_box(line);
                })
                .await
            {
                batch.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Api::Borrowed => {
            while let Some(line) = tail.next_line_ref().await {
                let line = line.map_err(|e| anyhow::anyhow!("{e}"))?;
                n += 1;
                std::hint::black_box(line);
            }
        }
        Api::Owned => {
            while let Some(line) = tail.next_line().await {
                let line = line.map_err(|e| anyhow::anyhow!("{e}"))?;
                n += 1;
                std::hint::black_box(line);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if n != lines {
        bail!("got {n} lines, expected {lines}");
    }
    Ok(n as f64 / secs)
}

/// Floor: the same bytes read raw over the same transport stack, no line work: WebSocket,
/// tungstenite messages; chunked HTTP, reqwest (hyper) body chunks, built as bistream-logs
/// builds its client. As lines/s of the stream.
///
/// # Errors
/// Connecting or reading failed.
pub async fn floor(url: &str, lines: u64) -> anyhow::Result<f64> {
    use futures_util::StreamExt;
    let t = Instant::now();
    let mut bytes = 0usize;
    let (scheme, _) = bistream_core::url::parse_web_url(url)?;
    if !scheme.is_websocket() {
        let tls = std::sync::Arc::unwrap_or_clone(bistream_core::tls::trust_nothing()?);
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .tls_backend_preconfigured(tls)
            .build()?;
        let mut resp = client.get(url).send().await?.error_for_status()?;
        while let Some(chunk) = resp.chunk().await? {
            bytes += chunk.len();
        }
    } else {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        while let Some(m) = ws.next().await {
            match m? {
                Message::Text(t) => bytes += t.len(),
                Message::Close(_) => break,
                _ => {}
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok(lines as f64 / secs)
}

/// The chunked HTTP stream read from the bare TCP socket (no HTTP decoding at all), as
/// lines/s: reported in a note, below the transport floor.
async fn tcp_read(url: &str, lines: u64) -> anyhow::Result<f64> {
    let (_, parsed) = bistream_core::url::parse_web_url(url)?;
    let addr = format!(
        "{}:{}",
        parsed.host_str().context("no host in the URL")?,
        parsed
            .port_or_known_default()
            .context("no port in the URL")?
    );
    let addr = addr.as_str();
    let t = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET /logs HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0usize;
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        bytes += n;
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok(lines as f64 / secs)
}

/// Peer: the seed's Python loop, in the relay venv (websockets + requests).
async fn peer(ctx: &Ctx, mode: &str, url: &str, lines: u64) -> anyhow::Result<f64> {
    if let Some(why) = python_missing(&ctx.cfg.relay_python) {
        bail!(why);
    }
    let script = ctx.script("logs_peer.py", PEER_PY)?;
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(&ctx.cfg.relay_python)
            .arg(script)
            .args([mode, url, &lines.to_string()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("python peer timed out")??;
    if !out.status.success() {
        bail!(
            "python peer failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("python peer output")?;
    Ok(lines as f64 / secs)
}

/// Peak RSS (KiB) of a process tailing `url`: `bistream logs tail`, or the Python loop.
async fn peak_rss(ctx: &Ctx, python: bool, url: &str, lines: u64) -> anyhow::Result<f64> {
    let mut cmd = if python {
        if let Some(why) = python_missing(&ctx.cfg.relay_python) {
            bail!(why);
        }
        let mut c = tokio::process::Command::new(&ctx.cfg.relay_python);
        c.arg(ctx.script("logs_peer.py", PEER_PY)?)
            .args(["http", url, &lines.to_string()]);
        c
    } else {
        let mut c = tokio::process::Command::new(&ctx.cfg.exe);
        c.args(["logs", "tail", url, "--max-lines", &lines.to_string()])
            .args(["--max-bytes", &u64::MAX.to_string(), "--log-level", "warn"]);
        c
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("no pid")?;
    let mut peak = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("tail exited with {status}");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("tail did not finish");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(peak as f64 / 1024.0)
}

async fn run(ctx: &Ctx) -> SuiteOutput {
    let mut out = SuiteOutput::default();
    let quick = ctx.cfg.quick;
    let runs = ctx.runs();
    let (_, block_lines) = block();
    // Full: ~2.3 M lines (~190 MB) per run for ours and the floor, a quarter for Python.
    let blocks = if quick { 40 } else { 3000 };
    let peer_blocks = if quick { 10 } else { 750 };
    let pb = ctx.bar(NAME, (runs * 6 + 4) as u64);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (mode, label) in [
        ("ws", "WebSocket (10 lines per text frame)"),
        ("http", "chunked HTTP (64 KiB chunks)"),
    ] {
        let (mut o, mut p, mut f) = (Runs::default(), Runs::default(), Runs::default());
        let (mut owned, mut tcp) = (Runs::default(), Runs::default());
        let mut borrowed = Runs::default();
        // Batch ÷ floor of the same run, the two measured back to back (the load on a shared
        // machine moves between runs; a pair sees nearly the same load).
        let mut paired = Vec::new();
        match (servers(blocks).await, servers(peer_blocks).await) {
            (Ok(full), Ok(small)) => {
                let url = if mode == "ws" { &full.1 } else { &full.0 };
                let small_url = if mode == "ws" { &small.1 } else { &small.0 };
                let lines = (blocks * block_lines) as u64;
                for r in 0..runs {
                    pb.set_message(format!("{mode} run {}/{runs}", r + 1));
                    // Alternate which of the pair goes first, so neither always gets the
                    // warmer (or the quieter) slot.
                    let (batch, raw) = if r % 2 == 0 {
                        let raw = floor(url, lines).await;
                        (ours(url, lines, Api::Batch).await, raw)
                    } else {
                        let batch = ours(url, lines, Api::Batch).await;
                        (batch, floor(url, lines).await)
                    };
                    if let (Ok(b), Ok(f)) = (&batch, &raw) {
                        paired.push(b / f);
                    }
                    o.push(batch);
                    f.push(raw);
                    pb.inc(1);
                    borrowed.push(ours(url, lines, Api::Borrowed).await);
                    owned.push(ours(url, lines, Api::Owned).await);
                    pb.inc(1);
                    if mode == "http" {
                        tcp.push(tcp_read(url, lines).await);
                    }
                    p.push(peer(ctx, mode, small_url, (peer_blocks * block_lines) as u64).await);
                    pb.inc(1);
                }
                notes.push(format!(
                    "{label}: {lines} lines of ~{} B per run for ours and the floor, {} for Python",
                    block().0.len() / block_lines,
                    peer_blocks * block_lines
                ));
                if !paired.is_empty() {
                    let mut sorted = paired.clone();
                    sorted.sort_by(f64::total_cmp);
                    let per_run: Vec<String> = paired.iter().map(|x| format!("{x:.2}")).collect();
                    notes.push(format!(
                        "{label}: batch ÷ floor per run, measured back to back: median {:.3}× \
                         (runs: {}; target ≥ 0.667×)",
                        sorted[sorted.len() / 2],
                        per_run.join(", ")
                    ));
                }
                if let (Some(ours), Some(raw)) = (o.cell().median(), tcp.cell().median()) {
                    notes.push(format!(
                        "{label}: the bare TCP read of the same stream (no HTTP decoding) gave \
                         {raw:.0} lines/s; ours is {:.3}× that",
                        ours / raw
                    ));
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                let why = format!("{e:#}");
                o.fail(&why);
                borrowed.fail(&why);
                owned.fail(&why);
                p.fail(&why);
                f.fail(&why);
            }
        }
        for (what, cell) in [
            (
                "a batch of borrowed lines per chunk (`logs tail`)",
                o.cell(),
            ),
            ("one borrowed line per call", borrowed.cell()),
            ("a String per line (LogStream)", owned.cell()),
        ] {
            rows.push(
                Row::new(
                    NAME,
                    format!("{label}: lines/s through the limit pipeline, {what}"),
                    "lines/s",
                    true,
                )
                .ours(cell)
                .peer(p.cell())
                .floor(f.cell())
                .ratio(Against::Peer)
                .target(Target::AtLeast { x: 1_000_000.0 })
                .target(Target::RatioAtLeast {
                    against: Against::Floor,
                    x: 1.0 / 1.5,
                }),
            );
        }
    }
    // Peak RSS of the CLI for a stream and one 4× longer (and Python's for the short one).
    pb.set_message("peak RSS");
    let rss_blocks = if quick { 20 } else { 600 };
    let (mut short, mut long, mut py) = (Runs::default(), Runs::default(), Runs::default());
    match (servers(rss_blocks).await, servers(rss_blocks * 4).await) {
        (Ok(a), Ok(b)) => {
            let n = (rss_blocks * block_lines) as u64;
            short.push(peak_rss(ctx, false, &a.0, n).await);
            pb.inc(1);
            long.push(peak_rss(ctx, false, &b.0, n * 4).await);
            pb.inc(1);
            py.push(peak_rss(ctx, true, &a.0, n).await);
            pb.inc(1);
            notes.push(format!(
                "peak RSS: `bistream logs tail` over HTTP, {n} and {} lines",
                n * 4
            ));
        }
        (Err(e), _) | (_, Err(e)) => {
            let why = format!("{e:#}");
            short.fail(&why);
            long.fail(&why);
            py.fail(&why);
        }
    }
    let growth = match (short.cell().median(), long.cell().median()) {
        (Some(a), Some(b)) if a > 0.0 => Cell::from_runs(&[b / a], "no run"),
        _ => Cell::NotAvailable("RSS not measured".into()),
    };
    rows.push(
        Row::new(NAME, "peak RSS of a tail (HTTP)", "MiB", false)
            .ours(short.cell())
            .peer(py.cell())
            .ratio(Against::Peer),
    );
    rows.push(
        Row::new(NAME, "peak RSS, 4× longer stream ÷ 1× stream", "×", false)
            .ours(growth)
            .target(Target::AtMost { x: 1.1 }),
    );
    pb.finish_and_clear();
    out.rows = rows;
    out.notes = notes;
    out
}
