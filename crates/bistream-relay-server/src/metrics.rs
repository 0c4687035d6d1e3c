//! The relay's counters and gauges, kept as plain atomics per server instance and rendered in
//! the Prometheus text format by the ops endpoint.
//!
//! Hand-rolled rather than the `metrics` facade: that facade installs one global recorder per
//! process, so two servers in one process (every in-process test) would share and corrupt each
//! other's figures; and an atomic add is the cheapest thing the forwarding path can do.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use bistream_relay_proto::CloseCode;

use bistream_core::logsafe::LogLimiter;

/// Close codes counted individually (the last slot, 0, counts any other code as `other`).
const CLOSE_CODES: [u16; 14] = {
    use CloseCode::*;
    [
        Normal.code(),
        GoingAway.code(),
        ProtocolError.code(),
        InvalidPayload.code(),
        Policy.code(),
        TooBig.code(),
        InternalError.code(),
        TryAgainLater.code(),
        UnknownMessage.code(),
        Unauthorized.code(),
        Forbidden.code(),
        MessageTooLarge.code(),
        DuplicateRegistration.code(),
        0,
    ]
};

/// Why a forwarded message went back to its sender instead of reaching its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceReason {
    /// No client is registered under `peer_uuid`.
    UnknownPeer,
    /// The target belongs to another user.
    OtherUser,
    /// The target's send queue was full; the target was disconnected.
    QueueFull,
}

/// All figures of one server. Read them with [`Metrics::snapshot`] or [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) connections_open: AtomicI64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) registered_clients: AtomicI64,
    pub(crate) registrations_total: AtomicU64,
    pub(crate) takeovers_total: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) messages_forwarded: AtomicU64,
    pub(crate) bytes_forwarded: AtomicU64,
    pub(crate) bounced: [AtomicU64; 3],
    pub(crate) send_queue_drops: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) keepalive_timeouts: AtomicU64,
    /// Server-sent closes, indexed like `CLOSE_CODES` (last slot = other codes).
    pub(crate) closes: [AtomicU64; CLOSE_CODES.len()],
    /// Connections the client closed (close frame or EOF) or that failed with an I/O error.
    pub(crate) client_closes: AtomicU64,
    pub(crate) io_errors: AtomicU64,
    /// `accept` failures (EMFILE and the like), each followed by a back-off.
    pub(crate) accept_errors: AtomicU64,
    /// Connections closed (1008) for not registering within `register_timeout`.
    pub(crate) registration_timeouts: AtomicU64,
    /// WebSocket rebuilds that gave back the buffers of a large message.
    pub(crate) buffer_rebuilds: AtomicU64,
    /// Connections closed 1013 because their unfinished large message would have passed the
    /// process-wide budget.
    pub(crate) frame_budget_closes: AtomicU64,
    /// The rate limit on client-caused log lines (and its count of suppressed lines).
    pub(crate) log: RelayLogLimiter,
}

/// The relay's rate limit on client-caused log lines, whose summary names the metric that
/// counts the suppressed lines.
#[derive(Debug)]
pub(crate) struct RelayLogLimiter(LogLimiter);

impl Default for RelayLogLimiter {
    fn default() -> Self {
        RelayLogLimiter(LogLimiter::new("relay").counted_in("relay_log_lines_suppressed_total"))
    }
}

impl std::ops::Deref for RelayLogLimiter {
    type Target = LogLimiter;
    fn deref(&self) -> &LogLimiter {
        &self.0
    }
}

/// A point-in-time copy of the main figures (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Open WebSocket connections (registered or not).
    pub connections_open: i64,
    /// Registered clients.
    pub registered_clients: i64,
    /// `peer_connection` messages delivered to a target's queue.
    pub messages_forwarded: u64,
    /// Bytes of those messages (as sent).
    pub bytes_forwarded: u64,
    /// Messages bounced back to the sender for any reason.
    pub bounced: u64,
    /// Targets disconnected because their send queue was full.
    pub send_queue_drops: u64,
    /// Connections refused because the connection cap was reached.
    pub connections_rejected: u64,
}

impl Metrics {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn bounce(&self, r: BounceReason) {
        Self::inc(&self.bounced[r as usize]);
    }

    /// Counts a close sent by the server.
    pub(crate) fn server_close(&self, code: u16) {
        // 0 is the `other` slot, never a code on the wire.
        let code = if code == 0 { u16::MAX } else { code };
        let i = CLOSE_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(CLOSE_CODES.len() - 1);
        if let Some(c) = self.closes.get(i) {
            Self::inc(c);
        }
    }

