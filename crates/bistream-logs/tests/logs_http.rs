//! HTTP tails against local axum (and raw TCP) servers: chunk framing, statuses, timeouts,
//! truncated bodies and resets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bistream_logs::HttpStreamManager;
use bytes::Bytes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A chunked body made of exactly these chunks, each flushed separately (with a short pause
/// so that they are not coalesced).
fn chunked(chunks: Vec<&'static [u8]>) -> Body {
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
        let c = it.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, Infallible>(Bytes::from_static(c)), it))
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn lines_are_reassembled_across_any_chunking() {
    let router = Router::new().route(
        "/logs",
        get(|| async {
            chunked(vec![
                b"a\nb\nc",
                b"d\r",
                b"\ne\r\n",
                b"caf\xc3",
                b"\xa9 \xf0\x9f",
                b"\xa6\x80\n",
                b"tail without newline",
            ])
        }),
    );
    let addr = serve(router).await;
    let (lines, err) = tail(&format!("http://{addr}/logs"), opts(Default::default())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        lines,
        ["a", "b", "cd", "e", "café 🦀", "tail without newline"]
    );
}

#[tokio::test]
async fn statuses_are_mapped_and_named_with_the_body() {
    let router = status_router("Server got itself in trouble");
    let addr = serve(router).await;
    let cases = [
        (
            "missing",
            404,
            "HTTP 404 Not Found: Job raysubmit_x does not exist",
        ),
        ("forbidden", 403, "HTTP 403 Forbidden"),
        ("gone", 404, "HTTP 410 Gone"),
        ("teapot", 400, "HTTP 418"),
        ("busy", 429, "HTTP 429 Too Many Requests"),
        ("bad-gateway", 503, "HTTP 502 Bad Gateway"),
        ("gw-timeout", 408, "HTTP 504 Gateway Timeout"),
        (
            "boom",
            500,
            "HTTP 500 Internal Server Error: Server got itself in trouble",
        ),
    ];
    for (path, code, needle) in cases {
        let (lines, err) = tail(&format!("http://{addr}/{path}"), opts(Default::default())).await;
        assert!(lines.is_empty());
        assert_error(&err.unwrap(), code, needle);
    }
}

#[tokio::test]
async fn refused_is_503() {
    let addr = closed_port().await;
    let (_, err) = tail(&format!("http://{addr}/logs"), opts(Default::default())).await;
    assert_error(&err.unwrap(), 503, "Connection refused");
}

/// A raw server: answers with `head` then `body` bytes, then ends as `end` says.
async fn raw(head: &'static str, body: &'static [u8], reset: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body).await.unwrap();
        tcp.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if reset {
            tcp.set_zero_linger().unwrap();
        }
        drop(tcp);
    });
    addr
}

const CHUNKED: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";

#[tokio::test]
async fn a_reset_mid_body_is_an_error_after_the_lines() {
    let addr = raw(CHUNKED, b"e\r\nline 1\nline 2\n\r\n", true).await;
    let (lines, err) = tail(&format!("http://{addr}/"), opts(Default::default())).await;
    assert_eq!(lines, ["line 1", "line 2"]);
    assert_error(&err.unwrap(), 503, "reading the response body");
}

#[tokio::test]
async fn a_body_cut_before_its_last_chunk_is_an_error() {
    let addr = raw(CHUNKED, b"9\r\nline 1\npa\r\n", false).await;
    let (lines, err) = tail(&format!("http://{addr}/"), opts(Default::default())).await;
    assert_eq!(lines, ["line 1"]);
    assert_error(&err.unwrap(), 503, "reading the response body");
}

#[tokio::test]
async fn a_content_length_body_works_too() {
    let addr = raw(
        "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n",
        b"one\ntwo\n",
        false,
    )
    .await;
    let (lines, err) = tail(&format!("http://{addr}/"), opts(Default::default())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(lines, ["one", "two"]);
}

#[tokio::test]
async fn no_headers_times_out_on_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let o = opts(Default::default()).timeouts(Duration::from_millis(300), None);
    let (_, err) = tail(&format!("http://{addr}/"), o).await;
    assert_error(&err.unwrap(), 408, "no response from");
}

#[tokio::test]
async fn a_silent_body_times_out_after_the_lines() {
    let router = Router::new().route(
        "/logs",
        get(|| async {
            let first = futures_util::stream::once(async {
                Ok::<_, Infallible>(Bytes::from_static(b"hello\n"))
            });
            Body::from_stream(futures_util::StreamExt::chain(
                first,
                futures_util::stream::pending(),
            ))
        }),
    );
    let addr = serve(router).await;
    let o = opts(Default::default())
        .timeouts(Duration::from_secs(10), Some(Duration::from_millis(300)));
    let (lines, err) = tail(&format!("http://{addr}/logs"), o).await;
    assert_eq!(lines, ["hello"]);
    assert_error(&err.unwrap(), 408, "idle timeout");
}

