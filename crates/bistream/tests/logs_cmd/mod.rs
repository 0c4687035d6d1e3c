//! Running `bistream logs tail` from the binary crate's tests (shared by `logs_cli` and
//! `logs_ray_fallback`): the exit code and both output streams of one bounded run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");

/// What one `bistream logs tail` run left behind.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bistream logs tail ARGS…`, failing the test if it has not ended within `limit`.
pub async fn run_tail(limit: Duration, args: &[&str]) -> Run {
    let out = tokio::time::timeout(
        limit,
        Command::new(BIN).args(["logs", "tail"]).args(args).output(),
    )
    .await
    .expect("bistream finished")
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}
