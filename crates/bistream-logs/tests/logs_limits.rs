//! Exact limits on endless streams, oversized lines, and prompt close when the consumer
//! drops the stream or the blocking iterator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use bistream_logs::{BlockingLogs, Tail};
use bytes::Bytes;
use futures_util::StreamExt;
use support::*;
use tokio::sync::oneshot;

/// Endless numbered lines, `per_frame` per WebSocket frame (`line 0\nline 1\n...`). The
/// server reports through `done` when its sending fails (the client went away).
async fn endless_ws(per_frame: usize, done: Option<oneshot::Sender<u64>>) -> String {
    let done = Arc::new(std::sync::Mutex::new(done));
    let router = Router::new().route(
        "/tail",
        get(move |ws: WebSocketUpgrade| {
            let done = done.clone();
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    let mut i = 0u64;
                    loop {
                        let mut frame = String::new();
                        for _ in 0..per_frame {
                            frame.push_str(&format!("line {i}\n"));
                            i += 1;
                        }
                        if socket.send(Message::Text(frame.into())).await.is_err() {
                            break;
                        }
                    }
                    if let Some(tx) = done.lock().unwrap().take() {
                        let _ = tx.send(i);
                    }
                })
            }
        }),
    );
    format!("ws://{}/tail", serve(router).await)
}

/// Endless numbered lines over chunked HTTP, a few lines per chunk; `sent` counts chunks the
/// server produced.
async fn endless_http(sent: Arc<AtomicU64>) -> String {
    let router = Router::new().route(
        "/logs",
        get(move || {
            let sent = sent.clone();
            async move {
                let s = futures_util::stream::unfold(0u64, move |i| {
                    let sent = sent.clone();
                    async move {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let chunk = format!("line {i}\nline {}\nline {}\n", i + 1, i + 2);
                        Some((Ok::<_, Infallible>(Bytes::from(chunk)), i + 3))
                    }
                });
                Body::from_stream(s)
            }
        }),
    );
    format!("http://{}/logs", serve(router).await)
}

#[tokio::test]
async fn max_lines_stops_an_endless_websocket_exactly() {
    let url = endless_ws(7, None).await;
    let (lines, err) = tail(&url, opts(limits(|b| b.max_lines(1000)))).await;
    assert_eq!(lines, numbered("line ", 1000));
    assert_error(&err.unwrap(), 429, "max_lines is 1000, attempted 1001");
}

#[tokio::test]
async fn max_lines_stops_an_endless_http_body_exactly() {
    let url = endless_http(Arc::default()).await;
    let (lines, err) = tail(&url, opts(limits(|b| b.max_lines(1000)))).await;
    assert_eq!(lines, numbered("line ", 1000));
    assert_error(&err.unwrap(), 429, "max_lines is 1000, attempted 1001");
}

#[tokio::test]
async fn max_bytes_delivers_everything_up_to_the_limit() {
    // "line 0".."line 9" are 6 bytes, "line 10".. 7 bytes: 60 + 7 * 10 = 130 bytes in 20 lines.
    let url = endless_http(Arc::default()).await;
    let (lines, err) = tail(
        &url,
        opts(limits(|b| b.max_bytes(130).max_message_size(100))),
    )
    .await;
    assert_eq!(lines, numbered("line ", 20));
    assert_error(&err.unwrap(), 429, "max_bytes is 130, attempted 137");
    let url = endless_ws(3, None).await;
    let (lines, err) = tail(
        &url,
        opts(limits(|b| b.max_bytes(136).max_message_size(100))),
    )
    .await;
    assert_eq!(lines, numbered("line ", 20));
    assert_error(&err.unwrap(), 429, "max_bytes is 136, attempted 137");
}

#[tokio::test]
async fn max_messages_counts_websocket_frames_exactly() {
    let url = endless_ws(4, None).await;
    let (lines, err) = tail(&url, opts(limits(|b| b.max_messages(25)))).await;
    assert_eq!(
        lines,
        numbered("line ", 100),
        "every line of the first 25 frames"
    );
    assert_error(&err.unwrap(), 429, "max_messages is 25, attempted 26");
}

