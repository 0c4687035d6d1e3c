//! The status-coded error ([`ClientError`], [`Status`]) mirroring the seed's
//! `ClientError(status, message)`.
//!
//! Every constructor runs the message through [`sanitize`](crate::sanitize()) so a
//! `ClientError` can be logged or returned to a peer without leaking credentials; the fields are
//! private so no unsanitized message can be put in one.

use std::fmt;

use crate::limits::{LimitExceeded, LimitsError};
use crate::sanitize::{sanitize, sanitize_error_message};
use crate::url::UrlError;
use crate::validate::ValidationError;

/// The status class of a [`ClientError`], with its HTTP-style code.
///
/// ```
/// use bistream_core::Status;
/// assert_eq!(Status::LimitExceeded.code(), 429);
/// assert_eq!(Status::from_code(503), Some(Status::ConnectionFailed));
/// assert_eq!(Status::from_code(418), None);
/// assert_eq!(Status::Timeout.to_string(), "408 timeout");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 400: the caller's input is invalid (bad id, timeout, URL, configuration).
    InvalidInput,
    /// 401: the server wants (other) credentials.
    Unauthorized,
    /// 403: the credentials were accepted but do not allow this.
    Forbidden,
    /// 404: the endpoint or resource does not exist.
    NotFound,
    /// 408: connecting or reading timed out.
    Timeout,
    /// 429: a stream limit was exceeded.
    LimitExceeded,
    /// 500: internal error or unsupported feature.
    Internal,
    /// 503: the connection failed (refused, reset, network error).
    ConnectionFailed,
}

impl Status {
    /// All statuses, in code order.
    pub const ALL: [Status; 8] = [
        Status::InvalidInput,
        Status::Unauthorized,
        Status::Forbidden,
        Status::NotFound,
        Status::Timeout,
        Status::LimitExceeded,
        Status::Internal,
        Status::ConnectionFailed,
    ];

    /// The numeric code (400, 401, 403, 404, 408, 429, 500, 503).
    ///
    /// ```
    /// assert_eq!(bistream_core::Status::InvalidInput.code(), 400);
    /// ```
    pub fn code(self) -> u16 {
        match self {
            Status::InvalidInput => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::Timeout => 408,
            Status::LimitExceeded => 429,
            Status::Internal => 500,
            Status::ConnectionFailed => 503,
        }
    }

    /// The status for a code, if it is one of [`Status::ALL`] (see [`Status::from_http`] for
    /// mapping any HTTP status).
    ///
    /// ```
    /// assert_eq!(bistream_core::Status::from_code(404), Some(bistream_core::Status::NotFound));
    /// ```
    pub fn from_code(code: u16) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// A short lowercase reason, e.g. `"limit exceeded"`.
    ///
    /// ```
    /// assert_eq!(bistream_core::Status::ConnectionFailed.reason(), "connection failed");
    /// ```
    pub fn reason(self) -> &'static str {
        match self {
            Status::InvalidInput => "invalid input",
            Status::Unauthorized => "unauthorized",
            Status::Forbidden => "forbidden",
            Status::NotFound => "not found",
            Status::Timeout => "timeout",
            Status::LimitExceeded => "limit exceeded",
            Status::Internal => "internal error",
            Status::ConnectionFailed => "connection failed",
        }
    }
}

impl Status {
    /// The status class for an HTTP status a server answered with (the answer was not a
    /// success): 401, 403, 404, 408 and 429 keep their meaning; 410 is a 404; other 4xx are
    /// 400; 502 and 503 are 503 (the service behind is unreachable); 504 is a 408; other
    /// codes (other 5xx, or an unexpected 1xx/2xx/3xx) are 500. The caller names the
    /// original code in the message (see [`ClientError::http_status`]).
    ///
    /// ```
    /// use bistream_core::Status;
    /// assert_eq!(Status::from_http(404), Status::NotFound);
    /// assert_eq!(Status::from_http(410), Status::NotFound);
    /// assert_eq!(Status::from_http(418), Status::InvalidInput);
    /// assert_eq!(Status::from_http(504), Status::Timeout);
    /// assert_eq!(Status::from_http(502), Status::ConnectionFailed);
    /// assert_eq!(Status::from_http(507), Status::Internal);
    /// ```
    pub fn from_http(code: u16) -> Status {
        match code {
            401 => Status::Unauthorized,
            403 => Status::Forbidden,
            404 | 410 => Status::NotFound,
            408 | 504 => Status::Timeout,
            429 => Status::LimitExceeded,
            502 | 503 => Status::ConnectionFailed,
            400..=499 => Status::InvalidInput,
            _ => Status::Internal,
        }
    }

