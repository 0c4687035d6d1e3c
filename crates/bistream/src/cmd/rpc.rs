//! `bistream rpc`: `serve` the demo service (echo, count, upper, log, sleep, fail) over
//! WebSocket, TCP, a Unix socket or stdio, and `call` one operation on a server, printing each
//! result as a JSON line.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bistream_rpc::ws::{ClientOptions, ServerConfig};
use bistream_rpc::{stream_io, Connection, Raw, Router, RpcConfig, RpcError};
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;

#[derive(Debug, clap::Args)]
pub struct RpcArgs {
    #[command(subcommand)]
    command: RpcCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RpcCommand {
    /// Serve the demo operations. Prints `rpc listening on ws://HOST:PORT` (or tcp://,
    /// unix:) as the first stdout line; stdout then carries only the `log` lines.
    Serve(ServeArgs),
    /// Call OP on URL (ws://, wss://, tcp://HOST:PORT or unix:PATH) and print each result as
    /// a JSON line. Exit codes: 4 cannot connect, 5 error reply, 6 timeout, 7 connection lost.
    Call(CallArgs),
}

/// Wire protocol of `rpc serve` / `rpc call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// bistream's slipstream-compatible JSON protocol (docs/protocol/rpc.md).
    #[default]
    Slipstream,
    /// RSocket 1.0 (docs/protocol/rsocket.md): `--transport tcp` or `ws`.
    Rsocket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportKind {
    Ws,
    Tcp,
    Unix,
    Stdio,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LimitArgs {
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub(crate) max_frame_bytes: usize,
    /// Requests served at once per connection before `overloaded`.
    #[arg(long, default_value_t = 1024)]
    pub(crate) max_in_flight: usize,
    /// Streams and bi-streams served at once per connection before `overloaded`.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_streams: usize,
    /// Per-stream window (queue size and credit unit) [default: the protocol's, 4096 for
    /// slipstream, 256 for RSocket (measured fastest there); both queues are bounded in bytes
    /// too].
    #[arg(long)]
    pub(crate) window: Option<u32>,
    /// Per-stream byte budget of credit grants once the first window is used (items of the
    /// recent size that fit, at least one).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub(crate) window_bytes: u64,
    /// Bytes of items one stream's inbound queue may hold before reading stops (one larger
    /// item still passes when the queue is empty); both protocols.
    #[arg(long, default_value_t = bistream_rpc::Limits::default().stream_queue_bytes)]
    pub(crate) stream_queue_bytes: usize,
    /// Keepalive interval in seconds once negotiated (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) keepalive: f64,
    /// Speak the base protocol only (no hello, cancel, credit or keepalive).
    #[arg(long)]
    no_extensions: bool,
}

impl LimitArgs {
    fn config(&self) -> anyhow::Result<RpcConfig> {
        if self.max_frame_bytes < 1024 {
            bail!("--max-frame-bytes must be at least 1024");
        }
        if self.max_in_flight == 0
            || self.max_streams == 0
            || self.window == Some(0)
            || self.window_bytes == 0
            || self.stream_queue_bytes == 0
        {
            bail!("--max-in-flight, --max-streams, --window, --window-bytes and --stream-queue-bytes must be at least 1");
        }
        let mut cfg = RpcConfig::default();
        cfg.limits.max_frame_bytes = self.max_frame_bytes;
        cfg.limits.max_in_flight = self.max_in_flight;
        cfg.limits.max_streams = self.max_streams;
        if let Some(w) = self.window {
            cfg.limits.window = w;
        }
        cfg.limits.window_bytes = self.window_bytes;
        cfg.limits.stream_queue_bytes = self.stream_queue_bytes;
        cfg.extensions = !self.no_extensions;
        if self.keepalive != 0.0 {
            let d = bistream_core::validate_timeout_max(self.keepalive, 3600.0)
                .context("--keepalive")?;
            cfg.keepalive = Some(d);
        }
        Ok(cfg)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// HOST:PORT for ws/tcp (default 127.0.0.1:8701), or a socket path for unix.
    pub(crate) addr: Option<String>,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportKind::Ws)]
    pub(crate) transport: TransportKind,
    /// Wire protocol (rsocket: tcp or ws transport only).
    #[arg(long, value_enum, default_value_t = Protocol::Slipstream)]
    pub(crate) protocol: Protocol,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("model").args(["stream", "bistream", "fire_and_forget"])))]
