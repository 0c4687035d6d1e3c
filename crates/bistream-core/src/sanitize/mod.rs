//! Error-message sanitizing: [`sanitize`] and [`sanitize_error_message`] make untrusted or
//! credential-bearing text safe for logs and for peers.
//!
//! Steps, in order:
//! 1. **Bound the work**: input beyond 64 KiB is cut (at a token boundary, so no half secret
//!    survives the cut).
//! 2. **Redact** (step 4) once on the raw text, where a newline separates words.
//! 3. **Neutralise control characters**: every control character (C0, DEL, C1) and every
//!    invisible formatting character that can spoof a log line (bidi overrides, zero-width
//!    characters, U+2028/U+2029, BOM) is replaced by a visible escape: `\n`, `\r`, `\t`,
//!    `\u{1b}`, ... Backslashes themselves are not escaped (so sanitizing is idempotent).
//! 4. **Redact** again, on the escaped text, with the marker [`REDACTED`] (`[REDACTED]`):
//!    - URL userinfo: `https://user:pass@host` → `https://[REDACTED]@host` (also a bare
//!      `user@`, since tokens are often sent as the user name);
//!    - `Authorization` / `Proxy-Authorization` header values, any scheme: the scheme word is
//!      kept (`Authorization: Bearer [REDACTED]`, `Authorization: Basic [REDACTED]`);
//!    - key–value pairs whose key contains `password`, `passwd`, `pwd`, `passphrase`,
//!      `secret`, `token`, `api_key`/`api-key`/`apikey`, `access_key`, `private_key` or
//!      `credential(s)` (case-insensitive; so also `access_token`, `client_secret`,
//!      `GITHUB_TOKEN`, `db_password`), with `=`, `:` or JSON/Python-dict quoting
//!      (`"password": "x"`); the key must end with the keyword (`token_count=5` is kept);
//!    - a credential-looking word (6+ characters with both letters and digits) right after
//!      the words `token`, `password`, `passwd`, `secret` or `apikey` (`invalid token
//!      abc123` → `invalid token [REDACTED]`); plain words are kept (`token expired`);
//!    - `Bearer <token>` anywhere (placeholder words such as `Bearer token` are kept);
//!    - JWT-shaped strings (`eyJ….….…`);
//!    - AWS access key ids (`AKIA…`/`ASIA…` + 16);
//!    - opaque runs of the base64/base64url alphabet: 32+ hex digits (optional `0x`), or 32+
//!      characters mixing letters and digits with frequent class changes (random-looking).
//!      Hyphenated UUIDs are treated as identifiers and kept (so are job ids, paths, ports,
//!      URLs without credentials, timestamps and ordinary words). A UUID used as a secret is
//!      still redacted when it appears as a key–value, header or bearer value. Git commit
//!      hashes (40 hex) are redacted: they cannot be told from hex tokens.
//! 5. **Bound the output**: at most [`MAX_SANITIZED_LEN`] bytes; a longer result is cut and
//!    ends with [`TRUNCATED`] (`" [truncated]"`).
//!
//! `sanitize(sanitize(x)) == sanitize(x)` for every `x` (property-tested). Redaction is a
//! heuristic: it errs on the side of hiding (e.g. `password: too short` hides `too`), and a
//! secret with no recognisable context or shape (a short, all-letter password on its own)
//! cannot be recognised.
//!
//! The pipeline (bounding, escaping, cutting) is here; the redaction rules of step 4 are in
//! `redact.rs`.

mod redact;

use std::borrow::Cow;
use std::fmt::Write as _;

use redact::redact;

/// The redaction marker.
pub const REDACTED: &str = "[REDACTED]";
/// Appended to output that was cut to [`MAX_SANITIZED_LEN`].
pub const TRUNCATED: &str = " [truncated]";
/// Maximum length in bytes of the output of [`sanitize`].
pub const MAX_SANITIZED_LEN: usize = 4096;
/// Maximum length in bytes of the sanitized context of [`sanitize_error_message`].
pub const MAX_CONTEXT_LEN: usize = 256;
/// Input beyond this many bytes is not even looked at.
const INPUT_CAP: usize = 64 * 1024;
const TRUNCATED_TOKEN: &str = "[truncated]";