#[tokio::test]
async fn a_slow_server_is_followed_to_its_end() {
    let router = Router::new().route(
        "/logs",
        get(|| async {
            let s = futures_util::stream::unfold(0, |i| async move {
                if i == 5 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Ok::<_, Infallible>(Bytes::from(format!("slow {i}\n"))),
                    i + 1,
                ))
            });
            Body::from_stream(s)
        }),
    );
    let addr = serve(router).await;
    let manager = HttpStreamManager::new(Default::default());
    let (lines, err) = collect(manager.stream_logs(
        &format!("http://{addr}/logs"),
        &[],
        (5.0, 0.0),
        "job test-1",
    ))
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(lines, numbered("slow ", 5));
    let (_, err) = collect(manager.stream_logs(
        &format!("http://{addr}/logs"),
        &[],
        (0.0, 60.0),
        "job test-1",
    ))
    .await;
    assert_error(&err.unwrap(), 400, "timeout");
}

#[tokio::test]
async fn blocking_iterator_reads_the_same_lines() {
    let router = Router::new().route("/logs", get(|| async { chunked(vec![b"x\ny", b"\nz"]) }));
    let addr = serve(router).await;
    let url = format!("http://{addr}/logs");
    let lines = tokio::task::spawn_blocking(move || {
        let manager = HttpStreamManager::new(Default::default());
        manager
            .stream_logs_blocking(&url, &[], (5.0, 30.0), "job test-1")
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(lines, ["x", "y", "z"]);
}

/// `next_lines` (batches of borrowed lines, what the CLI uses), `next_line_ref` and
/// `next_line` agree line for line and on the limit error: lines inside a chunk, joined
/// across chunks, invalid UTF-8, overlong (skipped) lines, a chunk that begins inside a
/// character, and the last line without `\n`.
#[tokio::test]
async fn borrowed_and_owned_lines_are_the_same() {
    let router = Router::new().route(
        "/logs",
        get(|| async {
            chunked(vec![
                b"in one chunk\nspl",
                b"it line\r\nbad \xff byte\nthis line is far too long for the limit\nok\n",
                b"caf\xc3",
                b"\xa9\nnext \xc3\xa9\nno newline",
            ])
        }),
    );
    let addr = serve(router).await;
    let url = format!("http://{addr}/logs");
    let expected = [
        "in one chunk",
        "split line",
        "bad \u{fffd} byte",
        "ok",
        "café",
        "next é",
    ];
    for max_lines in [7, 5] {
        let opts = || opts(limits(|b| b.max_message_size(20).max_lines(max_lines)));
        let mut owned = bistream_logs::Tail::new(url.clone(), opts());
        let mut borrowed = bistream_logs::Tail::new(url.clone(), opts());
        let mut got = Vec::new();
        tokio::time::timeout(LIMIT, async {
            loop {
                let a = owned.next_line().await;
                let b = borrowed
                    .next_line_ref()
                    .await
                    .map(|r| r.map(|c| c.into_owned()));
                match (a, b) {
                    (None, None) => break,
                    (Some(Ok(a)), Some(Ok(b))) => {
                        assert_eq!(a, b);
                        got.push(a);
                    }
                    (Some(Err(a)), Some(Err(b))) => {
                        assert_eq!(a.to_string(), b.to_string());
                        assert_eq!(a.status_code(), 429);
                        got.push("429".into());
                    }
                    (a, b) => panic!("{a:?} vs {b:?}"),
                }
            }
        })
        .await
        .unwrap();
        // 7 lines: the skipped one counts toward max_lines, the unterminated last is the 8th.
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        if max_lines == 5 {
            want.truncate(4);
        }
        want.push("429".into());
        assert_eq!(got, want, "max_lines {max_lines}");
        assert_eq!(borrowed.stats().snapshot().skipped, 1);

        let mut batched = bistream_logs::Tail::new(url.clone(), opts());
        let mut all = Vec::new();
        tokio::time::timeout(LIMIT, async {
            while let Some(batch) = batched.next_lines(|l| all.push(l.to_owned())).await {
                match batch {
                    Ok(n) => assert!(n > 0, "a batch has lines"),
                    Err(e) => {
                        assert_eq!(e.status_code(), 429);
                        all.push("429".into());
                    }
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(all, want, "next_lines, max_lines {max_lines}");
        let stats = batched.stats().snapshot();
        assert_eq!((stats.skipped, stats.lines), (1, want.len() as u64 - 1));
    }
}
