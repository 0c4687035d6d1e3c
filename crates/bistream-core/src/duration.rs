//! Durations given as text or as numbers from outside (CLI flags, environment variables,
//! config files): [`parse_timeout`] for timeouts (more than 0), [`parse_secs`] and
//! [`parse_millis`] for delays and intervals in a range that may include 0, and
//! [`validate_duration`] for a number already parsed (a TOML float).
//!
//! They share [`validate_timeout_max`]'s rules for what a usable duration is (finite, not
//! negative, representable) and its error type, [`ValidationError`], whose messages never
//! echo more than a short escaped preview of the input.

use std::time::Duration;

use crate::validate::{escape_preview, validate_timeout_max, ValidationError, PREVIEW_CHARS};

/// Parses `text` (surrounding white space allowed) as a decimal number, naming `unit` in the
/// error.
fn parse_number(text: &str, unit: &'static str) -> Result<f64, ValidationError> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| ValidationError::NotANumber {
            preview: escape_preview(text, PREVIEW_CHARS, true),
            unit,
        })
}

fn in_range(
    value: f64,
    min: f64,
    max: f64,
    unit: &'static str,
    scale: f64,
) -> Result<Duration, ValidationError> {
    let out = || ValidationError::DurationOutOfRange {
        value,
        min,
        max,
        unit,
    };
    if !(value.is_finite() && min.is_finite() && max.is_finite() && min >= 0.0) {
        return Err(out());
    }
    if !(min..=max).contains(&value) {
        return Err(out());
    }
    Duration::try_from_secs_f64(value / scale).map_err(|_| out())
}

/// Checks a duration in seconds against the inclusive range `min..=max` (`min` may be 0, for a
/// delay or an interval that can be switched off) and returns it as a [`Duration`].
///
/// # Errors
/// [`ValidationError::DurationOutOfRange`] for a value outside the range, NaN or infinite (or
/// a range that is itself not finite and non-negative).
///
/// ```
/// use std::time::Duration;
/// use bistream_core::validate_duration;
///
/// assert_eq!(validate_duration(2.0, 0.05, 60.0)?, Duration::from_secs(2));
/// assert_eq!(
///     validate_duration(-1.0, 0.05, 60.0).unwrap_err().to_string(),
///     "invalid duration -1 seconds: must be from 0.05 to 60 seconds"
/// );
/// # Ok::<(), bistream_core::ValidationError>(())
/// ```
pub fn validate_duration(seconds: f64, min: f64, max: f64) -> Result<Duration, ValidationError> {
    in_range(seconds, min, max, "seconds", 1.0)
}

/// Parses a timeout written as a number of seconds (`"30"`, `" 2.5 "`): more than 0, at most
/// `max_seconds`, by [`validate_timeout_max`]'s rule.
///
/// # Errors
/// [`ValidationError::NotANumber`], or [`validate_timeout_max`]'s errors.
///
/// ```
/// use std::time::Duration;
/// use bistream_core::parse_timeout;
///
/// assert_eq!(parse_timeout(" 1.5 ", 60.0)?, Duration::from_millis(1500));
/// assert_eq!(
///     parse_timeout("0", 60.0).unwrap_err().to_string(),
///     "invalid timeout 0: must be greater than 0 seconds"
/// );
/// assert_eq!(
///     parse_timeout("soon", 60.0).unwrap_err().to_string(),
///     "invalid duration \"soon\": expected a number of seconds"
/// );
/// # Ok::<(), bistream_core::ValidationError>(())
/// ```
pub fn parse_timeout(text: &str, max_seconds: f64) -> Result<Duration, ValidationError> {
    validate_timeout_max(parse_number(text, "seconds")?, max_seconds)
}

/// Parses a number of seconds in the inclusive range `min..=max` (0 allowed when `min` is 0).
///
/// # Errors
/// [`ValidationError::NotANumber`] or [`ValidationError::DurationOutOfRange`].
///
/// ```
/// use std::time::Duration;
/// use bistream_core::parse_secs;
///
/// assert_eq!(parse_secs("0", 0.0, 10.0)?, Duration::ZERO);
/// assert!(parse_secs("11", 0.0, 10.0).is_err());
/// # Ok::<(), bistream_core::ValidationError>(())
/// ```
pub fn parse_secs(text: &str, min: f64, max: f64) -> Result<Duration, ValidationError> {
    in_range(parse_number(text, "seconds")?, min, max, "seconds", 1.0)
}

/// Parses a number of milliseconds in the inclusive range `min..=max` (fractions allowed).
///
/// # Errors
/// [`ValidationError::NotANumber`] or [`ValidationError::DurationOutOfRange`].
///
/// ```
/// use std::time::Duration;
/// use bistream_core::parse_millis;
///
/// assert_eq!(parse_millis("2.5", 0.0, 10_000.0)?, Duration::from_micros(2500));
/// assert_eq!(
///     parse_millis("-1", 0.0, 10_000.0).unwrap_err().to_string(),
///     "invalid duration -1 milliseconds: must be from 0 to 10000 milliseconds"
/// );
/// # Ok::<(), bistream_core::ValidationError>(())
/// ```
pub fn parse_millis(text: &str, min: f64, max: f64) -> Result<Duration, ValidationError> {
    in_range(
        parse_number(text, "milliseconds")?,
        min,
        max,
        "milliseconds",
        1000.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_include_both_ends() {
        assert_eq!(validate_duration(0.0, 0.0, 1.0).unwrap(), Duration::ZERO);
        assert_eq!(
            validate_duration(1.0, 0.0, 1.0).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            parse_millis("10000", 0.0, 10_000.0).unwrap(),
            Duration::from_secs(10)
        );
        for bad in [f64::NAN, f64::INFINITY, -0.5, 1.000_001] {
            assert!(
                matches!(
                    validate_duration(bad, 0.0, 1.0),
                    Err(ValidationError::DurationOutOfRange { .. })
                ),
                "{bad}"
            );
        }
        // A range that is not a range of durations refuses everything.
        assert!(validate_duration(1.0, -1.0, 2.0).is_err());
        assert!(validate_duration(1.0, 0.0, f64::INFINITY).is_err());
    }

    #[test]
    fn text_is_trimmed_and_hostile_text_is_escaped() {
        assert_eq!(parse_secs(" 2 ", 0.0, 5.0).unwrap(), Duration::from_secs(2));
        for bad in ["", "x", "1s", "NaN", "inf", "1e400"] {
            assert!(parse_secs(bad, 0.0, 5.0).is_err(), "{bad:?}");
        }
        let hostile = format!("\x1b[2J\nERROR forged{}", "9".repeat(10_000));
        let e = parse_timeout(&hostile, 60.0).unwrap_err().to_string();
        assert!(e.len() < 120, "{e}");
        assert!(!e.contains('\x1b') && !e.contains('\n'), "{e}");
        assert!(parse_timeout("1e9", 86_400.0)
            .unwrap_err()
            .to_string()
            .contains("at most 86400"),);
    }
}
