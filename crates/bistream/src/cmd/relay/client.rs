//! `bistream relay listen` and `bistream relay send`: not yet implemented.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ListenArgs {}

#[derive(Debug, clap::Args)]
pub struct SendArgs {}

pub async fn listen(_args: ListenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bistream relay listen` is not yet implemented")
}

pub async fn send(_args: SendArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bistream relay send` is not yet implemented")
}
