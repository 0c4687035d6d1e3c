//! Authentication of clients at registration, behind the [`Authenticator`] trait.
//!
//! As in ProxyStore, the WebSocket upgrade always succeeds and the opening request's
//! `Authorization` header is checked when a `relay_registration` arrives, so failures reach the
//! client as close codes (4001 missing/malformed, 4002 refused) that the Python `RelayClient`
//! treats as fatal, instead of HTTP statuses it would not understand.
//!
//! Methods: [`NoAuth`] (everyone is the same user), [`StaticTokens`] (a token file, reloadable),
//! [`JwtAuth`] (HS256/RS256/ES256) and [`Introspection`] (RFC 7662; ProxyStore's Globus method).
//! Tokens are never logged: errors carry fixed texts, never the token.

mod introspection;
mod jwt;
mod tokens;

use std::future::Future;

use bistream_relay_proto::CloseCode;
use std::pin::Pin;
use std::sync::Arc;

pub use introspection::{
    Introspection, IntrospectionConfig, GLOBUS_INTROSPECT_URL, GLOBUS_RELAY_AUDIENCE,
};
pub use jwt::{JwtAlgorithm, JwtAuth, JwtConfig};
pub use tokens::StaticTokens;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Authenticator>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who a client is. Clients of the same user may message each other; a UUID belongs to the
/// user who registered it first. Equality is by `id` only (ProxyStore's Globus users compare by
/// `sub`).
#[derive(Debug, Clone)]
pub struct User {
    id: Arc<str>,
}

impl User {
    /// A user with this identity.
    pub fn new(id: impl Into<Arc<str>>) -> User {
        User { id: id.into() }
    }

    /// The single user of [`NoAuth`].
    pub fn anonymous() -> User {
        User::new("anonymous")
    }

    /// The identity string (token-file user, JWT `sub`, introspection `sub`).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl PartialEq for User {
    fn eq(&self, other: &User) -> bool {
        Arc::ptr_eq(&self.id, &other.id) || self.id == other.id
    }
}
impl Eq for User {}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// What the authenticator gets from the opening HTTP request. Only the `Authorization` header
/// is kept per connection (a relay holds many idle clients, so the full header map is not).
#[derive(Debug, Clone, Default)]
pub struct RequestCredentials {
    /// The raw `Authorization` header value, if there was one.
    pub authorization: Option<Vec<u8>>,
}

impl RequestCredentials {
    /// Credentials carrying `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> RequestCredentials {
        RequestCredentials {
            authorization: Some(format!("Bearer {token}").into_bytes()),
        }
    }

    /// The bearer token, parsed exactly like ProxyStore's `get_token_from_headers`: the header
    /// must split on single spaces into exactly `Bearer` and a token (case-sensitive).
    pub fn bearer_token(&self) -> Result<&str, AuthError> {
        let raw = self
            .authorization
            .as_deref()
            .ok_or(AuthError::Unauthorized(
                "Request headers are missing authorization header.",
            ))?;
        let malformed =
            AuthError::Unauthorized("Bearer token in authorization header is malformed.");
        let text = std::str::from_utf8(raw).map_err(|_| malformed.clone())?;
        let mut parts = text.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("Bearer"), Some(token), None) if !token.is_empty() => Ok(token),
            _ => Err(malformed),
        }
    }
}

/// Why a registration was refused. The texts go into close reasons, so they never contain
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Missing or malformed credentials → close 4001 `UnauthorizedError: …`.
    #[error("UnauthorizedError: {0}")]
    Unauthorized(&'static str),
    /// Credentials present but refused → close 4002 `ForbiddenError: …`.
    #[error("ForbiddenError: {0}")]
    Forbidden(String),
    /// The authentication backend could not answer (introspection endpoint down) → close
    /// 1011, which the client retries (ProxyStore crashes the handler: also 1011).
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The close code this error maps to.
    pub fn close_code(&self) -> CloseCode {
        match self {
            AuthError::Unauthorized(_) => CloseCode::Unauthorized,
            AuthError::Forbidden(_) => CloseCode::Forbidden,
            AuthError::Unavailable(_) => CloseCode::InternalError,
        }
    }

    /// The close reason sent to the client.
    pub fn close_reason(&self) -> String {
        match self {
            AuthError::Unavailable(_) => "Authentication backend unavailable.".to_string(),
            other => other.to_string(),
        }
    }
}

