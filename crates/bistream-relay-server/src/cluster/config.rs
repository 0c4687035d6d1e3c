//! Cluster settings: the `[cluster]` table of the config file, the validated
//! [`ClusterConfig`] and the parsing of the Redis URL (`redis://[:PASSWORD@]HOST:PORT[/DB]`).

use std::time::Duration;

use bistream_core::redact_url;
use serde::Deserialize;

use crate::config::ConfigError;

/// Longest accepted node id (it appears in logs and in every registration stored in Redis).
pub const MAX_NODE_ID_BYTES: usize = 64;

/// The `[cluster]` table. Every key is optional; without `url` the relay is a single node.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `redis://HOST:PORT[/DB]` (a password may be given as `redis://:PASSWORD@HOST:PORT`).
    pub url: Option<String>,
    /// This node's name in logs and in Redis (default: `node-` and 8 random hex digits).
    pub node_id: Option<String>,
    /// Seconds between heartbeats that refresh this node's registrations [default: 2].
    pub heartbeat_interval: Option<f64>,
    /// Seconds a registration survives in Redis without a heartbeat [default: 6].
    pub registration_ttl: Option<f64>,
    /// Seconds allowed for a Redis connection attempt or reply [default: 2].
    pub redis_timeout: Option<f64>,
}

/// A validated cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis URL as given (it may hold a password: log [`ClusterConfig::redacted_url`]).
    pub url: String,
    /// This node's id.
    pub node_id: String,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Lifetime of a registration in Redis without a heartbeat.
    pub registration_ttl: Duration,
    /// Bound on a connection attempt or a reply from Redis.
    pub redis_timeout: Duration,
    /// The logical database (`/DB` in the URL), also part of the pub/sub channel names:
    /// channels are server-wide in Redis, so clusters on different databases stay apart.
    pub db: i64,
    /// `HOST:PORT/DB`, without credentials: what logs and error texts name.
    pub endpoint: String,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// A `[cluster]` duration in seconds, by core's one range rule.
fn secs(
    name: &str,
    v: Option<f64>,
    default: f64,
    min: f64,
    max: f64,
) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    bistream_core::validate_duration(s, min, max).map_err(|_| {
        err(format!(
            "[cluster] {name} must be a number of seconds between {min} and {max}, got {s}"
        ))
    })
}

impl ClusterConfig {
    /// Validates the `[cluster]` table; `Ok(None)` when no URL is set (single node).
    pub fn from_section(s: ClusterSection) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(url) = s.url.filter(|u| !u.trim().is_empty()) else {
            if s.node_id.is_some() {
                tracing::warn!(
                    "[cluster] node_id is set without a cluster URL: running as a single node"
                );
            }
            return Ok(None);
        };
        let (endpoint, db) = parse_url(&url)?;
        let node_id = match s.node_id {
            Some(id) => {
                validate_node_id(&id)?;
                id
            }
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        let heartbeat_interval = secs("heartbeat_interval", s.heartbeat_interval, 2.0, 0.05, 60.0)?;
        let registration_ttl = secs("registration_ttl", s.registration_ttl, 6.0, 0.2, 600.0)?;
        if registration_ttl < heartbeat_interval * 2 {
            return Err(err(format!(
                "[cluster] registration_ttl ({}s) must be at least twice heartbeat_interval ({}s), or a slow heartbeat expires live registrations",
                registration_ttl.as_secs_f64(),
                heartbeat_interval.as_secs_f64()
            )));
        }
        let redis_timeout = secs("redis_timeout", s.redis_timeout, 2.0, 0.05, 60.0)?;
        Ok(Some(ClusterConfig {
            url,
            node_id,
            heartbeat_interval,
            registration_ttl,
            redis_timeout,
            db,
            endpoint,
        }))
    }

