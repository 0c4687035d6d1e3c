//! The process's file-descriptor limit and what a server does when it runs out: the one home
//! of both for every bistream server (relay, packet) and the bench.
//!
//! Each served connection holds one descriptor. A connection cap above `RLIMIT_NOFILE` makes
//! `accept` fail with EMFILE before the cap is reached, so servers raise the soft limit to the
//! hard one at start ([`raise_nofile_limit`]) and derive their cap from what is left after a
//! reserve ([`connections_within`]). When `accept` fails anyway (EMFILE, ENFILE, ENOBUFS),
//! [`AcceptBackoff`] paces the retries instead of spinning.
//!
//! ```
//! use std::time::Duration;
//! use bistream_core::fdlimit::{connections_within, AcceptBackoff};
//!
//! assert_eq!(connections_within(Some(20_000), 128), Some(19_872));
//! assert_eq!(connections_within(None, 128), None);
//!
//! let mut b = AcceptBackoff::default();
//! assert_eq!(b.failed(), (Duration::from_millis(10), true)); // first failure: log it
//! assert_eq!(b.failed(), (Duration::from_millis(20), false));
//! b.succeeded();
//! assert_eq!(b.failed().0, Duration::from_millis(10));
//! ```

use std::time::Duration;

/// The soft descriptor limit after [`raise_nofile_limit`] tried to raise it.
#[derive(Debug)]
pub struct NofileLimit {
    /// The soft `RLIMIT_NOFILE` now in effect (`None`: unlimited, or not a Unix system).
    pub soft: Option<u64>,
    /// The hard `RLIMIT_NOFILE` (`None`: unlimited, or not a Unix system).
    pub hard: Option<u64>,
    /// Why the soft limit could not be raised to the hard one, if it could not.
    pub raise_error: Option<std::io::Error>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (once per process is enough; repeating
/// it is harmless) and returns the soft limit in effect.
#[cfg(unix)]
pub fn raise_nofile_limit() -> NofileLimit {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let mut raise_error = None;
    if lim.current != lim.maximum {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            raise_error = Some(e.into());
        }
    }
    NofileLimit {
        raise_error,
        ..nofile_limit()
    }
}

/// Raises the soft `RLIMIT_NOFILE` (no such limit here: always `None`).
#[cfg(not(unix))]
pub fn raise_nofile_limit() -> NofileLimit {
    nofile_limit()
}

/// The `RLIMIT_NOFILE` limits, read without changing them.
pub fn nofile_limit() -> NofileLimit {
    #[cfg(unix)]
    let (soft, hard) = {
        let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        (lim.current, lim.maximum)
    };
    #[cfg(not(unix))]
    let (soft, hard) = (None, None);
    NofileLimit {
        soft,
        hard,
        raise_error: None,
    }
}

/// How many connections a soft limit of `soft_nofile` descriptors leaves room for after
/// `reserve` descriptors for everything else (listeners, logs, outgoing requests): at least 1,
/// so that a tiny limit still lets a client in. `None` when the limit is unknown or unlimited.
pub fn connections_within(soft_nofile: Option<u64>, reserve: u64) -> Option<usize> {
    soft_nofile.map(|n| usize::try_from(n.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX))
}

/// Pacing of an accept loop whose `accept` fails (EMFILE and the like): the pause starts at
/// 10 ms and doubles up to [`AcceptBackoff::MAX`]; a successful accept ends the episode.
#[derive(Debug, Clone, Default)]
pub struct AcceptBackoff {
    pause: Duration,
}

impl AcceptBackoff {
    /// The first pause of an episode of failures.
    pub const MIN: Duration = Duration::from_millis(10);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(1);

    /// Records a failed `accept`: returns how long to pause before the next one, and whether
    /// this failure starts an episode (log it then, not once per failure).
    pub fn failed(&mut self) -> (Duration, bool) {
        let first = self.pause.is_zero();
        self.pause = (self.pause * 2).clamp(Self::MIN, Self::MAX);
        (self.pause, first)
    }

    /// Records a successful `accept`.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_follows_the_descriptor_limit() {
        assert_eq!(connections_within(Some(20_000), 128), Some(19_872));
        // A limit below the reserve still lets one client in rather than none.
        assert_eq!(connections_within(Some(64), 128), Some(1));
        assert_eq!(connections_within(None, 128), None);
    }

    #[test]
    fn raising_is_idempotent() {
        let a = raise_nofile_limit();
        assert!(a.raise_error.is_none() || cfg!(not(unix)));
        assert_eq!(raise_nofile_limit().soft, a.soft);
        assert_eq!(nofile_limit().soft, a.soft);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<_> = (0..9).map(|_| b.failed()).collect();
        assert_eq!(pauses[0], (AcceptBackoff::MIN, true));
        assert!(pauses[1..].iter().all(|(_, first)| !first));
        assert_eq!(pauses[1].0, Duration::from_millis(20));
        assert_eq!(pauses[8].0, AcceptBackoff::MAX);
        b.succeeded();
        assert_eq!(b.failed(), (AcceptBackoff::MIN, true));
    }
}