pub(crate) struct CallArgs {
    /// ws://HOST:PORT/PATH, wss://…, tcp://HOST:PORT or unix:PATH.
    pub(crate) url: String,
    /// Operation name (the RSocket route with --protocol rsocket).
    pub(crate) op: String,
    /// Request data: a JSON object (`operation` is set to OP). Default `{}`. With --protocol
    /// rsocket: any JSON value, sent as is.
    pub(crate) json: Option<String>,
    /// Request/stream: print each item.
    #[arg(long)]
    pub(crate) stream: bool,
    /// Stream/stream: send each stdin line (one JSON value) as an item, print each reply item.
    #[arg(long)]
    pub(crate) bistream: bool,
    /// Fire-and-forget: send and exit.
    #[arg(long)]
    pub(crate) fire_and_forget: bool,
    /// Timeout in seconds (request/response: whole call; streams: wait per item).
    #[arg(long, default_value_t = 600.0)]
    pub(crate) timeout: f64,
    /// Wire protocol (rsocket: tcp://HOST:PORT or ws://HOST:PORT/).
    #[arg(long, value_enum, default_value_t = Protocol::Slipstream)]
    pub(crate) protocol: Protocol,
    /// Extra WebSocket request header, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// PEM file of CA certificates to trust for wss:// (default: system roots).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

pub async fn run(args: RpcArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RpcCommand::Serve(a) if a.protocol == Protocol::Rsocket => {
            super::rpc_rsocket::serve(a, demo_router(false)).await
        }
        RpcCommand::Call(a) if a.protocol == Protocol::Rsocket => super::rpc_rsocket::call(a).await,
        RpcCommand::Serve(a) => serve(a).await,
        RpcCommand::Call(a) => call(a).await,
    }
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut i), Ok(mut t)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = i.recv() => {},
                _ = t.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn demo_router(to_stderr: bool) -> Router {
    bistream_rpc::demo::router(Arc::new(move |line: &str| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }))
}

