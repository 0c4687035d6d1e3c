//! WebSocket tails against local axum (and raw tungstenite) servers: framing, normal and
//! abnormal ends, resets, handshake statuses, timeouts, no permessage-deflate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use bistream_logs::{Tail, TailOptions, WebSocketStreamManager};
use bytes::Bytes;
use support::*;

/// A server that sends `frames` then closes with `close` (None: drops the socket).
async fn script(frames: Vec<Message>, close: Option<(u16, &'static str)>) -> String {
    let router = Router::new().route(
        "/tail",
        get(move |ws: WebSocketUpgrade| async move {
            ws.on_upgrade(move |mut socket: WebSocket| async move {
                for f in frames {
                    if socket.send(f).await.is_err() {
                        return;
                    }
                }
                if let Some((code, reason)) = close {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    // Keep the socket until the client goes (it hangs up without answering).
                    let _ = tokio::time::timeout(LIMIT, socket.recv()).await;
                }
            })
        }),
    );
    format!("ws://{}/tail", serve(router).await)
}

fn text(s: &str) -> Message {
    Message::Text(s.into())
}

fn binary(b: &[u8]) -> Message {
    Message::Binary(Bytes::copy_from_slice(b))
}

#[tokio::test]
async fn lines_are_reassembled_across_any_framing() {
    let url = script(
        vec![
            text("a\nb\nc"),
            text("d\r"),
            text("\ne\n"),
            binary(b"caf\xc3"),
            binary(b"\xa9\n"),
            text(""),
            text("\n\nno newline at the end"),
        ],
        Some((1000, "")),
    )
    .await;
    let (lines, err) = tail(&url, opts(Default::default())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        lines,
        ["a", "b", "cd", "e", "café", "", "", "no newline at the end"]
    );
}

#[tokio::test]
async fn ray_style_chunks_of_ten_lines_match_the_log() {
    let log: Vec<String> = numbered("line ", 95);
    let frames = log
        .chunks(10)
        .map(|c| text(&(c.join("\n") + "\n")))
        .collect();
    let url = script(frames, Some((1000, ""))).await;
    let (lines, err) = tail(&url, opts(Default::default())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(lines, log);
}

#[tokio::test]
async fn permessage_deflate_is_never_offered_and_headers_are_sent() {
    let seen = Arc::new(Mutex::new(None::<HeaderMap>));
    let s = seen.clone();
    let router = Router::new().route(
        "/tail",
        get(move |headers: HeaderMap, ws: WebSocketUpgrade| async move {
            *s.lock().unwrap() = Some(headers);
            ws.on_upgrade(|mut socket| async move {
                let _ = socket.send(text("hello\n")).await;
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: "".into(),
                    })))
                    .await;
            })
        }),
    );
    let url = format!("ws://{}/tail", serve(router).await);
    let (lines, err) = tail(
        &url,
        opts(Default::default()).header("Authorization", "Bearer sekrit-123"),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(lines, ["hello"]);
    let headers = seen.lock().unwrap().take().unwrap();
    assert!(
        headers.get("sec-websocket-extensions").is_none(),
        "{headers:?}"
    );
    assert_eq!(headers.get("authorization").unwrap(), "Bearer sekrit-123");
}

#[tokio::test]
async fn abnormal_close_is_an_error_after_the_lines() {
    let url = script(vec![text("one\ntwo\npart")], Some((1011, "internal error"))).await;
    let (lines, err) = tail(&url, opts(Default::default())).await;
    assert_eq!(lines, ["one", "two"]);
    assert_error(&err.unwrap(), 503, "close code 1011 (internal error)");
}

#[tokio::test]
async fn close_without_a_close_frame_is_an_error() {
    let url = script(vec![text("one\n")], None).await;
    let (lines, err) = tail(&url, opts(Default::default())).await;
    assert_eq!(lines, ["one"]);
    assert_error(&err.unwrap(), 503, "1006");
}

#[tokio::test]
async fn a_reset_is_an_error_after_the_lines() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            "before\nreset\n",
        ))
        .await
        .unwrap();
        ws.get_ref().set_zero_linger().unwrap();
        drop(ws); // RST
    });
    let (lines, err) = tail(&format!("ws://{addr}/"), opts(Default::default())).await;
    assert_eq!(lines, ["before", "reset"]);
    let err = err.unwrap();
    assert_eq!(err.status_code(), 503, "{err}");
}

#[tokio::test]
async fn handshake_statuses_are_mapped_and_named() {
    let router = status_router("500: WebSocket proxy error");
    let addr = serve(router).await;
    let (_, err) = tail(&format!("ws://{addr}/missing"), opts(Default::default())).await;
    assert_error(
        &err.unwrap(),
        404,
        "HTTP 404 Not Found: WebSocket handshake with",
    );
    let (_, err) = tail(&format!("ws://{addr}/auth"), opts(Default::default())).await;
    assert_error(&err.unwrap(), 401, "HTTP 401");
    let (_, err) = tail(&format!("ws://{addr}/teapot"), opts(Default::default())).await;
    assert_error(&err.unwrap(), 400, "HTTP 418");
    let (_, err) = tail(&format!("ws://{addr}/boom"), opts(Default::default())).await;
    assert_error(&err.unwrap(), 500, "WebSocket proxy error");
}

