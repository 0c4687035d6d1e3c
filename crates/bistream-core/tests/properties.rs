//! Property tests: validation, URL conversion and sanitizing never panic and keep their
//! promises on generated input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bistream_core::sanitize::{MAX_CONTEXT_LEN, MAX_SANITIZED_LEN};
use bistream_core::{
    http_to_websocket_url, sanitize, sanitize_error_message, validate_resource_id,
    validate_timeout_max, websocket_to_http_url, REDACTED,
};
use proptest::prelude::*;
use regex::Regex;

fn id_rule() -> Regex {
    Regex::new(r"^[A-Za-z0-9_-]+$").unwrap()
}

fn assert_log_safe(s: &str) {
    assert!(
        !s.chars().any(|c| c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
        "{s:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_id_is_judged_by_the_rule(id in any::<String>(), name in any::<String>()) {
        let rule = id_rule();
        match validate_resource_id(&id, &name) {
            Ok(v) => {
                prop_assert_eq!(v, id.as_str());
                prop_assert!(rule.is_match(v) && v.len() <= 100);
            }
            Err(e) => {
                prop_assert!(!rule.is_match(&id) || id.chars().count() > 100);
                let shown = e.to_string();
                assert_log_safe(&shown);
                prop_assert!(shown.len() < 600, "{}", shown.len());
            }
        }
    }

    #[test]
    fn ids_matching_the_rule_are_accepted(id in "[A-Za-z0-9_-]{1,100}") {
        prop_assert_eq!(validate_resource_id(&id, "job").unwrap(), id.as_str());
    }

    #[test]
    fn timeouts_are_in_range(t in any::<f64>(), max in any::<f64>()) {
        if let Ok(d) = validate_timeout_max(t, max) {
            prop_assert!(t > 0.0 && t <= max && !d.is_zero());
            prop_assert!((d.as_secs_f64() - t).abs() <= 1e-9 * t.max(1.0));
        }
    }

    #[test]
    fn any_url_input_is_safe(input in any::<String>()) {
        for f in [http_to_websocket_url, websocket_to_http_url] {
            match f(&input) {
                Ok(out) => {
                    prop_assert!(out.starts_with("ws://") || out.starts_with("wss://")
                        || out.starts_with("http://") || out.starts_with("https://"));
                    prop_assert!(!out.contains('#'));
                }
                Err(e) => assert_log_safe(&e.to_string()),
            }
        }
    }

    #[test]
    fn http_urls_roundtrip(
        tls in any::<bool>(),
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,2}|127\\.0\\.0\\.1|\\[::1\\]",
        port in proptest::option::of(1u16..),
        path in "(/[A-Za-z0-9._~%-]{0,12}){0,4}",
        query in proptest::option::of("[A-Za-z0-9=&_%-]{0,20}"),
        upper in any::<bool>(),
    ) {
        let scheme = if tls { "https" } else { "http" };
        let scheme = if upper { scheme.to_ascii_uppercase() } else { scheme.to_owned() };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let input = format!("{scheme}://{host}{port}{path}{query}");
        let Ok(normal) = url::Url::parse(&input) else { return Ok(()) };
        let ws = http_to_websocket_url(&input).unwrap();
        let parsed = url::Url::parse(&ws).unwrap();
        prop_assert_eq!(parsed.scheme(), if tls { "wss" } else { "ws" });
        prop_assert_eq!(parsed.host_str(), normal.host_str());
        prop_assert_eq!(parsed.port_or_known_default(), normal.port_or_known_default());
        prop_assert_eq!(parsed.path(), normal.path());
        prop_assert_eq!(parsed.query(), normal.query());
        // back to http gives the (normalised) original, and ws input passes through
        prop_assert_eq!(websocket_to_http_url(&ws).unwrap(), normal.to_string());
        prop_assert_eq!(http_to_websocket_url(&ws).unwrap(), ws.clone());
        prop_assert_eq!(http_to_websocket_url(normal.as_str()).unwrap(), ws);
    }

    #[test]
    fn sanitize_any_text(text in any::<String>(), context in any::<String>()) {
        let once = sanitize(&text);
        prop_assert!(once.len() <= MAX_SANITIZED_LEN);
        assert_log_safe(&once);
        prop_assert_eq!(sanitize(&once), once.clone());
        let full = sanitize_error_message(&text, &context);
        assert_log_safe(&full);
        prop_assert!(full.len() <= MAX_SANITIZED_LEN + MAX_CONTEXT_LEN + 2);
        prop_assert!(full.ends_with(&once));
    }

    #[test]
    fn embedded_shaped_secrets_never_survive(
        before in "[A-Za-z0-9 .,:/_-]{0,60}",
        after in "[A-Za-z0-9 .,:/_-]{0,60}",
        (embedded, secret) in shaped_secret(),
    ) {
        let text = format!("{before} {embedded} {after}");
        let out = sanitize(&text);
        prop_assert!(!out.contains(&secret), "{:?} -> {:?}", text, out);
        prop_assert!(out.contains(REDACTED));
    }

    #[test]
    fn embedded_key_values_never_survive(
        before in "[A-Za-z0-9 .,:/_-]{0,40}",
        key in "(password|passwd|pwd|secret|token|api_key|api-key|apikey|access_token|refresh_token|client_secret|DB_PASSWORD|x-api-key)",
        sep in "(=|: |:| = )",
        quote in "(|\"|')",
        value in "[A-Za-z0-9!@#$%^*_+.~-]{1,24}",
        after in "[A-Za-z0-9 .,:/_-]{0,40}",
    ) {
        let text = format!("{before} {key}{quote}{sep}{quote}{value}{quote} {after}");
        let out = sanitize(&text);
        let want = format!("{key}{quote}{sep}{quote}{REDACTED}{quote}");
        prop_assert!(out.contains(&want), "{:?} -> {:?}", text, out);
    }

    #[test]
    fn uuids_and_job_ids_are_kept(
        uuid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        job in "job-[0-9]{1,12}",
    ) {
        let text = format!("job {job} node {uuid} failed");
        prop_assert_eq!(sanitize(&text), text);
    }
}

