//! Stream limits ([`StreamLimits`]) and their enforcement ([`LimitTracker`]).
//!
//! [`StreamLimits`] is plain, always-valid configuration: it can only be built through
//! [`StreamLimits::builder`] or deserialized (e.g. from TOML), and both paths run the same
//! validation. [`LimitTracker`] applies one `StreamLimits` to one stream: it counts messages,
//! lines and bytes, and answers every item with either [`Admitted`] or a typed
//! [`LimitExceeded`] naming the limit, its value and the count that would have been reached.

use std::fmt;

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

/// Which limit of [`StreamLimits`] a [`LimitExceeded`] refers to.
///
/// ```
/// use bistream_core::Limit;
/// assert_eq!(Limit::MaxBytes.name(), "max_bytes");
/// assert_eq!(Limit::MaxMessageSize.to_string(), "max_message_size");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`StreamLimits::max_messages`].
    MaxMessages,
    /// [`StreamLimits::max_lines`].
    MaxLines,
    /// [`StreamLimits::max_bytes`].
    MaxBytes,
    /// [`StreamLimits::max_message_size`].
    MaxMessageSize,
}

impl Limit {
    /// The configuration key of this limit (as in TOML).
    ///
    /// ```
    /// assert_eq!(bistream_core::Limit::MaxLines.name(), "max_lines");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxMessages => "max_messages",
            Limit::MaxLines => "max_lines",
            Limit::MaxBytes => "max_bytes",
            Limit::MaxMessageSize => "max_message_size",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stream limit was hit: which one, its configured value, and the value that admitting the
/// item would have reached (a count for messages/lines, a total for bytes, the item's own size
/// for `max_message_size`). Converts to a 429 [`ClientError`](crate::ClientError).
///
/// ```
/// use bistream_core::{Limit, LimitExceeded};
/// let e = LimitExceeded { limit: Limit::MaxLines, limit_value: 2, attempted: 3 };
/// assert_eq!(e.to_string(), "stream limit exceeded: max_lines is 2, attempted 3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("stream limit exceeded: {limit} is {limit_value}, attempted {attempted}")]
pub struct LimitExceeded {
    /// The limit that was hit.
    pub limit: Limit,
    /// Its configured value.
    pub limit_value: u64,
    /// What admitting the item would have reached.
    pub attempted: u64,
}

/// What a [`LimitTracker`] does with one item larger than `max_message_size`.
///
/// ```
/// use bistream_core::{LimitTracker, Oversize, StreamLimits};
/// let t = LimitTracker::new(StreamLimits::default()).with_oversize(Oversize::Skip);
/// assert_eq!(t.oversize(), Oversize::Skip);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Oversize {
    /// Stop the stream: the item yields `LimitExceeded { limit: MaxMessageSize, .. }` (default).
    #[default]
    Reject,
    /// Skip the item and keep going: the item yields [`Admitted::Skipped`] and is counted in
    /// [`Usage::skipped`] / [`Usage::skipped_bytes`] (the seed's HTTP line filtering).
    Skip,
}

/// The answer to an admitted item. `#[must_use]`: a skipped item must not be delivered.
///
/// ```
/// use bistream_core::{Admitted, LimitTracker, Oversize, StreamLimits};
/// let limits = StreamLimits::builder().max_message_size(4).build()?;
/// let mut t = LimitTracker::new(limits).with_oversize(Oversize::Skip);
/// assert_eq!(t.admit_line(3)?, Admitted::Accepted);
/// assert_eq!(t.admit_line(5)?, Admitted::Skipped { size: 5 });
/// assert!(Admitted::Accepted.is_accepted());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Admitted {
    /// Deliver the item.
    Accepted,
    /// Drop the item: it exceeded `max_message_size` under [`Oversize::Skip`]. It was counted.
    Skipped {
        /// The item's size in bytes.
        size: u64,
    },
}

impl Admitted {
    /// `true` for [`Admitted::Accepted`].
    ///
    /// ```
    /// assert!(!bistream_core::Admitted::Skipped { size: 9 }.is_accepted());
    /// ```
    pub fn is_accepted(self) -> bool {
        matches!(self, Admitted::Accepted)
    }
}