#[tokio::test]
async fn oversized_lines_are_skipped_and_counted() {
    let big = "x".repeat(50_000);
    let frames = vec![
        format!("before\n{big}\nafter\n"),
        format!("{}", "y".repeat(2000)),
        format!("{}\nend\n", "y".repeat(2000)),
    ];
    let router = Router::new().route(
        "/tail",
        get(move |ws: WebSocketUpgrade| {
            let frames = frames.clone();
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    for f in frames {
                        let _ = socket.send(Message::Text(f.into())).await;
                    }
                    let _ = socket.send(Message::Close(None)).await;
                })
            }
        }),
    );
    let url = format!("ws://{}/tail", serve(router).await);
    let mut stream = Tail::new(&url, opts(limits(|b| b.max_message_size(3000)))).into_stream();
    let mut lines = Vec::new();
    while let Some(item) = tokio::time::timeout(LIMIT, stream.next()).await.unwrap() {
        lines.push(item.unwrap());
    }
    assert_eq!(lines, ["before", "after", "end"]);
    let stats = stream.stats();
    assert_eq!(
        (stats.lines, stats.skipped, stats.skipped_bytes),
        (3, 2, 54_000)
    );
    assert_eq!(stats.bytes, 6 + 5 + 3);
    assert_eq!(stats.messages, 3);
}

#[tokio::test]
async fn oversized_lines_still_count_toward_max_lines() {
    let router = Router::new().route(
        "/logs",
        get(|| async { format!("ok\n{}\n{}\nnever\n", "x".repeat(100), "y".repeat(100)) }),
    );
    let url = format!("http://{}/logs", serve(router).await);
    let (lines, err) = tail(&url, opts(limits(|b| b.max_lines(3).max_message_size(50)))).await;
    assert_eq!(lines, ["ok"]);
    assert_error(&err.unwrap(), 429, "max_lines is 3, attempted 4");
}

#[tokio::test]
async fn a_websocket_message_over_the_frame_cap_is_a_429() {
    let router = Router::new().route(
        "/tail",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                let _ = socket.send(Message::Text("small\n".into())).await;
                let _ = socket
                    .send(Message::Binary(Bytes::from(vec![b'z'; 100_000])))
                    .await;
                let _ = tokio::time::timeout(LIMIT, socket.recv()).await;
            })
        }),
    );
    let url = format!("ws://{}/tail", serve(router).await);
    let (lines, err) = tail(&url, opts(Default::default()).max_frame_size(64 * 1024)).await;
    assert_eq!(lines, ["small"]);
    assert_error(&err.unwrap(), 429, "exceeds the maximum frame size");
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection_promptly() {
    let (tx, rx) = oneshot::channel();
    let url = endless_ws(10, Some(tx)).await;
    let mut stream = Tail::new(&url, opts(Default::default())).into_stream();
    for expected in numbered("line ", 5) {
        assert_eq!(stream.next().await.unwrap().unwrap(), expected);
    }
    drop(stream);
    let sent = tokio::time::timeout(LIMIT, rx)
        .await
        .expect("server saw the close")
        .unwrap();
    assert!(sent >= 10);
}

#[tokio::test]
async fn blocking_iterator_is_bounded_and_closes_when_dropped() {
    let (tx, rx) = oneshot::channel();
    let url = endless_ws(10, Some(tx)).await;
    let tail = Tail::new(&url, opts(limits(|b| b.queue_size(4).max_lines(1_000_000))));
    let stats = tail.stats();
    let handle = tokio::task::spawn_blocking(move || {
        let mut lines = BlockingLogs::spawn(tail).unwrap();
        let first: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
        assert_eq!(first, numbered("line ", 3));
        // While nobody reads, the network thread stops after filling the queue: the delivered
        // count never exceeds what was read + queue_size + the one line waiting to be queued.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
            assert!(
                stats.snapshot().lines <= 3 + 4 + 1,
                "{:?}",
                stats.snapshot()
            );
        }
        drop(lines);
    });
    tokio::time::timeout(LIMIT, handle).await.unwrap().unwrap();
    tokio::time::timeout(LIMIT, rx)
        .await
        .expect("server saw the close")
        .unwrap();
}