proptest! {
    // Long inputs in a debug build are slow (~25 ms each): fewer cases.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn sanitize_is_idempotent_on_tricky_text(
        parts in proptest::collection::vec(fragment(), 0..80),
        pad in any::<bool>(),
    ) {
        // with `pad`, the text is long enough to exercise truncation
        let mut text = "x ".repeat(if pad { 2_000 } else { 0 });
        text.push_str(&parts.concat());
        let once = sanitize(&text);
        prop_assert!(once.len() <= MAX_SANITIZED_LEN);
        prop_assert_eq!(sanitize(&once), once);
    }
}

/// Pieces that exercise every rule and the markers, for idempotence hunting.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("password".to_owned()),
        Just("token".to_owned()),
        Just("Authorization".to_owned()),
        Just("Bearer".to_owned()),
        Just("https://".to_owned()),
        Just("eyJ".to_owned()),
        Just("AKIA".to_owned()),
        Just("0x".to_owned()),
        Just("[REDACTED]".to_owned()),
        Just("[truncated]".to_owned()),
        Just(" [truncated]".to_owned()),
        "[=:@ \"'.,;&/\\n\\t\\\\#?-]{1,3}",
        "[0-9a-f]{4,40}",
        "[A-Za-z0-9+/_-]{4,40}",
        "[a-z]{1,8}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        any::<char>().prop_map(String::from),
    ]
}

/// Secrets recognised by their shape alone: (text to embed, the credential inside it).
fn shaped_secret() -> impl Strategy<Value = (String, String)> {
    let bare = |re: &'static str| re.prop_map(|s: String| (s.clone(), s));
    prop_oneof![
        bare("[0-9a-f]{32,64}"),
        bare("0x[0-9A-F]{40}"),
        // base64 of random bytes (not shrunk: a shrunk "AAAA...A0" is no longer random-looking
        // and is rightly kept); the heuristic needs a digit and a letter
        proptest::collection::vec(any::<u8>(), 24..64)
            .no_shrink()
            .prop_map(|b| base64(&b))
            .prop_filter("needs a digit and a letter", |s| {
                s.bytes().any(|c| c.is_ascii_digit()) && s.bytes().any(|c| c.is_ascii_alphabetic())
            })
            .prop_map(|s| (s.clone(), s)),
        bare("eyJ[A-Za-z0-9_-]{10,40}\\.eyJ[A-Za-z0-9_-]{10,60}\\.[A-Za-z0-9_-]{20,43}"),
        bare("(AKIA|ASIA)[A-Z0-9]{16}"),
        "[A-Za-z0-9._~+/-]{12,40}".prop_map(|t| (format!("Bearer {t}"), t)),
        ("[a-z]{3,8}", "[A-Za-z0-9]{12,16}")
            .prop_map(|(u, p)| (format!("https://{u}:{p}@host.example.com/x"), p)),
    ]
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

#[test]
fn base64_helper_is_standard() {
    assert_eq!(base64(b"bob:hunter2"), "Ym9iOmh1bnRlcjI=");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}