/// Counters of a [`LimitTracker`].
///
/// ```
/// use bistream_core::{LimitTracker, StreamLimits};
/// let mut t = LimitTracker::new(StreamLimits::default());
/// let _ = t.admit_message(10)?;
/// let u = t.usage();
/// assert_eq!((u.messages, u.lines, u.bytes, u.skipped), (1, 0, 10, 0));
/// # Ok::<(), bistream_core::LimitExceeded>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Usage {
    /// Messages admitted (accepted or skipped).
    pub messages: u64,
    /// Lines admitted (accepted or skipped).
    pub lines: u64,
    /// Bytes of accepted items (skipped items do not count here).
    pub bytes: u64,
    /// Items skipped as oversized under [`Oversize::Skip`].
    pub skipped: u64,
    /// Total size of skipped items.
    pub skipped_bytes: u64,
}

/// Enforces one [`StreamLimits`] on one stream.
///
/// Rules, in the order they are checked for each item:
/// 1. once any limit was exceeded the tracker is *exhausted*: every later call returns that
///    same error (a stream that was stopped stays stopped);
/// 2. the item count (`max_messages` for messages, `max_lines` for lines) — skipped items
///    count too, so a flood of oversized items still ends the stream;
/// 3. the item size against `max_message_size` — [`Oversize::Reject`] (default) stops the
///    stream, [`Oversize::Skip`] answers [`Admitted::Skipped`] and counts it;
/// 4. the accepted-bytes total against `max_bytes`.
///
/// A refused item changes no counter. Arithmetic never overflows: a byte total past
/// `u64::MAX` is refused and reported as `attempted: u64::MAX`; skipped-byte counters saturate.
///
/// ```
/// use bistream_core::{Limit, LimitExceeded, LimitTracker, StreamLimits};
///
/// let limits = StreamLimits::builder().max_lines(2).build()?;
/// let mut tracker = LimitTracker::new(limits);
/// for line in ["one", "two", "three"] {
///     match tracker.admit_line(line.len()) {
///         Ok(admitted) => assert!(admitted.is_accepted()),
///         Err(e) => {
///             assert_eq!(e, LimitExceeded { limit: Limit::MaxLines, limit_value: 2, attempted: 3 });
///             break;
///         }
///     }
/// }
/// assert_eq!(tracker.usage().lines, 2);
/// # Ok::<(), bistream_core::LimitsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LimitTracker {
    limits: StreamLimits,
    oversize: Oversize,
    usage: Usage,
    exceeded: Option<LimitExceeded>,
}

