//! `bistream packet`: `serve` a cs.packetstream-compatible service (the built-in `--demo`
//! service) on TCP, a Unix socket or stdin/stdout, and `call` one request on a server.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bistream_packet::{
    demo_service, serve, Builder, CloseReason, Config, Listener, PacketError, ServeOptions,
};

#[derive(Debug, clap::Args)]
pub struct PacketArgs {
    #[command(subcommand)]
    command: PacketCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PacketCommand {
    /// Serve packet connections. Prints the bound address (HOST:PORT or unix:PATH) as the
    /// first stdout line. SIGINT/SIGTERM close every connection gracefully (ERQ, running
    /// requests answered, EOF).
    Serve(ServeArgs),
    /// Send one request and print `ok:`, `flags:` and `payload:` lines. Exits 1 when the
    /// response is not ok (the reason goes to stderr).
    Call(CallArgs),
}

#[derive(Debug, clap::Args)]
struct ConnArgs {
    /// Writer coalescing delay in milliseconds (Python's packet_grace; default 0 = write as
    /// soon as the send queue is empty).
    #[arg(long, default_value_t = 0.0)]
    packet_grace_ms: f64,
    /// Largest packet body accepted or sent, in bytes.
    #[arg(long, default_value_t = bistream_packet::DEFAULT_MAX_PACKET)]
    max_packet: usize,
}

impl ConnArgs {
    fn config(&self) -> anyhow::Result<Config> {
        if !(self.packet_grace_ms.is_finite() && (0.0..=10_000.0).contains(&self.packet_grace_ms)) {
            bail!("--packet-grace-ms must be between 0 and 10000");
        }
        if self.max_packet < 16 {
            bail!("--max-packet must be at least 16");
        }
        Ok(Config::default()
            .with_packet_grace(Duration::from_secs_f64(self.packet_grace_ms / 1000.0))
            .with_max_packet(self.max_packet))
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// HOST:PORT (port 0 picks a free port) or unix:PATH. Not used with --stdio.
    #[arg(required_unless_present = "stdio")]
    addr: Option<String>,
    /// Serve the built-in test service: rq_type 0 echo, 1 reverse (flags = payload length),
    /// 2 always fails, 3 echo after 200 ms, others fail.
    #[arg(long)]
    demo: bool,
    /// Serve one connection over stdin/stdout instead of listening.
    #[arg(long, conflicts_with = "addr")]
    stdio: bool,
    /// Connections served at once (accepting pauses beyond this).
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Debug, clap::Args)]
struct CallArgs {
    /// HOST:PORT or unix:PATH.
    addr: String,
    /// The request type (the wire carries RQ_TYPE + 1).
    rq_type: u64,
    /// The request payload (UTF-8 text, or hex with --hex). Default: empty.
    payload: Option<String>,
    /// Request flags.
    #[arg(long, default_value_t = 0)]
    flags: u64,
    /// Channel (a stock Python server only accepts 0).
    #[arg(long, default_value_t = 0)]
    channel: u64,
    /// PAYLOAD is hex, and the response payload is printed as hex.
    #[arg(long)]
    hex: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    conn: ConnArgs,
}

pub async fn run(args: PacketArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PacketCommand::Serve(a) => run_serve(a).await,
        PacketCommand::Call(a) => run_call(a).await,
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {},
                    _ = t.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

async fn run_serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    if !a.demo {
        bail!("no service selected: pass --demo to serve the built-in test service");
    }
    let builder = Builder::new()
        .config(a.conn.config()?)
        .handler(demo_service());
    if a.stdio {
        let conn = builder.stdio();
        let reason = tokio::select! {
            r = conn.closed() => r,
            _ = shutdown_signal() => conn.close().await,
        };
        tracing::info!(%reason, "stdio connection ended");
        return Ok(ExitCode::SUCCESS);
    }
    let addr = a.addr.unwrap_or_default();
    let listener = Listener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr:?}"))?;
    let bound = listener.local_addr_string()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{bound}")?;
        out.flush()?;
    }
    tracing::info!(addr = %bound, "packet server listening");
    let opts = ServeOptions {
        max_connections: a.max_connections,
        ..ServeOptions::default()
    };
    serve(listener, builder, opts, shutdown_signal()).await?;
    if let Some(path) = addr.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("packet server stopped");
    Ok(ExitCode::SUCCESS)
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() % 2 != 0 {
        bail!("hex payload has an odd number of digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .with_context(|| format!("invalid hex digits at offset {i}"))
        })
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn run_call(a: CallArgs) -> anyhow::Result<ExitCode> {
    if !(a.timeout.is_finite() && a.timeout > 0.0 && a.timeout <= 86_400.0) {
        bail!("--timeout must be between 0 and 86400 seconds");
    }
    let timeout = Duration::from_secs_f64(a.timeout);
    let payload = match (&a.payload, a.hex) {
        (None, _) => Vec::new(),
        (Some(p), true) => parse_hex(p)?,
        (Some(p), false) => p.as_bytes().to_vec(),
    };
    let builder = Builder::new().config(a.conn.config()?.with_close_timeout(timeout));
    let work = async {
        let conn = if let Some(path) = a.addr.strip_prefix("unix:") {
            builder.connect_unix(path).await
        } else {
            builder.connect_tcp(a.addr.as_str()).await
        }
        .with_context(|| format!("cannot connect to {:?}", a.addr))?;
        let resp = conn
            .submit(a.rq_type, a.flags, payload, a.channel)
            .await?
            .await;
        let end = conn.close().await;
        if !matches!(end, CloseReason::PeerEof) {
            tracing::debug!(%end, "connection did not end with the server's EOF");
        }
        Ok::<_, anyhow::Error>(resp)
    };
    let resp = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => bail!("no response within {timeout:?}"),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(PacketError::Closed(reason)) => {
            bail!("connection closed before the response: {reason}")
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ok: {}", resp.ok)?;
    writeln!(out, "flags: {}", resp.flags)?;
    if resp.ok {
        if a.hex {
            writeln!(out, "payload: {}", to_hex(&resp.payload))?;
        } else {
            match std::str::from_utf8(&resp.payload) {
                Ok(s) => writeln!(out, "payload: {s}")?,
                Err(_) => writeln!(out, "payload (hex): {}", to_hex(&resp.payload))?,
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    } else {
        out.flush()?;
        eprintln!(
            "bistream: request failed: {}",
            String::from_utf8_lossy(&resp.payload)
        );
        Ok(ExitCode::FAILURE)
    }
}
