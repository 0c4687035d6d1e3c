//! Stream limits ([`StreamLimits`]) and their enforcement ([`LimitTracker`]).
//!
//! [`StreamLimits`] is plain, always-valid configuration: it can only be built through
//! [`StreamLimits::builder`] or deserialized (e.g. from TOML), and both paths run the same
//! validation. [`LimitTracker`] applies one `StreamLimits` to one stream: it counts messages,
//! lines and bytes, and answers every item with either [`Admitted`] or a typed
//! [`LimitExceeded`] naming the limit, its value and the count that would have been reached.
//!
//! The configuration lives in `config.rs`, the enforcement in `tracker.rs`.

mod config;
mod tracker;

pub use config::{
    LimitsError, StreamLimits, StreamLimitsBuilder, DEFAULT_MAX_BYTES, DEFAULT_MAX_LINES,
    DEFAULT_MAX_MESSAGES, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_QUEUE_SIZE,
};
pub use tracker::{Admitted, Limit, LimitExceeded, LimitTracker, LineRoom, Oversize, Usage};

#[cfg(test)]
mod test_support {
    use super::{StreamLimits, StreamLimitsBuilder};

    /// Valid limits built from the defaults by `f` (the tests of both halves use it).
    pub(crate) fn limits(
        f: impl FnOnce(StreamLimitsBuilder) -> StreamLimitsBuilder,
    ) -> StreamLimits {
        f(StreamLimits::builder()).build().unwrap()
    }
}
