//! [`RsConfig`]: limits and timers of one RSocket connection.

use std::time::Duration;

use bistream_rpc::RpcConfig;

/// Settings of one connection. Every queue and buffer is bounded by one of these.
#[derive(Debug, Clone)]
pub struct RsConfig {
    /// Largest frame read, and the size above which we fragment what we send (default and
    /// maximum 16 MiB - 1, the 3-byte length prefix's limit).
    pub max_frame_bytes: usize,
    /// Largest reassembled (fragmented) payload (default 16 MiB).
    pub max_message_bytes: usize,
    /// Fragments buffered over all streams of a connection (default 64 MiB).
    pub max_reassembly_bytes: usize,
    /// Requests served at once per connection; more are answered REJECTED (default 1,024).
    pub max_streams: usize,
    /// Items we request per stream (REQUEST_N), also the per-stream queue size (default 256).
    pub window: u32,
    /// Bytes one stream's inbound queue may hold (default 1 MiB, as the rpc crate's
    /// `Limits::stream_queue_bytes`); one larger item passes when the queue is empty. Past it
    /// the connection stops reading until the consumer drains (backpressure; DECISIONS D40).
    pub stream_queue_bytes: usize,
    /// Client: KEEPALIVE interval announced in SETUP (default 20 s).
    pub keepalive: Duration,
    /// Client: max lifetime announced in SETUP; both sides: silence after which the peer is
    /// dead (the server uses the client's value; default 90 s).
    pub max_lifetime: Duration,
    /// Server: time allowed for the SETUP frame (default 30 s).
    pub setup_timeout: Duration,
    /// Per-call timeout of our requests (request/response: the whole call; streams: each
    /// item), and of the handlers we serve (default 600 s).
    pub timeout: Duration,
}

impl Default for RsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: bistream_rsocket_proto::MAX_FRAME_LEN,
            max_message_bytes: 16 << 20,
            max_reassembly_bytes: 64 << 20,
            max_streams: 1024,
            window: 256,
            stream_queue_bytes: bistream_rpc::Limits::default().stream_queue_bytes,
            keepalive: Duration::from_secs(20),
            max_lifetime: Duration::from_secs(90),
            setup_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
        }
    }
}

impl RsConfig {
    pub(crate) fn rpc_config(&self) -> RpcConfig {
        let mut c = RpcConfig::default();
        c.limits.window = self.window.max(2);
        c.limits.stream_queue_bytes = self.stream_queue_bytes.max(1);
        c.timeout = self.timeout;
        c
    }
}
