//! Logging what clients send without letting them write the log, for every bistream server:
//! each client-supplied text is escaped and cut ([`client_text`], through [`crate::sanitize`]),
//! and the lines a client can cause at will (bad frames, bounces, refused registrations) pass a
//! rate limit ([`LogLimiter`], written through [`limited!`](crate::limited)) per client address
//! and per server. Suppressed lines are counted ([`LogLimiter::suppressed_total`]; each client
//! address that went over its own budget in a window, a repeated offender, in
//! [`LogLimiter::clients_limited_total`]) and summed up in one WARN line per window. The
//! per-client budget keeps one noisy client from using up the server's, so other clients'
//! lines are still written during an attack from a few addresses.
//!
//! Without this, 200 unauthenticated relay connections each sending a 1 MiB field name wrote
//! 200 MB of WARN lines in 0.7 s, and a client name holding a newline and ESC bytes forged log
//! lines.
//!
//! ```
//! use bistream_core::logsafe::{client_text, LogLimiter};
//!
//! let limiter = LogLimiter::new("example");
//! let addr: std::net::SocketAddr = "127.0.0.1:4000".parse()?;
//! // How a server logs a line a client caused (written only if the level is enabled and the
//! // limiter allows it):
//! bistream_core::limited!(limiter, from addr, WARN, name = %client_text("evil"), "bad frame");
//!
//! // Five lines per client address and window are allowed; the rest are counted.
//! let allowed = (0..100).filter(|_| limiter.allow(Some(addr.ip()))).count();
//! assert_eq!(allowed, 5);
//! assert_eq!(limiter.suppressed_total().load(std::sync::atomic::Ordering::Relaxed), 95);
//! assert_eq!(client_text("a\nforged line"), "a\\nforged line");
//! # Ok::<(), std::net::AddrParseError>(())
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest rendering of one client-supplied value in a log line (bytes, escapes included).
pub const MAX_LOGGED_VALUE: usize = 160;

/// A client-supplied text made safe for one log field: control and formatting characters
/// escaped, credentials redacted, cut to [`MAX_LOGGED_VALUE`] bytes.
pub fn client_text(s: &str) -> String {
    crate::sanitize::sanitize_to(s, MAX_LOGGED_VALUE)
}

/// Client-caused lines allowed per window, per server.
const LINES_PER_WINDOW: u64 = 50;
/// Client-caused lines allowed per window, per client address.
const LINES_PER_CLIENT: u64 = 5;
/// Client addresses tracked at once; beyond this (a flood from many addresses), a new address
/// has only the per-server limit until the window ends.
const MAX_TRACKED_CLIENTS: usize = 4096;
const WINDOW: Duration = Duration::from_secs(1);

/// A fixed-window rate limit on client-caused log lines: per client address, and per server.
#[derive(Debug)]
pub struct LogLimiter {
    state: Mutex<Window>,
    /// Lines suppressed since the server started.
    suppressed_total: AtomicU64,
    /// Windows in which one client address went over its own budget.
    clients_limited_total: AtomicU64,
    /// Whose lines these are (`relay`, `rpc`, ...), named in the summary line.
    name: &'static str,
    /// Where else the suppressed lines' events are counted (e.g. a metric), if anywhere.
    counted_in: Option<&'static str>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    lines: u64,
    suppressed: u64,
    /// Lines per client address in this window (cleared when it ends).
    clients: HashMap<IpAddr, u64>,
}

impl LogLimiter {
    /// A limiter of `name`'s client-caused lines (`relay`, `rpc`, ...: named in its summary).
    pub fn new(name: &'static str) -> Self {
        LogLimiter {
            state: Mutex::new(Window {
                start: Instant::now(),
                lines: 0,
                suppressed: 0,
                clients: HashMap::new(),
            }),
            suppressed_total: AtomicU64::new(0),
            clients_limited_total: AtomicU64::new(0),
            name,
            counted_in: None,
        }
    }

    /// Names, in the summary line, where an operator finds the count of the events whose
    /// lines were suppressed (a metric's name, a statistics record).
    pub fn counted_in(mut self, counted_in: &'static str) -> Self {
        self.counted_in = Some(counted_in);
        self
    }

    /// Lines suppressed since the limiter was made (for a metrics exporter).
    pub fn suppressed_total(&self) -> &AtomicU64 {
        &self.suppressed_total
    }

    /// Windows in which one client address went over its own budget, i.e. repeated
    /// offenders (for a metrics exporter).
    pub fn clients_limited_total(&self) -> &AtomicU64 {
        &self.clients_limited_total
    }

    /// Whether one more line caused by the client at `client` (`None`: not tied to one
    /// address) may be written now. When a window ends with suppressed lines, their count is
    /// logged once (as a WARN of its own).
    pub fn allow(&self, client: Option<IpAddr>) -> bool {
        self.allow_at(Instant::now(), client)
    }

