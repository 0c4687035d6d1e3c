//! Connection settings ([`Config`]), the failure texts sent to the peer ([`reasons`]), the
//! response type and the per-connection counters ([`Stats`]).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;

use crate::codec::DEFAULT_MAX_PACKET;

/// Failure reasons sent to the peer: the exact texts of cs.packetstream 20240630.
pub mod reasons {
    /// The handler returned an error or panicked (also: unknown rq_type).
    pub const EXCEPTION: &str = "exception during handler";
    /// This side has no request handler.
    pub const NO_HANDLER: &str = "no request handler";
    /// The request arrived after the peer's ERQ.
    pub const NOT_ALLOWED: &str = "requests no longer allowed";
    /// The request arrived while this side was shutting down.
    pub const SHUTTING_DOWN: &str = "rejecting request: runstate.cancelled";
    /// Too many distinct channels (Python's literal, unformatted text).
    pub const UNKNOWN_CHANNEL: &str = "unknown channel %d";
}

/// Default of [`Config::send_buffer`]: 4 MiB.
pub const DEFAULT_SEND_BUFFER: usize = 4 * 1024 * 1024;
/// Default of [`Config::max_queued_request_bytes`]: 8 MiB.
pub const DEFAULT_QUEUED_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Default of [`Config::write_stall_timeout`] and [`Config::packet_timeout`]: 60 s.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection settings. Build with `Config::default()` and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name used in logs.
    pub name: String,
    /// Coalescing delay of the writer: after draining the queue, wait this long for more
    /// packets before writing. Default 0: write as soon as the queue is empty (Python's
    /// default is 10 ms, which costs ~10 ms per direction on every lone packet).
    pub packet_grace: Duration,
    /// Largest packet body accepted or sent (default [`DEFAULT_MAX_PACKET`], 16 MiB).
    pub max_packet: usize,
    /// Our requests awaiting a response; `submit` waits beyond this (default 4096).
    pub max_in_flight: usize,
    /// Handlers running at once (default 64; Python runs 4).
    pub max_handlers: usize,
    /// Peer requests accepted and not yet answered (running or waiting to run); the reader
    /// stops reading beyond this (default 1024).
    pub max_queued_requests: usize,
    /// Capacity of the send queue, in packets (default 1024; Python uses 16).
    pub send_queue: usize,
    /// Bytes queued for sending and not yet written (our requests, responses, failures);
    /// whoever queues more waits, so a peer that does not read holds at most this much of
    /// our memory in its responses (default [`DEFAULT_SEND_BUFFER`], 4 MiB). A packet larger
    /// than this is sent alone.
    pub send_buffer: usize,
    /// Payload bytes of the peer's requests accepted and not yet answered; the reader stops
    /// reading beyond this, so a peer that sends requests without reading the responses is
    /// held back by TCP flow control (default [`DEFAULT_QUEUED_REQUEST_BYTES`], 8 MiB). A
    /// larger request is accepted alone.
    pub max_queued_request_bytes: usize,
    /// A connection whose queued bytes make no write progress for this long (the peer does
    /// not read) is closed with [`crate::CloseReason::WriteStalled`] (default 60 s). An idle
    /// connection with nothing to send is never closed by this.
    pub write_stall_timeout: Duration,
    /// Once the first byte of a packet has arrived, the whole packet must arrive within
    /// this time, or the connection is closed with [`crate::CloseReason::PacketTimeout`]
    /// (default 60 s). Idle time between packets is not limited.
    pub packet_timeout: Duration,
    /// Distinct channels the peer may send requests on (default 256); requests on further
    /// channels get the failure `unknown channel %d`.
    pub max_rx_channels: usize,
    /// How long a closing connection waits for the peer's EOF after sending its own before it
    /// drops the transport (default 30 s).
    pub close_timeout: Duration,
    /// Let the task that makes a lone request or response write it itself when the send
    /// side is idle, instead of handing it to the writer task (default true; saves a task
    /// switch per round trip; packets under load always go through the writer).
    pub direct_writes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "packet".into(),
            packet_grace: Duration::ZERO,
            max_packet: DEFAULT_MAX_PACKET,
            max_in_flight: 4096,
            max_handlers: 64,
            max_queued_requests: 1024,
            send_queue: 1024,
            send_buffer: DEFAULT_SEND_BUFFER,
            max_queued_request_bytes: DEFAULT_QUEUED_REQUEST_BYTES,
            write_stall_timeout: DEFAULT_STALL_TIMEOUT,
            packet_timeout: DEFAULT_STALL_TIMEOUT,
            max_rx_channels: 256,
            close_timeout: Duration::from_secs(30),
            direct_writes: true,
        }
    }
}

