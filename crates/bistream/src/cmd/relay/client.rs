//! `bistream relay listen` and `bistream relay send`: the relay client from the command line.
//!
//! Both register with the relay and print their UUID as the first stdout line. `listen` then
//! prints every received peer message as one JSON line; `send` forwards one message and waits
//! briefly for the relay to bounce it with an error. Logs and errors go to stderr.
//!
//! Exit codes: 0 success, 1 other errors, 2 bad arguments, 3 the relay refused us for good
//! (close 4001/4002/4004 or a rejected registration), 4 relay not reachable within
//! `--connect-timeout`, 5 (`send`) the relay answered the message with an error.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bistream_core::sanitize;
use bistream_relay_client::{
    ConnectionEvent, DescriptionType, RelayClient, RelayClientBuilder, RelayError, RelayMessage,
};
use uuid::Uuid;

const EXIT_BAD_ARGUMENTS: u8 = 2;
const EXIT_REFUSED: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;
const EXIT_ERROR_REPLY: u8 = 5;

/// The longest `--connect-timeout` or `--wait`, in seconds (one day).
const MAX_SECS: f64 = 86_400.0;

/// Options shared by `listen` and `send`.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Relay address: ws://HOST:PORT or wss://HOST:PORT (http:// and https:// are converted).
    pub url: String,
    /// UUID to register with [default: a random one].
    #[arg(long)]
    pub uuid: Option<Uuid>,
    /// Name to register with [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Extra handshake header, 'Name: value' (repeatable), e.g. 'Authorization: Bearer TOKEN'.
    #[arg(long = "header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Give up (exit 4) when no registration succeeded within this many seconds; refused
    /// connections and timeouts are retried with backoff until then.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// Trust only the certificates in this PEM file (wss://): CAs, and exact server
    /// certificates, so a self-signed relay certificate works (host name still checked).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// DANGEROUS: accept any TLS certificate for any host (wss://); anyone on the path can
    /// read the token. To trust one self-signed certificate, give it to --ca-file instead.
    #[arg(long, conflicts_with = "ca_file")]
    pub insecure: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Stdout: this client's UUID, then one JSON line per received peer message. \
Reconnects (same UUID) when the relay restarts.\n\nExit codes: 0 ok (after --count messages, or on Ctrl-C), 1 error, \
2 bad arguments, 3 refused by the relay (4001/4002/4004), 4 relay unreachable."
)]
pub struct ListenArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Exit 0 after printing this many peer messages.
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Stdout: this client's UUID, then any message received during --wait as a \
JSON line.\n\nExit codes: 0 sent (no error reply within --wait), 1 error, \
2 bad arguments, 3 refused by the relay (4001/4002/4004), 4 relay unreachable, \
5 the relay answered with an error (printed on stderr)."
)]
pub struct SendArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// UUID of the peer to send to.
    #[arg(long)]
    pub to: Uuid,
    /// The session description (any text).
    #[arg(long)]
    pub description: String,
    /// Description type.
    #[arg(long = "type", value_enum, default_value = "offer")]
    pub kind: Kind,
    /// Seconds to wait for an error reply after sending. Peer messages that arrive meanwhile
    /// are printed as JSON lines.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Offer,
    Answer,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err("a header must look like 'Name: value'".into()),
    }
}

/// A number of seconds, checked by bistream-core's timeout rule (finite, more than 0, at most
/// [`MAX_SECS`]).
fn parse_secs(s: &str) -> Result<Duration, String> {
    bistream_core::parse_timeout(s, MAX_SECS).map_err(|e| e.to_string())
}

fn builder(c: &CommonArgs) -> RelayClientBuilder {
    let mut b = RelayClient::builder(c.url.clone())
        // Each attempt gets at most the whole connect budget (and never more than 10 s).
        .registration_timeout(c.connect_timeout.min(Duration::from_secs(10)));
    if let Some(u) = c.uuid {
        b = b.uuid(u);
    }
    if let Some(n) = &c.name {
        b = b.name(n.clone());
    }
    for (k, v) in &c.headers {
        b = b.header(k.clone(), v.clone());
    }
    if let Some(ca) = &c.ca_file {
        b = b.ca_file(ca.clone());
    }
    if c.insecure {
        b = b.danger_accept_any_certificate();
    }
    b
}

/// Builds the client, or reports a bad setting (exit 2: every setting comes from the
/// command line).
fn build(b: RelayClientBuilder) -> Result<RelayClient, ExitCode> {
    b.build().map_err(|e| {
        eprintln!("bistream: invalid relay client settings: {e}");
        ExitCode::from(EXIT_BAD_ARGUMENTS)
    })
}

/// Registers within the connect timeout, or explains why not with the right exit code.
async fn register(client: &RelayClient, timeout: Duration) -> Result<(), ExitCode> {
    let mut events = client.events();
    let outcome = tokio::time::timeout(timeout, client.connect(true)).await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(report(client, &e)),
        Err(_) => {
            let mut last = None;
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(1), events.next()).await
            {
                if let ConnectionEvent::Retrying { error, .. } = ev {
                    last = Some(error);
                }
            }
            let last = last
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            eprintln!(
                "bistream: could not register with the relay at {} within {:.1} s{last}",
                client.address(),
                timeout.as_secs_f64()
            );
            Err(ExitCode::from(EXIT_UNREACHABLE))
        }
    }
}