impl LimitTracker {
    /// A fresh tracker with [`Oversize::Reject`].
    ///
    /// ```
    /// let t = bistream_core::LimitTracker::new(bistream_core::StreamLimits::default());
    /// assert!(t.exceeded().is_none());
    /// ```
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            oversize: Oversize::Reject,
            usage: Usage::default(),
            exceeded: None,
        }
    }

    /// Chooses what to do with oversized items.
    ///
    /// ```
    /// use bistream_core::{LimitTracker, Oversize, StreamLimits};
    /// let t = LimitTracker::new(StreamLimits::default()).with_oversize(Oversize::Skip);
    /// assert_eq!(t.oversize(), Oversize::Skip);
    /// ```
    #[must_use]
    pub fn with_oversize(mut self, oversize: Oversize) -> Self {
        self.oversize = oversize;
        self
    }

    /// The oversize policy.
    ///
    /// ```
    /// use bistream_core::{LimitTracker, Oversize, StreamLimits};
    /// assert_eq!(LimitTracker::new(StreamLimits::default()).oversize(), Oversize::Reject);
    /// ```
    pub fn oversize(&self) -> Oversize {
        self.oversize
    }

    /// The limits being enforced.
    ///
    /// ```
    /// use bistream_core::{LimitTracker, StreamLimits};
    /// assert_eq!(*LimitTracker::new(StreamLimits::default()).limits(), StreamLimits::default());
    /// ```
    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// The counters so far.
    ///
    /// ```
    /// use bistream_core::{LimitTracker, StreamLimits};
    /// assert_eq!(LimitTracker::new(StreamLimits::default()).usage().bytes, 0);
    /// ```
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The error that exhausted this tracker, if any.
    ///
    /// ```
    /// use bistream_core::{LimitTracker, StreamLimits};
    /// let mut t = LimitTracker::new(StreamLimits::builder().max_messages(1).build()?);
    /// let _ = t.admit_message(1)?;
    /// assert!(t.admit_message(1).is_err());
    /// assert!(t.exceeded().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exceeded(&self) -> Option<&LimitExceeded> {
        self.exceeded.as_ref()
    }

    /// Admits one message of `size` bytes (counts toward `max_messages`).
    ///
    /// # Errors
    /// [`LimitExceeded`] as described on [`LimitTracker`].
    ///
    /// ```
    /// use bistream_core::{Limit, LimitTracker, StreamLimits};
    /// let mut t = LimitTracker::new(StreamLimits::builder().max_message_size(8).build()?);
    /// let err = t.admit_message(9).unwrap_err();
    /// assert_eq!((err.limit, err.limit_value, err.attempted), (Limit::MaxMessageSize, 8, 9));
    /// # Ok::<(), bistream_core::LimitsError>(())
    /// ```
    pub fn admit_message(&mut self, size: usize) -> Result<Admitted, LimitExceeded> {
        self.admit(Unit::Message, size)
    }

    /// Admits one line of `size` bytes (counts toward `max_lines`).
    ///
    /// # Errors
    /// [`LimitExceeded`] as described on [`LimitTracker`].
    ///
    /// ```
    /// use bistream_core::{Limit, LimitTracker, StreamLimits};
    /// let mut t = LimitTracker::new(StreamLimits::builder().max_bytes(10).max_message_size(10).build()?);
    /// let _ = t.admit_line(6)?;
    /// let err = t.admit_line(6).unwrap_err();
    /// assert_eq!((err.limit, err.limit_value, err.attempted), (Limit::MaxBytes, 10, 12));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn admit_line(&mut self, size: usize) -> Result<Admitted, LimitExceeded> {
        self.admit(Unit::Line, size)
    }

    /// Counts one transport message (a WebSocket frame whose content is then split into lines
    /// and admitted with [`admit_line`](Self::admit_line)) toward `max_messages` only: its size
    /// is not checked against `max_message_size` (that limit applies to each line) and adds
    /// nothing to the byte total (the lines do).
    ///
    /// # Errors
    /// [`LimitExceeded`] for `max_messages`, or the error that already exhausted the tracker.
    ///
    /// ```
    /// use bistream_core::{Limit, LimitTracker, StreamLimits};
    /// let mut t = LimitTracker::new(StreamLimits::builder().max_messages(1).max_message_size(4).build()?);
    /// t.count_message()?; // a 20 KB frame of short lines is one message
    /// assert!(t.admit_line(3)?.is_accepted());
    /// assert_eq!(t.count_message().unwrap_err().limit, Limit::MaxMessages);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count_message(&mut self) -> Result<(), LimitExceeded> {
        if let Some(e) = self.exceeded {
            return Err(e);
        }
        let next = self.usage.messages.saturating_add(1);
        if next > self.limits.max_messages {
            return Err(self.exhaust(Limit::MaxMessages, self.limits.max_messages, next));
        }
        self.usage.messages = next;
        Ok(())
    }

    fn admit(&mut self, unit: Unit, size: usize) -> Result<Admitted, LimitExceeded> {
        if let Some(e) = self.exceeded {
            return Err(e);
        }
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        let (count, limit, limit_value) = match unit {
            Unit::Message => (
                self.usage.messages,
                Limit::MaxMessages,
                self.limits.max_messages,
            ),
            Unit::Line => (self.usage.lines, Limit::MaxLines, self.limits.max_lines),
        };
        let next_count = count.saturating_add(1);
        if next_count > limit_value {
            return Err(self.exhaust(limit, limit_value, next_count));
        }
        if size > self.limits.max_message_size {
            match self.oversize {
                Oversize::Reject => {
                    return Err(self.exhaust(
                        Limit::MaxMessageSize,
                        self.limits.max_message_size,
                        size,
                    ));
                }
                Oversize::Skip => {
                    self.bump(unit);
                    self.usage.skipped = self.usage.skipped.saturating_add(1);
                    self.usage.skipped_bytes = self.usage.skipped_bytes.saturating_add(size);
                    return Ok(Admitted::Skipped { size });
                }
            }
        }
        // An overflowing total is over any limit; report it as u64::MAX.
        let next_bytes = match self.usage.bytes.checked_add(size) {
            Some(n) if n <= self.limits.max_bytes => n,
            other => {
                let attempted = other.unwrap_or(u64::MAX);
                return Err(self.exhaust(Limit::MaxBytes, self.limits.max_bytes, attempted));
            }
        };
        self.bump(unit);
        self.usage.bytes = next_bytes;
        Ok(Admitted::Accepted)
    }

    fn bump(&mut self, unit: Unit) {
        match unit {
            Unit::Message => self.usage.messages = self.usage.messages.saturating_add(1),
            Unit::Line => self.usage.lines = self.usage.lines.saturating_add(1),
        }
    }

    fn exhaust(&mut self, limit: Limit, limit_value: u64, attempted: u64) -> LimitExceeded {
        let e = LimitExceeded {
            limit,
            limit_value,
            attempted,
        };
        self.exceeded = Some(e);
        e
    }
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Message,
    Line,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(StreamLimitsBuilder) -> StreamLimitsBuilder) -> StreamLimits {
        f(StreamLimits::builder()).build().unwrap()
    }

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

    #[test]
    fn message_count_limit_is_inclusive_and_sticky() {
        let mut t = LimitTracker::new(limits(|b| b.max_messages(2)));
        assert_eq!(t.admit_message(1).unwrap(), Admitted::Accepted);
        assert_eq!(t.admit_message(1).unwrap(), Admitted::Accepted);
        let e = t.admit_message(1).unwrap_err();
        assert_eq!(
            e,
            LimitExceeded {
                limit: Limit::MaxMessages,
                limit_value: 2,
                attempted: 3
            }
        );
        // sticky, even for a different unit
        assert_eq!(t.admit_line(0).unwrap_err(), e);
        assert_eq!(t.usage().messages, 2);
        assert_eq!(t.exceeded(), Some(&e));
    }

    #[test]
    fn lines_and_messages_are_counted_separately() {
        let mut t = LimitTracker::new(limits(|b| b.max_messages(1).max_lines(3)));
        for _ in 0..3 {
            assert!(t.admit_line(1).unwrap().is_accepted());
        }
        assert!(t.admit_message(1).unwrap().is_accepted());
        assert_eq!(t.admit_line(1).unwrap_err().limit, Limit::MaxLines);
    }

    #[test]
    fn bytes_limit_reports_the_total_that_would_be_reached() {
        let mut t = LimitTracker::new(limits(|b| b.max_bytes(100).max_message_size(60)));
        assert!(t.admit_message(60).unwrap().is_accepted());
        assert!(t.admit_message(40).unwrap().is_accepted()); // exactly 100: fine
        let e = t.admit_message(1).unwrap_err();
        assert_eq!(
            (e.limit, e.limit_value, e.attempted),
            (Limit::MaxBytes, 100, 101)
        );
        assert_eq!(t.usage().bytes, 100);
        assert_eq!(t.usage().messages, 2, "refused item changes no counter");
    }

    #[test]
    fn oversize_reject_stops_the_stream() {
        let mut t = LimitTracker::new(limits(|b| b.max_message_size(10)));
        assert!(t.admit_line(10).unwrap().is_accepted());
        let e = t.admit_line(11).unwrap_err();
        assert_eq!(
            (e.limit, e.limit_value, e.attempted),
            (Limit::MaxMessageSize, 10, 11)
        );
        assert!(t.admit_line(1).is_err());
    }

    #[test]
    fn oversize_skip_counts_and_continues() {
        let mut t = LimitTracker::new(limits(|b| b.max_message_size(10).max_lines(3)))
            .with_oversize(Oversize::Skip);
        assert_eq!(t.admit_line(11).unwrap(), Admitted::Skipped { size: 11 });
        assert_eq!(t.admit_line(5).unwrap(), Admitted::Accepted);
        assert_eq!(
            t.admit_line(usize::MAX).unwrap(),
            Admitted::Skipped { size: u64::MAX }
        );
        let u = t.usage();
        assert_eq!((u.lines, u.bytes, u.skipped), (3, 5, 2));
        assert_eq!(u.skipped_bytes, u64::MAX, "saturates");
        // skipped items count toward max_lines: a flood of oversized lines still ends
        assert_eq!(t.admit_line(20).unwrap_err().limit, Limit::MaxLines);
    }

    #[test]
    fn huge_sizes_saturate_instead_of_overflowing() {
        let mut t = LimitTracker::new(limits(|b| b.max_bytes(u64::MAX).max_message_size(u64::MAX)));
        assert!(t.admit_message(usize::MAX).unwrap().is_accepted());
        let e = t.admit_message(usize::MAX).unwrap_err();
        assert_eq!(e.limit, Limit::MaxBytes);
        assert_eq!(e.attempted, u64::MAX);
    }
}