    /// The status class for an I/O error while connecting or streaming: a timeout is 408,
    /// everything else (refused, unreachable, DNS failure, reset, broken pipe, early end) is
    /// 503.
    ///
    /// ```
    /// use std::io::{Error, ErrorKind};
    /// use bistream_core::Status;
    /// assert_eq!(Status::from_io(&Error::from(ErrorKind::ConnectionRefused)), Status::ConnectionFailed);
    /// assert_eq!(Status::from_io(&Error::from(ErrorKind::TimedOut)), Status::Timeout);
    /// ```
    pub fn from_io(err: &std::io::Error) -> Status {
        match err.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Status::Timeout,
            _ => Status::ConnectionFailed,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

/// An error with a [`Status`] and a sanitized message. `Display` is
/// `"<code> <reason>: <message>"` and never contains credentials.
///
/// ```
/// use bistream_core::{ClientError, Status};
///
/// let e = ClientError::connection_failed("connect to https://bob:hunter2@ray:8265 failed");
/// assert_eq!(e.status(), Status::ConnectionFailed);
/// assert_eq!(e.status_code(), 503);
/// assert_eq!(e.to_string(), "503 connection failed: connect to https://[REDACTED]@ray:8265 failed");
/// assert!(!format!("{e:?}").contains("hunter2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ClientError {
    status: Status,
    message: String,
}

impl ClientError {
    /// An error with `status`; `message` is sanitized.
    ///
    /// ```
    /// use bistream_core::{ClientError, Status};
    /// let e = ClientError::new(Status::Internal, "websocket support not available");
    /// assert_eq!(e.message(), "websocket support not available");
    /// ```
    pub fn new(status: Status, message: impl AsRef<str>) -> Self {
        Self {
            status,
            message: sanitize(message.as_ref()),
        }
    }

    /// An error whose message is prefixed with a context, as the seed's
    /// `sanitize_error_message(message, context)` does; both are sanitized.
    ///
    /// ```
    /// use bistream_core::{ClientError, Status};
    /// let e = ClientError::with_context(Status::Timeout, "job job-12345", "read timed out");
    /// assert_eq!(e.to_string(), "408 timeout: job job-12345: read timed out");
    /// ```
    pub fn with_context(status: Status, context: &str, message: impl AsRef<str>) -> Self {
        Self {
            status,
            message: sanitize_error_message(message.as_ref(), context),
        }
    }

    /// 400 [`Status::InvalidInput`].
    ///
    /// ```
    /// assert_eq!(bistream_core::ClientError::invalid_input("bad").status_code(), 400);
    /// ```
    pub fn invalid_input(message: impl AsRef<str>) -> Self {
        Self::new(Status::InvalidInput, message)
    }

    /// 404 [`Status::NotFound`].
    ///
    /// ```
    /// assert_eq!(bistream_core::ClientError::not_found("no such job").status_code(), 404);
    /// ```
    pub fn not_found(message: impl AsRef<str>) -> Self {
        Self::new(Status::NotFound, message)
    }

    /// 408 [`Status::Timeout`].
    ///
    /// ```
    /// assert_eq!(bistream_core::ClientError::timeout("read timed out").status_code(), 408);
    /// ```
    pub fn timeout(message: impl AsRef<str>) -> Self {
        Self::new(Status::Timeout, message)
    }

    /// 429 [`Status::LimitExceeded`].
    ///
    /// ```
    /// assert_eq!(bistream_core::ClientError::limit_exceeded("too many").status_code(), 429);
    /// ```
    pub fn limit_exceeded(message: impl AsRef<str>) -> Self {
        Self::new(Status::LimitExceeded, message)
    }

    /// 500 [`Status::Internal`].
    ///
    /// ```
    /// assert_eq!(bistream_core::ClientError::internal("unsupported").status_code(), 500);
    /// ```
    pub fn internal(message: impl AsRef<str>) -> Self {
        Self::new(Status::Internal, message)
    }

