//! ProxyStore 1.1.0's OWN relay tests (from its sdist, fetched by scripts/setup-test-env into
//! `.venv/relay/proxystore-sdist`) run unchanged against `bistream relay serve`: a pytest plugin
//! of ours (tests/python/proxystore_suite) replaces their in-process `relay_server` fixture with
//! our binary. `test_relay_server_duplicate_registration` runs 20 times: it failed about one run
//! in four before takeovers waited for the old socket's close (issue 14, item 9).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use bistream_testkit::{python_scripts_dir, relay_python, workspace_root};
use tokio::process::Command;

#[tokio::test]
async fn proxystore_relay_client_and_peer_tests_pass_against_bistream() {
    let sdist = workspace_root().join(".venv/relay/proxystore-sdist/proxystore-1.1.0");
    assert!(
        sdist.join("tests/p2p/relay/client_test.py").is_file(),
        "ProxyStore's sdist is missing at {}: run scripts/setup-test-env",
        sdist.display()
    );
    let plugin_dir = python_scripts_dir().join("proxystore_suite");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        Command::new(relay_python())
            .current_dir(&sdist)
            .env("BISTREAM_BIN", env!("CARGO_BIN_EXE_bistream"))
            .env("BISTREAM_REPEAT", "20")
            .env(
                "PYTHONPATH",
                format!("{}:{}", plugin_dir.display(), sdist.display()),
            )
            .args([
                "-m",
                "pytest",
                "-q",
                "--noconftest",
                "-p",
                "bistream_relay_fixture",
                "-p",
                "no:cacheprovider",
                "tests/p2p/relay/client_test.py",
                "tests/p2p/connection_test.py",
                "tests/p2p/manager_test.py",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("pytest finishes in time")
    .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ProxyStore's tests failed against bistream:\n{stdout}\n{stderr}"
    );
    // All 20 repetitions of the takeover race ran (and passed, or pytest would have failed).
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.contains("passed"))
        .unwrap_or("");
    let passed: u32 = last
        .split_whitespace()
        .zip(last.split_whitespace().skip(1))
        .find(|(_, w)| w.starts_with("passed"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 20 + 18, "too few tests ran: {last:?}\n{stdout}");
}
