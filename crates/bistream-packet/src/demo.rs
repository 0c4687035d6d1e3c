//! The built-in test service of `bistream packet serve --demo`, also used by tests and the
//! benchmark harness: rq_type 0 echoes (flags and payload), 1 reverses the payload (flags =
//! payload length), 2 always fails, 3 waits 200 ms then echoes, any other rq_type fails.

use std::time::Duration;

use bytes::Bytes;

use crate::handler::{handler_fn, Reply, RequestHandler};

/// rq_type of the echo request.
pub const ECHO: u64 = 0;
/// rq_type of the reverse request.
pub const REVERSE: u64 = 1;
/// rq_type of the request that always fails.
pub const FAIL: u64 = 2;
/// rq_type of the slow echo (200 ms).
pub const SLOW_ECHO: u64 = 3;
/// The delay of [`SLOW_ECHO`].
pub const SLOW_DELAY: Duration = Duration::from_millis(200);

/// The demo service as a [`RequestHandler`].
pub fn demo_service() -> impl RequestHandler {
    handler_fn(|rq_type, flags, payload: Bytes| async move {
        match rq_type {
            ECHO => Ok(Reply::FlagsPayload(flags, payload)),
            REVERSE => {
                let mut v = payload.to_vec();
                v.reverse();
                Ok(Reply::FlagsPayload(payload.len() as u64, v.into()))
            }
            FAIL => Err("rq_type 2 always fails".to_string()),
            SLOW_ECHO => {
                tokio::time::sleep(SLOW_DELAY).await;
                Ok(Reply::FlagsPayload(flags, payload))
            }
            other => Err(format!("unknown rq_type {other}")),
        }
    })
}
