//! Test support shared by the integration tests and the benchmark harness: where the Python
//! peer venvs live, free loopback ports, and child processes that are killed when dropped and
//! whose output can be awaited line by line with a timeout.
//!
//! The venvs are made by `scripts/setup-test-env` (run by `scripts/test`). A test that needs a
//! Python peer fails with a message naming that script when the venv is missing: interop tests
//! are never silently skipped.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives at <root>/crates/bistream-testkit.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit is two levels below the workspace root")
        .to_path_buf()
}

fn venv_python(env_var: &str, venv: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".venv").join(venv).join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-test-env (or scripts/test) first, or set {env_var}",
        p.display()
    );
    p
}

/// Python interpreter of the venv holding `proxystore==1.1.0` and `websockets`.
pub fn relay_python() -> PathBuf {
    venv_python("BISTREAM_RELAY_PYTHON", "relay")
}

/// Python interpreter of the venv holding `cs-packetstream==20240630` with its pinned deps.
pub fn packet_python() -> PathBuf {
    venv_python("BISTREAM_PACKET_PYTHON", "packet")
}

/// The folder of Python helper scripts used by the interop tests (`tests/python`).
pub fn python_scripts_dir() -> PathBuf {
    workspace_root().join("tests").join("python")
}

/// A loopback TCP port that was free a moment ago. Only for peers that cannot bind port 0
/// and report the port back (the Python relay server); there is a small race by nature.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// GET `path` over plain HTTP/1.1 (`Connection: close`) with a 10 s timeout on each step;
/// returns (status, body). Enough for ops endpoints such as `/health` and `/metrics`.
pub async fn http_get<A: tokio::net::ToSocketAddrs>(addr: A, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const T: Duration = Duration::from_secs(10);
    let mut s = tokio::time::timeout(T, tokio::net::TcpStream::connect(addr))
        .await
        .expect("http_get: connect timed out")
        .expect("http_get: connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .expect("http_get: write");
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .expect("http_get: read timed out")
        .expect("http_get: read");
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A child process killed on drop, with line access to its stdout and stderr.
pub struct Peer {
    pub child: Child,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    stderr: Option<Lines<BufReader<ChildStderr>>>,
    /// Everything read so far from both streams, for failure messages.
    pub transcript: Vec<String>,
}

impl Peer {
    /// Spawns `cmd` with piped stdio (stdin piped too, so it can be written or closed).
    pub fn spawn(mut cmd: Command) -> std::io::Result<Peer> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
        let stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
        Ok(Peer {
            child,
            stdout,
            stderr,
            transcript: Vec::new(),
        })
    }

    /// Takes the stdout line reader (for tests that read the protocol from stdout themselves).
    pub fn take_stdout(&mut self) -> Option<Lines<BufReader<ChildStdout>>> {
        self.stdout.take()
    }

    /// Reads lines from stdout and stderr until one contains `needle`, and returns it.
    /// Panics with the transcript on timeout or when both streams end first.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let res = tokio::time::timeout(timeout, async {
            loop {
                let line = tokio::select! {
                    l = next_line(&mut self.stdout) => l,
                    l = next_line(&mut self.stderr) => l,
                };
                match line {
                    Some(l) => {
                        self.transcript.push(l.clone());
                        if l.contains(needle) {
                            return Some(l);
                        }
                    }
                    None if self.stdout.is_none() && self.stderr.is_none() => return None,
                    None => {}
                }
            }
        })
        .await;
        match res {
            Ok(Some(l)) => l,
            Ok(None) => panic!(
                "peer exited before printing {needle:?}; output:\n{}",
                self.transcript.join("\n")
            ),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {needle:?}; output:\n{}",
                self.transcript.join("\n")
            ),
        }
    }

    /// Reads the next stdout line, with a timeout. `None` at end of stream.
    pub async fn next_stdout_line(&mut self, timeout: Duration) -> Option<String> {
        let l = tokio::time::timeout(timeout, next_line(&mut self.stdout))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {timeout:?} waiting for a stdout line; output so far:\n{}",
                    self.transcript.join("\n")
                )
            });
        if let Some(l) = &l {
            self.transcript.push(l.clone());
        }
        l
    }

    /// Keeps draining stderr in the background so a chatty peer never blocks on a full pipe.
    pub fn drain_stderr(&mut self) {
        if let Some(mut s) = self.stderr.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = s.next_line().await {} });
        }
    }

    /// Keeps draining stdout in the background. The Python relay logs a line per forwarded
    /// message to stdout: undrained, the pipe fills after ~64 KiB and the server freezes.
    pub fn drain_stdout(&mut self) {
        if let Some(mut s) = self.stdout.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = s.next_line().await {} });
        }
    }

    /// Drains both stdout and stderr in the background (call once the peer is ready).
    pub fn drain_output(&mut self) {
        self.drain_stdout();
        self.drain_stderr();
    }

    /// Sends SIGTERM (via `kill`) and waits for exit up to `timeout`; kills it after that.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(st)) => Some(st),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

/// Next line of an optional reader; a finished reader becomes `None` and then pends forever,
/// so `select!` over two readers keeps working after one of them ends.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut Option<Lines<R>>) -> Option<String> {
    match r {
        Some(lines) => match lines.next_line().await {
            Ok(Some(l)) => Some(l),
            _ => {
                *r = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}