    fn allow_at(&self, now: Instant, client: Option<IpAddr>) -> bool {
        let mut w = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if now.saturating_duration_since(w.start) >= WINDOW {
            if w.suppressed > 0 {
                tracing::warn!(
                    limiter = self.name,
                    suppressed = w.suppressed,
                    counted_in = self.counted_in,
                    "client-caused log lines suppressed in the last window (rate limit {LINES_PER_WINDOW}/s)"
                );
            }
            w.start = now;
            w.lines = 0;
            w.suppressed = 0;
            w.clients.clear();
        }
        if let Some(ip) = client {
            let tracked = w.clients.len();
            let seen = match w.clients.get_mut(&ip) {
                Some(n) => Some(n),
                None if tracked < MAX_TRACKED_CLIENTS => Some(w.clients.entry(ip).or_insert(0)),
                None => None,
            };
            if let Some(n) = seen {
                *n += 1;
                if *n > LINES_PER_CLIENT {
                    if *n == LINES_PER_CLIENT + 1 {
                        self.clients_limited_total.fetch_add(1, Relaxed);
                    }
                    w.suppressed += 1;
                    self.suppressed_total.fetch_add(1, Relaxed);
                    return false;
                }
            }
        }
        if w.lines < LINES_PER_WINDOW {
            w.lines += 1;
            true
        } else {
            w.suppressed += 1;
            self.suppressed_total.fetch_add(1, Relaxed);
            false
        }
    }
}

/// Logs a client-caused event through a [`LogLimiter`], charged to the client's socket
/// address: `limited!(limiter, from addr, WARN, field = value, ..., "message")`, or not tied
/// to one address (only the per-server budget applies): `limited!(limiter, WARN, ...)`.
#[macro_export]
macro_rules! limited {
    ($limiter:expr, from $addr:expr, $level:ident, $($arg:tt)+) => {
        if $crate::logsafe::__tracing::enabled!($crate::logsafe::__tracing::Level::$level)
            && $limiter.allow(Some($addr.ip()))
        {
            $crate::logsafe::__tracing::event!($crate::logsafe::__tracing::Level::$level, $($arg)+);
        }
    };
    ($limiter:expr, $level:ident, $($arg:tt)+) => {
        if $crate::logsafe::__tracing::enabled!($crate::logsafe::__tracing::Level::$level)
            && $limiter.allow(None)
        {
            $crate::logsafe::__tracing::event!($crate::logsafe::__tracing::Level::$level, $($arg)+);
        }
    };
}

#[doc(hidden)]
pub use tracing as __tracing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_escapes_and_bounds() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO registered client name=admin\x1b[2J";
        let out = client_text(forged);
        assert!(!out.contains('\n') && !out.contains('\x1b'), "{out}");
        assert!(out.contains("\\n"), "{out}");
        let huge = "f".repeat(1 << 20);
        assert!(client_text(&huge).len() <= MAX_LOGGED_VALUE);
    }

    #[test]
    fn limiter_allows_a_window_then_counts() {
        let l = LogLimiter::new("test");
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| l.allow_at(t0, None)).count();
        assert_eq!(allowed as u64, LINES_PER_WINDOW);
        assert_eq!(l.suppressed_total().load(Relaxed), 1000 - LINES_PER_WINDOW);
        // The next window allows again.
        assert!(l.allow_at(t0 + WINDOW, None));
    }

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn a_repeated_offender_is_limited_alone_and_counted() {
        let l = LogLimiter::new("test");
        let t0 = Instant::now();
        // One address floods: only its own budget is written, once per window counted.
        let noisy = (0..1000).filter(|_| l.allow_at(t0, ip(1))).count();
        assert_eq!(noisy as u64, LINES_PER_CLIENT);
        assert_eq!(l.clients_limited_total().load(Relaxed), 1);
        assert_eq!(l.suppressed_total().load(Relaxed), 1000 - LINES_PER_CLIENT);
        // Other clients still get their lines written in the same window.
        assert!((2..6).all(|n| l.allow_at(t0, ip(n))));
        // The offender gets a new budget in the next window, and is counted again.
        let t1 = t0 + WINDOW;
        assert_eq!(
            (0..10).filter(|_| l.allow_at(t1, ip(1))).count() as u64,
            LINES_PER_CLIENT
        );
        assert_eq!(l.clients_limited_total().load(Relaxed), 2);
    }

    #[test]
    fn many_addresses_still_meet_the_server_limit() {
        let l = LogLimiter::new("test");
        let t0 = Instant::now();
        let n = MAX_TRACKED_CLIENTS as u32 + 100;
        let allowed = (0..n).filter(|i| l.allow_at(t0, ip(*i))).count();
        assert_eq!(allowed as u64, LINES_PER_WINDOW);
        assert_eq!(l.clients_limited_total().load(Relaxed), 0);
    }
}
