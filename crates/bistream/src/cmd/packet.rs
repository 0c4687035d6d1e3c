//! `bistream packet`: not yet implemented (see the issue tracker).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct PacketArgs {
    /// Arguments (reserved until this part lands).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: PacketArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bistream packet` is not yet implemented")
}
