//! `bistream relay serve`: the relay server, compatible with ProxyStore's `proxystore-relay`.
//!
//! Settings come from flags, then `BISTREAM_RELAY_*` environment variables, then the
//! `--config` TOML file (ProxyStore's format plus bistream's keys), then defaults. The first
//! stdout line is `relay listening on ws://HOST:PORT` (wss:// with TLS), then
//! `metrics listening on http://HOST:PORT` when `--metrics-addr` is set; logs go to stderr.
//! SIGINT/SIGTERM close every client with 1001 and exit 0; SIGHUP reloads the token file.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use bistream_relay_server::{FileConfig, RelayConfig, RelayServer};

/// `bistream relay serve` arguments (boxed: the options are many, the other subcommands small).
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    opts: Box<ServeOptions>,
}

#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Relay server")]
pub struct ServeOptions {
    /// ProxyStore relay config file (TOML). Flags and environment variables override it.
    #[arg(short = 'c', long, env = "BISTREAM_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1].
    #[arg(long, env = "BISTREAM_RELAY_HOST")]
    pub host: Option<String>,
    /// Port to bind; 0 picks a free port [default: 8700].
    #[arg(long, env = "BISTREAM_RELAY_PORT")]
    pub port: Option<u16>,
    /// PEM certificate chain: serve wss:// (TLS).
    #[arg(long, env = "BISTREAM_RELAY_CERTFILE")]
    pub certfile: Option<PathBuf>,
    /// PEM private key (default: read from --certfile).
    #[arg(long, env = "BISTREAM_RELAY_KEYFILE")]
    pub keyfile: Option<PathBuf>,
    /// Close 4003 when a message is longer than this many bytes [default: no limit].
    #[arg(long, env = "BISTREAM_RELAY_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<u64>,
    /// Close 1009 when a message or frame is longer than this [default: 1048576].
    #[arg(long, env = "BISTREAM_RELAY_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<u64>,
    /// Serve /health, /healthz and /metrics on HOST:PORT (port 0 allowed).
    #[arg(long, env = "BISTREAM_RELAY_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Most open connections; more are closed 1013 [default: 50000, lowered to what the
    /// file-descriptor limit allows].
    #[arg(long, env = "BISTREAM_RELAY_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,
    /// Per-client send queue, in messages; a client that lets it fill is closed 1008 [default: 256].
    #[arg(long, env = "BISTREAM_RELAY_SEND_QUEUE_MESSAGES")]
    pub send_queue_messages: Option<u64>,
    /// Per-client send queue, in bytes [default: 8388608].
    #[arg(long, env = "BISTREAM_RELAY_SEND_QUEUE_BYTES")]
    pub send_queue_bytes: Option<u64>,
    /// Seconds without traffic before a keepalive ping; 0 disables [default: 20].
    #[arg(long, env = "BISTREAM_RELAY_PING_INTERVAL")]
    pub ping_interval: Option<f64>,
    /// Seconds to wait for the pong before closing 1011 [default: 20].
    #[arg(long, env = "BISTREAM_RELAY_PING_TIMEOUT")]
    pub ping_timeout: Option<f64>,
    /// Seconds allowed for the TLS + WebSocket opening handshake [default: 10].
    #[arg(long, env = "BISTREAM_RELAY_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<f64>,
    /// Seconds a connection may stay unregistered before it is closed 1008; 0 disables [default: 30].
    #[arg(long, env = "BISTREAM_RELAY_REGISTER_TIMEOUT")]
    pub register_timeout: Option<f64>,
    /// Seconds to wait for a client's reply to a close frame [default: 5].
    #[arg(long, env = "BISTREAM_RELAY_CLOSE_TIMEOUT")]
    pub close_timeout: Option<f64>,
    /// Graceful shutdown deadline in seconds [default: 10].
    #[arg(long, env = "BISTREAM_RELAY_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<f64>,
    /// Initial read buffer per connection in bytes [default: 4096].
    #[arg(long, env = "BISTREAM_RELAY_READ_BUFFER_BYTES")]
    pub read_buffer_bytes: Option<u64>,
    /// Bytes that all clients' unfinished messages of 16 KiB or more may hold together; a
    /// connection whose message would pass it is closed 1013 [default: 268435456].
    #[arg(long, env = "BISTREAM_RELAY_LARGE_MESSAGE_BUDGET_BYTES")]
    pub large_message_budget_bytes: Option<u64>,
    /// Seconds between "Connected clients" log lines; 0 disables [default: 60].
    #[arg(long, env = "BISTREAM_RELAY_CLIENT_LOG_INTERVAL")]
    pub client_log_interval: Option<u64>,
    /// List each client in that line when there are fewer than this many [default: 32].
    #[arg(long, env = "BISTREAM_RELAY_CLIENT_LOG_LIMIT")]
    pub client_log_limit: Option<u64>,
    /// Authentication: none, tokens, jwt, introspection or globus [default: none].
    #[arg(long, env = "BISTREAM_RELAY_AUTH_METHOD")]
    pub auth_method: Option<String>,
    /// tokens: TOML file of "token" = "user" entries under [tokens] (reloaded on SIGHUP).
    #[arg(long, env = "BISTREAM_RELAY_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<String>,
    /// jwt: HS256, RS256 or ES256 [default: HS256].
    #[arg(long, env = "BISTREAM_RELAY_AUTH_JWT_ALGORITHM")]
    pub auth_jwt_algorithm: Option<String>,
    /// jwt: HS256 shared secret (prefer the file or the environment variable).
    #[arg(long, env = "BISTREAM_RELAY_AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// jwt: file holding the HS256 secret.
    #[arg(long, env = "BISTREAM_RELAY_AUTH_JWT_SECRET_FILE")]
    pub auth_jwt_secret_file: Option<String>,
    /// jwt: PEM public key for RS256/ES256.
    #[arg(long, env = "BISTREAM_RELAY_AUTH_JWT_PUBLIC_KEY_FILE")]
    pub auth_jwt_public_key_file: Option<String>,
    /// jwt/introspection/globus: required audience.
    #[arg(long, env = "BISTREAM_RELAY_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// jwt: required issuer.
    #[arg(long, env = "BISTREAM_RELAY_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// introspection: endpoint URL (globus: Globus Auth's).
    #[arg(long, env = "BISTREAM_RELAY_AUTH_ENDPOINT")]
    pub auth_endpoint: Option<String>,
    /// introspection/globus: client id.
    #[arg(long, env = "BISTREAM_RELAY_AUTH_CLIENT_ID")]
    pub auth_client_id: Option<String>,
    /// introspection/globus: client secret (prefer the environment variable).
    #[arg(
        long,
        env = "BISTREAM_RELAY_AUTH_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub auth_client_secret: Option<String>,
    /// introspection/globus: seconds an active token is cached [default: 30].
    #[arg(long, env = "BISTREAM_RELAY_AUTH_CACHE_TTL")]
    pub auth_cache_ttl: Option<f64>,
    /// Run as one node of a relay cluster with this Redis backplane: redis://HOST:PORT[/DB]
    /// [default: single node, no Redis]. See docs/cluster.md.
    #[arg(long, env = "BISTREAM_RELAY_CLUSTER", hide_env_values = true)]
    pub cluster: Option<String>,
    /// This node's id in the cluster (logs, metrics) [default: node- and 8 random hex digits].
    #[arg(long, env = "BISTREAM_RELAY_NODE_ID")]
    pub node_id: Option<String>,
}

