//! `bistream relay`: the relay server (`serve`) and the client commands (`listen`, `send`).

mod client;
mod serve;

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: RelayCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RelayCommand {
    /// Run the relay (signaling) server, compatible with ProxyStore's `proxystore-relay`.
    Serve(serve::ServeArgs),
    /// Register with a relay and print each received peer message as a JSON line.
    Listen(client::ListenArgs),
    /// Register with a relay and forward one peer message.
    Send(client::SendArgs),
}

pub use serve::name_env_source;

/// `cargo run --release` with no arguments: the relay server with its embedded defaults.
pub async fn serve_default() -> anyhow::Result<ExitCode> {
    serve::serve_default().await
}

pub async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RelayCommand::Serve(a) => serve::run(a).await,
        RelayCommand::Listen(a) => client::listen(a).await,
        RelayCommand::Send(a) => client::send(a).await,
    }
}
