//! Shared by the `relay_server_*` tests: start `bistream relay serve` as a process and read
//! its address lines, run the Python interop scenarios (the real proxystore RelayClient /
//! PeerManager from `.venv/relay`), and tiny HTTP GETs for the ops endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

use std::time::Duration;

use bistream_testkit::{python_scripts_dir, relay_python, Peer};
use tokio::process::Command;

pub const T: Duration = Duration::from_secs(20);

pub struct Server {
    pub peer: Peer,
    /// `ws://127.0.0.1:PORT` (or wss://).
    pub url: String,
    /// `HOST:PORT` of the ops endpoint when `--metrics-addr` was given.
    pub metrics: Option<String>,
}

pub fn bistream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bistream"));
    c.env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("BISTREAM_RELAY_") && k != "BISTREAM_RELAY_PYTHON" {
            c.env_remove(k);
        }
    }
    c
}

/// `bistream relay serve --host 127.0.0.1 --port 0 ARGS...`, waiting for the address lines.
pub async fn serve(args: &[&str]) -> Server {
    serve_with(args, &[]).await
}

pub async fn serve_with(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = bistream();
    cmd.args(["relay", "serve", "--host", "127.0.0.1", "--port", "0"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut peer = Peer::spawn(cmd).expect("spawn bistream");
    let first = peer
        .next_stdout_line(T)
        .await
        .unwrap_or_else(|| panic!("no address line; output:\n{}", peer.transcript.join("\n")));
    let url = first
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(
        url.starts_with("ws://127.0.0.1:") || url.starts_with("wss://127.0.0.1:"),
        "{url}"
    );
    let metrics = if args.contains(&"--metrics-addr") {
        let second = peer.next_stdout_line(T).await.expect("metrics line");
        Some(
            second
                .strip_prefix("metrics listening on http://")
                .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
                .to_string(),
        )
    } else {
        None
    };
    Server { peer, url, metrics }
}

/// Runs a scenario of tests/python/relay_server_interop.py; returns its stdout lines after
/// checking it printed `PASS <scenario>`.
pub async fn python(scenario: &str, url: &str, args: &[&str]) -> Vec<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(relay_python())
            .arg(python_scripts_dir().join("relay_server_interop.py"))
            .arg(scenario)
            .arg(url)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("python scenario {scenario} timed out"))
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success() && stdout.lines().any(|l| l == format!("PASS {scenario}")),
        "scenario {scenario} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout.lines().map(str::to_string).collect()
}

/// Sends a signal by name (`TERM`, `INT`, `HUP`) to the child.
pub fn signal(peer: &Peer, name: &str) {
    let pid = peer.child.id().expect("child running");
    assert!(
        bistream_testkit::send_signal(pid, name),
        "kill -{name} {pid}"
    );
}

/// Waits for the child to exit; returns its exit code.
pub async fn exit_code(peer: &mut Peer) -> Option<i32> {
    tokio::time::timeout(T, peer.child.wait())
        .await
        .expect("exits in time")
        .expect("wait")
        .code()
}