/// Sanitizes `message` and prefixes it with the sanitized `context`, as the seed's
/// `sanitize_error_message(message, context)`: `"<context>: <message>"` (just the message if
/// the context is blank). The context is bounded to [`MAX_CONTEXT_LEN`] bytes, the message to
/// [`MAX_SANITIZED_LEN`].
///
/// ```
/// use bistream_core::sanitize_error_message;
///
/// assert_eq!(
///     sanitize_error_message("Connection failed: token=abc123", "job job-12345"),
///     "job job-12345: Connection failed: token=[REDACTED]"
/// );
/// assert_eq!(sanitize_error_message("plain", ""), "plain");
/// ```
pub fn sanitize_error_message(message: &str, context: &str) -> String {
    let message = sanitize(message);
    let context = sanitize_bounded(context, MAX_CONTEXT_LEN);
    if context.trim().is_empty() {
        message
    } else {
        format!("{context}: {message}")
    }
}

/// Sanitizes `text` (see the [module docs](self)): bounded, control characters escaped,
/// credentials replaced by [`REDACTED`]. Idempotent.
///
/// ```
/// use bistream_core::sanitize;
///
/// assert_eq!(
///     sanitize("GET https://bob:s3cret@api/x?api_key=XYZ&page=2 failed\nAuthorization: Basic Ym9iOnMzY3JldA=="),
///     "GET https://[REDACTED]@api/x?api_key=[REDACTED]&page=2 failed\\nAuthorization: Basic [REDACTED]"
/// );
/// assert_eq!(
///     sanitize("job 550e8400-e29b-41d4-a716-446655440000 on 10.0.0.1:8265 not found"),
///     "job 550e8400-e29b-41d4-a716-446655440000 on 10.0.0.1:8265 not found"
/// );
/// ```
pub fn sanitize(text: &str) -> String {
    sanitize_bounded(text, MAX_SANITIZED_LEN)
}

/// [`sanitize`] with a smaller output bound: at most `max` bytes (at least the length of
/// [`TRUNCATED`]), for untrusted values logged many times (client names, field names).
///
/// ```
/// use bistream_core::sanitize::{sanitize_to, TRUNCATED};
/// let name = format!("evil\n2026-01-01 INFO forged line{}", "x".repeat(1 << 20));
/// let logged = sanitize_to(&name, 64);
/// assert!(logged.len() <= 64 && logged.ends_with(TRUNCATED) && !logged.contains('\n'));
/// ```
pub fn sanitize_to(text: &str, max: usize) -> String {
    sanitize_bounded(text, max.clamp(TRUNCATED.len(), MAX_SANITIZED_LEN))
}

fn sanitize_bounded(text: &str, max: usize) -> String {
    let (capped, mut truncated) = cap_input(text);
    // Redact before escaping (a newline is a word boundary there; its escape `\n` would glue
    // an `n` to the next word), and again after (the escapes are what the output contains, so
    // this makes `sanitize` idempotent).
    let first = redact(capped);
    let escaped = escape_controls(&first);
    let mut out = redact(&escaped).into_owned();
    if out.len() > max {
        truncated = true;
    }
    if !truncated {
        return out;
    }
    let budget = max.saturating_sub(TRUNCATED.len());
    // Cutting can expose a new match (e.g. a hex run now ending at the cut); re-redact until
    // the prefix is stable, so that sanitizing the output again changes nothing.
    for _ in 0..8 {
        if out.len() <= budget {
            break;
        }
        let cut = safe_cut(&out, budget);
        out.truncate(cut);
        out = redact(&out).into_owned();
    }
    if out.len() > budget {
        let cut = safe_cut(&out, budget);
        out.truncate(cut);
    }
    out.push_str(TRUNCATED);
    out
}

/// Cuts the raw input to [`INPUT_CAP`], backing off to a character that cannot be part of a
/// token, so no partial secret (too short to be recognised) remains at the end.
fn cap_input(text: &str) -> (&str, bool) {
    if text.len() <= INPUT_CAP {
        return (text, false);
    }
    let mut cut = INPUT_CAP;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &text[..cut];
    let cut = head
        .char_indices()
        .rev()
        .find(|&(_, c)| {
            !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-' | '.'))
        })
        .map_or(0, |(i, _)| i);
    (&text[..cut], true)
}

