//! [`StreamLimits`]: validated stream-limit configuration, its builder, its TOML form and
//! [`LimitsError`].

use serde::{Deserialize, Serialize};

/// Default for [`StreamLimits::max_messages`]: 10,000 messages.
pub const DEFAULT_MAX_MESSAGES: u64 = 10_000;
/// Default for [`StreamLimits::max_lines`]: 50,000 lines.
pub const DEFAULT_MAX_LINES: u64 = 50_000;
/// Default for [`StreamLimits::max_bytes`]: 50 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;
/// Default for [`StreamLimits::max_message_size`]: 10 KiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 10 * 1024;
/// Default for [`StreamLimits::queue_size`]: 1,000 items.
pub const DEFAULT_QUEUE_SIZE: usize = 1_000;

/// Limits for one streaming operation, so that a peer cannot exhaust memory.
///
/// The seed's `exception_queue_size` has no counterpart: an error travels as the last item of
/// the stream it ended, so no separate error queue exists to size (bistream-logs).
///
/// All values are validated (see [`LimitsError`]): every limit is at least 1 and
/// `max_message_size <= max_bytes`. Counting limits are inclusive: with `max_lines = 2`,
/// two lines are accepted and the third is refused.
///
/// From TOML (unknown keys are rejected, missing keys take the defaults, and the result is
/// validated — an invalid value is an error naming the field):
///
/// ```
/// use bistream_core::StreamLimits;
///
/// let limits: StreamLimits = toml::from_str("max_lines = 100\nqueue_size = 64").unwrap();
/// assert_eq!(limits.max_lines(), 100);
/// assert_eq!(limits.max_messages(), 10_000); // default
///
/// let err = toml::from_str::<StreamLimits>("max_bytes = 0").unwrap_err();
/// assert!(err.to_string().contains("max_bytes"));
/// assert!(toml::from_str::<StreamLimits>("max_byte = 1").is_err()); // typo: unknown key
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawStreamLimits")]
pub struct StreamLimits {
    max_messages: u64,
    max_lines: u64,
    max_bytes: u64,
    max_message_size: u64,
    queue_size: usize,
}

impl Default for StreamLimits {
    /// The documented defaults: 10,000 messages, 50,000 lines, 50 MiB, 10 KiB per message,
    /// queue of 1,000.
    fn default() -> Self {
        Self {
            max_messages: DEFAULT_MAX_MESSAGES,
            max_lines: DEFAULT_MAX_LINES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }
}

impl StreamLimits {
    /// Starts a builder from the defaults.
    ///
    /// ```
    /// use bistream_core::StreamLimits;
    ///
    /// let limits = StreamLimits::builder()
    ///     .max_lines(100_000)
    ///     .max_bytes(100 * 1024 * 1024)
    ///     .build()?;
    /// assert_eq!(limits.max_lines(), 100_000);
    /// assert!(StreamLimits::builder().queue_size(0).build().is_err());
    /// # Ok::<(), bistream_core::LimitsError>(())
    /// ```
    pub fn builder() -> StreamLimitsBuilder {
        StreamLimitsBuilder {
            raw: RawStreamLimits::default(),
        }
    }

    /// Maximum number of messages per stream.
    ///
    /// ```
    /// assert_eq!(bistream_core::StreamLimits::default().max_messages(), 10_000);
    /// ```
    pub fn max_messages(&self) -> u64 {
        self.max_messages
    }

    /// Maximum number of lines per stream.
    ///
    /// ```
    /// assert_eq!(bistream_core::StreamLimits::default().max_lines(), 50_000);
    /// ```
    pub fn max_lines(&self) -> u64 {
        self.max_lines
    }

