//! The cluster's counters, rendered after the relay's own figures on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Counters of one node's backplane (all monotonic except the two gauges).
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    /// 1 while Redis is reachable and this node is subscribed.
    pub(crate) up: AtomicI64,
    /// Up → down transitions.
    pub(crate) down_transitions: AtomicU64,
    /// Successful (re)connections.
    pub(crate) connects: AtomicU64,
    /// Failed Redis commands (the first of each outage also starts a reconnect).
    pub(crate) redis_errors: AtomicU64,
    /// Registrations claimed in Redis / refused (other user) / kept locally while Redis was down.
    pub(crate) claims: AtomicU64,
    pub(crate) claims_refused: AtomicU64,
    pub(crate) claims_deferred: AtomicU64,
    /// Registrations written again by a heartbeat (after an outage or an expiry).
    pub(crate) republished: AtomicU64,
    /// Local connections closed 4004 because another node took their UUID.
    pub(crate) evictions: AtomicU64,
    /// Forwards published to another node / delivered here from another node.
    pub(crate) forwards_sent: AtomicU64,
    pub(crate) forwards_received: AtomicU64,
    /// Messages that reached this node for a client it no longer has (a stale cached route at
    /// the sender) and were sent on through the forward script.
    pub(crate) rerouted: AtomicU64,
    /// Cross-node forwards bounced, by reason.
    pub(crate) bounced_unknown: AtomicU64,
    pub(crate) bounced_other_user: AtomicU64,
    pub(crate) bounced_queue_full: AtomicU64,
    pub(crate) bounced_down: AtomicU64,
    /// Bounces from other nodes delivered to a local sender.
    pub(crate) bounces_received: AtomicU64,
    /// Inbound messages (or bounces) that could not be delivered or understood.
    pub(crate) inbound_dropped: AtomicU64,
    /// Jobs refused by the full publisher queue (bounced or left to expire).
    pub(crate) jobs_dropped: AtomicU64,
    /// Registrations this node holds (gauge, set when rendered).
    pub(crate) owned: AtomicI64,
}

impl ClusterStats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Appends the figures in the Prometheus text format.
    pub(crate) fn render(&self, node: &str, out: &mut String) {
        let node = node.replace(['\\', '"', '\n'], "_");
        let mut one = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {v}"
            );
        };
        let g = |a: &AtomicI64| a.load(Relaxed).to_string();
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        one(
            "bistream_relay_cluster_up",
            "gauge",
            "1 while the Redis backplane is reachable and this node is subscribed.",
            g(&self.up),
        );
        one(
            "bistream_relay_cluster_registrations",
            "gauge",
            "Registrations this node holds in the cluster.",
            g(&self.owned),
        );
        one(
            "bistream_relay_cluster_down_total",
            "counter",
            "Times the Redis backplane was lost.",
            c(&self.down_transitions),
        );
        one(
            "bistream_relay_cluster_connects_total",
            "counter",
            "Successful connections (and reconnections) to the Redis backplane.",
            c(&self.connects),
        );
        one(
            "bistream_relay_cluster_redis_errors_total",
            "counter",
            "Failed Redis commands.",
            c(&self.redis_errors),
        );
        one(
            "bistream_relay_cluster_claims_total",
            "counter",
            "Registrations claimed in Redis.",
            c(&self.claims),
        );
        one(
            "bistream_relay_cluster_claims_refused_total",
            "counter",
            "Registrations refused because another user holds the UUID on another node.",
            c(&self.claims_refused),
        );
        one(
            "bistream_relay_cluster_claims_deferred_total",
            "counter",
            "Registrations accepted locally while Redis was unreachable (published on recovery).",
            c(&self.claims_deferred),
        );
        one(
            "bistream_relay_cluster_republished_total",
            "counter",
            "Registrations written to Redis again by a heartbeat.",
            c(&self.republished),
        );
        one(
            "bistream_relay_cluster_evictions_total",
            "counter",
            "Local connections closed 4004 because their UUID was registered on another node.",
            c(&self.evictions),
        );
        one(
            "bistream_relay_cluster_forwards_sent_total",
            "counter",
            "Messages published to another node.",
            c(&self.forwards_sent),
        );
        one(
            "bistream_relay_cluster_forwards_received_total",
            "counter",
            "Messages from another node delivered to a local client.",
            c(&self.forwards_received),
        );
        let _ = writeln!(out, "# HELP bistream_relay_cluster_bounced_total Cross-node forwards returned to their sender, by reason.\n# TYPE bistream_relay_cluster_bounced_total counter");
        for (reason, v) in [
            ("unknown_peer", &self.bounced_unknown),
            ("other_user", &self.bounced_other_user),
            ("queue_full", &self.bounced_queue_full),
            ("backplane_down", &self.bounced_down),
        ] {
            let _ = writeln!(
                out,
                "bistream_relay_cluster_bounced_total{{node=\"{node}\",reason=\"{reason}\"}} {}",
                v.load(Relaxed)
            );
        }
        let mut one = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                v.load(Relaxed)
            );
        };
        one(
            "bistream_relay_cluster_bounces_received_total",
            "Bounces from other nodes delivered to a local sender.",
            &self.bounces_received,
        );
        one(
            "bistream_relay_cluster_inbound_dropped_total",
            "Cross-node messages or bounces dropped: undecodable, or their local client had left.",
            &self.inbound_dropped,
        );
        one(
            "bistream_relay_cluster_rerouted_total",
            "Messages received for a client no longer on this node, sent on through Redis's registry.",
            &self.rerouted,
        );
        one(
            "bistream_relay_cluster_jobs_dropped_total",
            "Cross-node jobs refused by the full publisher queue.",
            &self.jobs_dropped,
        );
    }
}
