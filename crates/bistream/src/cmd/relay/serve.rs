//! `bistream relay serve`: not yet implemented.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub async fn serve_default() -> anyhow::Result<ExitCode> {
    anyhow::bail!("the relay server is not yet implemented")
}

pub async fn run(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    serve_default().await
}
