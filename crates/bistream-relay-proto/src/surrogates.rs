//! Lone UTF-16 surrogate escapes (`\ud800`) in JSON text.
//!
//! Python's `json` (and so ProxyStore) accepts a string holding a lone surrogate and writes it
//! back as the same `\uXXXX` escape; `serde_json` refuses it, and a Rust `String` cannot hold
//! one. The relay accepts such text in both decoders: the fast path forwards its raw string
//! tokens byte-exact, and the full decoder reads each lone surrogate as U+FFFD (the only
//! spelling a `String` has for it), which is what the typed API shows.

/// Reads four hex digits at the start of `b`.
fn hex4(b: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// The byte offsets of the lone surrogate escapes (`\uD800`–`\uDFFF` not part of a pair) in a
/// JSON text. Only backslashes are visited; an escaped backslash before `u` is not an escape.
fn lone_surrogate_escapes(s: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(off) = s.get(i..).and_then(|t| t.iter().position(|b| *b == b'\\')) {
        let at = i + off;
        if s.get(at + 1) != Some(&b'u') {
            i = at + 2;
            continue;
        }
        i = at + 2;
        let Some(cu) = s.get(at + 2..).and_then(hex4) else {
            continue; // not an escape the parser accepts: it reports it
        };
        i = at + 6;
        match cu {
            0xD800..=0xDBFF => {
                let low = (s.get(i..i + 2) == Some(&b"\\u"[..]))
                    .then(|| s.get(i + 2..).and_then(hex4))
                    .flatten();
                if matches!(low, Some(0xDC00..=0xDFFF)) {
                    i += 6;
                } else {
                    found.push(at);
                }
            }
            0xDC00..=0xDFFF => found.push(at),
            _ => {}
        }
    }
    found
}

/// `text` with every lone surrogate escape replaced by `\ufffd`, or `None` when it has none.
pub(crate) fn replace_lone_surrogates(text: &str) -> Option<String> {
    let at = lone_surrogate_escapes(text.as_bytes());
    if at.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for a in at {
        out.push_str(text.get(from..a)?);
        out.push_str("\\ufffd");
        from = a + 6;
    }
    out.push_str(text.get(from..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_lone_surrogates() {
        for (text, want) in [
            (r#""\ud800""#, Some(r#""\ufffd""#)),
            (r#""x\udc00y""#, Some(r#""x\ufffdy""#)),
            (r#""\ud83dx""#, Some(r#""\ufffdx""#)),
            (r#""\ud83d\u0041""#, Some(r#""\ufffd\u0041""#)),
            (r#""\ud83d\ud83d\ude00""#, Some(r#""\ufffd\ud83d\ude00""#)),
            (r#""\uDFFF\uD800""#, Some(r#""\ufffd\ufffd""#)),
            (r#""\ud83d\ude00""#, None),
            (r#""\\ud800""#, None),
            (r#""\u00e9\\""#, None),
            (r#""\ud8""#, None),
            ("plain", None),
        ] {
            assert_eq!(replace_lone_surrogates(text).as_deref(), want, "{text}");
        }
    }
}
