//! Input validation: resource ids ([`validate_resource_id`]) and timeouts
//! ([`validate_timeout`], [`validate_timeout_max`]).
//!
//! Errors ([`ValidationError`]) name the resource and the rule broken. They never echo the
//! input verbatim: at most [`PREVIEW_CHARS`] characters are shown, with everything outside
//! printable ASCII escaped, so newlines, ANSI escapes or a megabyte of junk cannot reach a log.

use std::fmt::Write as _;
use std::time::Duration;

/// Longest accepted resource id, in characters (ids are ASCII, so also in bytes).
pub const MAX_RESOURCE_ID_LEN: usize = 100;
/// Default maximum timeout of [`validate_timeout`], in seconds.
pub const DEFAULT_MAX_TIMEOUT_SECS: f64 = 300.0;
/// How many characters of a rejected input an error shows.
pub const PREVIEW_CHARS: usize = 32;

/// Why an id or timeout was rejected. Converts to a 400 [`ClientError`](crate::ClientError).
///
/// ```
/// use bistream_core::{validate_resource_id, ValidationError};
/// let err = validate_resource_id("job/../etc", "job").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid job id \"job/../etc\": character '/' at position 3 is not allowed \
///      (only A-Z, a-z, 0-9, '-' and '_')"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The id was empty.
    #[error("invalid {resource} id: must not be empty")]
    EmptyId {
        /// The resource name given by the caller (escaped, truncated).
        resource: String,
    },
    /// The id was longer than [`MAX_RESOURCE_ID_LEN`] characters.
    #[error("invalid {resource} id {preview}: {len} characters, at most {max} allowed")]
    IdTooLong {
        /// The resource name.
        resource: String,
        /// Escaped, truncated preview of the id.
        preview: String,
        /// Length in characters.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The id contained a character outside `[A-Za-z0-9_-]`.
    #[error(
        "invalid {resource} id {preview}: character {ch} at position {position} is not allowed \
         (only A-Z, a-z, 0-9, '-' and '_')"
    )]
    IdInvalidChar {
        /// The resource name.
        resource: String,
        /// Escaped, truncated preview of the id.
        preview: String,
        /// The first bad character, quoted and escaped (e.g. `'/'`, `'\n'`).
        ch: String,
        /// Its position, in characters from 0.
        position: usize,
    },
    /// The timeout was NaN or infinite.
    #[error("invalid timeout: must be a finite number of seconds")]
    TimeoutNotFinite,
    /// The timeout was zero, negative, or below one nanosecond.
    #[error("invalid timeout {value}: must be greater than 0 seconds")]
    TimeoutNotPositive {
        /// The value given.
        value: f64,
    },
    /// The timeout was above the maximum.
    #[error("invalid timeout {value}: must be at most {max} seconds")]
    TimeoutTooLarge {
        /// The value given.
        value: f64,
        /// The maximum.
        max: f64,
    },
    /// A duration given as text was not a number.
    #[error("invalid duration {preview}: expected a number of {unit}")]
    NotANumber {
        /// Escaped, truncated preview of the text.
        preview: String,
        /// The unit expected (`seconds`, `milliseconds`).
        unit: &'static str,
    },
    /// A duration was outside its range (or NaN, or infinite).
    #[error("invalid duration {value} {unit}: must be from {min} to {max} {unit}")]
    DurationOutOfRange {
        /// The value given.
        value: f64,
        /// The smallest value accepted.
        min: f64,
        /// The largest value accepted.
        max: f64,
        /// The unit (`seconds`, `milliseconds`).
        unit: &'static str,
    },
    /// The maximum given to [`validate_timeout_max`] was itself not a usable timeout.
    #[error("invalid maximum timeout {max}: must be a finite number of seconds greater than 0")]
    InvalidMaxTimeout {
        /// The maximum given.
        max: f64,
    },
}

