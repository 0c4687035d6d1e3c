//! `bistream logs tail --ray` against a real Ray head on loopback, run only when
//! `BISTREAM_TEST_RAY=1` (scripts/setup-test-env then installs `.venv/ray`; another venv can
//! be named with `BISTREAM_RAY_VENV`). Covers a finished job, a running job, a job stopped
//! mid-stream, a job whose log holds invalid UTF-8 (Ray truncates its tail with a normal
//! close), a job followed through a proxy that refuses WebSocket upgrades (the HTTP fallback,
//! started right after the submission: Ray's `no driver node id` 500) and an unknown job. One
//! head serves every case (it takes ~5 s to start, ~6 s to stop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");
const T: Duration = Duration::from_secs(180);

fn venv() -> PathBuf {
    std::env::var_os("BISTREAM_RAY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/ray"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The head; stopped (with `ray stop --force`) when dropped.
struct Head {
    ray: PathBuf,
    dashboard: String,
}

impl Head {
    fn start() -> Head {
        let ray = venv().join("bin/ray");
        assert!(
            ray.exists(),
            "{} missing: run BISTREAM_TEST_RAY=1 scripts/setup-test-env",
            ray.display()
        );
        let port = free_port();
        // Whatever happens next, dropping `head` stops what `ray start` started.
        let head = Head {
            ray: ray.clone(),
            dashboard: format!("http://127.0.0.1:{port}"),
        };
        let status = StdCommand::new(&ray)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            // The dashboard's 60 s default is too short on a loaded 2-core machine.
            .env("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "300")
            .env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0") // keeps every listener on 127.0.0.1
            .args([
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
            ])
            .arg(format!("--dashboard-port={port}"))
            .arg(format!("--port={}", free_port()))
            .args([
                "--num-cpus=1",
                "--include-dashboard=true",
                "--disable-usage-stats",
            ])
            .arg("--object-store-memory=200000000")
            .status()
            .unwrap();
        assert!(status.success(), "ray start failed");
        head.wait_ready();
        head
    }

    fn wait_ready(&self) {
        for _ in 0..120 {
            if self
                .py(&format!(
                    "urllib.request.urlopen('{}/api/version', timeout=2)",
                    self.dashboard
                ))
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("dashboard not ready");
    }

    fn py(&self, code: &str) -> Result<String, String> {
        let out = StdCommand::new(venv().join("bin/python"))
            .args(["-c", &format!("import json, urllib.request\n{code}")])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Submits `script` (Python source) as job `id`.
    fn submit(&self, id: &str, script: &str) {
        let entry = format!("python -c {}", shell_quote(script));
        let body = serde_json::json!({"entrypoint": entry, "submission_id": id}).to_string();
        self.py(&format!(
            "r = urllib.request.Request('{}/api/jobs/', data={body:?}.encode(), headers={{'Content-Type': 'application/json'}})\nprint(urllib.request.urlopen(r).read())",
            self.dashboard
        ))
        .unwrap();
    }

    fn stop_job(&self, id: &str) {
        self.py(&format!(
            "urllib.request.urlopen(urllib.request.Request('{}/api/jobs/{id}/stop', method='POST'))",
            self.dashboard
        ))
        .unwrap();
    }

    fn status(&self, id: &str) -> String {
        let out = self
            .py(&format!(
                "print(json.load(urllib.request.urlopen('{}/api/jobs/{id}'))['status'])",
                self.dashboard
            ))
            .unwrap();
        out.trim().to_owned()
    }

    fn wait_status(&self, id: &str, want: &[&str]) {
        for _ in 0..240 {
            if want.contains(&self.status(id).as_str()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("job {id} never reached {want:?}");
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = StdCommand::new(&self.ray)
            .args(["stop", "--force"])
            .status();
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn tail(head: &Head, job: &str) -> (i32, String, String) {
    tail_via(&head.dashboard, job).await
}

/// A proxy in front of `dashboard` that answers every WebSocket upgrade with a 404 and
/// passes everything else through (as a reverse proxy without WebSocket support does).
async fn no_websocket_proxy(dashboard: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = dashboard.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if String::from_utf8_lossy(&head)
                    .to_ascii_lowercase()
                    .contains("upgrade: websocket")
                {
                    let _ = client
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

async fn tail_via(dashboard: &str, job: &str) -> (i32, String, String) {
    let out = tokio::time::timeout(
        T,
        Command::new(BIN)
            .args(["logs", "tail", "--ray", dashboard, "--job", job])
            .output(),
    )
    .await
    .expect("tail finished")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ray_job_logs() {
    if std::env::var("BISTREAM_TEST_RAY").as_deref() != Ok("1") {
        eprintln!("skipped: set BISTREAM_TEST_RAY=1 to run against a real Ray head");
        return;
    }
    let head = Head::start();

    // Finished: 3000 lines incl. non-ASCII and a 50 KB line (skipped and counted by the
    // default 10 KiB max_message_size), last line without a newline.
    head.submit(
        "raysubmit_done",
        "import sys\nfor i in range(3000): print(f\"line {i} é\")\nprint(\"x\" * 50000)\nsys.stdout.write(\"the end\")",
    );
    head.wait_status("raysubmit_done", &["SUCCEEDED"]);
    let (code, out, err) = tail(&head, "raysubmit_done").await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "line 0 é")
        .expect("first line");
    assert_eq!(lines.len() - start, 3001, "{err}");
    assert_eq!(*lines.last().unwrap(), "the end");
    assert!(err.contains("SUCCEEDED"), "{err}");

    // Running while we tail: followed to its end, no idle timeout between slow lines.
    head.submit(
        "raysubmit_live",
        "import time\nfor i in range(8):\n    print(f\"tick {i}\", flush=True)\n    time.sleep(1)",
    );
    let (code, out, err) = tail(&head, "raysubmit_live").await;
    assert_eq!(code, 0, "{err}");
    let ticks: Vec<&str> = out.lines().filter(|l| l.starts_with("tick ")).collect();
    assert_eq!(
        ticks,
        (0..8).map(|i| format!("tick {i}")).collect::<Vec<_>>()
    );

    // Stopped mid-stream: the tail ends when Ray closes, the status says STOPPED.
    head.submit(
        "raysubmit_stop",
        "import time\nfor i in range(1000):\n    print(f\"beat {i}\", flush=True)\n    time.sleep(0.5)",
    );
    let stopper = tokio::spawn({
        let dashboard = head.dashboard.clone();
        let ray = head.ray.clone();
        async move {
            let h = Head { ray, dashboard };
            // Stop it once it has printed (a fixed delay raced the job's start under load).
            tokio::task::spawn_blocking({
                let h = Head { ray: h.ray.clone(), dashboard: h.dashboard.clone() };
                move || {
                    for _ in 0..240 {
                        let logs = h.py(&format!(
                            "print(json.load(urllib.request.urlopen('{}/api/jobs/raysubmit_stop/logs'))['logs'])",
                            h.dashboard
                        ));
                        if logs.is_ok_and(|l| l.contains("beat 2")) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    std::mem::forget(h);
                }
            })
            .await
            .unwrap();
            h.stop_job("raysubmit_stop");
            std::mem::forget(h); // not the owner: do not stop the head
        }
    });
    let (code, out, err) = tail(&head, "raysubmit_stop").await;
    stopper.await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("beat 0\n"), "{out}");
    assert!(err.contains("STOPPED"), "{err}");

    // Invalid UTF-8 while the job keeps running: Ray closes its tail with 1000; we notice
    // (the job is RUNNING), recover from the file, and say so.
    head.submit(
        "raysubmit_bad",
        "import sys, time\nprint(\"before\", flush=True)\ntime.sleep(3)\nsys.stdout.buffer.write(b\"bad \\xff\\xfe\\n\")\nsys.stdout.flush()\nprint(\"after\", flush=True)\ntime.sleep(30)",
    );
    let (code, out, err) = tail(&head, "raysubmit_bad").await;
    assert!(out.contains("before\n"), "{out}");
    assert!(
        out.contains("after\n"),
        "recovered from the file: {out} / {err}"
    );
    assert!(out.contains("bad \u{fffd}\u{fffd}\n"), "{out}");
    assert_eq!(code, 10, "still running: cut off: {err}");
    head.stop_job("raysubmit_bad");

    // Through a proxy that refuses WebSocket upgrades, started right after the submission
    // (the file endpoint answers 500 `no driver node id` until the driver is known): the
    // log is followed over HTTP, each line once, a line written in two halves only whole.
    let proxy = no_websocket_proxy(&head.dashboard).await;
    head.submit(
        "raysubmit_http",
        "import sys, time\nfor i in range(4):\n    print(f\"poll {i}\", flush=True)\n    time.sleep(1)\nsys.stdout.write(\"half a \")\nsys.stdout.flush()\ntime.sleep(2.5)\nprint(\"line\", flush=True)\nsys.stdout.write(\"the end\")",
    );
    let (code, out, err) = tail_via(&proxy, "raysubmit_http").await;
    assert_eq!(code, 0, "{err}");
    let ours: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("poll ") || l.starts_with("half") || *l == "the end")
        .collect();
    assert_eq!(
        ours,
        [
            "poll 0",
            "poll 1",
            "poll 2",
            "poll 3",
            "half a line",
            "the end"
        ],
        "{out} / {err}"
    );
    assert!(err.contains("WebSocket tail unavailable"), "{err}");
    assert!(err.contains("over HTTP"), "{err}");
    assert!(err.contains("SUCCEEDED"), "{err}");
    eprintln!("HTTP fallback stderr: {err}");

    // Unknown job: 404, exit 5.
    let (code, _, err) = tail(&head, "raysubmit_nope").await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("404"), "{err}");
}
