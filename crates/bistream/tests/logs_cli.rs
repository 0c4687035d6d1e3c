//! `bistream logs tail` end to end against local axum servers: stdout carries exactly the
//! lines, stderr the error with its status code, and the exit code follows the status class;
//! `--ray` against a fake dashboard that reproduces Ray's endpoints and its truncation with a
//! normal close.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::process::Command;

/// The logs tests' servers (one definition for both crates' tests).
#[path = "../../bistream-logs/tests/support/mod.rs"]
mod logs_support;
use logs_support::serve;
use logs_support::tls as logs_tls_support;

mod logs_cmd;
use logs_cmd::Run;

const T: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_bistream");

async fn run(args: &[&str]) -> Run {
    logs_cmd::run_tail(T, args).await
}

fn ws_frames(frames: Vec<&'static str>, close: u16) -> axum::routing::MethodRouter {
    get(move |ws: WebSocketUpgrade| async move {
        ws.on_upgrade(move |mut socket| async move {
            for f in frames {
                let _ = socket.send(Message::Text(f.into())).await;
            }
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close,
                    reason: "".into(),
                })))
                .await;
        })
    })
}

fn endless() -> axum::routing::MethodRouter {
    get(|ws: WebSocketUpgrade| async move {
        ws.on_upgrade(|mut socket| async move {
            for i in 0u64.. {
                if socket
                    .send(Message::Text(format!("line {i}\n").into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    })
}

#[tokio::test]
async fn prints_exactly_the_lines_and_exits_0() {
    let app = Router::new()
        .route("/tail", ws_frames(vec!["a\nb", "\r\nc\n", "last"], 1000))
        .route(
            "/http",
            get(|headers: axum::http::HeaderMap| async move {
                let token = headers
                    .get("x-token")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                format!("got {token}\nsecond\n")
            }),
        );
    let addr = serve(app).await;
    let r = run(&[&format!("ws://{addr}/tail")]).await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "a\nb\nc\nlast\n", "")
    );
    let r = run(&[&format!("http://{addr}/http"), "--header", "X-Token: abc"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "got abc\nsecond\n"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn limits_end_with_429_and_exit_7_after_the_lines() {
    let addr = serve(Router::new().route("/tail", endless())).await;
    let r = run(&[
        &format!("ws://{addr}/tail"),
        "--max-lines",
        "3",
        "--context",
        "my job",
    ])
    .await;
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(r.stdout, "line 0\nline 1\nline 2\n");
    assert!(
        r.stderr
            .starts_with("bistream: 429 limit exceeded: my job: "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("max_lines is 3, attempted 4"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains('\r'),
        "no progress line when stderr is not a terminal"
    );
}

#[tokio::test]
async fn each_error_class_has_its_exit_code() {
    let app = Router::new()
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such log") }),
        )
        .route("/secret", get(|| async { StatusCode::FORBIDDEN }))
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "it broke") }),
        )
        .route("/login", get(|| async { StatusCode::UNAUTHORIZED }))
        .route("/abnormal", ws_frames(vec!["one\n"], 1011))
        .route(
            "/silent",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    let _ = tokio::time::timeout(T, socket.recv()).await;
                })
            }),
        );
    let addr = serve(app).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec![format!("http://{addr}/missing")], 5, "404 not found"),
        (vec![format!("ws://{addr}/missing")], 5, "404 not found"),
        (vec![format!("http://{addr}/secret")], 4, "403 forbidden"),
        (vec![format!("ws://{addr}/abnormal")], 8, "close code 1011"),
        (vec![format!("ws://{closed}/")], 8, "503 connection failed"),
        (
            vec![
                format!("ws://{addr}/silent"),
                "--idle-timeout".into(),
                "0.3".into(),
            ],
            6,
            "408 timeout",
        ),
        (
            vec![format!("ws://{addr}/x"), "--timeout".into(), "500".into()],
            3,
            "--timeout",
        ),
        (
            vec![format!("ws://{addr}/x"), "--max-lines".into(), "0".into()],
            3,
            "max_lines must be at least 1",
        ),
        (
            vec![
                format!("ws://{addr}/x"),
                "-H".into(),
                "no colon here".into(),
            ],
            3,
            "expected `Name: value`",
        ),
        (vec!["gopher://x/".into()], 3, "unsupported URL scheme"),
        (vec![format!("http://{addr}/boom")], 9, "500 "),
        (vec![format!("http://{addr}/login")], 4, "401 "),
        (vec![format!("ws://{addr}/secret")], 4, "403 forbidden"),
        (
            vec![
                format!("http://{addr}/x"),
                "-H".into(),
                "Bad Name: v".into(),
            ],
            3,
            "invalid header name",
        ),
        (
            vec![
                format!("http://{addr}/x"),
                "-H".into(),
                "X-Token: s3cr3t\u{1}value".into(),
            ],
            3,
            "invalid value for header \"X-Token\"",
        ),
    ];
    for (args, code, needle) in cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&args).await;
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        // The context names every error: the URL's host by default, else --context.
        if let Some(host) = args[0]
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
        {
            assert!(
                r.stderr.contains(&format!("{host}: ")),
                "{args:?}: {}",
                r.stderr
            );
        }
        args.extend(["--context", "ctx under test"]);
        let r = run(&args).await;
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("ctx under test: "),
            "{args:?}: {}",
            r.stderr
        );
    }
    // stdout got the line before the abnormal close
    let r = run(&[&format!("ws://{addr}/abnormal")]).await;
    assert_eq!(r.stdout, "one\n");
}

