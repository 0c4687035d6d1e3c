//! Shared utilities used by every bistream part: stream limits, status-coded errors,
//! input validation, URL conversion and error-message sanitizing.
#![forbid(unsafe_code)]
