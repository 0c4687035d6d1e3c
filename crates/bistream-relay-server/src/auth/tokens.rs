//! Static bearer tokens from a file (token → user), compared in constant time and reloadable.
//!
//! File format (TOML), one entry per token:
//!
//! ```toml
//! [tokens]
//! "9f86d081884c7d659a2feaa0c55ad015" = "alice"
//! "60303ae22b998861bce3b28f33eec1be" = "bob"
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

use super::{
    token_digest, AuthError, AuthSetupError, Authenticator, BoxFuture, RequestCredentials, User,
    TOKEN_EXPIRED,
};

/// Most tokens a file may hold (the lookup compares against every entry).
const MAX_TOKENS: usize = 100_000;

#[derive(Debug)]
struct Table {
    /// SHA-256 of each token, with its user.
    entries: Vec<([u8; 32], User)>,
}

/// Bearer tokens from a TOML file. Each check compares the SHA-256 of the presented token with
/// the digest of every entry, without early exit, so timing says nothing about which prefix
/// matched. [`Authenticator::reload`] re-reads the file; a bad file keeps the old table.
#[derive(Debug)]
pub struct StaticTokens {
    path: PathBuf,
    table: RwLock<Arc<Table>>,
}

impl StaticTokens {
    /// Loads the token file.
    pub fn load(path: impl AsRef<Path>) -> Result<StaticTokens, AuthSetupError> {
        let path = path.as_ref().to_path_buf();
        let table = read_table(&path).map_err(AuthSetupError::TokenFile)?;
        Ok(StaticTokens {
            path,
            table: RwLock::new(Arc::new(table)),
        })
    }

    /// Number of tokens currently loaded.
    pub fn len(&self) -> usize {
        self.current().entries.len()
    }

    /// Whether no token is loaded (never true after a successful load).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn current(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn lookup(&self, token: &str) -> Option<User> {
        let digest = token_digest(token);
        let table = self.current();
        let mut found: Option<&User> = None;
        for (d, user) in &table.entries {
            // Every entry is compared; only the selection of the result depends on the match.
            if bool::from(d.ct_eq(&digest)) {
                found = Some(user);
            }
        }
        found.cloned()
    }
}

fn read_table(path: &Path) -> Result<Table, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        tokens: toml::Table,
    }
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    if meta.len() > 64 * 1024 * 1024 {
        return Err(format!("token file {shown} is larger than 64 MiB"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    // toml's error messages quote the offending line, which could hold a token: keep only the
    // position.
    let file: File = toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| line_of(&text, s.start)).map_or(String::new(), |l| format!(" (line {l})"));
        format!("token file {shown} is not valid: expected a [tokens] table of \"token\" = \"user\" entries{at}")
    })?;
    if file.tokens.len() > MAX_TOKENS {
        return Err(format!(
            "token file {shown} has more than {MAX_TOKENS} tokens"
        ));
    }
    let mut entries = Vec::with_capacity(file.tokens.len());
    for (i, (token, user)) in file.tokens.iter().enumerate() {
        let n = i + 1;
        if token.is_empty() || token.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "token file {shown}: entry {n} has an empty token or one with whitespace"
            ));
        }
        let Some(user) = user.as_str() else {
            return Err(format!(
                "token file {shown}: the user of entry {n} is not a string"
            ));
        };
        if user.is_empty() {
            return Err(format!("token file {shown}: entry {n} has an empty user"));
        }
        entries.push((token_digest(token), User::new(user)));
    }
    if entries.is_empty() {
        return Err(format!("token file {shown} holds no tokens"));
    }
    Ok(Table { entries })
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(byte)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl Authenticator for StaticTokens {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a RequestCredentials,
    ) -> BoxFuture<'a, Result<User, AuthError>> {
        let result = credentials.bearer_token().and_then(|token| {
            self.lookup(token)
                .ok_or_else(|| AuthError::Forbidden(TOKEN_EXPIRED.to_string()))
        });
        Box::pin(std::future::ready(result))
    }

    fn method(&self) -> &'static str {
        "tokens"
    }

    fn reload(&self) -> Result<(), AuthSetupError> {
        let table = read_table(&self.path).map_err(AuthSetupError::TokenFile)?;
        let n = table.entries.len();
        match self.table.write() {
            Ok(mut t) => *t = Arc::new(table),
            Err(p) => *p.into_inner() = Arc::new(table),
        }
        tracing::info!(tokens = n, path = %self.path.display(), "token file reloaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("tokens.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[tokio::test]
    async fn looks_up_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "[tokens]\n\"t-alice\" = \"alice\"\n\"t-bob\" = \"bob\"\n",
        );
        let auth = StaticTokens::load(&p).unwrap();
        assert_eq!(auth.len(), 2);
        let u = auth
            .authenticate(&RequestCredentials::bearer("t-alice"))
            .await
            .unwrap();
        assert_eq!(u.id(), "alice");
        let e = auth
            .authenticate(&RequestCredentials::bearer("t-carol"))
            .await
            .unwrap_err();
        assert_eq!(e.close_code().code(), 4002);
        assert_eq!(
            e.close_reason(),
            "ForbiddenError: Token is expired or has been revoked."
        );
        let e = auth
            .authenticate(&RequestCredentials::default())
            .await
            .unwrap_err();
        assert_eq!(e.close_code().code(), 4001);

        std::fs::write(&p, "[tokens]\n\"t-carol\" = \"carol\"\n").unwrap();
        auth.reload().unwrap();
        assert!(auth
            .authenticate(&RequestCredentials::bearer("t-alice"))
            .await
            .is_err());
        assert_eq!(
            auth.authenticate(&RequestCredentials::bearer("t-carol"))
                .await
                .unwrap()
                .id(),
            "carol"
        );

        // A broken file keeps the old table.
        std::fs::write(&p, "[tokens\n").unwrap();
        assert!(auth.reload().is_err());
        assert_eq!(
            auth.authenticate(&RequestCredentials::bearer("t-carol"))
                .await
                .unwrap()
                .id(),
            "carol"
        );
    }

    #[test]
    fn rejects_bad_files_without_echoing_tokens() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            ("", "not valid"),
            ("[tokens]\n", "no tokens"),
            ("[tokens]\n\"sekrit\" = 3\n", "not a string"),
            ("[tokens]\n\"sekrit\" = \"\"\n", "empty user"),
            ("[tokens]\n\"sek rit\" = \"a\"\n", "whitespace"),
            ("other = 1\n[tokens]\n\"sekrit\" = \"a\"\n", "not valid"),
            (
                "[tokens]\n\"sekrit\" = \"a\"\n\"sekrit\" = \"b\"\n",
                "not valid",
            ),
        ] {
            let p = write(&dir, text);
            let e = StaticTokens::load(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains("sekrit"), "{e}");
        }
        assert!(StaticTokens::load(dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }
}