#[tokio::test]
async fn tokens_never_reach_stderr() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(&[
        &format!("http://{closed}/logs?token=s3cr3tvalue99"),
        "-H",
        "Authorization: Bearer s3cr3tvalue99",
    ])
    .await;
    assert_eq!(r.code, 8);
    assert!(!r.stderr.contains("s3cr3tvalue99"), "{}", r.stderr);
}

/// A fake Ray dashboard: job `raysubmit_done` finished (the tail replays its log then
/// closes 1000); job `raysubmit_cut` is RUNNING and its tail stops with a normal close after
/// two lines (as Ray does on invalid UTF-8), while its file holds the whole log, with a
/// progress bar (`\r`) in the already-seen part.
#[derive(Clone, Default)]
struct Dash {
    cut_finishes: Arc<AtomicBool>,
}

async fn job(Path(id): Path<String>, State(d): State<Dash>) -> axum::response::Response {
    let status = match id.as_str() {
        "raysubmit_done" => "SUCCEEDED",
        "raysubmit_cut" if d.cut_finishes.load(Ordering::Relaxed) => "FAILED",
        "raysubmit_cut" => "RUNNING",
        _ => return (StatusCode::NOT_FOUND, format!("Job {id} does not exist")).into_response(),
    };
    Json(serde_json::json!({"status": status, "driver_info": {"node_ip_address": "127.0.0.1"}}))
        .into_response()
}

async fn ray_tail(Path(id): Path<String>, ws: WebSocketUpgrade) -> axum::response::Response {
    let frames: Vec<&'static str> = match id.as_str() {
        // The 20,000-byte line is skipped (default max_message_size 10 KiB) in the stream
        // and in the file check alike.
        "raysubmit_done" => vec![
            "Runtime env is setting up.\nRunning entrypoint\n",
            BIG_LINE.as_str(),
            "done\nno newline",
        ],
        // Ray converts \r to \n in the tail: the progress bar is two lines there.
        "raysubmit_cut" => vec!["start\n50%\n100%\n"],
        _ => return (StatusCode::NOT_FOUND, format!("Job {id} does not exist")).into_response(),
    };
    ws.on_upgrade(move |mut socket| async move {
        for f in frames {
            let _ = socket.send(Message::Text(f.into())).await;
        }
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    })
}

async fn ray_file(axum::extract::RawQuery(q): axum::extract::RawQuery) -> axum::response::Response {
    let q = q.unwrap_or_default();
    assert!(
        q.contains("node_ip=127.0.0.1") && q.contains("lines=-1"),
        "{q}"
    );
    if q.contains("submission_id=raysubmit_cut") {
        return b"start\n50%\r100%\nbad \xff\xfe byte\nrest\n"
            .to_vec()
            .into_response();
    }
    if q.contains("submission_id=raysubmit_done") {
        return format!(
            "Runtime env is setting up.\r\nRunning entrypoint\n{}done\nno newline",
            *BIG_LINE
        )
        .into_response();
    }
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "Could not find a log file",
    )
        .into_response()
}

static BIG_LINE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| "x".repeat(20_000) + "\n");

async fn dashboard(d: Dash) -> String {
    let app = Router::new()
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/logs/tail", get(ray_tail))
        .route("/api/v0/logs/file", get(ray_file))
        .with_state(d);
    format!("http://{}", serve(app).await)
}

