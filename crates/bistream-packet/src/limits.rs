//! The packet server's default connection cap, derived from the process's file-descriptor
//! limit (each connection holds one descriptor). Reading and raising the limit is
//! `bistream_core::fdlimit`'s job, shared with the relay.

/// Descriptors kept free for everything that is not a served connection: the listener,
/// logging, files, outgoing connections of handlers.
pub const FD_RESERVE: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (once is enough; repeating is harmless)
/// and returns the soft limit in effect, or `None` where it cannot be read.
pub fn raise_nofile_limit() -> Option<u64> {
    let lim = bistream_core::fdlimit::raise_nofile_limit();
    if let Some(e) = &lim.raise_error {
        tracing::debug!(error = %e, "cannot raise the file-descriptor limit");
    }
    lim.soft
}

/// The connection cap for a soft descriptor limit: the limit minus [`FD_RESERVE`] (at least
/// 16), or 1024 when the limit is unknown; at most 2^20.
///
/// ```
/// use bistream_packet::limits::connection_cap;
/// assert_eq!(connection_cap(Some(20_000)), 19_936);
/// assert_eq!(connection_cap(Some(50)), 16);
/// assert_eq!(connection_cap(None), 1024);
/// ```
pub fn connection_cap(soft_nofile: Option<u64>) -> usize {
    bistream_core::fdlimit::connections_within(soft_nofile, FD_RESERVE)
        .map_or(1024, |room| room.clamp(16, 1 << 20))
}

/// The default connection cap of this process: raises the soft descriptor limit to the hard
/// limit, then [`connection_cap`].
pub fn default_connection_cap() -> usize {
    connection_cap(raise_nofile_limit())
}
