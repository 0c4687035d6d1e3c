//! The connection cap the file-descriptor limit allows (the limit itself is read and raised
//! by `bistream_core::fdlimit`).
//!
//! Each WebSocket connection holds one descriptor. With a cap above `RLIMIT_NOFILE`, `accept`
//! fails with EMFILE before the cap is reached: new clients hang in the backlog, get no 1013,
//! and the ops endpoint cannot accept either. So at start the soft limit is raised to the hard
//! limit, and the effective cap is the configured one, lowered to what the limit leaves after a
//! reserve for everything else (listeners, the ops endpoint, the over-cap 1013 handshakes,
//! outgoing auth requests, log files).

/// Descriptors kept free for everything that is not a client connection.
pub(crate) const RESERVED_FDS: u64 = 128;

/// What [`effective_cap`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdBudget {
    /// The soft `RLIMIT_NOFILE` after raising it (`None`: unlimited or unknown).
    pub(crate) nofile: Option<u64>,
    /// The connection cap to enforce.
    pub(crate) cap: usize,
}

/// Raises the soft descriptor limit to the hard one (core's one helper; repeating it is
/// harmless) and returns the soft limit in effect.
pub(crate) fn raise_nofile() -> Option<u64> {
    let lim = bistream_core::fdlimit::raise_nofile_limit();
    if let Some(e) = &lim.raise_error {
        tracing::warn!(error = %e, soft = ?lim.soft, "could not raise the file-descriptor limit to the hard limit");
    }
    lim.soft
}

/// The cap for `configured` connections under a soft limit of `nofile` descriptors.
pub(crate) fn effective_cap(configured: usize, nofile: Option<u64>) -> FdBudget {
    let cap = bistream_core::fdlimit::connections_within(nofile, RESERVED_FDS)
        .map_or(configured, |room| configured.min(room));
    FdBudget { nofile, cap }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_follows_the_descriptor_limit() {
        assert_eq!(effective_cap(50_000, Some(20_000)).cap, 20_000 - 128);
        assert_eq!(effective_cap(1_000, Some(20_000)).cap, 1_000);
        assert_eq!(effective_cap(50_000, None).cap, 50_000);
        // A limit below the reserve still lets one client in rather than none.
        assert_eq!(effective_cap(50_000, Some(64)).cap, 1);
    }

    #[test]
    fn raising_is_idempotent() {
        let a = raise_nofile();
        assert_eq!(raise_nofile(), a);
    }
}