    /// Maximum total bytes accepted per stream.
    ///
    /// ```
    /// assert_eq!(bistream_core::StreamLimits::default().max_bytes(), 50 * 1024 * 1024);
    /// ```
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Maximum size of one message or line, in bytes.
    ///
    /// ```
    /// assert_eq!(bistream_core::StreamLimits::default().max_message_size(), 10 * 1024);
    /// ```
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// Capacity of the bounded item queue between producer and consumer.
    ///
    /// ```
    /// assert_eq!(bistream_core::StreamLimits::default().queue_size(), 1_000);
    /// ```
    pub fn queue_size(&self) -> usize {
        self.queue_size
    }
}

/// Builder for [`StreamLimits`]; [`build`](StreamLimitsBuilder::build) validates.
///
/// ```
/// use bistream_core::{Limit, LimitsError, StreamLimits};
///
/// let err = StreamLimits::builder().max_bytes(1024).max_message_size(2048).build().unwrap_err();
/// assert_eq!(err, LimitsError::MessageSizeAboveMaxBytes { max_message_size: 2048, max_bytes: 1024 });
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct StreamLimitsBuilder {
    raw: RawStreamLimits,
}

impl StreamLimitsBuilder {
    /// Sets [`StreamLimits::max_messages`].
    ///
    /// ```
    /// let l = bistream_core::StreamLimits::builder().max_messages(5).build().unwrap();
    /// assert_eq!(l.max_messages(), 5);
    /// ```
    pub fn max_messages(mut self, value: u64) -> Self {
        self.raw.max_messages = value;
        self
    }

    /// Sets [`StreamLimits::max_lines`].
    ///
    /// ```
    /// let l = bistream_core::StreamLimits::builder().max_lines(5).build().unwrap();
    /// assert_eq!(l.max_lines(), 5);
    /// ```
    pub fn max_lines(mut self, value: u64) -> Self {
        self.raw.max_lines = value;
        self
    }

    /// Sets [`StreamLimits::max_bytes`].
    ///
    /// ```
    /// let l = bistream_core::StreamLimits::builder().max_bytes(1 << 20).build().unwrap();
    /// assert_eq!(l.max_bytes(), 1 << 20);
    /// ```
    pub fn max_bytes(mut self, value: u64) -> Self {
        self.raw.max_bytes = value;
        self
    }

    /// Sets [`StreamLimits::max_message_size`].
    ///
    /// ```
    /// let l = bistream_core::StreamLimits::builder().max_message_size(512).build().unwrap();
    /// assert_eq!(l.max_message_size(), 512);
    /// ```
    pub fn max_message_size(mut self, value: u64) -> Self {
        self.raw.max_message_size = value;
        self
    }

    /// Sets [`StreamLimits::queue_size`].
    ///
    /// ```
    /// let l = bistream_core::StreamLimits::builder().queue_size(8).build().unwrap();
    /// assert_eq!(l.queue_size(), 8);
    /// ```
    pub fn queue_size(mut self, value: usize) -> Self {
        self.raw.queue_size = value;
        self
    }

    /// Validates and returns the limits.
    ///
    /// # Errors
    /// [`LimitsError::Zero`] naming the first zero field (in declaration order), or
    /// [`LimitsError::MessageSizeAboveMaxBytes`].
    ///
    /// ```
    /// use bistream_core::{LimitsError, StreamLimits};
    /// let err = StreamLimits::builder().max_lines(0).build().unwrap_err();
    /// assert_eq!(err, LimitsError::Zero { field: "max_lines" });
    /// ```
    pub fn build(self) -> Result<StreamLimits, LimitsError> {
        StreamLimits::try_from(self.raw)
    }
}

/// The unvalidated, serde-facing shape of [`StreamLimits`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStreamLimits {
    max_messages: u64,
    max_lines: u64,
    max_bytes: u64,
    max_message_size: u64,
    queue_size: usize,
}

impl Default for RawStreamLimits {
    fn default() -> Self {
        let d = StreamLimits::default();
        Self {
            max_messages: d.max_messages,
            max_lines: d.max_lines,
            max_bytes: d.max_bytes,
            max_message_size: d.max_message_size,
            queue_size: d.queue_size,
        }
    }
}

impl TryFrom<RawStreamLimits> for StreamLimits {
    type Error = LimitsError;