/// Checks a resource id: non-empty, at most [`MAX_RESOURCE_ID_LEN`] characters, only
/// `A-Z a-z 0-9 - _` (the seed's `^[a-zA-Z0-9\-_]+$`). Returns the id unchanged.
///
/// `resource` names the kind of id in the error ("job", "node", ...); it is escaped and
/// truncated too, and an empty name becomes "resource".
///
/// # Errors
/// [`ValidationError::EmptyId`], [`ValidationError::IdTooLong`] or
/// [`ValidationError::IdInvalidChar`] (checked in that order).
///
/// ```
/// use bistream_core::validate_resource_id;
///
/// assert_eq!(validate_resource_id("job-12345", "job")?, "job-12345");
/// assert_eq!(validate_resource_id("node_abc_123", "node")?, "node_abc_123");
///
/// let err = validate_resource_id("x\n\x1b[31mFAKE", "job").unwrap_err().to_string();
/// assert!(!err.contains('\n') && !err.contains('\x1b'));
/// assert!(err.contains(r"'\n' at position 1"));
/// # Ok::<(), bistream_core::ValidationError>(())
/// ```
pub fn validate_resource_id<'a>(id: &'a str, resource: &str) -> Result<&'a str, ValidationError> {
    let resource = || {
        if resource.is_empty() {
            "resource".to_owned()
        } else {
            escape_preview(resource, PREVIEW_CHARS, false)
        }
    };
    if id.is_empty() {
        return Err(ValidationError::EmptyId {
            resource: resource(),
        });
    }
    let len = id.chars().count();
    if len > MAX_RESOURCE_ID_LEN {
        return Err(ValidationError::IdTooLong {
            resource: resource(),
            preview: escape_preview(id, PREVIEW_CHARS, true),
            len,
            max: MAX_RESOURCE_ID_LEN,
        });
    }
    if let Some((position, ch)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        let mut shown = String::from("'");
        escape_char_into(&mut shown, ch);
        shown.push('\'');
        return Err(ValidationError::IdInvalidChar {
            resource: resource(),
            preview: escape_preview(id, PREVIEW_CHARS, true),
            ch: shown,
            position,
        });
    }
    Ok(id)
}

/// Checks a timeout in seconds against the default maximum of 300 s and returns it as a
/// [`Duration`]. See [`validate_timeout_max`].
///
/// # Errors
/// As [`validate_timeout_max`].
///
/// ```
/// use std::time::Duration;
/// use bistream_core::validate_timeout;
///
/// assert_eq!(validate_timeout(30.0)?, Duration::from_secs(30));
/// assert_eq!(validate_timeout(10.5)?, Duration::from_millis(10_500));
/// assert!(validate_timeout(-1.0).is_err());
/// assert!(validate_timeout(500.0).is_err());
/// # Ok::<(), bistream_core::ValidationError>(())
/// ```
pub fn validate_timeout(seconds: f64) -> Result<Duration, ValidationError> {
    validate_timeout_max(seconds, DEFAULT_MAX_TIMEOUT_SECS)
}

/// Checks a timeout in seconds: finite, greater than 0 (at least 1 ns once converted), at most
/// `max_seconds` (inclusive). Returns it as a [`Duration`].
///
/// # Errors
/// [`ValidationError::InvalidMaxTimeout`] if `max_seconds` is not finite and positive, then
/// [`ValidationError::TimeoutNotFinite`], [`ValidationError::TimeoutNotPositive`] or
/// [`ValidationError::TimeoutTooLarge`].
///
/// ```
/// use std::time::Duration;
/// use bistream_core::{validate_timeout_max, ValidationError};
///
/// assert_eq!(validate_timeout_max(600.0, 3600.0)?, Duration::from_secs(600));
/// assert_eq!(
///     validate_timeout_max(f64::NAN, 10.0).unwrap_err(),
///     ValidationError::TimeoutNotFinite
/// );
/// assert_eq!(
///     validate_timeout_max(11.0, 10.0).unwrap_err().to_string(),
///     "invalid timeout 11: must be at most 10 seconds"
/// );
/// # Ok::<(), ValidationError>(())
/// ```
pub fn validate_timeout_max(seconds: f64, max_seconds: f64) -> Result<Duration, ValidationError> {
    if !max_seconds.is_finite()
        || max_seconds <= 0.0
        || Duration::try_from_secs_f64(max_seconds).is_err()
    {
        return Err(ValidationError::InvalidMaxTimeout { max: max_seconds });
    }
    if !seconds.is_finite() {
        return Err(ValidationError::TimeoutNotFinite);
    }
    if seconds <= 0.0 {
        return Err(ValidationError::TimeoutNotPositive { value: seconds });
    }
    if seconds > max_seconds {
        return Err(ValidationError::TimeoutTooLarge {
            value: seconds,
            max: max_seconds,
        });
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        // Positive but below 1 ns: unusable as a timeout.
        _ => Err(ValidationError::TimeoutNotPositive { value: seconds }),
    }
}

