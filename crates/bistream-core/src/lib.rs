//! The one home of the concepts every bistream part shares — the synapse network
//! utilities, done right. bistream-logs is built on all of it; the relay, rpc and packet
//! parts use the URL, timeout, sanitizing and status-coded error helpers:
//!
//! - [`StreamLimits`] (validated configuration, TOML-ready) and [`LimitTracker`] (enforces
//!   them on one stream, with typed [`LimitExceeded`] errors and counted skips);
//! - [`ClientError`] with a [`Status`] (400/401/403/404/408/429/500/503, mapped from HTTP
//!   statuses and I/O errors by [`Status::from_http`] and [`Status::from_io`]) whose message is always
//!   sanitized;
//! - input validation: [`validate_resource_id`], [`validate_timeout`],
//!   [`validate_timeout_max`]; durations from flags and config files: [`parse_timeout`],
//!   [`parse_secs`], [`parse_millis`], [`validate_duration`];
//! - URLs: [`http_to_websocket_url`], [`websocket_to_http_url`], [`parse_web_url`] (with its
//!   [`Scheme`]), [`redact_url`] for logs;
//! - credential redaction for logs, terminals and errors: [`sanitize`],
//!   [`sanitize_error_message`], with the one marker [`REDACTED`] (`[REDACTED]`);
//! - logging what clients send, escaped and rate-limited per client address: [`logsafe`];
//! - the file-descriptor limit of servers and the pacing of failed `accept`s: [`fdlimit`];
//! - with the `tls` feature, the one TLS client setup (roots, CA files, errors): `tls`.
//!
//! # Example
//!
//! ```
//! use bistream_core::{
//!     http_to_websocket_url, sanitize_error_message, validate_resource_id, validate_timeout,
//!     Admitted, ClientError, LimitTracker, Oversize, Status, StreamLimits,
//! };
//!
//! fn plan(job_id: &str, base: &str, timeout: f64) -> Result<(String, std::time::Duration), ClientError> {
//!     let job = validate_resource_id(job_id, "job")?;
//!     let timeout = validate_timeout(timeout)?;
//!     let url = http_to_websocket_url(&format!("{base}/jobs/{job}/logs/"))?;
//!     Ok((url, timeout))
//! }
//!
//! let (url, timeout) = plan("job-12345", "http://ray-cluster:8265", 30.0)?;
//! assert_eq!(url, "ws://ray-cluster:8265/jobs/job-12345/logs/");
//! assert_eq!(timeout.as_secs(), 30);
//! assert_eq!(plan("job/../x", "http://ray", 30.0).unwrap_err().status(), Status::InvalidInput);
//!
//! // Enforce limits on incoming lines; oversized lines are skipped and counted.
//! let limits: StreamLimits = toml::from_str("max_lines = 3\nmax_message_size = 16")?;
//! let mut tracker = LimitTracker::new(limits).with_oversize(Oversize::Skip);
//! let mut delivered = Vec::new();
//! let mut stopped = None;
//! for line in ["a", "a very long line over sixteen bytes", "b", "c"] {
//!     match tracker.admit_line(line.len()) {
//!         Ok(Admitted::Accepted) => delivered.push(line),
//!         Ok(Admitted::Skipped { .. }) => {}
//!         Err(e) => {
//!             stopped = Some(ClientError::from(e));
//!             break;
//!         }
//!     }
//! }
//! assert_eq!(delivered, ["a", "b"]);
//! assert_eq!(tracker.usage().skipped, 1);
//! let err = stopped.expect("fourth line exceeds max_lines");
//! assert_eq!(err.status_code(), 429);
//! assert_eq!(err.to_string(), "429 limit exceeded: stream limit exceeded: max_lines is 3, attempted 4");
//!
//! // Never log a credential.
//! let log = sanitize_error_message("handshake failed: Authorization: Bearer eyJ.x.y", "job job-12345");
//! assert_eq!(log, "job job-12345: handshake failed: Authorization: Bearer [REDACTED]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod duration;
pub mod error;
pub mod fdlimit;
pub mod limits;
pub mod logsafe;
pub mod sanitize;
#[cfg(feature = "tls")]
pub mod tls;
pub mod url;
pub mod validate;

pub use duration::{parse_millis, parse_secs, parse_timeout, validate_duration};
pub use error::{ClientError, Status};
pub use limits::{
    Admitted, Limit, LimitExceeded, LimitTracker, LimitsError, LineRoom, Oversize, StreamLimits,
    StreamLimitsBuilder, Usage,
};
pub use sanitize::{sanitize, sanitize_error_message, REDACTED};
pub use url::{
    http_to_websocket_url, parse_web_url, redact_url, websocket_to_http_url, Scheme, UrlError,
};
pub use validate::{validate_resource_id, validate_timeout, validate_timeout_max, ValidationError};