/// Why an authenticator could not be set up (or reloaded). The texts name the file or setting
/// and never contain a token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSetupError {
    /// The token file is missing, unreadable or malformed.
    #[error("{0}")]
    TokenFile(String),
    /// The JWT secret or public key is unusable.
    #[error("{0}")]
    JwtKey(String),
    /// The introspection endpoint or client settings are unusable.
    #[error("{0}")]
    Introspection(String),
}

/// The text ProxyStore sends (4002) for an inactive, expired or revoked token.
pub const TOKEN_EXPIRED: &str = "Token is expired or has been revoked.";

/// Identifies the user behind a registration.
///
/// ```
/// use bistream_relay_server::auth::{Authenticator, NoAuth, RequestCredentials, User};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let user = NoAuth.authenticate(&RequestCredentials::default()).await.unwrap();
/// assert_eq!(user, User::anonymous());
/// # });
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the credentials of a registering client.
    fn authenticate<'a>(
        &'a self,
        credentials: &'a RequestCredentials,
    ) -> BoxFuture<'a, Result<User, AuthError>>;

    /// Short name for logs and metrics (`none`, `tokens`, `jwt`, `introspection`).
    fn method(&self) -> &'static str;

    /// Whether the server must keep the `Authorization` header of each connection.
    fn needs_credentials(&self) -> bool {
        true
    }

    /// Re-reads any backing file (on SIGHUP). The old state stays on error.
    fn reload(&self) -> Result<(), AuthSetupError> {
        Ok(())
    }
}

/// No authentication: every client is [`User::anonymous`], so all clients may talk to each
/// other (ProxyStore's `NullAuthenticator`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    fn authenticate<'a>(
        &'a self,
        _: &'a RequestCredentials,
    ) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(std::future::ready(Ok(anonymous())))
    }

    fn method(&self) -> &'static str {
        "none"
    }

    fn needs_credentials(&self) -> bool {
        false
    }
}

/// One shared `anonymous` identity, so user comparison is a pointer comparison.
fn anonymous() -> User {
    static ANON: std::sync::OnceLock<User> = std::sync::OnceLock::new();
    ANON.get_or_init(User::anonymous).clone()
}

/// SHA-256 of a token: tokens are looked up and cached by digest, compared in constant time,
/// and never kept in the clear longer than one check.
pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(h: &str) -> RequestCredentials {
        RequestCredentials {
            authorization: Some(h.as_bytes().to_vec()),
        }
    }

    #[test]
    fn bearer_parsing_matches_proxystore() {
        assert_eq!(creds("Bearer abc").bearer_token(), Ok("abc"));
        let missing = RequestCredentials::default().bearer_token().unwrap_err();
        assert_eq!(
            missing.close_reason(),
            "UnauthorizedError: Request headers are missing authorization header."
        );
        assert_eq!(missing.close_code().code(), 4001);
        for bad in [
            "Basic abc",
            "Bearer a b",
            "bearer abc",
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            "\u{e9}",
        ] {
            let e = creds(bad).bearer_token().unwrap_err();
            assert_eq!(
                e.close_reason(),
                "UnauthorizedError: Bearer token in authorization header is malformed.",
                "{bad:?}"
            );
        }
        let e = RequestCredentials {
            authorization: Some(vec![0xff, 0xfe]),
        }
        .bearer_token()
        .unwrap_err();
        assert_eq!(e.close_code().code(), 4001);
    }

    #[test]
    fn users_compare_by_id() {
        assert_eq!(User::new("a"), User::new(String::from("a")));
        assert_ne!(User::new("a"), User::new("b"));
    }
}