    /// 503 [`Status::ConnectionFailed`].
    ///
    /// ```
    /// assert_eq!(bistream_core::ClientError::connection_failed("refused").status_code(), 503);
    /// ```
    pub fn connection_failed(message: impl AsRef<str>) -> Self {
        Self::new(Status::ConnectionFailed, message)
    }

    /// The error for an HTTP answer that was not a success: the status class from
    /// [`Status::from_http`], and a message naming the original code, its reason phrase and
    /// what the server said (`detail`, e.g. the start of the body; sanitized like everything).
    ///
    /// ```
    /// use bistream_core::{ClientError, Status};
    /// let e = ClientError::http_status(404, Some("Not Found"), "job raysubmit_1", "Job raysubmit_1 does not exist");
    /// assert_eq!(e.status(), Status::NotFound);
    /// assert_eq!(e.to_string(), "404 not found: job raysubmit_1: server answered HTTP 404 Not Found: Job raysubmit_1 does not exist");
    /// let e = ClientError::http_status(418, None, "", "");
    /// assert_eq!(e.to_string(), "400 invalid input: server answered HTTP 418");
    /// ```
    pub fn http_status(code: u16, reason: Option<&str>, context: &str, detail: &str) -> Self {
        let mut message = format!("server answered HTTP {code}");
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            message.push(' ');
            message.push_str(reason);
        }
        let detail = detail.trim();
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        Self::with_context(Status::from_http(code), context, message)
    }

    /// The status.
    ///
    /// ```
    /// use bistream_core::{ClientError, Status};
    /// assert_eq!(ClientError::not_found("x").status(), Status::NotFound);
    /// ```
    pub fn status(&self) -> Status {
        self.status
    }

    /// The numeric status code.
    ///
    /// ```
    /// assert_eq!(bistream_core::ClientError::timeout("x").status_code(), 408);
    /// ```
    pub fn status_code(&self) -> u16 {
        self.status.code()
    }

    /// The sanitized message (without the status prefix).
    ///
    /// ```
    /// let e = bistream_core::ClientError::internal("token=abc123");
    /// assert_eq!(e.message(), "token=[REDACTED]");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A limit hit is a 429.
///
/// ```
/// use bistream_core::{ClientError, Limit, LimitExceeded};
/// let e: ClientError = LimitExceeded { limit: Limit::MaxBytes, limit_value: 1, attempted: 2 }.into();
/// assert_eq!(e.status_code(), 429);
/// ```
impl From<LimitExceeded> for ClientError {
    fn from(e: LimitExceeded) -> Self {
        Self::limit_exceeded(e.to_string())
    }
}

/// An invalid limits configuration is a 400.
impl From<LimitsError> for ClientError {
    fn from(e: LimitsError) -> Self {
        Self::invalid_input(e.to_string())
    }
}

/// An invalid id or timeout is a 400.
///
/// ```
/// use bistream_core::{validate_resource_id, ClientError};
/// let e: ClientError = validate_resource_id("job/../x", "job").unwrap_err().into();
/// assert_eq!(e.status_code(), 400);
/// ```
impl From<ValidationError> for ClientError {
    fn from(e: ValidationError) -> Self {
        Self::invalid_input(e.to_string())
    }
}

/// An unusable URL is a 400.
impl From<UrlError> for ClientError {
    fn from(e: UrlError) -> Self {
        Self::invalid_input(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_roundtrip() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(
            Status::ALL.map(Status::code),
            [400, 401, 403, 404, 408, 429, 500, 503]
        );
    }

    #[test]
    fn constructors_sanitize() {
        let cases = [
            ClientError::invalid_input("password=hunter2"),
            ClientError::not_found("Authorization: Bearer abcdefgh"),
            ClientError::timeout("https://u:hunter2@h/"),
            ClientError::limit_exceeded("api_key=hunter2"),
            ClientError::internal("secret: hunter2"),
            ClientError::connection_failed("token=hunter2"),
            ClientError::with_context(Status::Internal, "password=hunter2", "x"),
        ];
        for e in cases {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("abcdefgh"), "{shown}");
            assert!(shown.contains("[REDACTED]"), "{shown}");
        }
    }

    #[test]
    fn control_characters_do_not_reach_the_message() {
        let e = ClientError::internal("line1\nFAKE LOG LINE\x1b[31m");
        assert_eq!(e.message(), "line1\\nFAKE LOG LINE\\u{1b}[31m");
    }
}
