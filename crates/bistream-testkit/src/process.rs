//! Child processes under test: spawned with piped stdio and killed on drop; their output read
//! line by line with timeouts (every line read is kept in a bounded tail for failure
//! messages), drained in the background once ready so they never block on a full pipe,
//! measured (RSS) and stopped SIGTERM-then-kill. A [`LoggedChild`] writes its whole stderr to
//! a file instead, for tests that read every log line.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// How many of the last output lines are kept for error messages.
const TAIL: usize = 40;

/// Why a process helper failed; the message carries the process's last output lines.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The process's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited (or closed its output) before it was ready.
    #[error("{name}: exited before it was ready{status}; last output:\n{tail}")]
    Exited {
        /// The process's name.
        name: String,
        /// " (exited: ...)" when the exit status is known.
        status: String,
        /// Its last output lines.
        tail: String,
    },
    /// It was not ready in time.
    #[error("{name}: {what} after {timeout:?}; last output:\n{tail}")]
    Timeout {
        /// The process's name.
        name: String,
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
        /// Its last output lines.
        tail: String,
    },
    /// Reading `/proc` failed (RSS).
    #[error("cannot read the memory of pid {pid}: {why}")]
    Proc {
        /// The process id.
        pid: u32,
        /// Why.
        why: String,
    },
}

type Tail = Arc<Mutex<VecDeque<String>>>;

fn remember(tail: &Tail, line: &str) {
    if let Ok(mut t) = tail.lock() {
        if t.len() == TAIL {
            t.pop_front();
        }
        t.push_back(line.to_string());
    }
}

/// A child process killed on drop, with line access to its stdout and stderr.
pub struct Peer {
    /// The child (for `wait`, `id`, stdin).
    pub child: Child,
    name: String,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    stderr: Option<Lines<BufReader<ChildStderr>>>,
    /// Every line read by the waiting methods, for failure messages.
    pub transcript: Vec<String>,
    tail: Tail,
}

impl Peer {
    /// Spawns `cmd` with piped stdio (stdin piped too, so it can be written or closed),
    /// named after its program.
    pub fn spawn(cmd: Command) -> std::io::Result<Peer> {
        let name = cmd.as_std().get_program().to_string_lossy().into_owned();
        Peer::start(&name, cmd, Stdio::piped())
    }

    /// Spawns `cmd` as `name` (used in error messages), with stdin closed.
    pub fn spawn_named(name: &str, cmd: Command) -> Result<Peer, ProcessError> {
        Peer::start(name, cmd, Stdio::null()).map_err(|source| ProcessError::Spawn {
            name: name.to_string(),
            source,
        })
    }

    fn start(name: &str, mut cmd: Command, stdin: Stdio) -> std::io::Result<Peer> {
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
        let stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
        Ok(Peer {
            child,
            name: name.to_string(),
            stdout,
            stderr,
            transcript: Vec::new(),
            tail: Arc::new(Mutex::new(VecDeque::new())),
        })
    }

    /// Takes the stdout line reader (for tests that read the protocol from stdout themselves).
    pub fn take_stdout(&mut self) -> Option<Lines<BufReader<ChildStdout>>> {
        self.stdout.take()
    }

