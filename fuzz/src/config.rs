//! The relay server's config file: TOML text through `FileConfig::parse`, then validation
//! with `RelayConfig::from_file_config`.

use bistream_relay_server::{FileConfig, RelayConfig};

/// Never panics: any text is either a `ConfigError` with a message or a validated config.
/// Paths named in the text are only checked with `is_file` (read-only). A parse error's text is
/// non-empty, since it is all the user sees.
pub fn relay_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match FileConfig::parse(text) {
        Ok(f) => {
            if let Err(e) = RelayConfig::from_file_config(f) {
                assert!(!e.to_string().is_empty());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
