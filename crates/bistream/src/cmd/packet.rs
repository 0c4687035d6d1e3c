//! `bistream packet`: `serve` a cs.packetstream-compatible service (the built-in `--demo`
//! service) on TCP, a Unix socket or stdin/stdout, and `call` one request on a server.
//!
//! Every argument is checked by clap's value parsers, so a bad one exits with status 2 and a
//! message saying exactly what is accepted; timeouts go through `bistream_core`.

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

/// Largest timeout accepted on the command line: one day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// `--timeout`-like values: seconds, more than 0, at most one day (`bistream_core` rules).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    bistream_core::parse_timeout(s, MAX_TIMEOUT_SECS).map_err(|e| e.to_string())
}

/// `--packet-grace-ms`: milliseconds from 0 to 10000 (0 writes as soon as the queue is
/// empty).
fn parse_grace_ms(s: &str) -> Result<Duration, String> {
    bistream_core::parse_millis(s, 0.0, 10_000.0).map_err(|e| e.to_string())
}

/// `--max-packet`: bytes, from 16 to 1 GiB.
fn parse_max_packet(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (16..=1 << 30).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of bytes from 16 to 1073741824, got {s:?}"
        )),
    }
}

/// Where to listen or connect: `HOST:PORT` (port 0..=65535; 0 picks a free port, for serve
/// only) or `unix:PATH`.
fn parse_addr(s: &str, allow_port_0: bool) -> Result<String, String> {
    const FORM: &str = "expected HOST:PORT (e.g. 127.0.0.1:9000 or [::1]:9000) or unix:PATH";
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("{FORM}: the unix: path is empty"));
        }
        return Ok(s.to_string());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{FORM}, got {s:?} (no port)"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{FORM}, got {s:?} (no host)"));
    }
    match port.parse::<u16>() {
        Ok(0) if !allow_port_0 => Err(format!("{FORM}: port 0 cannot be connected to")),
        Ok(_) => Ok(s.to_string()),
        Err(_) => Err(format!(
            "{FORM}: the port must be a number from {} to 65535, got {port:?}",
            u8::from(!allow_port_0)
        )),
    }
}

fn parse_listen_addr(s: &str) -> Result<String, String> {
    parse_addr(s, true)
}

fn parse_connect_addr(s: &str) -> Result<String, String> {
    parse_addr(s, false)
}

#[derive(Debug, clap::Args)]
struct ConnArgs {
    /// Writer coalescing delay in milliseconds, 0 to 10000 (Python's packet_grace; default 0
    /// = write as soon as the send queue is empty).
    #[arg(long, default_value = "0", value_parser = parse_grace_ms, value_name = "MS")]
    packet_grace_ms: Duration,
    /// Largest packet body accepted or sent, in bytes (16 to 1073741824).
    #[arg(long, default_value_t = bistream_packet::DEFAULT_MAX_PACKET, value_parser = parse_max_packet)]
    max_packet: usize,
}

impl ConnArgs {
    fn config(&self) -> Config {
        Config::default()
            .with_packet_grace(self.packet_grace_ms)
            .with_max_packet(self.max_packet)
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// HOST:PORT (port 0 picks a free port) or unix:PATH. Not used with --stdio.
    #[arg(required_unless_present = "stdio", value_parser = parse_listen_addr)]
    addr: Option<String>,
    /// Serve the built-in test service (required: it is the only service): rq_type 0 echo,
    /// 1 reverse (flags = payload length), 2 always fails, 3 echo after 200 ms, others fail.
    #[arg(long, required = true)]
    demo: bool,
    /// Serve one connection over stdin/stdout instead of listening.
    #[arg(long, conflicts_with = "addr")]
    stdio: bool,
    /// Connections served at once; further connections are accepted and closed at once
    /// (counted, logged). Default: the file-descriptor limit (raised to the hard limit)
    /// minus 64.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_connections: Option<u64>,
    /// Close a connection whose queued responses make no write progress for this many
    /// seconds (the peer does not read).
    #[arg(long, default_value = "60", value_parser = parse_timeout, value_name = "SECONDS")]
    write_stall_timeout: Duration,
    /// Close a connection when a packet that has started arriving is not complete within
    /// this many seconds (idle time between packets is not limited).
    #[arg(long, default_value = "60", value_parser = parse_timeout, value_name = "SECONDS")]
    packet_timeout: Duration,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Debug, clap::Args)]
struct CallArgs {
    /// HOST:PORT or unix:PATH.
    #[arg(value_parser = parse_connect_addr)]
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
    /// Give up after this many seconds (more than 0, at most 86400).
    #[arg(long, default_value = "30", value_parser = parse_timeout, value_name = "SECONDS")]
    timeout: Duration,
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
    // clap requires --demo (the only service); keep the check for callers that skip clap.
    if !a.demo {
        bail!("no service selected: pass --demo to serve the built-in test service");
    }
    let builder = Builder::new()
        .config(
            a.conn
                .config()
                .with_write_stall_timeout(a.write_stall_timeout)
                .with_packet_timeout(a.packet_timeout),
        )
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
    let mut opts = ServeOptions::default();
    if let Some(n) = a.max_connections {
        // at most 2^20 (the value parser's range), so it fits in usize
        opts.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
    }
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
    let timeout = a.timeout;
    let payload = match (&a.payload, a.hex) {
        (None, _) => Vec::new(),
        (Some(p), true) => match parse_hex(p) {
            Ok(v) => v,
            Err(e) => {
                // A bad argument: exit 2, as clap does for the others.
                eprintln!("bistream: invalid PAYLOAD for --hex: {e:#}");
                return Ok(ExitCode::from(2));
            }
        },
        (Some(p), false) => p.as_bytes().to_vec(),
    };
    let builder = Builder::new().config(a.conn.config().with_close_timeout(timeout));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_core_rules() {
        assert_eq!(parse_grace_ms("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_grace_ms(" 2.5 ").unwrap(),
            Duration::from_micros(2500)
        );
        assert_eq!(parse_grace_ms("10000").unwrap(), Duration::from_secs(10));
        for bad in ["-1", "10001", "nan", "inf", "soon", ""] {
            let e = parse_grace_ms(bad).unwrap_err();
            assert!(e.contains("milliseconds"), "{bad:?}: {e}");
        }
        assert!(parse_grace_ms("20000")
            .unwrap_err()
            .contains("from 0 to 10000"));
        assert_eq!(parse_timeout("60").unwrap(), Duration::from_secs(60));
        assert!(parse_timeout("0").unwrap_err().contains("greater than 0"));
        assert!(parse_timeout("soon").unwrap_err().contains("\"soon\""));
    }
}
