//! HTTP ⇄ WebSocket URL conversion ([`http_to_websocket_url`], [`websocket_to_http_url`]),
//! checking without conversion ([`parse_web_url`], which tells the [`Scheme`]), and the form
//! of a URL fit for a log line ([`redact_url`]).
//!
//! Parsing uses the [`url`] crate (WHATWG URL Standard), and the result is the `url` crate's
//! serialization, which *normalises*:
//! - scheme and host are lowercased (`HTTP://Ray` → `ws://ray/`);
//! - the default port is dropped (`http://h:80/x` → `ws://h/x`, `https://h:443` → `wss://h/`;
//!   80/443 are also the ws/wss defaults, so this never changes the address);
//! - an empty path becomes `/` (`http://h` → `ws://h/`);
//! - dot segments are resolved (`/a/../b` → `/b`, also `%2e%2e`);
//! - characters that must be escaped are percent-encoded; international hosts become punycode.
//!
//! On top of the `url` crate this module is *strict*, to avoid its lenient guesses:
//! - the input must be `<scheme>://...` literally (the `url` crate would accept `http:host`
//!   and `http:/host`);
//! - the input must contain no whitespace or control characters at all (the `url` crate would
//!   silently strip tabs and newlines, so `ho\nst` would become `host`);
//! - a fragment (`#...`) is refused: RFC 6455 §3 forbids fragments in WebSocket URIs, and
//!   dropping it silently could hide a mistake (e.g. a dashboard's `#/jobs` route);
//! - the host must be non-empty.
//!
//! Userinfo (`user:pass@`) is kept in the result (it is part of the address), but never shown
//! in an error: errors describe the input through [`sanitize`](crate::sanitize()).

use url::Url;

use crate::sanitize::sanitize;
use crate::validate::escape_preview;

/// How many characters of a rejected URL an error shows (after sanitizing).
const URL_PREVIEW_CHARS: usize = 80;

/// Why a URL cannot be converted. Converts to a 400 [`ClientError`](crate::ClientError).
///
/// ```
/// use bistream_core::{http_to_websocket_url, UrlError};
/// let err = http_to_websocket_url("ftp://host/file").unwrap_err();
/// assert_eq!(err.to_string(), "unsupported URL scheme \"ftp\": expected http, https, ws or wss");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The input was empty.
    #[error("invalid URL: empty")]
    Empty,
    /// The input contained whitespace or a control character.
    #[error("invalid URL {preview}: contains whitespace or a control character")]
    ForbiddenCharacter {
        /// Sanitized, escaped, truncated input.
        preview: String,
    },
    /// The input did not start with `<scheme>://`.
    #[error("invalid URL {preview}: expected <scheme>://<host>[:port][/path][?query]")]
    MissingScheme {
        /// Sanitized, escaped, truncated input.
        preview: String,
    },
    /// The scheme is not one this function converts.
    #[error("unsupported URL scheme {scheme}: expected {expected}")]
    UnsupportedScheme {
        /// The scheme, escaped and quoted.
        scheme: String,
        /// The accepted schemes.
        expected: &'static str,
    },
    /// The `url` crate refused the input.
    #[error("invalid URL {preview}: {reason}")]
    Parse {
        /// Sanitized, escaped, truncated input.
        preview: String,
        /// The parser's reason.
        reason: String,
    },
    /// The URL has no host.
    #[error("invalid URL {preview}: missing host")]
    MissingHost {
        /// Sanitized, escaped, truncated input.
        preview: String,
    },
    /// The URL has a fragment, which WebSocket URLs cannot carry.
    #[error("invalid URL {preview}: WebSocket URLs cannot have a fragment (#...); remove it")]
    Fragment {
        /// Sanitized, escaped, truncated input.
        preview: String,
    },
}

