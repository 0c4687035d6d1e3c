//! The `[auth]` table: the method name and its `[auth.kwargs]`, checked key by key (a key the
//! method does not use is an error, not silently ignored).

use std::path::PathBuf;
use std::time::Duration;

use super::{err, secs, AuthConfig, AuthSection, ConfigError};
use crate::auth::{IntrospectionConfig, JwtAlgorithm, JwtConfig};
use crate::auth::{GLOBUS_INTROSPECT_URL, GLOBUS_RELAY_AUDIENCE};

/// Reads `[auth.kwargs]`, rejecting keys the method does not use.
struct Kwargs {
    method: String,
    table: toml::Table,
}

impl Kwargs {
    fn take_str(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(err(format!("[auth.kwargs] {key} must be a string"))),
        }
    }

    fn take_secs(&mut self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        let v = match self.table.remove(key) {
            None => None,
            Some(toml::Value::Integer(i)) => Some(i as f64),
            Some(toml::Value::Float(f)) => Some(f),
            // A quoted number ("30") is read by core's one duration parser; `secs` then
            // applies the config's range (0 = off).
            Some(toml::Value::String(s)) => Some(
                bistream_core::parse_secs(&s, 0.0, f64::MAX)
                    .map_err(|_| err(format!("[auth.kwargs] {key} must be a number of seconds")))?
                    .as_secs_f64(),
            ),
            Some(_) => {
                return Err(err(format!(
                    "[auth.kwargs] {key} must be a number of seconds"
                )))
            }
        };
        secs(&format!("[auth.kwargs] {key}"), v, default)
    }

    fn take_count(&mut self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.table.remove(key) {
            None => Ok(default),
            Some(toml::Value::Integer(i)) if i >= 0 => Ok(usize::try_from(i).unwrap_or(usize::MAX)),
            Some(toml::Value::String(s)) => s.trim().parse().map_err(|_| {
                err(format!(
                    "[auth.kwargs] {key} must be a non-negative integer"
                ))
            }),
            Some(_) => Err(err(format!(
                "[auth.kwargs] {key} must be a non-negative integer"
            ))),
        }
    }

    fn finish(self) -> Result<(), ConfigError> {
        match self.table.keys().next() {
            None => Ok(()),
            Some(k) => Err(err(format!(
                "[auth.kwargs] {k} does not apply to auth method {:?} (see docs/relay.md for each method's settings)",
                self.method
            ))),
        }
    }
}

fn read_secret_file(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| err(format!("[auth.kwargs] {key}: cannot read {path}: {e}")))?;
    Ok(bytes)
}

pub(super) fn auth_config(section: AuthSection) -> Result<AuthConfig, ConfigError> {
    let method = section
        .method
        .unwrap_or_else(|| "none".to_string())
        .to_ascii_lowercase();
    let mut kw = Kwargs {
        method: method.clone(),
        table: section.kwargs,
    };
    let cfg = match method.as_str() {
        "none" | "null" => AuthConfig::None,
        "tokens" => {
            let file = kw
                .take_str("tokens_file")?
                .ok_or_else(|| err("auth method \"tokens\" needs [auth.kwargs] tokens_file (or --auth-tokens-file)"))?;
            AuthConfig::Tokens {
                file: PathBuf::from(file),
            }
        }
        "jwt" => {
            let algorithm: JwtAlgorithm = match kw.take_str("algorithm")? {
                Some(a) => a.parse().map_err(err)?,
                None => JwtAlgorithm::Hs256,
            };
            let secret = kw.take_str("secret")?;
            let secret_file = kw.take_str("secret_file")?;
            let public_key_file = kw.take_str("public_key_file")?;
            let key = match (algorithm, secret, secret_file, public_key_file) {
                (JwtAlgorithm::Hs256, Some(s), None, None) => s.into_bytes(),
                (JwtAlgorithm::Hs256, None, Some(f), None) => {
                    let mut b = read_secret_file("secret_file", &f)?;
                    while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
                        b.pop();
                    }
                    b
                }
                (JwtAlgorithm::Hs256, _, _, _) => {
                    return Err(err("JWT HS256 needs exactly one of secret (--auth-jwt-secret) or secret_file (--auth-jwt-secret-file)"))
                }
                (_, None, None, Some(f)) => read_secret_file("public_key_file", &f)?,
                (_, _, _, _) => {
                    return Err(err("JWT RS256/ES256 needs public_key_file (--auth-jwt-public-key-file) and no secret"))
                }
            };
            AuthConfig::Jwt(JwtConfig {
                algorithm,
                key,
                audience: kw.take_str("audience")?,
                issuer: kw.take_str("issuer")?,
                leeway: kw.take_secs("leeway_seconds", Duration::from_secs(30))?,
            })
        }
        "introspection" | "globus" => {
            let globus = method == "globus";
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let endpoint = match kw.take_str("endpoint")? {
                Some(e) => e,
                None if globus => GLOBUS_INTROSPECT_URL.to_string(),
                None => return Err(err("auth method \"introspection\" needs [auth.kwargs] endpoint (or --auth-endpoint)")),
            };
            let client_id = kw.take_str("client_id")?.or_else(|| {
                if globus {
                    env("PROXYSTORE_GLOBUS_CLIENT_ID")
                } else {
                    None
                }
            });
            let client_secret = kw.take_str("client_secret")?.or_else(|| {
                if globus {
                    env("PROXYSTORE_GLOBUS_CLIENT_SECRET")
                } else {
                    None
                }
            });
            let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
                return Err(err(if globus {
                    "auth method \"globus\" needs client_id and client_secret in [auth.kwargs] or in PROXYSTORE_GLOBUS_CLIENT_ID / PROXYSTORE_GLOBUS_CLIENT_SECRET"
                } else {
                    "auth method \"introspection\" needs client_id and client_secret ([auth.kwargs] or --auth-client-id / --auth-client-secret)"
                }));
            };
            let audience = match kw.take_str("audience")? {
                Some(a) if a.is_empty() => None,
                Some(a) => Some(a),
                None if globus => Some(GLOBUS_RELAY_AUDIENCE.to_string()),
                None => None,
            };
            AuthConfig::Introspection(IntrospectionConfig {
                endpoint,
                client_id,
                client_secret,
                audience,
                cache_ttl: kw.take_secs("cache_ttl_seconds", Duration::from_secs(30))?,
                cache_entries: kw.take_count("cache_entries", 10_000)?,
                timeout: kw
                    .take_secs("timeout_seconds", Duration::from_secs(10))?
                    .max(Duration::from_millis(1)),
            })
        }
        other => {
            return Err(err(format!(
            "unknown auth method {other:?} (expected none, tokens, jwt, introspection or globus)"
        )))
        }
    };
    kw.finish()?;
    Ok(cfg)
}