/// Overlays the flags (and their environment variables) onto the file's settings.
fn overlay(a: ServeOptions, mut f: FileConfig) -> FileConfig {
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = a.$field { f.$field = Some(v); } )* };
    }
    set!(
        host,
        port,
        certfile,
        keyfile,
        max_message_bytes,
        max_frame_bytes,
        metrics_addr,
        max_connections,
        send_queue_messages,
        send_queue_bytes,
        ping_interval,
        ping_timeout,
        handshake_timeout,
        register_timeout,
        close_timeout,
        shutdown_timeout,
        read_buffer_bytes,
        large_message_budget_bytes
    );
    if let Some(v) = a.client_log_interval {
        f.logging.current_client_interval = Some(v);
    }
    if let Some(v) = a.client_log_limit {
        f.logging.current_client_limit = Some(v);
    }
    if let Some(url) = a.cluster {
        f.cluster.url = Some(url);
    }
    if let Some(id) = a.node_id {
        f.cluster.node_id = Some(id);
    }
    if let Some(m) = a.auth_method {
        if f.auth.method.as_deref() != Some(m.as_str()) {
            // Another method: the file's kwargs were for the file's method.
            f.auth.kwargs.clear();
        }
        f.auth.method = Some(m);
    }
    let kw = &mut f.auth.kwargs;
    for (key, value) in [
        ("tokens_file", a.auth_tokens_file),
        ("algorithm", a.auth_jwt_algorithm),
        ("secret", a.auth_jwt_secret),
        ("secret_file", a.auth_jwt_secret_file),
        ("public_key_file", a.auth_jwt_public_key_file),
        ("audience", a.auth_audience),
        ("issuer", a.auth_issuer),
        ("endpoint", a.auth_endpoint),
        ("client_id", a.auth_client_id),
        ("client_secret", a.auth_client_secret),
    ] {
        if let Some(v) = value {
            kw.insert(key.to_string(), toml::Value::String(v));
        }
    }
    if let Some(ttl) = a.auth_cache_ttl {
        kw.insert("cache_ttl_seconds".to_string(), toml::Value::Float(ttl));
    }
    f
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let args = *args.opts;
    let file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(f) => f,
            Err(e) => return Ok(config_error(&e.to_string())),
        },
        None => FileConfig::default(),
    };
    let config = match RelayConfig::from_file_config(overlay(args, file)) {
        Ok(c) => c,
        Err(e) => return Ok(config_error(&e.to_string())),
    };
    let mut signals = Signals::install()?;
    let relay = match RelayServer::bind(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bistream relay serve: {e}");
            if let Some(hint) = super::bind_hint(&e) {
                eprintln!("{hint}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "relay listening on {}", relay.url())?;
        if let Some(m) = relay.metrics_addr() {
            writeln!(out, "metrics listening on http://{m}")?;
        }
        out.flush()?;
    }
    signals.wait(&relay).await;
    let report = relay.shutdown().await;
    if !report.drained {
        tracing::warn!("some clients did not finish the close handshake before the deadline");
    }
    Ok(ExitCode::SUCCESS)
}

fn config_error(msg: &str) -> ExitCode {
    eprintln!("bistream relay serve: invalid configuration: {msg}");
    ExitCode::from(2)
}

/// The signals the server reacts to, registered BEFORE the address line is printed so a
/// supervisor that signals right after reading it is never met by the default action.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// Returns on SIGINT/SIGTERM; reloads authentication on SIGHUP.
    #[cfg(unix)]
    async fn wait(&mut self, relay: &bistream_relay_server::RunningRelay) {
        loop {
            tokio::select! {
                _ = self.int.recv() => { tracing::info!("SIGINT: shutting down"); return }
                _ = self.term.recv() => { tracing::info!("SIGTERM: shutting down"); return }
                _ = self.hup.recv() => match relay.reload_auth() {
                    Ok(()) => tracing::info!("SIGHUP: authentication reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed, keeping the previous settings"),
                },
            }
        }
    }

    #[cfg(not(unix))]
    async fn wait(&mut self, _relay: &bistream_relay_server::RunningRelay) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
