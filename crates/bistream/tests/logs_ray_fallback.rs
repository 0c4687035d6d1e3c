//! `bistream logs tail --ray` when the dashboard's WebSocket tail cannot be opened (a proxy
//! without the route, one that refuses the upgrade, one that answers it with a plain 200):
//! the log is followed over HTTP from Ray's file endpoint, every line exactly once, the
//! fallback named on stderr. The fake dashboard reproduces Ray's answers right after a
//! submission (the file endpoint's 500 `no driver node id`), a file read while its last line
//! is still being written, and the end of the job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

const T: Duration = Duration::from_secs(90);
const JOB: &str = "raysubmit_fb";

mod logs_cmd;
use logs_cmd::Run;

/// The logs tests' servers (one definition for both crates' tests).
#[path = "../../bistream-logs/tests/support/mod.rs"]
mod logs_support;
use logs_support::serve;

async fn run(args: &[&str]) -> Run {
    logs_cmd::run_tail(T, args).await
}

/// What the job's log file holds at each read, and the job's status before that read.
/// Read 0 comes before the driver is known (Ray's 500); read 1 ends inside a line.
fn file_at(read: usize) -> Result<Vec<u8>, &'static str> {
    let big = "y".repeat(20_000); // over the default 10 KiB max_message_size: skipped
    match read {
        0 => Err("Job raysubmit_fb has no driver node id info."),
        1 => Ok(b"a\nb\npart".to_vec()),
        2 => Ok(format!("a\nb\npartial\nc\n{big}\nd\n").into_bytes()),
        _ => Ok(format!("a\nb\npartial\nc\n{big}\nd\ne\r\nlast without newline").into_bytes()),
    }
}

fn status_before(read: usize) -> &'static str {
    match read {
        0 => "PENDING",
        1 | 2 => "RUNNING",
        _ => "SUCCEEDED",
    }
}

#[derive(Clone)]
struct Dash {
    reads: Arc<AtomicUsize>,
    /// How the WebSocket route answers an upgrade.
    tail: StatusCode,
}

async fn job(Path(id): Path<String>, State(d): State<Dash>) -> axum::response::Response {
    if id != JOB {
        return (StatusCode::NOT_FOUND, format!("Job {id} does not exist")).into_response();
    }
    let read = d.reads.load(Ordering::SeqCst);
    let driver = if read == 0 {
        serde_json::Value::Null
    } else {
        serde_json::json!({"node_ip_address": "127.0.0.1"})
    };
    Json(serde_json::json!({"status": status_before(read), "driver_info": driver})).into_response()
}

async fn tail(State(d): State<Dash>) -> axum::response::Response {
    (d.tail, "no WebSockets here").into_response()
}

async fn file(RawQuery(q): RawQuery, State(d): State<Dash>) -> axum::response::Response {
    let q = q.unwrap_or_default();
    assert!(q.contains(&format!("submission_id={JOB}")), "{q}");
    let read = d.reads.fetch_add(1, Ordering::SeqCst);
    match file_at(read) {
        Ok(body) => body.into_response(),
        Err(text) => (StatusCode::INTERNAL_SERVER_ERROR, text).into_response(),
    }
}

/// A dashboard whose tail route answers `tail` (404: no such route behind the proxy).
async fn dashboard(tail_status: StatusCode) -> (String, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let d = Dash {
        reads: reads.clone(),
        tail: tail_status,
    };
    let app = Router::new()
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/logs/tail", get(self::tail))
        .route("/api/v0/logs/file", get(file))
        .with_state(d);
    (format!("http://{}", serve(app).await), reads)
}

const WHOLE_LOG: &str = "a\nb\npartial\nc\nd\ne\nlast without newline\n";

#[tokio::test]
async fn refused_websocket_tail_falls_back_to_the_file_without_repeating_a_line() {
    // 404 (the route is missing behind a proxy), 400 and 426 (the upgrade is refused), 200
    // (a proxy that answers the upgrade as a plain GET).
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::BAD_REQUEST,
        StatusCode::UPGRADE_REQUIRED,
        StatusCode::OK,
    ] {
        let (dash, reads) = dashboard(status).await;
        let r = run(&["--ray", &dash, "--job", JOB]).await;
        assert_eq!(r.code, 0, "{status}: {}", r.stderr);
        // Every line once, in order: the partial line only once complete, the oversized
        // line skipped, `\r\n` ended, the last line without `\n` printed at the job's end.
        assert_eq!(r.stdout, WHOLE_LOG, "{status}: {}", r.stderr);
        assert!(reads.load(Ordering::SeqCst) >= 4);
        assert!(
            r.stderr.contains("WebSocket tail unavailable")
                && r.stderr.contains(&format!("following job {JOB} over HTTP")),
            "{status}: {}",
            r.stderr
        );
        if status != StatusCode::OK {
            assert!(
                r.stderr.contains(&status.as_u16().to_string()),
                "{status}: {}",
                r.stderr
            );
        }
        // Ray's 500 right after the submission means "not yet", said once.
        assert_eq!(
            r.stderr.matches("not readable yet").count(),
            1,
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("no driver node id"), "{}", r.stderr);
        assert!(
            r.stderr.ends_with(&format!("job {JOB} SUCCEEDED\n")),
            "{}",
            r.stderr
        );
    }
}

#[tokio::test]
async fn http_fallback_keeps_the_limits() {
    let (dash, _) = dashboard(StatusCode::NOT_FOUND).await;
    let r = run(&["--ray", &dash, "--job", JOB, "--max-lines", "4"]).await;
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(r.stdout, "a\nb\npartial\nc\n");
    assert!(r.stderr.contains("429"), "{}", r.stderr);
}

#[tokio::test]
async fn unknown_job_is_404_before_any_fallback() {
    let (dash, reads) = dashboard(StatusCode::NOT_FOUND).await;
    let r = run(&["--ray", &dash, "--job", "raysubmit_other"]).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(!r.stderr.contains("over HTTP"), "{}", r.stderr);
    assert_eq!(reads.load(Ordering::SeqCst), 0);
}
