//! The top-level command line as a new user meets it: the default mode (no subcommand) takes
//! the same flags and `BISTREAM_RELAY_*` variables as `relay serve`, a busy port says how to
//! pick another, `--help` says what no arguments does, `--log-level` typos are errors, an
//! environment-variable error names the variable, every subcommand answers `--version`, and
//! usage errors exit 2.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::{Command, Output};
use std::time::Duration;

use bistream_testkit::Peer;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");
const T: Duration = Duration::from_secs(20);

/// The binary with no BISTREAM_* settings inherited from the test environment.
fn clean(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("BISTREAM_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1")
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    clean(&mut cmd).args(args).envs(env.iter().copied());
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts `bistream ARGS` (no subcommand) and returns the URL of its first stdout line.
async fn start_default(args: &[&str], env: &[(&str, &str)]) -> (Peer, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BISTREAM_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    let mut p = Peer::spawn(cmd).unwrap();
    let line = p.wait_for_line("relay listening on", T).await;
    let url = line.trim_start_matches("relay listening on ").to_string();
    (p, url)
}

async fn stop(mut p: Peer) {
    let st = p.terminate(T).await.expect("exits on SIGTERM");
    assert!(st.success(), "{st}: {}", p.transcript.join("\n"));
}

#[tokio::test]
async fn default_mode_takes_relay_serve_flags() {
    let (p, url) = start_default(&["--port", "0", "--host", "127.0.0.1"], &[]).await;
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":8700") && !url.ends_with(":0"), "{url}");
    stop(p).await;
}

#[tokio::test]
async fn default_mode_takes_the_environment() {
    let (p, url) = start_default(
        &[],
        &[
            ("BISTREAM_RELAY_PORT", "0"),
            ("BISTREAM_RELAY_HOST", "127.0.0.1"),
        ],
    )
    .await;
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":8700"), "{url}");
    stop(p).await;
    // The flag beats the variable, as in `relay serve`.
    let (p, url) = start_default(&["--port", "0"], &[("BISTREAM_RELAY_PORT", "1")]).await;
    assert!(!url.ends_with(":1"), "{url}");
    stop(p).await;
}

#[test]
fn a_busy_port_says_how_to_pick_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    for (args, env) in [
        (vec!["--port", port.as_str()], vec![]),
        (vec!["relay", "serve", "--port", port.as_str()], vec![]),
        (vec![], vec![("BISTREAM_RELAY_PORT", port.as_str())]),
    ] {
        let o = run(&args, &env);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(
            err.contains("--port 8701")
                && err.contains("BISTREAM_RELAY_PORT")
                && err.contains("--port 0"),
            "{err}"
        );
    }
}

#[test]
fn help_says_no_arguments_starts_the_relay() {
    let o = run(&["--help"], &[]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("With no subcommand, bistream runs the relay server"),
        "{out}"
    );
    assert!(
        out.contains("--port") && out.contains("BISTREAM_RELAY_PORT"),
        "{out}"
    );
    // A subcommand does not take the top-level relay flags (an error, not ignored) ...
    let o = run(
        &["--port", "0", "packet", "serve", "--demo", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--port is a relay server option"),
        "{}",
        stderr(&o)
    );
    // ... but global flags go anywhere.
    let o = run(
        &[
            "--log-level",
            "warn",
            "--log-format",
            "json",
            "bench",
            "--version",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn log_level_typos_name_the_valid_levels() {
    let o = run(&["--log-level", "wran", "--port", "0"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("wran") && err.contains("error, warn, info, debug, trace, off"),
        "{err}"
    );
    // From the environment: the message names the variable.
    let o = run(
        &["relay", "serve", "--port", "0"],
        &[("BISTREAM_LOG_LEVEL", "wran")],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("environment variable BISTREAM_LOG_LEVEL"),
        "{err}"
    );
}

#[tokio::test]
async fn real_filter_directives_are_still_accepted() {
    let (p, _) = start_default(
        &[
            "--port",
            "0",
            "--log-level",
            "warn,bistream_relay_server=debug",
        ],
        &[],
    )
    .await;
    stop(p).await;
}

#[test]
fn environment_errors_name_the_variable() {
    let o = run(&[], &[("BISTREAM_RELAY_PORT", "99999")]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("99999") && err.contains("environment variable BISTREAM_RELAY_PORT"),
        "{err}"
    );
    // The same mistake on the command line is not blamed on the environment.
    let o = run(&["--port", "99999"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        !stderr(&o).contains("environment variable"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_subcommand_answers_version() {
    let version = env!("CARGO_PKG_VERSION");
    for args in [
        vec!["--version"],
        vec!["relay", "--version"],
        vec!["relay", "serve", "--version"],
        vec!["relay", "listen", "--version"],
        vec!["packet", "call", "--version"],
        vec!["bench", "--version"],
    ] {
        let o = run(&args, &[]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(out.contains(version), "{args:?}: {out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["nosuch"],
        vec!["bench", "nosuch"],
        vec!["relay", "serve", "--port", "x"],
        vec!["--log-format", "yaml"],
    ] {
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn large_message_budget_below_a_frame_is_refused() {
    let o = run(
        &[
            "relay",
            "serve",
            "--port",
            "0",
            "--max-frame-bytes",
            "2097152",
            "--large-message-budget-bytes",
            "1048576",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("large_message_budget_bytes (1048576) must be at least max_frame_bytes"),
        "{}",
        stderr(&o)
    );
}

/// The runtime's worker threads of process `pid` (tokio names them `tokio-rt-worker`).
fn runtime_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "tokio-rt-worker")
        .count()
}

#[tokio::test]
async fn worker_threads_sets_the_runtime_size_and_refuses_nonsense() {
    // A flag anywhere on the line, and its variable, both size the runtime.
    for (args, env) in [
        (&["--port", "0", "--worker-threads", "1"][..], &[][..]),
        (
            &["--port", "0"][..],
            &[("BISTREAM_WORKER_THREADS", "3")][..],
        ),
    ] {
        let (p, _url) = start_default(args, env).await;
        let want = if env.is_empty() { 1 } else { 3 };
        // A worker names itself once it first runs, so a just-started process may still
        // show a new thread under its parent's name: wait (bounded) for the names to settle.
        let pid = p.pid().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = runtime_workers(pid);
        while seen != want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = runtime_workers(pid);
        }
        assert_eq!(seen, want, "{args:?} {env:?}");
        stop(p).await;
    }
    let o = run(&["--worker-threads", "0", "relay", "serve"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--worker-threads"), "{}", stderr(&o));
    let o = run(&["relay", "serve"], &[("BISTREAM_WORKER_THREADS", "many")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("many"), "{}", stderr(&o));
}