/// Converts an `http`/`https` URL to `ws`/`wss`, keeping userinfo, host, port, path and query.
/// `ws`/`wss` URLs are accepted and returned (normalised) with their scheme unchanged.
///
/// See the [module docs](self) for the normalisation and strictness rules.
///
/// # Errors
/// [`UrlError`]: empty input, whitespace/control characters, no `scheme://`, a scheme other
/// than http/https/ws/wss, unparsable, empty host, or a fragment.
///
/// ```
/// use bistream_core::http_to_websocket_url;
///
/// assert_eq!(http_to_websocket_url("http://ray-cluster:8265/logs/")?, "ws://ray-cluster:8265/logs/");
/// assert_eq!(http_to_websocket_url("https://ray-cluster:8265/logs/")?, "wss://ray-cluster:8265/logs/");
/// assert_eq!(http_to_websocket_url("https://h/a?b=1&c=2")?, "wss://h/a?b=1&c=2");
/// assert_eq!(http_to_websocket_url("wss://h:9/x")?, "wss://h:9/x");
/// assert_eq!(http_to_websocket_url("http://h:80")?, "ws://h/"); // normalised
/// assert!(http_to_websocket_url("ray-cluster:8265/logs").is_err());
/// # Ok::<(), bistream_core::UrlError>(())
/// ```
pub fn http_to_websocket_url(url: &str) -> Result<String, UrlError> {
    convert(
        url,
        &[
            ("http", "ws"),
            ("https", "wss"),
            ("ws", "ws"),
            ("wss", "wss"),
        ],
    )
}

/// The inverse of [`http_to_websocket_url`]: `ws`/`wss` become `http`/`https`, and
/// `http`/`https` pass through. For any URL `u` accepted by `http_to_websocket_url`,
/// `websocket_to_http_url(&http_to_websocket_url(u)?)` is `u` normalised (exactly `u` if `u`
/// was already in normal form).
///
/// # Errors
/// As [`http_to_websocket_url`].
///
/// ```
/// use bistream_core::{http_to_websocket_url, websocket_to_http_url};
///
/// assert_eq!(websocket_to_http_url("wss://h:8443/ws?x=1")?, "https://h:8443/ws?x=1");
/// let http = "http://ray:8265/jobs/job-1/logs";
/// assert_eq!(websocket_to_http_url(&http_to_websocket_url(http)?)?, http);
/// # Ok::<(), bistream_core::UrlError>(())
/// ```
pub fn websocket_to_http_url(url: &str) -> Result<String, UrlError> {
    convert(
        url,
        &[
            ("ws", "http"),
            ("wss", "https"),
            ("http", "http"),
            ("https", "https"),
        ],
    )
}

/// The four schemes a web URL may have here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
}

impl Scheme {
    /// `true` for `https` and `wss`.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Wss)
    }

    /// `true` for `ws` and `wss`.
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    /// The scheme's name, lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// Checks an `http`, `https`, `ws` or `wss` URL with this module's strict rules and returns
/// its [`Scheme`] and the parsed (normalised) [`Url`], without converting it. A fragment is
/// refused on `ws`/`wss` only (an HTTP client never sends it).
///
/// # Errors
/// As [`http_to_websocket_url`].
///
/// ```
/// use bistream_core::url::{parse_web_url, Scheme};
///
/// let (scheme, url) = parse_web_url("WSS://Ray:8265/api/jobs/x/logs/tail")?;
/// assert_eq!(scheme, Scheme::Wss);
/// assert!(scheme.is_tls() && scheme.is_websocket());
/// assert_eq!(url.host_str(), Some("ray"));
/// assert!(parse_web_url("gopher://x/").is_err());
/// # Ok::<(), bistream_core::UrlError>(())
/// ```
pub fn parse_web_url(input: &str) -> Result<(Scheme, Url), UrlError> {
    let url = check(input, "http, https, ws or wss", |scheme| {
        matches!(scheme, "http" | "https" | "ws" | "wss")
    })?;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        "ws" => Scheme::Ws,
        _ => Scheme::Wss,
    };
    if scheme.is_websocket() && url.fragment().is_some() {
        return Err(UrlError::Fragment {
            preview: preview(input),
        });
    }
    Ok((scheme, url))
}

/// How many bytes of a URL [`redact_url`] keeps.
const REDACTED_URL_MAX: usize = 256;

/// A URL as it may appear in a log line or an error: userinfo (`user:password@`) and
/// credential-named query values replaced by the project's one marker
/// [`REDACTED`](crate::REDACTED), control characters escaped, at most 256 bytes. Works on any
/// text, parsable or not (it is [`sanitize`](crate::sanitize()) with a URL-sized bound).
///
/// ```
/// use bistream_core::url::redact_url;
///
/// assert_eq!(redact_url("redis://:s3cret@cache:6379/2"), "redis://[REDACTED]@cache:6379/2");
/// assert_eq!(redact_url("wss://relay/?token=abc123def"), "wss://relay/?token=[REDACTED]");
/// ```
pub fn redact_url(url: &str) -> String {
    crate::sanitize::sanitize_to(url, REDACTED_URL_MAX)
}