/// Prints an error and picks the exit code.
fn report(client: &RelayClient, e: &RelayError) -> ExitCode {
    match e {
        RelayError::FatalClose { code, reason } => {
            let what = match code {
                4001 => "authentication required or malformed",
                4002 => "access forbidden",
                _ => "this UUID was registered again elsewhere",
            };
            // `reason` was sanitized when it arrived (the relay's text is untrusted).
            eprintln!(
                "bistream: the relay at {} refused us ({what}), close code {code}: {reason}",
                client.address()
            );
            ExitCode::from(EXIT_REFUSED)
        }
        RelayError::RegistrationRejected(_) => {
            eprintln!("bistream: {e}");
            ExitCode::from(EXIT_REFUSED)
        }
        other => {
            eprintln!("bistream: relay {}: {other}", client.address());
            ExitCode::FAILURE
        }
    }
}

/// Writes one stdout line; `false` when stdout is closed (a reader like `head` went away).
fn print_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// Ctrl-C / SIGTERM, installed up front: a signal that arrives before the first wait is
/// still seen (instead of killing the process with the default action).
struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    fn install() -> Shutdown {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(i), Ok(t)) => Some((i, t)),
                _ => None,
            };
            Shutdown { signals }
        }
        #[cfg(not(unix))]
        Shutdown {}
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        match &mut self.signals {
            Some((int, term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub async fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let mut shutdown = Shutdown::install();
    let client = match build(builder(&args.common)) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    tokio::select! {
        r = register(&client, args.common.connect_timeout) => {
            if let Err(code) = r {
                return Ok(code);
            }
        }
        _ = shutdown.wait() => {
            client.close().await;
            return Ok(ExitCode::SUCCESS);
        }
    }
    if !print_line(&client.uuid().to_string()) {
        client.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    if args.count == Some(0) {
        client.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let mut printed = 0u64;
    let code = loop {
        let msg = tokio::select! {
            m = client.recv() => m,
            _ = shutdown.wait() => break ExitCode::SUCCESS,
        };
        match msg {
            Ok(RelayMessage::PeerConnection(m)) => {
                if !print_line(&RelayMessage::PeerConnection(m).encode()) {
                    break ExitCode::SUCCESS;
                }
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    break ExitCode::SUCCESS;
                }
            }
            Ok(other) => {
                eprintln!(
                    "bistream: relay message (not printed): {}",
                    sanitize(&other.encode())
                );
            }
            Err(RelayError::Decode(e)) => {
                eprintln!(
                    "bistream: ignoring an undecodable message from the relay: {}",
                    sanitize(&e.to_string())
                );
            }
            Err(e) => break report(&client, &e),
        }
    };
    client.close().await;
    Ok(code)
}

pub async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    // A one-shot command: no background reconnect after the message is out.
    let client = match build(builder(&args.common).reconnect(false)) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Err(code) = register(&client, args.common.connect_timeout).await {
        return Ok(code);
    }
    print_line(&client.uuid().to_string());
    let kind = match args.kind {
        Kind::Offer => DescriptionType::Offer,
        Kind::Answer => DescriptionType::Answer,
    };
    let message = client.peer_connection(args.to, kind, args.description);
    if let Err(e) = client.send(message).await {
        let code = report(&client, &e);
        client.close().await;
        return Ok(code);
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    let code = loop {
        let msg = match tokio::time::timeout_at(deadline, client.recv()).await {
            Err(_) => break ExitCode::SUCCESS,
            Ok(m) => m,
        };
        match msg {
            Ok(RelayMessage::PeerConnection(m)) if m.error.is_some() && m.peer_uuid == args.to => {
                // The peer's failure text is untrusted.
                eprintln!("{}", sanitize(&m.error.unwrap_or_default()));
                break ExitCode::from(EXIT_ERROR_REPLY);
            }
            Ok(RelayMessage::Response(r)) if r.error || !r.success => {
                eprintln!(
                    "{}",
                    r.message
                        .map(|m| sanitize(&m))
                        .unwrap_or_else(|| "the relay reported an error".into())
                );
                break ExitCode::from(EXIT_ERROR_REPLY);
            }
            Ok(other) => {
                print_line(&other.encode());
            }
            Err(RelayError::Decode(e)) => {
                eprintln!(
                    "bistream: ignoring an undecodable message from the relay: {}",
                    sanitize(&e.to_string())
                );
            }
            // The relay closed on us after the send (e.g. 4003 for an oversized message).
            Err(e) => break report(&client, &e),
        }
    };
    client.close().await;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b").unwrap(),
            ("Authorization".into(), "Bearer a:b".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
    }

    #[test]
    fn seconds_parsing() {
        assert_eq!(parse_secs("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_secs(" 86400 ").unwrap(), Duration::from_secs(86_400));
        for bad in ["0", "-1", "nan", "inf", "x", "1e9", "1e-12", ""] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        // The messages say what is accepted.
        assert!(parse_secs("0").unwrap_err().contains("greater than 0"));
        assert!(parse_secs("1e9").unwrap_err().contains("at most 86400"));
        assert!(parse_secs("x").unwrap_err().contains("number of seconds"));
        let hostile = parse_secs("\x1b[2J").unwrap_err();
        assert!(!hostile.contains('\x1b'), "{hostile}");
    }
}