#[tokio::test]
async fn ray_finished_job_prints_its_whole_log() {
    let dash = dashboard(Dash::default()).await;
    let r = run(&["--ray", &dash, "--job", "raysubmit_done"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "Runtime env is setting up.\nRunning entrypoint\ndone\nno newline\n"
    );
    assert!(
        r.stderr.ends_with("job raysubmit_done SUCCEEDED\n"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn ray_truncated_stream_is_recovered_from_the_file() {
    let d = Dash::default();
    let dash = dashboard(d.clone()).await;
    // Still running after the recovery: the rest so far is printed, and the exit says cut off.
    let r = run(&["--ray", &dash, "--job", "raysubmit_cut"]).await;
    assert_eq!(
        r.stdout,
        "start\n50%\n100%\nbad \u{fffd}\u{fffd} byte\nrest\n"
    );
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cut off (2 lines recovered); the job is still RUNNING"),
        "{}",
        r.stderr
    );
    // The job finished right after the tail broke: the normal close and the terminal status
    // look like a complete log, but the file check finds the rest.
    d.cut_finishes.store(true, Ordering::Relaxed);
    let r = run(&["--ray", &dash, "--job", "raysubmit_cut"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "start\n50%\n100%\nbad \u{fffd}\u{fffd} byte\nrest\n"
    );
    assert!(
        r.stderr
            .contains("FAILED; 2 lines the stream had cut off were recovered"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn ray_unknown_and_invalid_jobs() {
    let dash = dashboard(Dash::default()).await;
    let r = run(&["--ray", &dash, "--job", "raysubmit_nope"]).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr.contains("Job raysubmit_nope does not exist"),
        "{}",
        r.stderr
    );
    let r = run(&["--ray", &dash, "--job", "../etc"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    let r = run(&["--ray", &dash]).await;
    assert_eq!(r.code, 2, "--job is required: {}", r.stderr);
}

/// An https log server with a self-signed certificate for `localhost`: refused without
/// `--ca-file` (exit 8, the reason on stderr), followed with it (exit 0, every line).
#[tokio::test]
async fn https_needs_the_ca_file_for_a_self_signed_certificate() {
    let cert = logs_tls_support::self_signed(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.pem).unwrap();
    let port = logs_tls_support::https_server(&cert, &[b"one\ntwo\n"])
        .await
        .port();
    let url = format!("https://localhost:{port}/logs");
    let r = run(&[&url]).await;
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(r.stderr.contains("503"), "{}", r.stderr);
    assert!(
        r.stderr.contains("certificate is not trusted"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
    let r = run(&[&url, "--ca-file", ca.to_str().unwrap()]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "one\ntwo\n");
}

/// A WebSocket server that stays quiet for 1.5 s, then sends a line and closes normally.
fn quiet_then_line() -> axum::routing::MethodRouter {
    get(|ws: WebSocketUpgrade| async move {
        ws.on_upgrade(|mut socket| async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let _ = socket.send(Message::Text("late\n".into())).await;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
        })
    })
}

#[tokio::test]
async fn idle_timeout_defaults_to_the_timeout_and_0_waits_forever() {
    let addr = serve(Router::new().route("/quiet", quiet_then_line())).await;
    let url = format!("ws://{addr}/quiet");
    // Default idle timeout = --timeout (0.5 s here): the quiet server is a 408.
    let r = run(&[&url, "--timeout", "0.5"]).await;
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("idle timeout"), "{}", r.stderr);
    // --idle-timeout 0 waits as long as it takes (the connect timeout still applies).
    let r = run(&[&url, "--timeout", "0.5", "--idle-timeout", "0"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "late\n"), "{}", r.stderr);
    // A negative or non-number idle timeout is a 400 naming the flag.
    let r = run(&[&url, "--idle-timeout=-1"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("--idle-timeout"), "{}", r.stderr);
}

#[tokio::test]
async fn invalid_header_value_is_never_quoted() {
    let r = run(&[
        "http://127.0.0.1:1/x",
        "-H",
        "Authorization: Bearer s3cr3t\u{7f}x",
    ])
    .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!r.stderr.contains("s3cr3t"), "{}", r.stderr);
}

/// With stderr on a terminal (a pty from util-linux `script`), the progress line (lines,
/// MiB, lines/s, skipped) is drawn and cleared; `limits_end_with_429_and_exit_7_after_the_lines`
/// checks it is absent when stderr is a pipe.
#[tokio::test]
async fn progress_line_is_drawn_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("util-linux `script` is needed to give the command a terminal");
    }
    let slow = get(|ws: WebSocketUpgrade| async move {
        ws.on_upgrade(|mut socket| async move {
            for i in 0..15 {
                let _ = socket
                    .send(Message::Text(format!("slow {i}\n").into()))
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
        })
    });
    let addr = serve(Router::new().route("/slow", slow)).await;
    let cmd = format!("{BIN} logs tail ws://{addr}/slow");
    let out = tokio::time::timeout(
        T,
        Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .output(),
    )
    .await
    .expect("finished")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("slow 14"), "{text:?}");
    let drawn = text.split("\r\x1b[2K").skip(1).any(|p| {
        p.contains(" lines, ")
            && p.contains(" MiB, ")
            && p.contains(" lines/s, ")
            && p.contains(" skipped")
    });
    assert!(drawn, "progress line drawn and cleared: {text:?}");
}
