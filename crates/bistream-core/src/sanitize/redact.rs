//! Step 4 of [`sanitize`](super::sanitize): the redaction rules (URL userinfo, authorization
//! headers, secret-named key–values, bearer tokens, JWTs, AWS key ids, opaque random-looking
//! runs), each replacing only the secret with [`REDACTED`].

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::{REDACTED, TRUNCATED_TOKEN};

/// `true` if `value` is only markers (and whitespace): already redacted, keep it as is.
fn is_placeholder(value: &str) -> bool {
    value
        .replace(REDACTED, "")
        .replace(TRUNCATED_TOKEN, "")
        .trim()
        .is_empty()
}

/// Replaces capture group `group` of a match with [`REDACTED`], keeping the rest of the match.
fn redact_group(caps: &Captures<'_>, group: usize) -> String {
    let whole = caps.get(0).map_or("", |m| m.as_str());
    let (Some(all), Some(g)) = (caps.get(0), caps.get(group)) else {
        return whole.to_owned();
    };
    if is_placeholder(g.as_str()) {
        return whole.to_owned();
    }
    let start = g.start() - all.start();
    let end = g.end() - all.start();
    format!("{}{REDACTED}{}", &whole[..start], &whole[end..])
}

macro_rules! regex {
    ($name:ident, $re:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| {
            #[allow(clippy::expect_used)]
            Regex::new($re).expect("static regex is valid")
        });
    };
}

regex!(USERINFO, r"(?i)\b[a-z][a-z0-9+.-]*://([^/?#\s]+)@");
regex!(
    AUTH_HEADER,
    r#"(?i)\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:[A-Za-z][A-Za-z0-9_-]*\s+)?([^\s"',;]+)"#
);
regex!(
    KEY_VALUE,
    r#"(?i)\b[A-Za-z0-9_.-]*?(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?)["']?\s*[:=]\s*("[^"]*"?|'[^']*'?|[^\s"',;&<>{}()]+)"#
);
regex!(
    KEYWORD_WORD,
    r"(?i)\b(?:token|password|passwd|secret|api[_-]?key|apikey)\s+([A-Za-z0-9._~+/=-]{6,})"
);
regex!(BEARER, r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]+=*)");
regex!(
    JWT,
    r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"
);
regex!(AWS_KEY_ID, r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b");
regex!(OPAQUE_RUN, r"[A-Za-z0-9+/_-]+=*");
regex!(
    UUID,
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
);

/// Words that follow "Bearer" in prose or placeholders rather than being a credential.
const BEARER_WORDS: &[&str] = &[
    "token",
    "tokens",
    "auth",
    "authentication",
    "authorization",
    "header",
    "scheme",
    "credentials",
    "is",
    "was",
    "not",
    "required",
    "missing",
    "invalid",
    "expected",
];

type Replacer = fn(&Captures<'_>) -> String;

/// Replaces every credential found in `text` with [`REDACTED`].
pub(super) fn redact(text: &str) -> Cow<'_, str> {
    let mut text = Cow::Borrowed(text);
    let rules: [(&LazyLock<Regex>, Replacer); 8] = [
        (&USERINFO, |c| redact_group(c, 1)),
        (&AUTH_HEADER, |c| redact_group(c, 1)),
        (&KEY_VALUE, redact_key_value),
        (&KEYWORD_WORD, |c| {
            let word = c.get(1).map_or("", |m| m.as_str());
            let looks_like_credential = word.chars().any(|ch| ch.is_ascii_alphabetic())
                && word.chars().any(|ch| ch.is_ascii_digit());
            if looks_like_credential {
                redact_group(c, 1)
            } else {
                c.get(0).map_or(String::new(), |m| m.as_str().to_owned())
            }
        }),
        (&BEARER, |c| {
            let word = c.get(1).map_or("", |m| m.as_str());
            if BEARER_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word)) {
                c.get(0).map_or(String::new(), |m| m.as_str().to_owned())
            } else {
                redact_group(c, 1)
            }
        }),
        (&JWT, |_| REDACTED.to_owned()),
        (&AWS_KEY_ID, |_| REDACTED.to_owned()),
        (&OPAQUE_RUN, |c| {
            redact_opaque(c.get(0).map_or("", |m| m.as_str()))
        }),
    ];
    for (re, f) in rules {
        if let Cow::Owned(s) = re.replace_all(&text, f) {
            text = Cow::Owned(s);
        }
    }
    text
}

fn redact_key_value(caps: &Captures<'_>) -> String {
    let whole = caps.get(0).map_or("", |m| m.as_str());
    let (Some(all), Some(v)) = (caps.get(0), caps.get(1)) else {
        return whole.to_owned();
    };
    let value = v.as_str();
    // Keep quotes around a quoted value: `"password": "[REDACTED]"`.
    let (open, inner, close) = match value.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let rest = &value[1..];
            match rest.strip_suffix(q) {
                Some(inner) => (&value[..1], inner, &value[value.len() - 1..]),
                None => (&value[..1], rest, ""),
            }
        }
        _ => ("", value, ""),
    };
    if is_placeholder(inner) {
        return whole.to_owned();
    }
    let prefix = &whole[..v.start() - all.start()];
    format!("{prefix}{open}{REDACTED}{close}")
}

/// Redacts the secret-looking pieces of one run of base64/base64url characters; UUIDs inside
/// the run are kept and split it into pieces judged separately.
fn redact_opaque(run: &str) -> String {
    if run.len() < 32 {
        return run.to_owned();
    }
    let mut out = String::with_capacity(run.len());
    let mut last = 0;
    for m in UUID.find_iter(run) {
        out.push_str(&judge_piece(&run[last..m.start()]));
        out.push_str(m.as_str());
        last = m.end();
    }
    out.push_str(&judge_piece(&run[last..]));
    out
}

fn judge_piece(piece: &str) -> Cow<'_, str> {
    if looks_secret(piece) {
        Cow::Borrowed(REDACTED)
    } else {
        Cow::Borrowed(piece)
    }
}

fn looks_secret(piece: &str) -> bool {
    let body = piece.trim_end_matches('=');
    if body.len() < 32 {
        return false;
    }
    let hex = body
        .strip_prefix("0x")
        .or_else(|| body.strip_prefix("0X"))
        .unwrap_or(body);
    if hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return true;
    }
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Upper,
        Lower,
        Digit,
    }
    let (mut letters, mut digits, mut alnum, mut changes) = (0usize, 0usize, 0usize, 0usize);
    let mut prev: Option<Class> = None;
    for b in body.bytes() {
        let class = match b {
            b'A'..=b'Z' => Class::Upper,
            b'a'..=b'z' => Class::Lower,
            b'0'..=b'9' => Class::Digit,
            _ => continue,
        };
        if class == Class::Digit {
            digits += 1;
        } else {
            letters += 1;
        }
        alnum += 1;
        if prev.is_some_and(|p| p != class) {
            changes += 1;
        }
        prev = Some(class);
    }
    // Random base64/base32/alnum changes class on ~30-65% of characters; words, paths and
    // identifiers rarely do.
    alnum >= 24 && letters > 0 && digits > 0 && changes * 5 >= alnum
}