#[tokio::test]
async fn dropping_a_blocking_iterator_waiting_for_data_is_prompt() {
    let router = Router::new().route(
        "/tail",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                let _ = socket.send(Message::Text("one\n".into())).await;
                let _ = tokio::time::timeout(LIMIT, socket.recv()).await;
            })
        }),
    );
    let url = format!("ws://{}/tail", serve(router).await);
    let tail = Tail::new(
        &url,
        opts(Default::default()).timeouts(Duration::from_secs(10), None),
    );
    let handle = tokio::task::spawn_blocking(move || {
        let mut lines = BlockingLogs::spawn(tail).unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), "one");
        drop(lines); // the network thread is waiting forever for data: drop must not hang
    });
    tokio::time::timeout(LIMIT, handle)
        .await
        .expect("drop returned")
        .unwrap();
}

/// The fast path of `next_lines` (a chunk's run of checked lines admitted as one batch)
/// agrees with one line per call (`next_line`, the general path) on every limit landing
/// anywhere inside a chunk (`max_lines`, `max_bytes`, and on WebSocket `max_messages`; a
/// call may take several received chunks): the same lines, the same 429 text, the same counters, over
/// WebSocket text frames and chunked HTTP, with overlong (skipped) lines, `\r\n`, a line
/// split across chunks and invalid UTF-8 among them.
#[tokio::test]
async fn batches_agree_with_single_lines_on_every_limit() {
    const CHUNKS: [&[u8]; 5] = [
        b"alpha\nbeta\r\ngamma\ndelta is a line that is far too long\nepsilon\nze",
        b"ta\neta\ntheta\n",
        b"iota \xff\nkappa\nlambda\n",
        b"\nmu\nnu is another line too long for the limit\nxi\nomicron\npi\n",
        b"rho\nsigma\ntau\n",
    ];
    let ws = Router::new().route(
        "/tail",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                for c in CHUNKS {
                    let msg = match std::str::from_utf8(c) {
                        Ok(t) => Message::Text(t.into()),
                        Err(_) => Message::Binary(Bytes::from_static(c)),
                    };
                    if socket.send(msg).await.is_err() {
                        return;
                    }
                }
                let _ = socket.send(Message::Close(None)).await;
            })
        }),
    );
    let http = Router::new().route(
        "/logs",
        get(|| async {
            let chunks = CHUNKS.map(|c| Ok::<_, Infallible>(Bytes::from_static(c)));
            Body::from_stream(futures_util::stream::iter(chunks))
        }),
    );
    let urls = [
        format!("ws://{}/tail", serve(ws).await),
        format!("http://{}/logs", serve(http).await),
    ];
    // (max_lines, max_bytes, max_messages): every line and byte limit, then (WebSocket
    // only: an HTTP body has no messages) every message limit.
    let mut cases = Vec::new();
    for max_lines in 1..=22u64 {
        for max_bytes in [20u64, 41, 42, 64, 95, 1000] {
            cases.push((max_lines, max_bytes, u64::MAX));
        }
    }
    for max_messages in 1..=6u64 {
        cases.push((22, 1000, max_messages));
    }
    for url in &urls {
        for &(max_lines, max_bytes, max_messages) in &cases {
            let opts = || {
                opts(limits(|b| {
                    b.max_lines(max_lines)
                        .max_bytes(max_bytes)
                        .max_messages(max_messages)
                        .max_message_size(20)
                }))
            };
            let mut single = Tail::new(url.clone(), opts());
            let mut want = Vec::new();
            while let Some(line) = single.next_line().await {
                match line {
                    Ok(l) => want.push(l),
                    Err(e) => want.push(e.to_string()),
                }
            }
            let mut batched = Tail::new(url.clone(), opts());
            let mut got = Vec::new();
            tokio::time::timeout(LIMIT, async {
                loop {
                    let before = got.len();
                    let Some(batch) = batched.next_lines(|l| got.push(l.to_owned())).await else {
                        break;
                    };
                    match batch {
                        // A call's count is the lines it handed out, over every chunk it took.
                        Ok(n) => assert_eq!(n, got.len() - before, "{url}"),
                        Err(e) => got.push(e.to_string()),
                    }
                }
            })
            .await
            .unwrap();
            let case = format!(
                "{url} max_lines {max_lines} max_bytes {max_bytes} max_messages {max_messages}"
            );
            assert_eq!(got, want, "{case}");
            assert_eq!(
                batched.stats().snapshot(),
                single.stats().snapshot(),
                "{case}"
            );
        }
    }
}