    fn try_from(raw: RawStreamLimits) -> Result<Self, LimitsError> {
        let zero_checks: [(&'static str, bool); 5] = [
            ("max_messages", raw.max_messages == 0),
            ("max_lines", raw.max_lines == 0),
            ("max_bytes", raw.max_bytes == 0),
            ("max_message_size", raw.max_message_size == 0),
            ("queue_size", raw.queue_size == 0),
        ];
        if let Some((field, _)) = zero_checks.iter().find(|(_, zero)| *zero) {
            return Err(LimitsError::Zero { field });
        }
        if raw.max_message_size > raw.max_bytes {
            return Err(LimitsError::MessageSizeAboveMaxBytes {
                max_message_size: raw.max_message_size,
                max_bytes: raw.max_bytes,
            });
        }
        Ok(Self {
            max_messages: raw.max_messages,
            max_lines: raw.max_lines,
            max_bytes: raw.max_bytes,
            max_message_size: raw.max_message_size,
            queue_size: raw.queue_size,
        })
    }
}

/// Why a [`StreamLimits`] configuration is invalid. Converts to a 400
/// [`ClientError`](crate::ClientError).
///
/// ```
/// use bistream_core::{LimitsError, Status, ClientError};
/// let e = LimitsError::Zero { field: "queue_size" };
/// assert_eq!(e.to_string(), "invalid stream limits: queue_size must be at least 1");
/// assert_eq!(ClientError::from(e).status(), Status::InvalidInput);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A limit was zero (negative values cannot be represented; in TOML they fail to parse).
    #[error("invalid stream limits: {field} must be at least 1")]
    Zero {
        /// The offending field, e.g. `"max_bytes"`.
        field: &'static str,
    },
    /// One message could never fit in the whole-stream byte budget.
    #[error(
        "invalid stream limits: max_message_size ({max_message_size}) must not exceed max_bytes ({max_bytes})"
    )]
    MessageSizeAboveMaxBytes {
        /// The configured `max_message_size`.
        max_message_size: u64,
        /// The configured `max_bytes`.
        max_bytes: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::test_support::limits;

    #[test]
    fn defaults_match_the_seed() {
        let d = StreamLimits::default();
        assert_eq!(d.max_messages(), 10_000);
        assert_eq!(d.max_lines(), 50_000);
        assert_eq!(d.max_bytes(), 52_428_800);
        assert_eq!(d.max_message_size(), 10_240);
        assert_eq!(d.queue_size(), 1_000);
        assert_eq!(StreamLimits::builder().build().unwrap(), d);
    }

    #[test]
    fn every_zero_field_is_named() {
        let cases: [(&str, StreamLimitsBuilder); 5] = [
            ("max_messages", StreamLimits::builder().max_messages(0)),
            ("max_lines", StreamLimits::builder().max_lines(0)),
            ("max_bytes", StreamLimits::builder().max_bytes(0)),
            (
                "max_message_size",
                StreamLimits::builder().max_message_size(0),
            ),
            ("queue_size", StreamLimits::builder().queue_size(0)),
        ];
        for (field, b) in cases {
            assert_eq!(b.build().unwrap_err(), LimitsError::Zero { field });
        }
    }

    #[test]
    fn message_size_equal_to_max_bytes_is_fine() {
        let l = limits(|b| b.max_bytes(100).max_message_size(100));
        assert_eq!(l.max_message_size(), l.max_bytes());
    }

    #[test]
    fn toml_defaults_unknown_keys_and_validation() {
        let l: StreamLimits = toml::from_str("").unwrap();
        assert_eq!(l, StreamLimits::default());
        let l: StreamLimits = toml::from_str("max_messages = 1\nqueue_size = 3\n").unwrap();
        assert_eq!((l.max_messages(), l.queue_size()), (1, 3));

        let e = toml::from_str::<StreamLimits>("max_lines = 0").unwrap_err();
        assert!(
            e.to_string().contains("max_lines must be at least 1"),
            "{e}"
        );
        let e = toml::from_str::<StreamLimits>("max_bytes = 10").unwrap_err();
        assert!(e.to_string().contains("max_message_size"), "{e}");
        let e = toml::from_str::<StreamLimits>("max_lines = -1").unwrap_err();
        assert!(e.to_string().contains("max_lines"), "{e}");
        let e = toml::from_str::<StreamLimits>("queue = 3").unwrap_err();
        assert!(e.to_string().contains("queue"), "{e}");
        let e = toml::from_str::<StreamLimits>("max_lines = \"10\"").unwrap_err();
        assert!(e.to_string().contains("max_lines"), "{e}");
    }

    #[test]
    fn serialize_roundtrips_through_toml() {
        let l = limits(|b| b.max_lines(7).queue_size(3));
        let text = toml::to_string(&l).unwrap();
        assert_eq!(toml::from_str::<StreamLimits>(&text).unwrap(), l);
    }
}