    /// The URL for logs: any user name and password replaced by core's one marker
    /// ([`bistream_core::REDACTED`]).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Node ids are letters, digits, `.`, `_`, `-` and `:` (they appear in logs and in Redis values).
fn validate_node_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NODE_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "[cluster] node_id must be 1 to {MAX_NODE_ID_BYTES} characters among letters, digits, '.', '_', '-' and ':', got {:?}",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// Checks `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`; returns `HOST:PORT/DB` and the DB.
fn parse_url(url: &str) -> Result<(String, i64), ConfigError> {
    // Never echo a password back: core's URL redaction (also escapes control characters).
    let shown = || redact_url(url);
    let Some(rest) = url.strip_prefix("redis://") else {
        let why = if url.starts_with("rediss://") {
            "TLS to Redis (rediss://) is not supported; use redis:// on a trusted network or a TLS tunnel"
        } else {
            "the cluster URL must look like redis://HOST:PORT[/DB]"
        };
        return Err(err(format!("{why}, got {}", shown())));
    };
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (hostport, db) = match hostpart.split_once('/') {
        None | Some((_, "")) => (hostpart.split_once('/').map_or(hostpart, |(h, _)| h), 0),
        Some((h, d)) => match d.parse::<i64>() {
            Ok(n) if (0..=1_000_000).contains(&n) => (h, n),
            _ => {
                return Err(err(format!(
                    "the database in the cluster URL must be a number, got {:?} in {}",
                    d.chars().take(40).collect::<String>(),
                    shown()
                )))
            }
        },
    };
    if hostport.is_empty() || hostport.contains(['?', '#', ' ']) {
        return Err(err(format!(
            "the cluster URL must look like redis://HOST:PORT[/DB], got {}",
            shown()
        )));
    }
    let bad = || {
        err(format!(
            "the cluster URL must look like redis://HOST:PORT[/DB], got {}",
            shown()
        ))
    };
    let (host, port) = match hostport.strip_prefix('[') {
        // [IPv6]:PORT
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (format!("[{h}]"), after.strip_prefix(':'))
        }
        None => match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        },
    };
    if host.is_empty() || host == "[]" {
        return Err(bad());
    }
    let port = match port {
        None => 6379,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(err(format!(
                    "bad port {:?} in the cluster URL {}",
                    p.chars().take(20).collect::<String>(),
                    shown()
                )))
            }
        },
    };
    let hostport = format!("{host}:{port}");
    // The redis crate must accept it too (it owns the final parsing).
    redis::Client::open(url).map_err(|e| err(format!("invalid cluster URL {}: {e}", shown())))?;
    Ok((format!("{hostport}/{db}"), db))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str) -> ClusterSection {
        ClusterSection {
            url: Some(url.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn urls() {
        let c = ClusterConfig::from_section(section("redis://127.0.0.1:6390/3"))
            .unwrap()
            .unwrap();
        assert_eq!((c.db, c.endpoint.as_str()), (3, "127.0.0.1:6390/3"));
        assert!(c.node_id.starts_with("node-"));
        let c = ClusterConfig::from_section(section("redis://:s3cret@localhost"))
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "localhost:6379/0");
        assert_eq!(c.redacted_url(), "redis://[REDACTED]@localhost");
        assert!(ClusterConfig::from_section(ClusterSection::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_settings_name_the_problem() {
        for (s, needle) in [
            (section("http://x:1"), "redis://HOST:PORT"),
            (section("rediss://x:1"), "not supported"),
            (section("redis://x:1/abc"), "database"),
            (section("redis://x:0"), "port"),
            (section("redis://x:99999"), "port"),
            (section("redis://"), "redis://HOST:PORT"),
            (
                ClusterSection {
                    node_id: Some("a b".into()),
                    ..section("redis://x:1")
                },
                "node_id",
            ),
            (
                ClusterSection {
                    node_id: Some("x".repeat(65)),
                    ..section("redis://x:1")
                },
                "node_id",
            ),
            (
                ClusterSection {
                    heartbeat_interval: Some(5.0),
                    registration_ttl: Some(6.0),
                    ..section("redis://x:1")
                },
                "twice",
            ),
            (
                ClusterSection {
                    heartbeat_interval: Some(-1.0),
                    ..section("redis://x:1")
                },
                "heartbeat_interval",
            ),
        ] {
            let e = ClusterConfig::from_section(s.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{s:?}: {e}");
        }
        for url in [
            "redis://:hunter2@x:0",
            "redis://u:hunter2@x:1/abc",
            "rediss://:hunter2@x",
        ] {
            let e = ClusterConfig::from_section(section(url))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("[REDACTED]@x"), "one marker project-wide: {e}");
        }
        // Durations: core's range rule, NaN and infinity included.
        for bad in [f64::NAN, f64::INFINITY, 0.01, 61.0] {
            let e = ClusterConfig::from_section(ClusterSection {
                redis_timeout: Some(bad),
                ..section("redis://x:1")
            })
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("redis_timeout") && e.contains("between 0.05 and 60"),
                "{e}"
            );
        }
    }
}