    /// The last lines the process printed (read by a wait or by a background drain).
    pub fn output_tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    fn status_note(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(st)) => format!(" (exited: {st})"),
            _ => String::new(),
        }
    }

    fn exited(&mut self) -> ProcessError {
        ProcessError::Exited {
            name: self.name.clone(),
            status: self.status_note(),
            tail: self.output_tail(),
        }
    }

    fn timeout(&mut self, what: String, timeout: Duration) -> ProcessError {
        ProcessError::Timeout {
            name: self.name.clone(),
            what,
            timeout,
            tail: self.output_tail(),
        }
    }

    /// Reads lines from stdout and stderr until `f` returns a value for one of them.
    pub async fn wait_line<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, ProcessError> {
        let res = tokio::time::timeout(timeout, async {
            loop {
                let line = tokio::select! {
                    l = next_line(&mut self.stdout) => l,
                    l = next_line(&mut self.stderr) => l,
                };
                match line {
                    Some(l) => {
                        remember(&self.tail, &l);
                        self.transcript.push(l.clone());
                        if let Some(v) = f(&l) {
                            return Some(v);
                        }
                    }
                    None if self.stdout.is_none() && self.stderr.is_none() => return None,
                    None => {}
                }
            }
        })
        .await;
        match res {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.exited()),
            Err(_) => Err(self.timeout("no ready line".to_string(), timeout)),
        }
    }

    /// Reads lines from stdout and stderr until one contains `needle`, and returns it.
    /// Panics with the transcript on timeout or when both streams end first.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        match self
            .wait_line(timeout, |l| l.contains(needle).then(|| l.to_string()))
            .await
        {
            Ok(l) => l,
            Err(e) => panic!(
                "waiting for {needle:?}: {e}\nfull transcript:\n{}",
                self.transcript.join("\n")
            ),
        }
    }

    /// Reads the next stdout line, with a timeout. `None` at end of stream.
    pub async fn next_stdout_line(&mut self, timeout: Duration) -> Option<String> {
        let l = match tokio::time::timeout(timeout, next_line(&mut self.stdout)).await {
            Ok(l) => l,
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for a stdout line; output so far:\n{}",
                self.transcript.join("\n")
            ),
        };
        if let Some(l) = &l {
            remember(&self.tail, l);
            self.transcript.push(l.clone());
        }
        l
    }

    /// Waits until `addr` accepts TCP connections (for servers that print nothing useful).
    /// Drains the output meanwhile.
    pub async fn wait_port(&mut self, addr: &str, timeout: Duration) -> Result<(), ProcessError> {
        self.drain_output();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // Let the drains catch the last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(self.exited());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.timeout(format!("{addr} not accepting"), timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keeps draining stderr in the background so a chatty peer never blocks on a full pipe
    /// (the lines still reach [`Peer::output_tail`]).
    pub fn drain_stderr(&mut self) {
        if let Some(s) = self.stderr.take() {
            drain(s, self.tail.clone());
        }
    }

    /// Keeps draining stdout in the background. The Python relay logs a line per forwarded
    /// message to stdout: undrained, the pipe fills after ~64 KiB and the server freezes.
    pub fn drain_stdout(&mut self) {
        if let Some(s) = self.stdout.take() {
            drain(s, self.tail.clone());
        }
    }

    /// Drains both stdout and stderr in the background (call once the peer is ready).
    pub fn drain_output(&mut self) {
        self.drain_stdout();
        self.drain_stderr();
    }

    /// The OS process id (an error once it has been reaped).
    pub fn pid(&self) -> Result<u32, ProcessError> {
        self.child.id().ok_or_else(|| ProcessError::Proc {
            pid: 0,
            why: format!("{} has exited", self.name),
        })
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Result<u64, ProcessError> {
        rss_kib(self.pid()?)
    }

    /// An error (with the output tail) if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), ProcessError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(self.exited()),
        }
    }

    /// Sends SIGTERM and waits for exit up to `timeout`; kills it after that (and returns
    /// `None`).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            send_signal(pid, "TERM");
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(st)) => Some(st),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// SIGTERM, wait up to 3 s, then kill.
    pub async fn stop(mut self) {
        self.terminate(Duration::from_secs(3)).await;
    }
}

/// Sends `SIG<signal>` (e.g. "TERM", "INT", "HUP") to `pid` with the `kill` utility (the
/// workspace forbids `unsafe`, so no libc call). Returns whether `kill` succeeded.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn drain<R: tokio::io::AsyncBufRead + Unpin + Send + 'static>(mut lines: Lines<R>, tail: Tail) {
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            remember(&tail, &l);
        }
    });
}

/// VmRSS of `pid` in KiB (Linux `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64, ProcessError> {
    let err = |why: String| ProcessError::Proc { pid, why };
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| err(e.to_string()))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or_else(|| err("no VmRSS line".to_string()))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| err(format!("bad VmRSS line {line:?}")))
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

/// A child whose stderr goes whole to a file, for tests that read every log line (a
/// [`Peer`] keeps only a bounded tail); killed on drop.
pub struct LoggedChild {
    /// The child (for `wait`, `id`).
    pub child: Child,
    /// Its first stdout line (a server's address line).
    pub first_line: String,
    /// The rest of its stdout.
    pub stdout: Lines<BufReader<ChildStdout>>,
}

