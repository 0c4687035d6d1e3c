//! The suites, one module each, and what they share: starting the servers under test (ours
//! from the `bistream` binary, the floors from its hidden `bench floor-server`).

pub mod cluster;
pub mod logs;
pub mod packet;
pub mod relay;
pub mod rpc;
pub mod rpc_rsocket;
pub mod soak;

use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use crate::floor::FloorKind;
use crate::proc::{parse_addr, Server};
use crate::Ctx;

/// How long any server gets to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `bistream <args>` and waits for the address on its first stdout lines.
pub async fn spawn_ours(ctx: &Ctx, name: &str, args: &[&str]) -> anyhow::Result<(Server, String)> {
    let mut cmd = Command::new(&ctx.cfg.exe);
    cmd.args(args).arg("--log-level").arg("warn");
    let mut s = Server::spawn(name, cmd)?;
    let addr = s
        .wait_line(READY_TIMEOUT, parse_addr)
        .await
        .with_context(|| format!("{name} did not print its address"))?;
    Ok((s, addr))
}

/// Starts a floor server process.
pub async fn spawn_floor(ctx: &Ctx, kind: FloorKind) -> anyhow::Result<(Server, String)> {
    spawn_ours(
        ctx,
        &format!("floor {}", kind.name()),
        &["bench", "floor-server", kind.name(), "127.0.0.1:0"],
    )
    .await
}

/// "peer not available" reason when a venv's Python is missing.
pub fn python_missing(p: &std::path::Path) -> Option<String> {
    (!p.exists()).then(|| {
        format!(
            "peer not available ({} missing: run scripts/setup-test-env)",
            p.display()
        )
    })
}

/// A free loopback port (for the Python relay, which cannot report a port it bound as 0).
pub fn free_port() -> anyhow::Result<u16> {
    bistream_testkit::try_free_port().context("bind 127.0.0.1:0")
}

/// Collects per-run values for one column; the first error makes the column "not available".
#[derive(Default)]
pub struct Runs {
    pub values: Vec<f64>,
    pub error: Option<String>,
}

impl Runs {
    /// Records one run's figure or error.
    pub fn push(&mut self, r: anyhow::Result<f64>) {
        match r {
            Ok(v) => self.values.push(v),
            Err(e) => {
                self.error.get_or_insert(format!("{e:#}"));
            }
        }
    }

    /// Marks the column unavailable (e.g. the server did not start).
    pub fn fail(&mut self, why: &str) {
        self.error.get_or_insert(why.to_string());
    }

    /// The column's cell: the figures, or the first error if any run failed.
    pub fn cell(&self) -> crate::report::Cell {
        match &self.error {
            Some(e) => crate::report::Cell::NotAvailable(first_line(e)),
            None => crate::report::Cell::from_runs(&self.values, "no run"),
        }
    }
}

/// The first line of an error chain (the table has no room for a whole transcript).
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
