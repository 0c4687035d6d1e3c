//! `bistream bench` plumbing: the hidden floor servers start and print their address, the
//! command line rejects bad input, a tiny `packet` run writes a complete report, a run never
//! touches the committed `docs/` unless asked, missing Python peers fail up front with the
//! whole hint, and quick mode gives no verdict. No timing assertions: speed is what the bench
//! reports, never what a test checks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::Duration;

use bistream_testkit::Peer;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");

#[tokio::test]
async fn floor_servers_print_their_address_and_serve() {
    for kind in ["ws-echo", "tcp-echo"] {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["bench", "floor-server", kind, "127.0.0.1:0"]);
        let mut peer = Peer::spawn(cmd).expect("spawn floor server");
        let line = peer
            .next_stdout_line(Duration::from_secs(20))
            .await
            .expect("a first stdout line");
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        assert!(line.starts_with(kind), "{line}");
        if kind == "tcp-echo" {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
                .await
                .expect("echo within 10 s")
                .unwrap();
            assert_eq!(&back, b"ping");
        }
    }
}

#[test]
fn bad_arguments_are_refused_with_a_clear_error() {
    // Usage errors exit 2 (as `--help` says), naming what is valid.
    let out = Command::new(BIN)
        .args(["bench", "nosuchsuite", "--no-write"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nosuchsuite") && err.contains("relay") && err.contains("packet"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["bench", "packet", "--duration", "0", "--no-write"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--duration") && err.contains("0.05"), "{err}");

    let out = Command::new(BIN)
        .args(["bench", "floor-server", "udp-flood"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_tiny_packet_run_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(bistream_testkit::workspace_root())
        .args([
            "bench",
            "packet",
            "--runs",
            "1",
            "--duration",
            "0.1",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The table names every column and the floor was measured (a number, not "not available").
    assert!(
        stdout.contains("suite") && stdout.contains("floor"),
        "{stdout}"
    );
    let seq = stdout
        .lines()
        .find(|l| l.contains("sequential 16 B request/response p50"))
        .unwrap_or_else(|| panic!("no p50 row:\n{stdout}"));
    assert!(seq.contains("≤ 1.50× floor"), "{seq}");
    let md = std::fs::read_to_string(dir.path().join("BENCHMARKS.md")).unwrap();
    assert!(md.contains("| packet |") && md.contains("Command: `bistream bench packet"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("benchmarks.json")).unwrap())
            .unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert!(rows.len() >= 5);
    // The floor (raw TCP ping-pong) needs nothing but our binary: it must be a figure.
    assert!(
        rows[0]["floor"]["value"]["median"].as_f64().unwrap() > 0.0,
        "{}",
        rows[0]
    );
    let svg = std::fs::read_to_string(dir.path().join("bench-packet-latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("raw TCP ping-pong"));
}

/// A scratch "checkout": a workspace manifest and a committed report that must survive.
fn fake_checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(
        dir.path().join("docs/BENCHMARKS.md"),
        "committed full report\n",
    )
    .unwrap();
    dir
}

#[test]
fn missing_peers_fail_before_measuring_with_the_whole_hint() {
    let dir = fake_checkout();
    // The checkout has no .venv: the packet peer is missing.
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("BISTREAM_PACKET_PYTHON")
        .args(["bench", "packet", "--quick"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let venv = dir.path().join(".venv/packet/bin/python");
    assert!(
        err.contains(&format!("{} does not exist", venv.display()))
            && err.contains("run scripts/setup-test-env")
            && err.contains("--packet-python")
            && err.contains("--allow-missing"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "nothing measured"
    );
}

#[test]
fn quick_runs_write_to_target_not_docs_and_give_no_verdict() {
    let dir = fake_checkout();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "bench",
            "packet",
            "--quick",
            "--duration",
            "0.05",
            "--packet-python",
            "/nonexistent/python",
            "--allow-missing",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // --allow-missing: exit 0, the missing figures listed in full (never clipped).
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("not measured") && stderr.contains("/nonexistent/python"),
        "{stderr}"
    );
    // Quick mode: met/below, never PASS/SHORT, and says why.
    assert!(
        !stdout.contains("PASS") && !stdout.contains("SHORT"),
        "{stdout}"
    );
    assert!(stdout.contains("too short to judge"), "{stdout}");
    // The report went to target/bench; the committed one is untouched.
    let written = dir.path().join("target/bench/BENCHMARKS.md");
    let md = std::fs::read_to_string(&written).unwrap();
    assert!(
        md.contains("too short to judge") && !md.contains("SHORT |"),
        "{md}"
    );
    assert!(stderr.contains(&written.display().to_string()), "{stderr}");
    assert!(stderr.contains("--out docs"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("docs/BENCHMARKS.md")).unwrap(),
        "committed full report\n"
    );
}
