//! Server configuration: the validated [`RelayConfig`] the server runs with, and
//! [`FileConfig`], the TOML file format (a superset of ProxyStore's relay config).
//!
//! Precedence, applied by the `bistream relay serve` command: flags > `BISTREAM_RELAY_*`
//! environment variables > the `--config` file > defaults. The command overlays flags onto a
//! [`FileConfig`] and validates the result once with [`RelayConfig::from_file_config`].
//!
//! Unknown keys are an error naming the key (ProxyStore silently ignores unknown top-level and
//! `[logging]` keys, which hides typos such as the wrong names in its own docstring example).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{IntrospectionConfig, JwtConfig};

/// The built-in connection cap (lowered at start to what the file-descriptor limit allows).
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
#[cfg(test)]
use crate::auth::{GLOBUS_INTROSPECT_URL, GLOBUS_RELAY_AUDIENCE};

mod auth;

use auth::auth_config;

/// A configuration error; each message names the file, key or setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, or has an unknown key or a value of the wrong type.
    #[error("{}{message}", path.as_ref().map(|p| format!("config file {}: ", p.display())).unwrap_or_default())]
    Syntax {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// A setting has an invalid value.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// TLS files (PEM). As in ProxyStore, the key is read from the certificate file when no
/// key file is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub certfile: PathBuf,
    /// Private key (PEM), or `None` to read it from `certfile`.
    pub keyfile: Option<PathBuf>,
}

/// The authentication method, with its settings.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// Everyone is the same user (ProxyStore's default).
    None,
    /// Static bearer tokens from a TOML file.
    Tokens {
        /// The token file.
        file: PathBuf,
    },
    /// JSON Web Tokens.
    Jwt(JwtConfig),
    /// RFC 7662 token introspection (ProxyStore's `globus` method is this with Globus' defaults).
    Introspection(IntrospectionConfig),
}

/// Everything the server needs to run. `Default` is `cargo run --release`: 127.0.0.1:8700,
/// no TLS, no auth, no app-level size limit, 1 MiB frames.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Bind address (an IP address or a host name).
    pub host: String,
    /// Bind port (0: any free port).
    pub port: u16,
    /// Serve wss:// with these files.
    pub tls: Option<TlsFiles>,
    /// ProxyStore's `max_message_bytes`: a data frame whose payload is longer closes 4003.
    pub max_message_bytes: Option<usize>,
    /// Transport limit on a message or frame: longer closes 1009 (websockets' `max_size`).
    pub max_frame_bytes: usize,
    /// Address of the ops endpoint (`/health`, `/healthz`, `/metrics`), if any.
    pub metrics_addr: Option<String>,
    /// Most open WebSocket connections; further ones are closed 1013 (default
    /// [`DEFAULT_MAX_CONNECTIONS`], lowered to what the file-descriptor limit allows).
    pub max_connections: usize,
    /// Per-client send queue bound in messages.
    pub send_queue_messages: usize,
    /// Per-client send queue bound in bytes.
    pub send_queue_bytes: usize,
    /// Send a ping after this long without traffic (`None`: never).
    pub ping_interval: Option<Duration>,
    /// Close 1011 when a ping is not answered within this time.
    pub ping_timeout: Duration,
    /// Limit on the TLS + WebSocket opening handshake.
    pub handshake_timeout: Duration,
    /// A connection that has not registered this long after its handshake is closed 1008
    /// (`None`: never).
    pub register_timeout: Option<Duration>,
    /// How long to wait for the peer's reply to a close frame (and for a blocked write).
    pub close_timeout: Duration,
    /// Graceful-shutdown deadline: connections still open after it are dropped.
    pub shutdown_timeout: Duration,
    /// Initial read buffer per connection.
    pub read_buffer_bytes: usize,
    /// Bytes that the unfinished messages of 16 KiB or more of all clients together may hold
    /// (a connection whose message would pass it is closed 1013). Default 256 MiB; must be at
    /// least `max_frame_bytes`, or one legitimate message could never fit.
    pub large_message_budget_bytes: usize,
    /// Authentication.
    pub auth: AuthConfig,
    /// Period of the "Connected clients" log line (`None`: off).
    pub client_log_interval: Option<Duration>,
    /// The periodic log also lists each client when there are fewer than this many.
    pub client_log_limit: usize,
    /// Act as one node of a cluster with this Redis backplane (`None`: single node).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            host: "127.0.0.1".to_string(),
            port: 8700,
            tls: None,
            max_message_bytes: None,
            max_frame_bytes: 1 << 20,
            metrics_addr: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            send_queue_messages: 256,
            send_queue_bytes: 8 << 20,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            register_timeout: Some(Duration::from_secs(30)),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            read_buffer_bytes: 4096,
            large_message_budget_bytes: 256 << 20,
            auth: AuthConfig::None,
            client_log_interval: Some(Duration::from_secs(60)),
            client_log_limit: 32,
            cluster: None,
        }
    }
}

