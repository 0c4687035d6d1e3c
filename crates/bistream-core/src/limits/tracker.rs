//! [`LimitTracker`]: applies one [`StreamLimits`] to one stream and answers each item with
//! [`Admitted`] or a typed [`LimitExceeded`].

use std::fmt;

use super::StreamLimits;

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

/// Room left for accepted lines ([`LimitTracker::line_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineRoom {
    /// Lines that can still be admitted (accepted or skipped) before `max_lines` is passed.
    pub lines: u64,
    /// Bytes that accepted lines can still add before `max_bytes` is passed.
    pub bytes: u64,
    /// The largest line that is not oversized (`max_message_size`).
    pub max_size: u64,
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
        if next > self.limits.max_messages() {
            return Err(self.exhaust(Limit::MaxMessages, self.limits.max_messages(), next));
        }
        self.usage.messages = next;
        Ok(())
    }

    /// Room left for accepted lines: how many more lines, and how many more bytes, and the
    /// largest line that is not oversized; `None` once the tracker is exhausted. For callers
    /// that admit a batch of lines with [`admit_lines`](Self::admit_lines): a line of `size`
    /// bytes admitted after `n` others of `total` bytes is [`Admitted::Accepted`] by
    /// [`admit_line`](Self::admit_line) exactly when `n < room.lines`, `size <= room.max_size`
    /// and `total + size <= room.bytes`.
    ///
    /// ```
    /// use bistream_core::{LimitTracker, StreamLimits};
    /// let limits = StreamLimits::builder().max_lines(5).max_bytes(100).max_message_size(40).build()?;
    /// let mut t = LimitTracker::new(limits);
    /// let _ = t.admit_line(30)?;
    /// let room = t.line_room().unwrap();
    /// assert_eq!((room.lines, room.bytes, room.max_size), (4, 70, 40));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn line_room(&self) -> Option<LineRoom> {
        if self.exceeded.is_some() {
            return None;
        }
        Some(LineRoom {
            lines: self.limits.max_lines().saturating_sub(self.usage.lines),
            bytes: self.limits.max_bytes().saturating_sub(self.usage.bytes),
            max_size: self.limits.max_message_size(),
        })
    }

    /// Admits `lines` lines of `bytes` bytes in all, none longer than `longest`, at once —
    /// only when [`admit_line`](Self::admit_line) would have accepted every one of them in
    /// turn (the counts after them within `max_lines` and `max_bytes`, `longest` within
    /// `max_message_size`, the tracker not exhausted). Then the counters are exactly those of
    /// admitting them one by one and it returns `true`; otherwise it changes nothing and
    /// returns `false` (admit them one by one to find the exact line that is refused or
    /// skipped). A batch found with [`line_room`](Self::line_room) always fits; an empty
    /// batch is always admitted (there is nothing in it).
    ///
    /// ```
    /// use bistream_core::{LimitTracker, StreamLimits};
    /// let mut t = LimitTracker::new(StreamLimits::builder().max_lines(3).build()?);
    /// assert!(t.admit_lines(2, 20, 12));
    /// assert!(!t.admit_lines(2, 20, 12), "a 4th line would pass max_lines");
    /// assert_eq!((t.usage().lines, t.usage().bytes), (2, 20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn admit_lines(&mut self, lines: u64, bytes: u64, longest: u64) -> bool {
        if lines == 0 {
            return true;
        }
        let Some(room) = self.line_room() else {
            return false;
        };
        if lines > room.lines || bytes > room.bytes || longest > room.max_size {
            return false;
        }
        self.usage.lines += lines;
        self.usage.bytes += bytes;
        true
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
                self.limits.max_messages(),
            ),
            Unit::Line => (self.usage.lines, Limit::MaxLines, self.limits.max_lines()),
        };
        let next_count = count.saturating_add(1);
        if next_count > limit_value {
            return Err(self.exhaust(limit, limit_value, next_count));
        }
        if size > self.limits.max_message_size() {
            match self.oversize {
                Oversize::Reject => {
                    return Err(self.exhaust(
                        Limit::MaxMessageSize,
                        self.limits.max_message_size(),
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
            Some(n) if n <= self.limits.max_bytes() => n,
            other => {
                let attempted = other.unwrap_or(u64::MAX);
                return Err(self.exhaust(Limit::MaxBytes, self.limits.max_bytes(), attempted));
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
    use crate::limits::test_support::limits;

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

    /// A batch admitted through `line_room` + `admit_lines` leaves the tracker exactly as
    /// admitting its lines one by one does, and is refused (changing nothing) whenever one
    /// of its lines would not have been accepted.
    #[test]
    fn batch_admission_agrees_with_one_by_one() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..2000 {
            let (ml, mb) = (1 + next(12), 1 + next(120));
            let ms = (1 + next(30)).min(mb);
            let make = || {
                LimitTracker::new(limits(|b| {
                    b.max_lines(ml).max_bytes(mb).max_message_size(ms)
                }))
                .with_oversize(Oversize::Skip)
            };
            let (mut one, mut batch) = (make(), make());
            let pre: Vec<usize> = (0..next(4)).map(|_| next(35) as usize).collect();
            for &s in &pre {
                let _ = one.admit_line(s);
                let _ = batch.admit_line(s);
            }
            let sizes: Vec<usize> = (0..next(6)).map(|_| next(35) as usize).collect();
            let all_accepted = {
                let mut probe = one.clone();
                sizes
                    .iter()
                    .all(|&s| matches!(probe.admit_line(s), Ok(Admitted::Accepted)))
            };
            let room = batch.line_room();
            let total: u64 = sizes.iter().map(|&s| s as u64).sum();
            let longest = sizes.iter().map(|&s| s as u64).max().unwrap_or(0);
            let fits = sizes.is_empty()
                || room.is_some_and(|r| {
                    sizes.len() as u64 <= r.lines && total <= r.bytes && longest <= r.max_size
                });
            assert_eq!(fits, all_accepted, "room {room:?} sizes {sizes:?}");
            let before = batch.usage();
            let ok = batch.admit_lines(sizes.len() as u64, total, longest);
            assert_eq!(ok, all_accepted);
            if ok {
                for &s in &sizes {
                    assert!(one.admit_line(s).unwrap().is_accepted());
                }
                assert_eq!(batch.usage(), one.usage());
            } else {
                assert_eq!(batch.usage(), before, "a refused batch changes nothing");
            }
        }
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