impl LoggedChild {
    /// Spawns `cmd` with stdin closed, stdout piped and stderr written to the file `log`,
    /// and waits, at most `timeout`, for its first stdout line.
    pub async fn spawn(
        mut cmd: Command,
        log: &std::path::Path,
        timeout: Duration,
    ) -> Result<LoggedChild, ProcessError> {
        let name = cmd.as_std().get_program().to_string_lossy().into_owned();
        let log_tail = || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(TAIL)..].join("\n")
        };
        let stderr = std::fs::File::create(log).map_err(|source| ProcessError::Spawn {
            name: name.clone(),
            source,
        })?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                name: name.clone(),
                source,
            })?;
        let Some(out) = child.stdout.take() else {
            return Err(ProcessError::Exited {
                name,
                status: String::new(),
                tail: log_tail(),
            });
        };
        let mut stdout = BufReader::new(out).lines();
        match tokio::time::timeout(timeout, stdout.next_line()).await {
            Ok(Ok(Some(first_line))) => Ok(LoggedChild {
                child,
                first_line,
                stdout,
            }),
            Ok(_) => Err(ProcessError::Exited {
                name,
                status: String::new(),
                tail: log_tail(),
            }),
            Err(_) => Err(ProcessError::Timeout {
                name,
                what: "no first stdout line".into(),
                timeout,
                tail: log_tail(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    const T: Duration = Duration::from_secs(20);

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(matches!(rss_kib(u32::MAX), Err(ProcessError::Proc { .. })));
    }

    #[tokio::test]
    async fn waits_for_a_line_on_either_stream() {
        let mut p = Peer::spawn_named(
            "echoer",
            sh("echo starting >&2; echo 'ready on 127.0.0.1:5'; sleep 30"),
        )
        .unwrap();
        let addr = p.wait_line(T, parse).await.unwrap();
        assert_eq!(addr, "127.0.0.1:5");
        // stderr and stdout are two pipes: the stderr line may come after the stdout one, so
        // keep reading stderr in the background until it shows up.
        p.drain_stderr();
        let seen = tokio::time::timeout(T, async {
            while !p.output_tail().contains("starting") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "{}", p.output_tail());
        p.check_alive().unwrap();
        assert!(p.rss_kib().unwrap() > 0);
        let st = p.terminate(T).await.expect("exits on SIGTERM");
        assert!(!st.success());
    }

    fn parse(l: &str) -> Option<String> {
        crate::parse_addr(l)
    }

    #[tokio::test]
    async fn early_exit_reports_the_last_output() {
        let mut p = Peer::spawn_named("quitter", sh("echo 'bad flag --x' >&2; exit 3")).unwrap();
        let e = p.wait_line(T, parse).await.unwrap_err().to_string();
        assert!(e.contains("quitter") && e.contains("bad flag --x"), "{e}");
        let e = Peer::spawn_named("nothing", Command::new("/nonexistent/bin"))
            .err()
            .unwrap();
        assert!(matches!(e, ProcessError::Spawn { .. }), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_process_times_out_with_the_name() {
        let mut p = Peer::spawn_named("sleeper", sh("sleep 60")).unwrap();
        let e = p
            .wait_line(Duration::from_secs(5), parse)
            .await
            .unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("sleeper"), "{e}");
    }

    #[tokio::test]
    async fn drained_output_reaches_the_tail_and_sigterm_then_kill_stops() {
        // Ignores SIGTERM: terminate must fall back to kill.
        let mut p = Peer::spawn_named(
            "stubborn",
            sh("trap '' TERM; i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; echo done; sleep 60"),
        )
        .unwrap();
        p.wait_line(T, |l| (l == "line 0").then_some(()))
            .await
            .unwrap();
        p.drain_output();
        // 2000 lines (more than a pipe holds) are drained, and the tail keeps the last ones.
        let deadline = tokio::time::Instant::now() + T;
        while !p.output_tail().ends_with("done") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                p.output_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(p.output_tail().lines().count(), TAIL);
        assert_eq!(p.terminate(Duration::from_millis(300)).await, None);
        assert!(p.child.try_wait().unwrap().is_some(), "killed");
    }

    #[tokio::test]
    async fn a_logged_child_writes_its_whole_stderr_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("err.log");
        let script = "i=0; while [ $i -lt 100 ]; do echo err $i >&2; i=$((i+1)); done; echo ready; echo more";
        let mut c = LoggedChild::spawn(sh(script), &log, T).await.unwrap();
        assert_eq!(c.first_line, "ready");
        assert_eq!(c.stdout.next_line().await.unwrap().as_deref(), Some("more"));
        c.child.wait().await.unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 100);
        // A child that ends without a line is an error naming its last log lines.
        let e = LoggedChild::spawn(sh("echo bye >&2"), &log, T)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("bye"), "{e}");
    }
}
