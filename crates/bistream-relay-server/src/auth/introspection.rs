//! OAuth 2.0 token introspection (RFC 7662), which is what ProxyStore's Globus method does:
//! `POST <endpoint>` with HTTP basic auth (client id/secret) and the form `token=<token>`; the
//! token is good when the reply says `active: true` and, if an audience is configured, lists it
//! in `aud`. The user is `sub`. Positive answers are cached briefly (by token digest, never the
//! token itself) so a reconnect storm does not hammer the endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    token_digest, AuthError, AuthSetupError, Authenticator, BoxFuture, RequestCredentials, User,
    TOKEN_EXPIRED,
};

/// Globus Auth's introspection endpoint (ProxyStore's `[auth] method = "globus"`).
pub const GLOBUS_INTROSPECT_URL: &str = "https://auth.globus.org/v2/oauth2/token/introspect";
/// The ProxyStore relay's Globus resource server, the audience ProxyStore requires.
pub const GLOBUS_RELAY_AUDIENCE: &str = "ebd5bbed-95e2-47cf-9c80-39e2064274bd";

/// Largest introspection reply read.
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Where and how to introspect.
#[derive(Clone)]
pub struct IntrospectionConfig {
    /// The introspection endpoint (http or https URL).
    pub endpoint: String,
    /// Client id for HTTP basic auth.
    pub client_id: String,
    /// Client secret for HTTP basic auth.
    pub client_secret: String,
    /// Audience that `aud` must contain, if any.
    pub audience: Option<String>,
    /// How long an `active` answer is reused (capped by the token's `exp`). Zero disables.
    pub cache_ttl: Duration,
    /// Most cached answers.
    pub cache_entries: usize,
    /// Timeout of one introspection request.
    pub timeout: Duration,
}

impl std::fmt::Debug for IntrospectionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionConfig")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &bistream_core::REDACTED)
            .field("audience", &self.audience)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

/// Authenticates by asking an introspection endpoint.
pub struct Introspection {
    config: IntrospectionConfig,
    http: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], (User, Instant)>>,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Reply {
    #[serde(default)]
    active: bool,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Aud>,
    #[serde(default)]
    exp: Option<u64>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

impl Introspection {
    /// Builds the HTTP client (rustls with the ring provider and the system's root certificates).
    pub fn new(config: IntrospectionConfig) -> Result<Introspection, AuthSetupError> {
        Self::build(config).map_err(AuthSetupError::Introspection)
    }

    fn build(config: IntrospectionConfig) -> Result<Introspection, String> {
        let (scheme, _) = bistream_core::url::parse_web_url(&config.endpoint).map_err(|e| {
            format!(
                "invalid introspection endpoint {}: {e}",
                bistream_core::url::redact_url(&config.endpoint)
            )
        })?;
        if scheme.is_websocket() {
            return Err(format!(
                "the introspection endpoint must be an http(s) URL, not {}",
                bistream_core::url::redact_url(&config.endpoint)
            ));
        }
        if config.client_id.is_empty() || config.client_secret.is_empty() {
            return Err("introspection needs a client id and a client secret".to_string());
        }
        // Core's one TLS client setup (system roots); a plain-http endpoint trusts nothing, so a
        // redirect to https fails instead of trusting anything.
        let tls = if scheme.is_tls() {
            bistream_core::tls::client_config(&bistream_core::tls::TlsOptions::SystemRoots)
        } else {
            bistream_core::tls::trust_nothing()
        }
        .map_err(|e| format!("TLS setup for the introspection endpoint failed: {e}"))?;
        let tls = Arc::unwrap_or_clone(tls);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the introspection HTTP client: {e}"))?;
        Ok(Introspection {
            config,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<User> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(digest) {
            Some((user, until)) if *until > Instant::now() => Some(user.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    fn remember(&self, digest: [u8; 32], user: &User, exp: Option<u64>) {
        let mut ttl = self.config.cache_ttl;
        if let Some(exp) = exp {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ttl = ttl.min(Duration::from_secs(exp.saturating_sub(now)));
        }
        if ttl.is_zero() || self.config.cache_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.config.cache_entries {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= self.config.cache_entries {
                // Still full of live entries: start over rather than grow.
                cache.clear();
            }
        }
        cache.insert(digest, (user.clone(), now + ttl));
    }

    async fn introspect(&self, token: &str) -> Result<User, AuthError> {
        let digest = token_digest(token);
        if let Some(user) = self.cached(&digest) {
            return Ok(user);
        }
        let unavailable = |what: String| {
            tracing::warn!(endpoint = %self.config.endpoint, "token introspection failed: {what}");
            AuthError::Unavailable(what)
        };
        let mut resp = self
            .http
            .post(&self.config.endpoint)
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .form(&[("token", token)])
            .send()
            .await
            // reqwest errors name the URL, never the form body.
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(unavailable(format!("endpoint answered HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(unavailable("reply larger than 256 KiB".to_string()));
            }
            body.extend_from_slice(&chunk);
        }
        let reply: Reply = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("reply is not an introspection JSON object: {e}")))?;
        if !reply.active {
            return Err(AuthError::Forbidden(TOKEN_EXPIRED.to_string()));
        }
        if let Some(want) = &self.config.audience {
            let ok = match &reply.aud {
                Some(Aud::One(a)) => a == want,
                Some(Aud::Many(v)) => v.iter().any(|a| a == want),
                None => false,
            };
            if !ok {
                return Err(AuthError::Forbidden(format!(
                    "Token audience does not include \"{want}\". This could result in a confused deputy attack. Ensure the correct scopes are requested when the token is created."
                )));
            }
        }
        let sub = match reply.sub {
            Some(s) if !s.is_empty() => s,
            _ => return Err(AuthError::Forbidden("Token has no subject.".to_string())),
        };
        let user = User::new(sub);
        self.remember(digest, &user, reply.exp);
        Ok(user)
    }
}

impl Authenticator for Introspection {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a RequestCredentials,
    ) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            let token = credentials.bearer_token()?;
            self.introspect(token).await
        })
    }

    fn method(&self) -> &'static str {
        "introspection"
    }
}
