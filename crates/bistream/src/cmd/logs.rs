//! `bistream logs`: not yet implemented (see the issue tracker).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Arguments (reserved until this part lands).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: LogsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bistream logs` is not yet implemented")
}