pub(crate) fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let rpc = a.limits.config()?;
    let stdio = a.transport == TransportKind::Stdio;
    let cfg = ServerConfig {
        router: demo_router(stdio),
        rpc: rpc.clone(),
        on_connect: None,
    };
    let addr = a.addr.unwrap_or_else(|| "127.0.0.1:8701".into());
    let server = async move {
        match a.transport {
            TransportKind::Ws | TransportKind::Tcp => {
                let l = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let local = l.local_addr()?;
                if a.transport == TransportKind::Ws {
                    announce(&format!("rpc listening on ws://{local}"));
                    bistream_rpc::ws::serve(l, cfg).await?;
                } else {
                    announce(&format!("rpc listening on tcp://{local}"));
                    stream_io::serve_tcp(l, cfg).await?;
                }
            }
            TransportKind::Unix => {
                let path = addr.strip_prefix("unix:").unwrap_or(&addr).to_string();
                let l = tokio::net::UnixListener::bind(&path)
                    .with_context(|| format!("cannot listen on unix:{path}"))?;
                announce(&format!("rpc listening on unix:{path}"));
                let r = stream_io::serve_unix(l, cfg).await;
                let _ = std::fs::remove_file(&path);
                r?;
            }
            TransportKind::Stdio => {
                let conn = stream_io::over_stdio(cfg.router, rpc);
                let cause = conn.closed().await;
                tracing::info!(%cause, "stdio rpc connection ended");
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = server => r?,
        _ = shutdown_signal() => tracing::info!("shutdown requested"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect(a: &CallArgs, rpc: RpcConfig) -> Result<Connection, RpcError> {
    let url = a.url.as_str();
    if let Some(hp) = url.strip_prefix("tcp://") {
        return stream_io::connect_tcp(hp.trim_end_matches('/'), Router::new(), rpc).await;
    }
    if let Some(p) = url.strip_prefix("unix:") {
        return stream_io::connect_unix(std::path::Path::new(p), Router::new(), rpc).await;
    }
    let ws_url = websocket_url(url)?;
    let mut headers = Vec::new();
    for h in &a.headers {
        let Some((k, v)) = h.split_once(':') else {
            return Err(RpcError::Connect(format!(
                "--header {h:?} must look like `Name: value`"
            )));
        };
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let tls = match &a.ca_file {
        Some(p) => Some(bistream_rpc::ws::tls_with_ca_file(p)?),
        None => None,
    };
    let opts = ClientOptions {
        rpc,
        headers,
        tls,
        ..Default::default()
    };
    bistream_rpc::ws::connect(&ws_url, opts).await
}

/// The WebSocket URL to dial: `ws(s)://` checked and normalised, `http(s)://` converted, by
/// bistream-core's one URL rule.
fn websocket_url(url: &str) -> Result<String, RpcError> {
    bistream_core::http_to_websocket_url(url)
        .map_err(|e| RpcError::Connect(format!("unsupported url: {e} (or tcp://, unix:)")))
}

fn exit_for(e: &RpcError) -> ExitCode {
    let code = match e {
        RpcError::Connect(_) => 4,
        RpcError::Remote { .. } => 5,
        RpcError::Timeout(_) => 6,
        RpcError::Closed { .. } | RpcError::Lost(_) => 7,
        _ => 1,
    };
    ExitCode::from(code)
}

pub(crate) fn print_line(raw: &Raw) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", bistream_rpc::demo::compact(raw.get()))?;
    out.flush()?;
    Ok(())
}

fn report(e: &RpcError) -> ExitCode {
    match e {
        RpcError::Remote { code, message } => {
            eprintln!("error {code}: {message}");
        }
        other => eprintln!("bistream rpc call: {other}"),
    }
    exit_for(e)
}

async fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    let timeout: Duration =
        bistream_core::validate_timeout_max(a.timeout, 86_400.0).context("--timeout")?;
    let mut rpc = a.limits.config()?;
    rpc.timeout = timeout;
    let data: Raw = match &a.json {
        Some(j) => serde_json::from_str(j).context("JSON argument is not valid JSON")?,
        None => serde_json::from_str("{}")?,
    };
    let conn = match connect(&a, rpc).await {
        Ok(c) => c,
        Err(e) => return Ok(report(&e)),
    };
    let r = if a.stream {
        call_stream(&conn, &a.op, &data).await
    } else if a.bistream {
        call_bistream(&conn, &a.op, &data).await
    } else if a.fire_and_forget {
        conn.fire_and_forget(&a.op, &data).await
    } else {
        match conn.request_response::<_, Raw>(&a.op, &data).await {
            Ok(v) => print_line(&v).map_err(|e| RpcError::Data(e.to_string())),
            Err(e) => Err(e),
        }
    };
    conn.close().await;
    Ok(match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    })
}

async fn call_stream(conn: &Connection, op: &str, data: &Raw) -> Result<(), RpcError> {
    let mut s = conn.request_stream::<_, Raw>(op, data).await?;
    // Every item that is ready at once, printed with one flush (a fast stream is not held
    // back by one write per item; a slow one still prints each item as it comes).
    let mut batch = Vec::new();
    while let Some(n) = s.next_batch(&mut batch, 1024).await {
        n?;
        print_lines(batch.drain(..)).map_err(|e| RpcError::Data(e.to_string()))?;
    }
    Ok(())
}

fn print_lines(items: impl Iterator<Item = Raw>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    for raw in items {
        writeln!(out, "{}", bistream_rpc::demo::compact(raw.get()))?;
    }
    out.flush()
}

async fn call_bistream(conn: &Connection, op: &str, data: &Raw) -> Result<(), RpcError> {
    let (mut tx, mut rx) = conn.stream_stream::<_, Raw, Raw>(op, data).await?;
    let feeder = async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut n = 0u64;
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| RpcError::Data(format!("reading stdin: {e}")))?
        {
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let item: Raw = serde_json::from_str(&line)
                .map_err(|e| RpcError::Data(format!("stdin line {n} is not JSON: {e}")))?;
            tx.send(&item).await?;
        }
        tx.end().await
    };
    let printer = async move {
        while let Some(item) = rx.next().await {
            print_line(&item?).map_err(|e| RpcError::Data(e.to_string()))?;
        }
        Ok::<(), RpcError>(())
    };
    let feeder = tokio::spawn(feeder);
    let printed = printer.await;
    match printed {
        Ok(()) => {
            // The callee ended; a feeder still reading stdin is no longer needed.
            feeder.abort();
            Ok(())
        }
        Err(e) => {
            feeder.abort();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_urls_go_through_core() {
        assert_eq!(websocket_url("ws://h:1/rpc").unwrap(), "ws://h:1/rpc");
        assert_eq!(websocket_url("WSS://H/").unwrap(), "wss://h/");
        assert_eq!(websocket_url("https://h:8443/x").unwrap(), "wss://h:8443/x");
        for bad in ["ftp://h/", "ws://h/#x", "ws://", "h:1", "ws://h/\n"] {
            let e = websocket_url(bad).unwrap_err().to_string();
            assert!(e.contains("unsupported url"), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = websocket_url("ftp://u:hunter2@h/").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
