//! JSON Web Tokens: HS256 with a shared secret, or RS256/ES256 with a PEM public key. The user
//! is the `sub` claim; `exp` is required and checked; `aud` and `iss` are checked when
//! configured (and then required).

use std::time::Duration;

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};

use super::{
    AuthError, AuthSetupError, Authenticator, BoxFuture, RequestCredentials, User, TOKEN_EXPIRED,
};

/// The signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, verified with an RSA public key.
    Rs256,
    /// ECDSA P-256 with SHA-256, verified with an EC public key.
    Es256,
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "RS256" => Ok(JwtAlgorithm::Rs256),
            "ES256" => Ok(JwtAlgorithm::Es256),
            _ => Err(format!(
                "unsupported JWT algorithm {s:?} (expected HS256, RS256 or ES256)"
            )),
        }
    }
}

/// How to verify tokens.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The algorithm every token must use (the token header's `alg` must match).
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret. RS256/ES256: the PEM public key.
    pub key: Vec<u8>,
    /// Required audience (`aud` must contain it), if any.
    pub audience: Option<String>,
    /// Required issuer (`iss` must equal it), if any.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`.
    pub leeway: Duration,
}

/// Verifies JWTs locally (no network).
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// Builds the verifier; fails on an unusable key.
    pub fn new(config: JwtConfig) -> Result<JwtAuth, AuthSetupError> {
        Self::build(config).map_err(AuthSetupError::JwtKey)
    }

    fn build(config: JwtConfig) -> Result<JwtAuth, String> {
        // jsonwebtoken picks its crypto backend from crate features; if another crate in the
        // build enabled a second backend it could not choose, so pick ours explicitly.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let (alg, key) = match config.algorithm {
            JwtAlgorithm::Hs256 => {
                if config.key.len() < 32 {
                    return Err("the HS256 secret must be at least 32 bytes".to_string());
                }
                (Algorithm::HS256, DecodingKey::from_secret(&config.key))
            }
            JwtAlgorithm::Rs256 => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(&config.key)
                    .map_err(|e| format!("not an RSA public key in PEM form: {e}"))?,
            ),
            JwtAlgorithm::Es256 => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(&config.key)
                    .map_err(|e| format!("not an EC public key in PEM form: {e}"))?,
            ),
        };
        let mut v = Validation::new(alg);
        v.leeway = config.leeway.as_secs();
        let mut required = vec!["exp", "sub"];
        match &config.audience {
            Some(a) => {
                v.set_audience(&[a]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(i) = &config.issuer {
            v.set_issuer(&[i]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        Ok(JwtAuth { key, validation: v })
    }

    fn verify(&self, token: &str) -> Result<User, AuthError> {
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
        }
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() => Ok(User::new(data.claims.sub)),
            Ok(_) => Err(AuthError::Forbidden(
                "Token has an empty subject.".to_string(),
            )),
            Err(e) => Err(AuthError::Forbidden(
                match e.kind() {
                    ErrorKind::ExpiredSignature => TOKEN_EXPIRED,
                    ErrorKind::InvalidAudience => "Token audience is not accepted by this relay.",
                    ErrorKind::InvalidIssuer => "Token issuer is not accepted by this relay.",
                    ErrorKind::ImmatureSignature => "Token is not valid yet.",
                    ErrorKind::MissingRequiredClaim(_) => "Token is missing a required claim.",
                    ErrorKind::InvalidSignature => "Token signature is invalid.",
                    ErrorKind::InvalidAlgorithm => "Token algorithm is not accepted by this relay.",
                    _ => "Token is not a valid JWT.",
                }
                .to_string(),
            )),
        }
    }
}

impl Authenticator for JwtAuth {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a RequestCredentials,
    ) -> BoxFuture<'a, Result<User, AuthError>> {
        let r = credentials.bearer_token().and_then(|t| self.verify(t));
        Box::pin(std::future::ready(r))
    }

    fn method(&self) -> &'static str {
        "jwt"
    }
}