fn preview(url: &str) -> String {
    escape_preview(&sanitize(url), URL_PREVIEW_CHARS, true)
}

fn convert(input: &str, map: &[(&str, &'static str)]) -> Result<String, UrlError> {
    let expected = if map[0].0 == "http" {
        "http, https, ws or wss"
    } else {
        "ws, wss, http or https"
    };
    let mut url = check(input, expected, |scheme| {
        map.iter().any(|(from, _)| *from == scheme)
    })?;
    if url.fragment().is_some() {
        return Err(UrlError::Fragment {
            preview: preview(input),
        });
    }
    let Some(&(_, target)) = map.iter().find(|(from, _)| *from == url.scheme()) else {
        return Err(UrlError::UnsupportedScheme {
            scheme: escape_preview(url.scheme(), 16, true),
            expected,
        });
    };
    // http, https, ws and wss are all "special" schemes, so the url crate allows switching
    // between them (it refuses special <-> non-special); a refusal would be a bug here.
    if url.scheme() != target && url.set_scheme(target).is_err() {
        return Err(UrlError::Parse {
            preview: preview(input),
            reason: format!("cannot switch scheme to {target}"),
        });
    }
    Ok(url.into())
}

/// The strict checks shared by every entry point: literal `scheme://`, no white space or
/// control characters, an accepted scheme (`accepts` gets it lowercased), parsable, a host.
fn check(
    input: &str,
    expected: &'static str,
    accepts: impl Fn(&str) -> bool,
) -> Result<Url, UrlError> {
    if input.is_empty() {
        return Err(UrlError::Empty);
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::ForbiddenCharacter {
            preview: preview(input),
        });
    }
    let Some((scheme, _)) = input.split_once("://") else {
        return Err(UrlError::MissingScheme {
            preview: preview(input),
        });
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(UrlError::MissingScheme {
            preview: preview(input),
        });
    }
    if !accepts(&scheme.to_ascii_lowercase()) {
        return Err(UrlError::UnsupportedScheme {
            scheme: escape_preview(scheme, 16, true),
            expected,
        });
    }
    let url = Url::parse(input).map_err(|e| UrlError::Parse {
        preview: preview(input),
        reason: e.to_string(),
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::MissingHost {
            preview: preview(input),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let cases = [
            (
                "http://ray-cluster:8265/logs/",
                "ws://ray-cluster:8265/logs/",
            ),
            (
                "https://ray-cluster:8265/logs/",
                "wss://ray-cluster:8265/logs/",
            ),
            ("http://h/p?q=1&r=%20x", "ws://h/p?q=1&r=%20x"),
            ("HTTP://Ray-Cluster:8265/Logs", "ws://ray-cluster:8265/Logs"),
            ("http://h", "ws://h/"),
            ("http://h:80/x", "ws://h/x"),
            ("https://h:443/x", "wss://h/x"),
            ("http://h:443/x", "ws://h:443/x"),
            ("http://user:pw@h:1/x", "ws://user:pw@h:1/x"),
            ("http://[::1]:8080/ws", "ws://[::1]:8080/ws"),
            ("http://127.0.0.1:9/", "ws://127.0.0.1:9/"),
            ("http://h/a/../b", "ws://h/b"),
            ("ws://h:1/x?y", "ws://h:1/x?y"),
            ("wss://h/", "wss://h/"),
            ("http://h/?", "ws://h/?"),
        ];
        for (input, want) in cases {
            assert_eq!(http_to_websocket_url(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejections() {
        type Check = fn(&UrlError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, UrlError::Empty)),
            ("ftp://h/x", |e| {
                matches!(e, UrlError::UnsupportedScheme { .. })
            }),
            ("file:///etc/passwd", |e| {
                matches!(e, UrlError::UnsupportedScheme { .. })
            }),
            ("javascript://x", |e| {
                matches!(e, UrlError::UnsupportedScheme { .. })
            }),
            ("ray:8265/logs", |e| {
                matches!(e, UrlError::MissingScheme { .. })
            }),
            ("http:host", |e| matches!(e, UrlError::MissingScheme { .. })),
            ("http:/host", |e| {
                matches!(e, UrlError::MissingScheme { .. })
            }),
            ("//host/x", |e| matches!(e, UrlError::MissingScheme { .. })),
            ("1http://h", |e| matches!(e, UrlError::MissingScheme { .. })),
            ("http://", |e| matches!(e, UrlError::Parse { .. })),
            ("http://:80/", |e| matches!(e, UrlError::Parse { .. })),
            ("http://h:99999/", |e| matches!(e, UrlError::Parse { .. })),
            ("http://h/#frag", |e| matches!(e, UrlError::Fragment { .. })),
            ("http://h/#", |e| matches!(e, UrlError::Fragment { .. })),
            ("http://ho\nst/", |e| {
                matches!(e, UrlError::ForbiddenCharacter { .. })
            }),
            (" http://h/", |e| {
                matches!(e, UrlError::ForbiddenCharacter { .. })
            }),
            ("http://h/\t", |e| {
                matches!(e, UrlError::ForbiddenCharacter { .. })
            }),
            ("garbage", |e| matches!(e, UrlError::MissingScheme { .. })),
        ];
        for (input, ok) in cases {
            let e = http_to_websocket_url(input).unwrap_err();
            assert!(ok(&e), "{input:?} -> {e:?}");
        }
    }

    #[test]
    fn errors_do_not_leak_credentials_or_controls() {
        for input in [
            "ftp://bob:hunter2@h/",
            "http://bob:hunter2@h/#x",
            "http://bob:hunter2@h:99999/",
            "http://bob:hunter2@\x1b[31mh/",
        ] {
            let e = http_to_websocket_url(input).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(!e.contains('\x1b'), "{e}");
        }
    }

    #[test]
    fn web_urls_are_checked_not_converted() {
        for (input, scheme, tls) in [
            ("http://h:1/x", Scheme::Http, false),
            ("HTTPS://h/x", Scheme::Https, true),
            ("ws://h/x?y=1", Scheme::Ws, false),
            ("wss://h/", Scheme::Wss, true),
        ] {
            let (s, url) = parse_web_url(input).unwrap();
            assert_eq!((s, s.is_tls()), (scheme, tls), "{input}");
            assert_eq!(url.scheme(), s.as_str());
        }
        // An HTTP fragment is harmless (never sent); a WebSocket one is refused.
        assert!(parse_web_url("http://h/#top").is_ok());
        assert!(matches!(
            parse_web_url("ws://h/#top").unwrap_err(),
            UrlError::Fragment { .. }
        ));
        for bad in [
            "",
            "gopher://h/",
            "h:80",
            "http://",
            "http://h/
",
        ] {
            assert!(parse_web_url(bad).is_err(), "{bad:?}");
        }
        let e = parse_web_url("ftp://u:hunter2@h/").unwrap_err().to_string();
        assert_eq!(
            e,
            "unsupported URL scheme \"ftp\": expected http, https, ws or wss"
        );
    }

    #[test]
    fn redacted_urls_hide_credentials_with_the_one_marker() {
        for (input, want) in [
            ("redis://:hunter2@h:1/0", "redis://[REDACTED]@h:1/0"),
            ("redis://user:hunter2@h", "redis://[REDACTED]@h"),
            (
                "http://h/x?access_token=hunter2",
                "http://h/x?access_token=[REDACTED]",
            ),
            ("redis://h:6379/0", "redis://h:6379/0"),
        ] {
            assert_eq!(redact_url(input), want);
        }
        let long = format!("redis://:pw@h/\n{}", "x".repeat(10_000));
        let shown = redact_url(&long);
        assert!(
            shown.len() <= REDACTED_URL_MAX && !shown.contains('\n'),
            "{shown}"
        );
    }

    #[test]
    fn reverse() {
        assert_eq!(websocket_to_http_url("ws://h:1/x").unwrap(), "http://h:1/x");
        assert_eq!(websocket_to_http_url("wss://h/x").unwrap(), "https://h/x");
        assert_eq!(websocket_to_http_url("https://h/x").unwrap(), "https://h/x");
        assert!(matches!(
            websocket_to_http_url("ftp://h").unwrap_err(),
            UrlError::UnsupportedScheme {
                expected: "ws, wss, http or https",
                ..
            }
        ));
    }
}