#[tokio::test]
async fn refused_is_503_and_bad_input_is_400() {
    let addr = closed_port().await;
    let (_, err) = tail(&format!("ws://{addr}/"), opts(Default::default())).await;
    assert_error(&err.unwrap(), 503, "cannot connect");
    let (_, err) = tail("ftp://example.org/", opts(Default::default())).await;
    assert_error(&err.unwrap(), 400, "unsupported URL scheme");
    // Core's one URL rule: no lenient guesses, no credentials or control characters echoed.
    for bad in [
        "ws:example.org/x",
        "ws://bob:hunter2@ex\u{1b}[31mample.org/",
        "wss://example.org/#frag",
        "http://",
    ] {
        let (_, err) = tail(bad, opts(Default::default())).await;
        let err = err.unwrap();
        assert_error(&err, 400, "invalid URL");
        let text = err.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains('\u{1b}'),
            "{text}"
        );
    }
    let (_, err) = tail(
        &format!("ws://{addr}/"),
        opts(Default::default()).header("Bad Name", "x"),
    )
    .await;
    assert_error(&err.unwrap(), 400, "invalid header name");
    let (_, err) = tail(
        &format!("ws://{addr}/"),
        opts(Default::default()).header("X-Token", "line\nbreak"),
    )
    .await;
    assert_error(&err.unwrap(), 400, "invalid value for header");
}

#[tokio::test]
async fn dns_failure_is_503() {
    let (_, err) = tail(
        "ws://no-such-host.invalid:8265/tail",
        opts(Default::default()),
    )
    .await;
    let err = err.unwrap();
    // Without any resolver the lookup may instead time out (408); both name the context.
    assert!(matches!(err.status_code(), 503 | 408), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_the_handshake_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let o = opts(Default::default())
        .timeouts(Duration::from_millis(300), Some(Duration::from_secs(10)));
    let (_, err) = tail(&format!("ws://{addr}/"), o).await;
    assert_error(&err.unwrap(), 408, "took longer than 0.3 s");
}

#[tokio::test]
async fn a_server_that_never_sends_times_out_after_the_lines() {
    let router = Router::new().route(
        "/tail",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                let _ = socket.send(text("only line\n")).await;
                let _ = tokio::time::timeout(LIMIT, socket.recv()).await;
            })
        }),
    );
    let url = format!("ws://{}/tail", serve(router).await);
    let o = opts(Default::default())
        .timeouts(Duration::from_secs(10), Some(Duration::from_millis(300)));
    let (lines, err) = tail(&url, o).await;
    assert_eq!(lines, ["only line"]);
    assert_error(&err.unwrap(), 408, "no data for 0.3 s (idle timeout)");
}

#[tokio::test]
async fn idle_timeout_none_waits_for_a_slow_server() {
    let router = Router::new().route(
        "/tail",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                for i in 0..5 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = socket.send(text(&format!("slow {i}\n"))).await;
                }
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: "".into(),
                    })))
                    .await;
            })
        }),
    );
    let url = format!("ws://{}/tail", serve(router).await);
    let (lines, err) = tail(
        &url,
        opts(Default::default()).timeouts(Duration::from_secs(10), None),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(lines, numbered("slow ", 5));
}

#[tokio::test]
async fn secrets_never_reach_an_error() {
    let addr = closed_port().await;
    let url = format!("ws://user:hunter2pass@{addr}/tail?token=abc123def456ghi");
    let (_, err) = tail(
        &url,
        opts(Default::default()).header("Authorization", "Bearer abc123def456ghi"),
    )
    .await;
    let err = err.unwrap();
    let text = format!("{err:?} {err}");
    assert!(
        !text.contains("hunter2pass") && !text.contains("abc123def456ghi"),
        "{text}"
    );
    assert!(text.contains("[REDACTED]"), "{text}");
}

#[tokio::test]
async fn seed_manager_converts_http_urls_and_validates_the_timeout() {
    let url = script(vec![text("x\n")], Some((1000, ""))).await;
    let manager = WebSocketStreamManager::new(Default::default());
    let http = url.replacen("ws://", "http://", 1);
    let (lines, err) = collect(manager.stream_logs(&http, &[], 30.0, "job test-1")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(lines, ["x"]);
    let (_, err) = collect(manager.stream_logs(&http, &[], 500.0, "job test-1")).await;
    assert_error(&err.unwrap(), 400, "timeout");
    let (_, err) = collect(manager.stream_logs("ftp://x/", &[], 30.0, "job test-1")).await;
    assert_error(&err.unwrap(), 400, "ftp");
}

#[tokio::test]
async fn tail_connect_reports_errors_eagerly() {
    let addr = closed_port().await;
    let mut t = Tail::new(format!("ws://{addr}/"), TailOptions::new("job test-1"));
    assert_eq!(t.connect().await.unwrap_err().status_code(), 503);
    assert!(t.next_line().await.is_none(), "a failed tail stays ended");
}
