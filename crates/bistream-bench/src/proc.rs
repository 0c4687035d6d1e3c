//! Server processes under test, on top of the one process helper ([`bistream_testkit::Peer`]):
//! a [`Server`] is a peer whose output is drained in the background as soon as it is ready,
//! so a chatty server never blocks on a full pipe, and whose errors carry its last output.

use std::time::Duration;

use bistream_testkit::Peer;
use tokio::process::Command;

pub use bistream_testkit::{parse_addr, rss_kib};

/// A running server process, killed on drop.
pub struct Server(Peer);

impl Server {
    /// Spawns `cmd` (stdin closed, stdout/stderr piped) as `name`.
    pub fn spawn(name: &str, cmd: Command) -> anyhow::Result<Server> {
        Ok(Server(Peer::spawn_named(name, cmd)?))
    }

    /// Waits for an output line for which `f` returns a value, then drains the rest.
    pub async fn wait_line<T>(
        &mut self,
        timeout: Duration,
        f: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let v = self.0.wait_line(timeout, f).await;
        self.0.drain_output();
        Ok(v?)
    }

    /// Waits until `addr` accepts TCP connections (for servers that print nothing useful).
    pub async fn wait_port(&mut self, addr: &str, timeout: Duration) -> anyhow::Result<()> {
        Ok(self.0.wait_port(addr, timeout).await?)
    }

    /// The last lines the process printed.
    pub fn output_tail(&self) -> String {
        self.0.output_tail()
    }

    /// The OS process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        Ok(self.0.pid()?)
    }

    /// Resident set size in KiB (Linux `/proc/<pid>/status` VmRSS).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        Ok(self.0.rss_kib()?)
    }

    /// Fails (with the output tail) if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        Ok(self.0.check_alive()?)
    }

    /// SIGTERM, wait up to 3 s, then kill.
    pub async fn stop(self) {
        self.0.stop().await
    }
}