/// Escapes `input` for an error message: at most `max_chars` characters, printable ASCII kept,
/// everything else escaped (`\n`, `\u{1b}`, ...), `…` appended if cut. With `quote`, the result
/// is wrapped in double quotes (and `"`/`\` are escaped).
pub(crate) fn escape_preview(input: &str, max_chars: usize, quote: bool) -> String {
    let mut out = String::new();
    if quote {
        out.push('"');
    }
    let mut chars = input.chars();
    for c in chars.by_ref().take(max_chars) {
        if quote && (c == '"' || c == '\\') {
            out.push('\\');
            out.push(c);
        } else {
            escape_char_into(&mut out, c);
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    if quote {
        out.push('"');
    }
    out
}

fn escape_char_into(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        ' '..='~' => out.push(c),
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_rule() {
        for id in [
            "a",
            "job-12345",
            "node_abc_123",
            "A-Z_a-z_0-9",
            "-",
            "_",
            "x".repeat(100).as_str(),
        ] {
            assert_eq!(validate_resource_id(id, "job").unwrap(), id);
        }
    }

    #[test]
    fn rejects_with_the_rule_named() {
        let cases: &[(&str, &str)] = &[
            ("", "invalid job id: must not be empty"),
            ("job/../x", "character '/' at position 3"),
            ("a b", "character ' ' at position 1"),
            ("a.b", "character '.' at position 1"),
            ("jöb", "character '\\u{f6}' at position 1"),
            ("abc\0", "character '\\u{0}' at position 3"),
            ("x;rm -rf /", "character ';' at position 1"),
            ("%2e%2e", "character '%' at position 0"),
            ("id\u{202e}", "character '\\u{202e}' at position 2"),
        ];
        for (id, want) in cases {
            let e = validate_resource_id(id, "job").unwrap_err().to_string();
            assert!(e.contains(want), "{id:?}: {e}");
        }
        let long = "a".repeat(101);
        let e = validate_resource_id(&long, "job").unwrap_err();
        assert!(matches!(
            e,
            ValidationError::IdTooLong {
                len: 101,
                max: 100,
                ..
            }
        ));
    }

    #[test]
    fn hostile_input_is_truncated_and_escaped() {
        let hostile = format!("\x1b[2J\r\nERROR fake\u{2028}{}", "A".repeat(1_000_000));
        let e = validate_resource_id(&hostile, "job\nname")
            .unwrap_err()
            .to_string();
        assert!(e.len() < 300, "{}", e.len());
        assert!(
            e.chars().all(|c| (' '..='~').contains(&c) || c == '…'),
            "{e}"
        );
        assert!(e.contains("invalid job\\nname id"), "{e}");
        let e = validate_resource_id("a\"b", "").unwrap_err().to_string();
        assert!(e.starts_with("invalid resource id \"a\\\"b\""), "{e}");
    }

    #[test]
    fn timeouts() {
        assert_eq!(validate_timeout(300.0).unwrap(), Duration::from_secs(300));
        assert_eq!(validate_timeout(1e-9).unwrap(), Duration::from_nanos(1));
        for bad in [0.0, -0.0, -1.0, 1e-12, f64::MIN_POSITIVE] {
            assert!(
                matches!(
                    validate_timeout(bad),
                    Err(ValidationError::TimeoutNotPositive { .. })
                ),
                "{bad}"
            );
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                validate_timeout(bad).unwrap_err(),
                ValidationError::TimeoutNotFinite
            );
        }
        assert!(matches!(
            validate_timeout(300.000_001),
            Err(ValidationError::TimeoutTooLarge { .. })
        ));
        for bad_max in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e300] {
            assert!(matches!(
                validate_timeout_max(1.0, bad_max),
                Err(ValidationError::InvalidMaxTimeout { .. })
            ));
        }
        assert_eq!(
            validate_timeout(-1.0).unwrap_err().to_string(),
            "invalid timeout -1: must be greater than 0 seconds"
        );
    }
}
