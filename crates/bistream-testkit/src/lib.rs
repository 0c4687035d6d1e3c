//! The one home of process and port plumbing for the integration tests and the benchmark
//! harness: where the workspace and the Python peer venvs are, free loopback ports, a tiny
//! HTTP GET, and child processes ([`Peer`]) that are killed when dropped, whose output can be
//! awaited line by line with a timeout, and that are stopped SIGTERM-then-kill.
//!
//! The venvs are made by `scripts/setup-test-env` (run by `scripts/test`). A test that needs a
//! Python peer fails with a message naming that script when the venv is missing: interop tests
//! are never silently skipped. Helpers come in two flavours: `try_*`/fallible ones returning a
//! typed error (for the bench) and panicking ones whose panic message is the test failure.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let mut cmd = tokio::process::Command::new("bistream");
//! cmd.args(["relay", "serve", "--port", "0"]);
//! let mut relay = bistream_testkit::Peer::spawn(cmd).unwrap();
//! // "relay listening on ws://127.0.0.1:PORT" -> "127.0.0.1:PORT", or an error with the output.
//! let addr = relay
//!     .wait_line(Duration::from_secs(20), bistream_testkit::parse_addr)
//!     .await
//!     .unwrap();
//! relay.drain_output(); // never block the server on a full pipe
//! # let _ = addr;
//! relay.terminate(Duration::from_secs(5)).await; // SIGTERM, then kill after 5 s
//! # }
//! ```

mod net;
mod process;

use std::path::{Path, PathBuf};

pub use net::{free_port, http_get, open_websocket_raw, parse_addr, try_free_port};
pub use process::{rss_kib, send_signal, LoggedChild, Peer, ProcessError};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives at <root>/crates/bistream-testkit.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// A venv's Python that does not exist.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} is missing: run scripts/setup-test-env (or scripts/test) first, or set {env_var}", path.display())]
pub struct MissingVenv {
    /// Where it was looked for.
    pub path: PathBuf,
    /// The environment variable that overrides the location.
    pub env_var: &'static str,
}

/// The Python of venv `.venv/<venv>` under `root`, or `$env_var` when set.
pub fn venv_python_in(
    root: &Path,
    env_var: &'static str,
    venv: &str,
) -> Result<PathBuf, MissingVenv> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let path = root.join(".venv").join(venv).join("bin/python");
    if path.exists() {
        Ok(path)
    } else {
        Err(MissingVenv { path, env_var })
    }
}

fn venv_python(env_var: &'static str, venv: &str) -> PathBuf {
    venv_python_in(&workspace_root(), env_var, venv).unwrap_or_else(|e| panic!("{e}"))
}

/// Python interpreter of the venv holding `proxystore==1.1.0` and `websockets` (panics with
/// the setup hint when missing).
pub fn relay_python() -> PathBuf {
    venv_python(RELAY_PYTHON_VAR, "relay")
}

/// Python interpreter of the venv holding `cs-packetstream==20240630` with its pinned deps
/// (panics with the setup hint when missing).
pub fn packet_python() -> PathBuf {
    venv_python(PACKET_PYTHON_VAR, "packet")
}

/// Overrides the relay venv's Python.
pub const RELAY_PYTHON_VAR: &str = "BISTREAM_RELAY_PYTHON";
/// Overrides the packet venv's Python.
pub const PACKET_PYTHON_VAR: &str = "BISTREAM_PACKET_PYTHON";

/// The folder of Python helper scripts used by the interop tests (`tests/python`).
pub fn python_scripts_dir() -> PathBuf {
    workspace_root().join("tests").join("python")
}