    /// Number of server-initiated closes sent with `code`.
    pub fn closes_with(&self, code: u16) -> u64 {
        CLOSE_CODES
            .iter()
            .position(|c| *c == code && code != 0)
            .and_then(|i| self.closes.get(i))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Copies the main figures.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            connections_open: self.connections_open.load(Relaxed),
            registered_clients: self.registered_clients.load(Relaxed),
            messages_forwarded: self.messages_forwarded.load(Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Relaxed),
            bounced: self.bounced.iter().map(|c| c.load(Relaxed)).sum(),
            send_queue_drops: self.send_queue_drops.load(Relaxed),
            connections_rejected: self.connections_rejected.load(Relaxed),
        }
    }

    /// Renders every figure in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "relay_connections_open",
            "Open WebSocket connections.",
            self.connections_open.load(Relaxed),
        );
        gauge(
            "relay_registered_clients",
            "Clients currently registered.",
            self.registered_clients.load(Relaxed),
        );
        let counters: [(&str, &str, &AtomicU64); 20] = [
            ("relay_connections_total", "WebSocket connections accepted.", &self.connections_total),
            ("relay_connections_rejected_total", "Connections refused at the --max-connections cap (closed 1013 or dropped).", &self.connections_rejected),
            ("relay_handshake_failures_total", "TCP connections that failed or timed out during the TLS/WebSocket opening handshake.", &self.handshake_failures),
            ("relay_registrations_total", "Successful registrations.", &self.registrations_total),
            ("relay_takeovers_total", "Registrations that replaced the same UUID on another socket (old socket closed 4004).", &self.takeovers_total),
            ("relay_auth_failures_total", "Registrations refused by the authenticator.", &self.auth_failures),
            ("relay_messages_received_total", "Data frames received from clients.", &self.messages_received),
            ("relay_bytes_received_total", "Payload bytes of data frames received from clients.", &self.bytes_received),
            ("relay_messages_forwarded_total", "peer_connection messages queued to their target.", &self.messages_forwarded),
            ("relay_bytes_forwarded_total", "Bytes of forwarded messages.", &self.bytes_forwarded),
            ("relay_send_queue_drops_total", "Clients disconnected (1008) because their send queue was full.", &self.send_queue_drops),
            ("relay_decode_errors_total", "Messages that could not be decoded (closed 4000).", &self.decode_errors),
            ("relay_keepalive_timeouts_total", "Clients closed because they did not answer a ping in time.", &self.keepalive_timeouts),
            ("relay_client_closes_total", "Connections ended by the client (close frame, EOF, or a reset without a closing handshake).", &self.client_closes),
            ("relay_accept_errors_total", "Failed accepts (e.g. out of file descriptors), each followed by a back-off.", &self.accept_errors),
            ("relay_registration_timeouts_total", "Connections closed (1008) because they did not register in time.", &self.registration_timeouts),
            ("relay_buffer_rebuilds_total", "WebSocket buffers given back after a large message.", &self.buffer_rebuilds),
            ("relay_large_message_budget_closes_total", "Connections closed 1013: their unfinished large message would have passed the relay's budget.", &self.frame_budget_closes),
            ("relay_log_lines_suppressed_total", "Client-caused log lines dropped by the log rate limit.", self.log.suppressed_total()),
            ("relay_log_clients_limited_total", "Times one client address went over its own log budget in a one-second window (repeated offenders).", self.log.clients_limited_total()),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP relay_io_errors_total Connections ended by a transport error.\n# TYPE relay_io_errors_total counter\nrelay_io_errors_total {}",
            self.io_errors.load(Relaxed)
        );
        let _ = writeln!(out, "# HELP relay_bounced_total peer_connection messages sent back to their sender with an error.\n# TYPE relay_bounced_total counter");
        for (i, reason) in ["unknown_peer", "other_user", "queue_full"]
            .iter()
            .enumerate()
        {
            let v = self.bounced.get(i).map_or(0, |c| c.load(Relaxed));
            let _ = writeln!(out, "relay_bounced_total{{reason=\"{reason}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP relay_closes_total Connections closed by the server, by close code.\n# TYPE relay_closes_total counter");
        for (i, code) in CLOSE_CODES.iter().enumerate() {
            let v = self.closes.get(i).map_or(0, |c| c.load(Relaxed));
            if *code == 0 {
                let _ = writeln!(out, "relay_closes_total{{code=\"other\"}} {v}");
            } else {
                let _ = writeln!(out, "relay_closes_total{{code=\"{code}\"}} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let m = Metrics::default();
        m.server_close(4000);
        m.server_close(4000);
        m.server_close(3999);
        m.bounce(BounceReason::OtherUser);
        let text = m.render();
        assert!(
            text.contains("relay_closes_total{code=\"4000\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("relay_closes_total{code=\"other\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("relay_bounced_total{reason=\"other_user\"} 1"),
            "{text}"
        );
        assert_eq!(m.closes_with(4000), 2);
        assert_eq!(m.closes_with(0), 0);
        assert_eq!(m.snapshot().bounced, 1);
    }
}
