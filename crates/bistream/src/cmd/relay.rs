//! `bistream relay`: the relay server (`serve`) and client commands (`listen`, `send`).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Arguments (reserved until this part lands).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

/// `cargo run --release` with no arguments: the relay server with its embedded defaults.
pub async fn serve_default() -> anyhow::Result<ExitCode> {
    anyhow::bail!("the relay server is not yet implemented")
}

pub async fn run(_args: RelayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bistream relay` is not yet implemented")
}
