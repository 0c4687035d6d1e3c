//! Local test servers (axum, or raw TCP for resets) and helpers shared by the logs tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bistream_logs::{ClientError, LogStream, StreamLimits, Tail, TailOptions};
use futures_util::StreamExt;
use tokio::net::TcpListener;

pub mod tls;

/// Every wait in a test is bounded by this (generous: the machine is shared).
pub const LIMIT: Duration = Duration::from_secs(30);

/// Serves `router` on 127.0.0.1 port 0.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A loopback port with nothing listening.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Options with a context, short-but-safe timeouts and `limits`.
pub fn opts(limits: StreamLimits) -> TailOptions {
    TailOptions::new("job test-1")
        .limits(limits)
        .timeouts(Duration::from_secs(10), Some(Duration::from_secs(10)))
}

/// Builds limits from a closure over the builder.
pub fn limits(
    f: impl FnOnce(bistream_core::StreamLimitsBuilder) -> bistream_core::StreamLimitsBuilder,
) -> StreamLimits {
    f(StreamLimits::builder()).build().unwrap()
}

/// Collects every line and the final error, if any.
pub async fn collect(stream: LogStream) -> (Vec<String>, Option<ClientError>) {
    tokio::time::timeout(LIMIT, async move {
        let mut stream = stream;
        let mut lines = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(l) => lines.push(l),
                Err(e) => {
                    assert!(stream.next().await.is_none(), "nothing after the error");
                    return (lines, Some(e));
                }
            }
        }
        (lines, None)
    })
    .await
    .expect("the stream ends in time")
}

/// Tails `url` with `opts` and collects.
pub async fn tail(url: &str, opts: TailOptions) -> (Vec<String>, Option<ClientError>) {
    collect(Tail::new(url, opts).into_stream()).await
}

/// `prefix0`, `prefix1`, ...
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Checks an error's status, that it names the context and that it contains `needle`.
pub fn assert_error(e: &ClientError, code: u16, needle: &str) {
    let text = e.to_string();
    assert_eq!(e.status_code(), code, "{text}");
    assert!(text.contains("job test-1"), "context missing: {text}");
    assert!(text.contains(needle), "{needle:?} missing: {text}");
}
