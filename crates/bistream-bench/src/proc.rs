//! Server processes under test: spawned with piped output, waited on until ready (a line on
//! stdout/stderr, or a TCP port accepting), drained in the background so they never block on a
//! full pipe, measured (RSS from `/proc/<pid>/status`) and stopped (SIGTERM, then kill).

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How many of the last output lines are kept for error messages.
const TAIL: usize = 30;

/// A running server process, killed on drop.
pub struct Server {
    name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    lines: mpsc::Receiver<String>,
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    r: R,
    tx: mpsc::Sender<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(l.clone());
            }
            // Nobody may be listening any more: keep draining regardless.
            let _ = tx.try_send(l);
        }
    });
}

impl Server {
    /// Spawns `cmd` (stdin null, stdout/stderr piped and drained).
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Server> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel(256);
        if let Some(o) = child.stdout.take() {
            pump(o, tx.clone(), tail.clone());
        }
        if let Some(e) = child.stderr.take() {
            pump(e, tx, tail.clone());
        }
        Ok(Server {
            name: name.to_string(),
            child,
            tail,
            lines: rx,
        })
    }

    /// The last lines the process printed.
    pub fn output_tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(st)) => format!(" (exited: {st})"),
            _ => String::new(),
        };
        anyhow!(
            "{}: {what}{status}; last output:\n{}",
            self.name,
            self.output_tail()
        )
    }

    /// Waits for an output line for which `f` returns a value.
    pub async fn wait_line<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let res = tokio::time::timeout(timeout, async {
            while let Some(l) = self.lines.recv().await {
                if let Some(v) = f(&l) {
                    return Some(v);
                }
            }
            None
        })
        .await;
        match res {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.failure("exited before it was ready")),
            Err(_) => Err(self.failure(&format!("not ready after {timeout:?}"))),
        }
    }

    /// Waits until `addr` accepts TCP connections (for servers that print nothing useful).
    pub async fn wait_port(&mut self, addr: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.failure("exited before it was ready"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.failure(&format!("{addr} not accepting after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .ok_or_else(|| anyhow!("{} has exited", self.name))
    }

    /// Resident set size in KiB (Linux `/proc/<pid>/status` VmRSS).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid()?)
    }

    /// Fails (with the output tail) if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(self.failure("exited")),
        }
    }

    /// SIGTERM, wait up to 3 s, then kill.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb = rest.trim().trim_end_matches("kB").trim();
            return kb
                .parse()
                .with_context(|| format!("bad VmRSS line {line:?}"));
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// Parses the address out of a "... listening on ws://HOST:PORT" or a bare "HOST:PORT" line.
pub fn parse_addr(line: &str) -> Option<String> {
    let word = line.split_whitespace().last()?;
    let word = word
        .trim_start_matches("ws://")
        .trim_start_matches("http://")
        .trim_start_matches("tcp://")
        .trim_end_matches('/');
    word.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_ready_lines() {
        assert_eq!(
            parse_addr("relay listening on ws://127.0.0.1:4567").as_deref(),
            Some("127.0.0.1:4567")
        );
        assert_eq!(parse_addr("127.0.0.1:80").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(
            parse_addr("listening on 127.0.0.1:9/").as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(parse_addr("starting up"), None);
        assert_eq!(parse_addr(""), None);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