impl Config {
    /// Sets [`Config::name`].
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Sets [`Config::packet_grace`].
    pub fn with_packet_grace(mut self, d: Duration) -> Self {
        self.packet_grace = d;
        self
    }
    /// Sets [`Config::max_packet`].
    pub fn with_max_packet(mut self, n: usize) -> Self {
        self.max_packet = n;
        self
    }
    /// Sets [`Config::max_in_flight`].
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }
    /// Sets [`Config::max_handlers`].
    pub fn with_max_handlers(mut self, n: usize) -> Self {
        self.max_handlers = n;
        self
    }
    /// Sets [`Config::max_queued_requests`].
    pub fn with_max_queued_requests(mut self, n: usize) -> Self {
        self.max_queued_requests = n;
        self
    }
    /// Sets [`Config::send_queue`].
    pub fn with_send_queue(mut self, n: usize) -> Self {
        self.send_queue = n;
        self
    }
    /// Sets [`Config::max_rx_channels`].
    pub fn with_max_rx_channels(mut self, n: usize) -> Self {
        self.max_rx_channels = n;
        self
    }
    /// Sets [`Config::close_timeout`].
    pub fn with_close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }
    /// Sets [`Config::send_buffer`].
    pub fn with_send_buffer(mut self, n: usize) -> Self {
        self.send_buffer = n;
        self
    }
    /// Sets [`Config::max_queued_request_bytes`].
    pub fn with_max_queued_request_bytes(mut self, n: usize) -> Self {
        self.max_queued_request_bytes = n;
        self
    }
    /// Sets [`Config::write_stall_timeout`].
    pub fn with_write_stall_timeout(mut self, d: Duration) -> Self {
        self.write_stall_timeout = d;
        self
    }
    /// Sets [`Config::packet_timeout`].
    pub fn with_packet_timeout(mut self, d: Duration) -> Self {
        self.packet_timeout = d;
        self
    }
    /// Sets [`Config::direct_writes`].
    pub fn with_direct_writes(mut self, on: bool) -> Self {
        self.direct_writes = on;
        self
    }

    /// Semaphore sizes are `u32`; keep every count in 1..=2^20 and every byte bound in
    /// 1..=2^30; a zero timeout would close every connection at once: at least 1 ms.
    pub(super) fn clamp(mut self) -> Self {
        let c = |n: usize| n.clamp(1, 1 << 20);
        self.max_in_flight = c(self.max_in_flight);
        self.max_handlers = c(self.max_handlers);
        self.max_queued_requests = c(self.max_queued_requests);
        self.send_queue = c(self.send_queue);
        self.max_rx_channels = c(self.max_rx_channels);
        self.send_buffer = self.send_buffer.clamp(1, 1 << 30);
        self.max_queued_request_bytes = self.max_queued_request_bytes.clamp(1, 1 << 30);
        let ms = Duration::from_millis(1);
        self.write_stall_timeout = self.write_stall_timeout.max(ms);
        self.packet_timeout = self.packet_timeout.max(ms);
        self
    }
}

/// A response to one of our requests, as Python's `(ok, flags, payload)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Whether the peer's handler succeeded.
    pub ok: bool,
    /// The user flags of the response.
    pub flags: u64,
    /// The response payload (the failure reason when `ok` is false).
    pub payload: Bytes,
}

/// Counters of one connection (all monotonic).
#[derive(Debug, Default)]
pub struct Stats {
    /// Our requests put on the wire (or queued for it).
    pub requests_sent: AtomicU64,
    /// Responses to our requests received.
    pub responses_received: AtomicU64,
    /// Requests received from the peer.
    pub requests_received: AtomicU64,
    /// Responses to the peer's requests queued (including failures from handlers).
    pub responses_sent: AtomicU64,
    /// Peer requests answered with a failure without running the handler.
    pub requests_rejected: AtomicU64,
    /// Handlers that failed, panicked or returned an unencodable response.
    pub handler_errors: AtomicU64,
    /// Responses for a (channel, tag) we have no pending request for: logged and dropped.
    pub unknown_responses: AtomicU64,
    /// Requests reusing a tag: answered with `tag already in use`.
    pub duplicate_tags: AtomicU64,
    /// Packets that could not be queued because the sender had already finished.
    pub dropped_packets: AtomicU64,
    /// Bytes written to the transport.
    pub bytes_sent: AtomicU64,
    /// Bytes read from the transport.
    pub bytes_received: AtomicU64,
    /// Times a packet waited for send budget ([`Config::send_buffer`]): the peer reads more
    /// slowly than we send. A handler (or the reader, for a handler that answered at once)
    /// waiting here holds back further reading.
    pub send_waits: AtomicU64,
    /// Times the reader stopped reading because answered-but-unsent responses or unanswered
    /// requests reached their byte bound (backpressure on a peer that does not read).
    pub read_pauses: AtomicU64,
    /// Packets written by the task that made them (see [`Config::direct_writes`]).
    pub direct_writes: AtomicU64,
}
