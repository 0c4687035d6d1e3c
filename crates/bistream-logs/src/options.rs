//! What a tail needs besides its URL ([`TailOptions`]): headers, timeouts, limits, context.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bistream_core::{validate_timeout, ClientError, StreamLimits};

use crate::tls::TlsTrust;

/// Default connect timeout and idle timeout: 30 s (the seed's WebSocket `timeout=30.0`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on one WebSocket message, 16 MiB. A message is read whole before it is split
/// into lines, so this bounds memory per connection; Ray's frames never exceed about 4 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Options of one tail.
///
/// ```
/// use std::time::Duration;
/// use bistream_logs::TailOptions;
///
/// let opts = TailOptions::new("job job-12345")
///     .header("Authorization", "Bearer secret-token")
///     .timeouts(Duration::from_secs(5), Some(Duration::from_secs(60)));
/// assert_eq!(opts.context(), "job job-12345");
/// assert_eq!(opts.idle_timeout(), Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) limits: StreamLimits,
    pub(crate) context: String,
    pub(crate) max_frame_size: usize,
    pub(crate) tls: TlsTrust,
}

impl TailOptions {
    /// Defaults (30 s connect and idle timeouts, default [`StreamLimits`]) with the context
    /// string every error names, e.g. `"job raysubmit_1"`.
    pub fn new(context: impl Into<String>) -> Self {
        Self {
            headers: Vec::new(),
            connect_timeout: DEFAULT_TIMEOUT,
            idle_timeout: Some(DEFAULT_TIMEOUT),
            limits: StreamLimits::default(),
            context: context.into(),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            tls: TlsTrust::default(),
        }
    }

    /// Adds a request header (checked when connecting: an invalid name or value is a 400).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the limits.
    #[must_use]
    pub fn limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the connect timeout and the idle timeout (the longest wait for data, once
    /// connected; `None` waits forever). The connect timeout also bounds the HTTP response
    /// headers and the WebSocket handshake.
    #[must_use]
    pub fn timeouts(mut self, connect: Duration, idle: Option<Duration>) -> Self {
        self.connect_timeout = connect;
        self.idle_timeout = idle;
        self
    }

    /// One timeout for both, in seconds, validated with core's rules (the seed's WebSocket
    /// `timeout`): finite, positive, at most 300 s.
    ///
    /// # Errors
    /// A 400 [`ClientError`] naming the bad value.
    ///
    /// ```
    /// use bistream_logs::TailOptions;
    /// assert!(TailOptions::new("x").timeout_secs(30.0).is_ok());
    /// assert_eq!(TailOptions::new("x").timeout_secs(-1.0).unwrap_err().status_code(), 400);
    /// ```
    pub fn timeout_secs(self, seconds: f64) -> Result<Self, ClientError> {
        let t = validate_timeout(seconds)?;
        Ok(self.timeouts(t, Some(t)))
    }

    /// The seed's HTTP `(connect, read)` tuple, in seconds, each validated; a read timeout of
    /// `0` means wait forever.
    ///
    /// # Errors
    /// A 400 [`ClientError`] naming the bad value.
    ///
    /// ```
    /// use bistream_logs::TailOptions;
    /// let o = TailOptions::new("x").timeout_pair(5.0, 0.0)?;
    /// assert_eq!(o.idle_timeout(), None);
    /// # Ok::<(), bistream_core::ClientError>(())
    /// ```
    pub fn timeout_pair(self, connect: f64, read: f64) -> Result<Self, ClientError> {
        let c = validate_timeout(connect)?;
        let r = if read == 0.0 {
            None
        } else {
            Some(validate_timeout(read)?)
        };
        Ok(self.timeouts(c, r))
    }

    /// Sets the cap on one WebSocket message (see [`DEFAULT_MAX_FRAME_SIZE`]); a larger
    /// message ends the stream with a 429.
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes.max(1);
        self
    }

    /// For `wss`/`https`: trust only the certificates in this PEM file (a private CA, or a
    /// self-signed server certificate) instead of the system roots. Read when connecting: an
    /// unreadable file or one without a certificate is a 400. The last TLS setting wins.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls = TlsTrust::CaFile(path.into());
        self
    }

    /// For `wss`/`https`: use this rustls configuration as is (client certificates, custom
    /// verification). The last TLS setting wins.
    #[must_use]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = TlsTrust::Custom(config);
        self
    }

    /// The context string.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The idle timeout (`None`: wait forever).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The limits.
    pub fn stream_limits(&self) -> &StreamLimits {
        &self.limits
    }
}
