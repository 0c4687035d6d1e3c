//! `bistream rpc`: not yet implemented (see the issue tracker).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RpcArgs {
    /// Arguments (reserved until this part lands).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: RpcArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bistream rpc` is not yet implemented")
}
