//! Log tailing over WebSocket and HTTP with exact stream limits: the synapse SDK's
//! `WebSocketStreamManager` and `HTTPStreamManager`, on bistream-core's [`StreamLimits`],
//! limit tracker, status-coded [`ClientError`], validation, URL conversion and sanitizer.
//!
//! - [`Tail`] pulls lines from a `ws`/`wss` or `http`/`https` URL; [`Tail::into_stream`] makes
//!   it an async [`Stream`](futures_util::Stream) ([`LogStream`]), and [`BlockingLogs`] a
//!   blocking iterator bounded by `queue_size`. Dropping either closes the connection.
//! - Lines are reassembled exactly whatever the framing ([`lines`]); limits are exact: every
//!   line within them is delivered, then the stream ends with a 429 naming the limit and the
//!   count; a line over `max_message_size` is skipped and counted, never buffered past it.
//! - Errors: refused or DNS 503, timeouts 408, HTTP 404 (and a WebSocket handshake answered
//!   404) 404, limits 429, unexpected 500, other HTTP statuses mapped by
//!   [`Status::from_http`](bistream_core::Status::from_http) and named; every message is
//!   sanitized and starts with the context.
//!
//! ```no_run
//! use bistream_core::StreamLimits;
//! use bistream_logs::WebSocketStreamManager;
//! use futures_util::StreamExt;
//!
//! # async fn run() -> Result<(), bistream_core::ClientError> {
//! let manager = WebSocketStreamManager::new(StreamLimits::builder().max_lines(10_000).build()?);
//! let mut lines = manager.stream_logs(
//!     "http://127.0.0.1:8265/api/jobs/raysubmit_1/logs/tail", // converted to ws://
//!     &[("Authorization", "Bearer token")],
//!     30.0,
//!     "job raysubmit_1",
//! );
//! while let Some(line) = lines.next().await {
//!     println!("{}", line?);
//! }
//! # Ok(()) }
//! ```

pub mod blocking;
pub mod lines;
pub mod options;
pub mod ray;
mod source;
pub mod tail;
mod tls;

pub use bistream_core::{ClientError, Status, StreamLimits};
pub use blocking::BlockingLogs;
pub use options::{TailOptions, DEFAULT_MAX_FRAME_SIZE, DEFAULT_TIMEOUT};
pub use tail::{LogStats, LogStream, StatsCell, Tail};

use bistream_core::{http_to_websocket_url, websocket_to_http_url};

/// The seed's `WebSocketStreamManager`: tails WebSocket endpoints with one set of limits.
#[derive(Debug, Clone, Default)]
pub struct WebSocketStreamManager {
    limits: StreamLimits,
}

impl WebSocketStreamManager {
    /// A manager applying `limits` to every stream.
    pub fn new(limits: StreamLimits) -> Self {
        Self { limits }
    }

    /// Streams lines from `ws_url` (an `http(s)` URL is converted to `ws(s)`), with `timeout`
    /// seconds bounding the connection and each wait for data (validated: 0 < t <= 300).
    /// Connects on first poll; a bad URL, header or timeout is the stream's first (and only)
    /// item, a 400.
    pub fn stream_logs(
        &self,
        ws_url: &str,
        headers: &[(&str, &str)],
        timeout: f64,
        context: &str,
    ) -> LogStream {
        match self.tail(ws_url, headers, timeout, context) {
            Ok(t) => t.into_stream(),
            Err(e) => LogStream::failed(e),
        }
    }

    /// As [`stream_logs`](Self::stream_logs), as a blocking iterator.
    ///
    /// # Errors
    /// A 400 for a bad URL or timeout; 500 if the thread cannot start.
    pub fn stream_logs_blocking(
        &self,
        ws_url: &str,
        headers: &[(&str, &str)],
        timeout: f64,
        context: &str,
    ) -> Result<BlockingLogs, ClientError> {
        BlockingLogs::spawn(self.tail(ws_url, headers, timeout, context)?)
    }

    fn tail(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: f64,
        context: &str,
    ) -> Result<Tail, ClientError> {
        let url = http_to_websocket_url(url).map_err(|e| with_ctx(context, e.into()))?;
        let opts = options(self.limits, headers, context)
            .timeout_secs(timeout)
            .map_err(|e| with_ctx(context, e))?;
        Ok(Tail::new(url, opts))
    }
}

/// The seed's `HTTPStreamManager`: tails chunked HTTP endpoints with one set of limits.
#[derive(Debug, Clone, Default)]
pub struct HttpStreamManager {
    limits: StreamLimits,
}

impl HttpStreamManager {
    /// A manager applying `limits` to every stream.
    pub fn new(limits: StreamLimits) -> Self {
        Self { limits }
    }

    /// Streams lines from `url` (a `ws(s)` URL is converted to `http(s)`) with the seed's
    /// `(connect, read)` timeouts in seconds; a read timeout of 0 waits forever. Connects on
    /// first poll; bad input is the stream's first item, a 400.
    pub fn stream_logs(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: (f64, f64),
        context: &str,
    ) -> LogStream {
        match self.tail(url, headers, timeout, context) {
            Ok(t) => t.into_stream(),
            Err(e) => LogStream::failed(e),
        }
    }

    /// As [`stream_logs`](Self::stream_logs), as a blocking iterator.
    ///
    /// # Errors
    /// A 400 for a bad URL or timeout; 500 if the thread cannot start.
    pub fn stream_logs_blocking(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: (f64, f64),
        context: &str,
    ) -> Result<BlockingLogs, ClientError> {
        BlockingLogs::spawn(self.tail(url, headers, timeout, context)?)
    }

    fn tail(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: (f64, f64),
        context: &str,
    ) -> Result<Tail, ClientError> {
        let url = websocket_to_http_url(url).map_err(|e| with_ctx(context, e.into()))?;
        let opts = options(self.limits, headers, context)
            .timeout_pair(timeout.0, timeout.1)
            .map_err(|e| with_ctx(context, e))?;
        Ok(Tail::new(url, opts))
    }
}

fn options(limits: StreamLimits, headers: &[(&str, &str)], context: &str) -> TailOptions {
    headers
        .iter()
        .fold(TailOptions::new(context).limits(limits), |o, (k, v)| {
            o.header(*k, *v)
        })
}

fn with_ctx(context: &str, e: ClientError) -> ClientError {
    ClientError::with_context(e.status(), context, e.message())
}