/// ProxyStore's `[auth]` table: `method` plus `[auth.kwargs]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `none`, `tokens`, `jwt`, `introspection` or `globus` (absent: none).
    pub method: Option<String>,
    /// Method settings (see docs/relay.md).
    #[serde(default)]
    pub kwargs: toml::Table,
}

/// ProxyStore's `[logging]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// ProxyStore writes `server.log` there; bistream logs to stderr only (accepted, warned).
    pub log_dir: Option<String>,
    /// ProxyStore's root level; bistream takes its level from `--log-level` (accepted, warned).
    pub default_level: Option<toml::Value>,
    /// Level of ProxyStore's websockets logger (accepted, warned: no equivalent).
    pub websockets_level: Option<toml::Value>,
    /// Seconds between "Connected clients" log lines (0: off).
    pub current_client_interval: Option<u64>,
    /// List each client in that line when there are fewer than this many.
    pub current_client_limit: Option<u64>,
}

/// The TOML file. ProxyStore's keys (`host`, `port`, `certfile`, `keyfile`,
/// `max_message_bytes`, `[auth]`, `[logging]`) plus bistream's own. Durations are seconds.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub max_message_bytes: Option<u64>,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub logging: LoggingSection,
    pub max_frame_bytes: Option<u64>,
    pub metrics_addr: Option<String>,
    pub max_connections: Option<u64>,
    pub send_queue_messages: Option<u64>,
    pub send_queue_bytes: Option<u64>,
    pub ping_interval: Option<f64>,
    pub ping_timeout: Option<f64>,
    pub handshake_timeout: Option<f64>,
    pub register_timeout: Option<f64>,
    pub close_timeout: Option<f64>,
    pub shutdown_timeout: Option<f64>,
    pub read_buffer_bytes: Option<u64>,
    pub large_message_budget_bytes: Option<u64>,
    #[serde(default)]
    pub cluster: crate::cluster::ClusterSection,
}

impl FileConfig {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: None,
            message: e.to_string().trim_end().to_string(),
        })
    }
}

/// Longest duration a configuration value in seconds may have: a week.
const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

pub(crate) fn secs(name: &str, v: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        // 0 turns the feature off; anything else is a timeout, checked by core's one rule.
        Some(0.0) => Ok(Duration::ZERO),
        Some(s) => bistream_core::validate_timeout_max(s, MAX_SECS).map_err(|_| {
            err(format!(
                "{name} must be a number of seconds between 0 and 604800, got {s}"
            ))
        }),
    }
}

fn size(
    name: &str,
    v: Option<u64>,
    default: usize,
    min: u64,
    max: u64,
) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => usize::try_from(n)
            .map_err(|_| err(format!("{name} = {n} is too large for this machine"))),
        Some(n) => Err(err(format!(
            "{name} must be between {min} and {max}, got {n}"
        ))),
    }
}