/// The largest char boundary `<= budget` that does not split a marker.
fn safe_cut(s: &str, budget: usize) -> usize {
    let mut cut = budget.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    for marker in [REDACTED, TRUNCATED_TOKEN] {
        for (start, m) in s.match_indices(marker) {
            if start < cut && cut < start + m.len() {
                cut = start;
            }
        }
    }
    cut
}

fn is_spoofing_format_char(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() || is_spoofing_format_char(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_spoofing_format_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, expected output) — redactions and things that must be kept verbatim.
    const CASES: &[(&str, &str)] = &[
        // --- must be redacted
        (
            "Authorization: Bearer abc.def-ghi",
            "Authorization: Bearer [REDACTED]",
        ),
        (
            "authorization=Basic Ym9iOmh1bnRlcjI=",
            "authorization=Basic [REDACTED]",
        ),
        (
            "Authorization: Token 0123abc",
            "Authorization: Token [REDACTED]",
        ),
        ("Authorization: s3cr3tvalue", "Authorization: [REDACTED]"),
        (
            "{'Authorization': 'Bearer xyz'}",
            "{'Authorization': 'Bearer [REDACTED]'}",
        ),
        (
            "Proxy-Authorization: Digest abc",
            "Proxy-Authorization: Digest [REDACTED]",
        ),
        (
            "sent bearer q1w2e3r4 to server",
            "sent bearer [REDACTED] to server",
        ),
        (
            "GET /x?token=abc123&page=2",
            "GET /x?token=[REDACTED]&page=2",
        ),
        ("password=hunter2 user=bob", "password=[REDACTED] user=bob"),
        ("PASSWORD: hunter2", "PASSWORD: [REDACTED]"),
        ("secret = hunter2", "secret = [REDACTED]"),
        ("api_key=XYZ", "api_key=[REDACTED]"),
        ("apikey:XYZ", "apikey:[REDACTED]"),
        ("x-api-key: XYZ", "x-api-key: [REDACTED]"),
        (
            "access_token=a&refresh_token=b",
            "access_token=[REDACTED]&refresh_token=[REDACTED]",
        ),
        ("client_secret=abc", "client_secret=[REDACTED]"),
        ("passwd=abc pwd=def", "passwd=[REDACTED] pwd=[REDACTED]"),
        ("GITHUB_TOKEN=ghp_x", "GITHUB_TOKEN=[REDACTED]"),
        (
            r#"{"password": "hunter 2", "user": "bob"}"#,
            r#"{"password": "[REDACTED]", "user": "bob"}"#,
        ),
        (r#"{'secret': 'abc'}"#, r#"{'secret': '[REDACTED]'}"#),
        (r#"password="unterminated"#, r#"password="[REDACTED]"#),
        (
            "https://user:pass@host:8443/p",
            "https://[REDACTED]@host:8443/p",
        ),
        (
            "git clone https://ghp_tok@github.com/o/r",
            "git clone https://[REDACTED]@github.com/o/r",
        ),
        (
            "redis://:pa@ss@cache:6379/0",
            "redis://[REDACTED]@cache:6379/0",
        ),
        ("Invalid token abc123", "Invalid token [REDACTED]"),
        ("password hunter2", "password [REDACTED]"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_x ok",
            "jwt [REDACTED] ok",
        ),
        ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used"),
        ("sha 0123456789abcdef0123456789abcdef", "sha [REDACTED]"),
        ("k=0xDEADBEEFdeadbeef0123456789ABCDEF00", "k=[REDACTED]"),
        (
            "blob wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY=",
            "blob [REDACTED]",
        ),
        ("ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ", "[REDACTED]"),
        ("sk-proj-4f9Kx2Lm8Qz7Wv3Ny6Bt1Hc5Jd0Gs", "[REDACTED]"),
        (
            "line1\nline2\r\x1b[31mred\u{7f}",
            "line1\\nline2\\r\\u{1b}[31mred\\u{7f}",
        ),
        (
            "a\u{202e}b\u{2028}c\u{200b}d",
            "a\\u{202e}b\\u{2028}c\\u{200b}d",
        ),
        // --- must NOT be redacted
        (
            "Connection refused (os error 111)",
            "Connection refused (os error 111)",
        ),
        (
            "job job-12345 failed after 3 retries",
            "job job-12345 failed after 3 retries",
        ),
        (
            "node 550e8400-e29b-41d4-a716-446655440000 gone",
            "node 550e8400-e29b-41d4-a716-446655440000 gone",
        ),
        (
            "job_550e8400-e29b-41d4-a716-446655440000_x",
            "job_550e8400-e29b-41d4-a716-446655440000_x",
        ),
        (
            "GET http://ray-cluster:8265/api/jobs/job-1/logs?tail=100 -> 404",
            "GET http://ray-cluster:8265/api/jobs/job-1/logs?tail=100 -> 404",
        ),
        (
            "listening on 127.0.0.1:8080 and [::1]:443",
            "listening on 127.0.0.1:8080 and [::1]:443",
        ),
        (
            "File \"/usr/lib/python3.11/site-packages/requests/adapters.py\", line 519",
            "File \"/usr/lib/python3.11/site-packages/requests/adapters.py\", line 519",
        ),
        (
            "/home/runner/work/bistream/target/debug/deps/bistream_core-3f2a",
            "/home/runner/work/bistream/target/debug/deps/bistream_core-3f2a",
        ),
        ("at 2026-11-21T22:38:40.123Z", "at 2026-11-21T22:38:40.123Z"),
        ("token expired", "token expired"),
        ("missing bearer token", "missing bearer token"),
        (
            "token_count=5 max_tokens: 10",
            "token_count=5 max_tokens: 10",
        ),
        ("email bob@example.com", "email bob@example.com"),
        (
            "WebSocketConnectionClosedException_with_a_long_name",
            "WebSocketConnectionClosedException_with_a_long_name",
        ),
        (
            "--enable-the-really-long-feature-flag-2",
            "--enable-the-really-long-feature-flag-2",
        ),
        ("12345678 bytes in 42 ms", "12345678 bytes in 42 ms"),
        (
            "C:\\Users\\bob\\AppData\\Local\\Temp",
            "C:\\Users\\bob\\AppData\\Local\\Temp",
        ),
        ("héllo wörld ✓ 日本語", "héllo wörld ✓ 日本語"),
        ("", ""),
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for (input, want) in CASES {
            let got = sanitize(input);
            if got != *want {
                failures.push(format!("{input:?}\n   got  {got:?}\n   want {want:?}"));
            }
            assert_eq!(sanitize(&got), got, "not idempotent for {input:?}");
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
        assert!(CASES.len() >= 30);
    }

    #[test]
    fn context_prefix() {
        assert_eq!(
            sanitize_error_message("Connection failed: Invalid token abc123", "job job-12345"),
            "job job-12345: Connection failed: Invalid token [REDACTED]"
        );
        assert_eq!(sanitize_error_message("x", "  "), "x");
        assert_eq!(
            sanitize_error_message("x", "token=abc\nfake"),
            "token=[REDACTED]: x"
        );
        let long_context = "c".repeat(10_000);
        let out = sanitize_error_message("m", &long_context);
        assert!(out.len() <= MAX_CONTEXT_LEN + 3, "{}", out.len());
    }

    #[test]
    fn output_is_bounded_and_marked() {
        let long = "word ".repeat(10_000);
        let out = sanitize(&long);
        assert!(out.len() <= MAX_SANITIZED_LEN);
        assert!(out.ends_with(TRUNCATED));
        assert_eq!(sanitize(&out), out);

        // The input cap must not leave half a secret behind, even when redaction shrinks
        // the text before it.
        let secret = "0123456789abcdef".repeat(4);
        let mut text = format!("{} ", "Ab1".repeat(21_000));
        text.push_str(&secret);
        let out = sanitize(&text);
        assert!(!out.contains("0123456789"), "{out}");
        assert_eq!(sanitize(&out), out);
    }

    #[test]
    fn cut_never_splits_a_marker() {
        let text = "password=x ".repeat(1_000);
        let out = sanitize(&text);
        assert!(out.len() <= MAX_SANITIZED_LEN);
        assert!(
            !out.contains("[REDAC ") && out.ends_with(TRUNCATED),
            "{out}"
        );
        assert_eq!(sanitize(&out), out);
    }
}
