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

/// A server whose paths answer plain HTTP errors, for the status mapping of both transports
/// (an HTTP tail gets the response; a WebSocket handshake is refused with it): `/missing` 404
/// with a Ray-like body, `/auth` 401, `/forbidden` 403, `/gone` 410, `/teapot` 418, `/busy`
/// 429, `/bad-gateway` 502, `/gw-timeout` 504, and `/boom` 500 with `boom_body`.
pub fn status_router(boom_body: &'static str) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    let status = |code: StatusCode| get(move || async move { code });
    axum::Router::new()
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "Job raysubmit_x does not exist") }),
        )
        .route("/auth", status(StatusCode::UNAUTHORIZED))
        .route("/forbidden", status(StatusCode::FORBIDDEN))
        .route("/gone", status(StatusCode::GONE))
        .route("/teapot", status(StatusCode::IM_A_TEAPOT))
        .route("/busy", status(StatusCode::TOO_MANY_REQUESTS))
        .route("/bad-gateway", status(StatusCode::BAD_GATEWAY))
        .route("/gw-timeout", status(StatusCode::GATEWAY_TIMEOUT))
        .route(
            "/boom",
            get(move || async move { (StatusCode::INTERNAL_SERVER_ERROR, boom_body) }),
        )
}