impl RelayConfig {
    /// Validates a file configuration (already overlaid with flags and environment).
    pub fn from_file_config(f: FileConfig) -> Result<RelayConfig, ConfigError> {
        let d = RelayConfig::default();
        let host = match f.host {
            Some(h) if h.trim().is_empty() => return Err(err("host must not be empty")),
            Some(h) => h,
            None => d.host,
        };
        let tls = match (f.certfile, f.keyfile) {
            (Some(certfile), keyfile) => {
                if !certfile.is_file() {
                    return Err(err(format!(
                        "certfile {} does not exist or is not a file",
                        certfile.display()
                    )));
                }
                if let Some(k) = &keyfile {
                    if !k.is_file() {
                        return Err(err(format!(
                            "keyfile {} does not exist or is not a file",
                            k.display()
                        )));
                    }
                }
                Some(TlsFiles { certfile, keyfile })
            }
            (None, Some(_)) => return Err(err("keyfile is set but certfile is not")),
            (None, None) => None,
        };
        let max_message_bytes = match f.max_message_bytes {
            None => None,
            Some(0) => return Err(err("max_message_bytes must be at least 1")),
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let max_frame_bytes = size(
            "max_frame_bytes",
            f.max_frame_bytes,
            d.max_frame_bytes,
            1024,
            1 << 30,
        )?;
        let ping = secs("ping_interval", f.ping_interval, Duration::from_secs(20))?;
        let metrics_addr = match f.metrics_addr {
            Some(a) if a.trim().is_empty() => None,
            other => other,
        };
        let log = f.logging;
        if log.log_dir.is_some() {
            tracing::warn!("[logging] log_dir is accepted but ignored: bistream logs to stderr (redirect it to keep a file)");
        }
        if log.default_level.is_some() {
            tracing::warn!("[logging] default_level is accepted but ignored: use --log-level or BISTREAM_LOG_LEVEL");
        }
        if log.websockets_level.is_some() {
            tracing::warn!("[logging] websockets_level is accepted but ignored: bistream has no separate WebSocket logger (use --log-level, e.g. debug, to see connection-level events)");
        }
        let interval = log.current_client_interval.unwrap_or(60);
        Ok(RelayConfig {
            host,
            port: f.port.unwrap_or(d.port),
            tls,
            max_message_bytes,
            max_frame_bytes,
            metrics_addr,
            max_connections: size(
                "max_connections",
                f.max_connections,
                d.max_connections,
                1,
                10_000_000,
            )?,
            send_queue_messages: size(
                "send_queue_messages",
                f.send_queue_messages,
                d.send_queue_messages,
                1,
                1 << 20,
            )?,
            send_queue_bytes: size(
                "send_queue_bytes",
                f.send_queue_bytes,
                d.send_queue_bytes,
                1024,
                1 << 34,
            )?,
            ping_interval: if ping.is_zero() { None } else { Some(ping) },
            ping_timeout: secs("ping_timeout", f.ping_timeout, d.ping_timeout)?
                .max(Duration::from_millis(1)),
            handshake_timeout: secs(
                "handshake_timeout",
                f.handshake_timeout,
                d.handshake_timeout,
            )?
            .max(Duration::from_millis(1)),
            register_timeout: {
                let t = secs(
                    "register_timeout",
                    f.register_timeout,
                    Duration::from_secs(30),
                )?;
                (!t.is_zero()).then_some(t)
            },
            close_timeout: secs("close_timeout", f.close_timeout, d.close_timeout)?,
            shutdown_timeout: secs("shutdown_timeout", f.shutdown_timeout, d.shutdown_timeout)?,
            read_buffer_bytes: size(
                "read_buffer_bytes",
                f.read_buffer_bytes,
                d.read_buffer_bytes,
                256,
                1 << 20,
            )?,
            // Unset, the budget grows with a larger max_frame_bytes so that one message of the
            // allowed size always fits; set explicitly below it, it is a contradiction.
            large_message_budget_bytes: match f.large_message_budget_bytes {
                None => d.large_message_budget_bytes.max(max_frame_bytes),
                Some(_) => {
                    let budget = size(
                        "large_message_budget_bytes",
                        f.large_message_budget_bytes,
                        d.large_message_budget_bytes,
                        16 << 10,
                        1 << 40,
                    )?;
                    if budget < max_frame_bytes {
                        return Err(err(format!(
                            "large_message_budget_bytes ({budget}) must be at least max_frame_bytes ({max_frame_bytes}), or a message of the allowed size could never be received"
                        )));
                    }
                    budget
                }
            },
            auth: auth_config(f.auth)?,
            client_log_interval: if interval == 0 {
                None
            } else {
                Some(Duration::from_secs(interval))
            },
            client_log_limit: usize::try_from(log.current_client_limit.unwrap_or(32))
                .unwrap_or(usize::MAX),
            cluster: crate::cluster::ClusterConfig::from_section(f.cluster)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxystore_config_parses() {
        let f = FileConfig::parse(
            "host = \"127.0.0.1\"\nport = 8765\nmax_message_bytes = 1024\n\n[logging]\ndefault_level = \"INFO\"\ncurrent_client_interval = 5\ncurrent_client_limit = 10\n",
        )
        .unwrap();
        let c = RelayConfig::from_file_config(f).unwrap();
        assert_eq!(c.port, 8765);
        assert_eq!(c.max_message_bytes, Some(1024));
        assert_eq!(c.client_log_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.client_log_limit, 10);
        assert!(matches!(c.auth, AuthConfig::None));
    }

    #[test]
    fn defaults() {
        let c = RelayConfig::from_file_config(FileConfig::default()).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 8700));
        assert_eq!(c.max_frame_bytes, 1 << 20);
        assert_eq!(c.max_message_bytes, None);
    }

    #[test]
    fn bad_files_name_the_problem() {
        for (text, needle) in [
            ("prot = 1\n", "prot"),
            ("port = \"8700\"\n", "port"),
            ("port = 70000\n", "port"),
            ("[serving]\nport = 1\n", "serving"),
            (
                "[logging]\ndefault_log_level = \"INFO\"\n",
                "default_log_level",
            ),
            ("[auth]\nmethod = \"globus\"\nextra = 1\n", "extra"),
        ] {
            let e = FileConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        for (text, needle) in [
            ("max_message_bytes = 0\n", "max_message_bytes"),
            ("certfile = \"/nonexistent/cert.pem\"\n", "certfile"),
            ("keyfile = \"/etc/hostname\"\n", "certfile is not"),
            ("ping_interval = -1.0\n", "ping_interval"),
            ("max_connections = 0\n", "max_connections"),
            ("[auth]\nmethod = \"magic\"\n", "unknown auth method"),
            ("[auth]\nmethod = \"tokens\"\n", "tokens_file"),
            ("[auth]\nmethod = \"tokens\"\n[auth.kwargs]\ntokens_file = \"x\"\naudience = \"y\"\n", "audience"),
            ("[auth]\nmethod = \"jwt\"\n", "HS256"),
            ("[auth]\nmethod = \"jwt\"\n[auth.kwargs]\nalgorithm = \"none\"\nsecret = \"x\"\n", "unsupported JWT algorithm"),
            ("[auth]\nmethod = \"introspection\"\n", "endpoint"),
        ] {
            let f = FileConfig::parse(text).unwrap();
            let e = RelayConfig::from_file_config(f).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn large_message_budget_is_configurable_and_never_below_a_frame() {
        let parse = |t: &str| RelayConfig::from_file_config(FileConfig::parse(t).unwrap());
        assert_eq!(parse("").unwrap().large_message_budget_bytes, 256 << 20);
        let c = parse("large_message_budget_bytes = 33554432").unwrap();
        assert_eq!(c.large_message_budget_bytes, 32 << 20);
        // Unset, it follows a max_frame_bytes above the default budget.
        let c = parse("max_frame_bytes = 536870912").unwrap();
        assert_eq!(c.large_message_budget_bytes, 512 << 20);
        let e = parse("max_frame_bytes = 2097152\nlarge_message_budget_bytes = 1048576")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "large_message_budget_bytes (1048576) must be at least max_frame_bytes (2097152)"
            ),
            "{e}"
        );
        let e = parse("large_message_budget_bytes = 10")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("large_message_budget_bytes must be between 16384"),
            "{e}"
        );
    }

    #[test]
    fn globus_defaults() {
        let f = FileConfig::parse("[auth]\nmethod = \"globus\"\n[auth.kwargs]\nclient_id = \"id\"\nclient_secret = \"s\"\n").unwrap();
        match RelayConfig::from_file_config(f).unwrap().auth {
            AuthConfig::Introspection(i) => {
                assert_eq!(i.endpoint, GLOBUS_INTROSPECT_URL);
                assert_eq!(i.audience.as_deref(), Some(GLOBUS_RELAY_AUDIENCE));
            }
            other => panic!("{other:?}"),
        }
    }
}
