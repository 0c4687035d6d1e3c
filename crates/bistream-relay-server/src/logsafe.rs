//! Logging what clients send without letting them write the log: every client-supplied text is
//! escaped and cut ([`client_text`], through bistream-core's sanitizer), and the lines a client
//! can cause at will (bad frames, bounces, refused registrations) pass a per-server rate limit
//! ([`LogLimiter`]) whose suppressed lines are counted in the metrics and summed up in the log.
//!
//! Without this, 200 unauthenticated connections each sending a 1 MiB field name wrote 200 MB
//! of WARN lines in 0.7 s, and a client name holding a newline and ESC bytes forged log lines.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest rendering of one client-supplied value in a log line (bytes, escapes included).
pub(crate) const MAX_LOGGED_VALUE: usize = 160;

/// A client-supplied text made safe for one log field: control and formatting characters
/// escaped, credentials redacted, cut to [`MAX_LOGGED_VALUE`] bytes.
pub(crate) fn client_text(s: &str) -> String {
    bistream_core::sanitize::sanitize_to(s, MAX_LOGGED_VALUE)
}

/// Client-caused lines allowed per window, per server.
const LINES_PER_WINDOW: u64 = 50;
const WINDOW: Duration = Duration::from_secs(1);

/// A fixed-window rate limit on client-caused log lines, shared by all connections.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    state: Mutex<Window>,
    /// Lines suppressed since the server started (the `relay_log_lines_suppressed_total` metric).
    pub(crate) suppressed_total: AtomicU64,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    lines: u64,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter {
            state: Mutex::new(Window {
                start: Instant::now(),
                lines: 0,
                suppressed: 0,
            }),
            suppressed_total: AtomicU64::new(0),
        }
    }
}

impl LogLimiter {
    /// Whether one more client-caused line may be written now. When a window ends with
    /// suppressed lines, their count is logged once (as a WARN of its own).
    pub(crate) fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut w = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if now.saturating_duration_since(w.start) >= WINDOW {
            if w.suppressed > 0 {
                tracing::warn!(
                    suppressed = w.suppressed,
                    "client-caused log lines suppressed in the last window (rate limit {LINES_PER_WINDOW}/s; see relay_log_lines_suppressed_total)"
                );
            }
            *w = Window {
                start: now,
                lines: 0,
                suppressed: 0,
            };
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

/// Logs a client-caused event through a [`LogLimiter`]:
/// `limited!(metrics.log, WARN, field = value, ..., "message")`.
macro_rules! limited {
    ($limiter:expr, $level:ident, $($arg:tt)+) => {
        if tracing::enabled!(tracing::Level::$level) && $limiter.allow() {
            tracing::event!(tracing::Level::$level, $($arg)+);
        }
    };
}
pub(crate) use limited;

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
        let l = LogLimiter::default();
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| l.allow_at(t0)).count();
        assert_eq!(allowed as u64, LINES_PER_WINDOW);
        assert_eq!(l.suppressed_total.load(Relaxed), 1000 - LINES_PER_WINDOW);
        // The next window allows again.
        assert!(l.allow_at(t0 + WINDOW));
    }
}
