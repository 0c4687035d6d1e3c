//! `bistream relay`: the relay server (`serve`) and the client commands (`listen`, `send`).

mod client;
mod serve;

use std::process::ExitCode;

use bistream_relay_server::ServerError;
pub use serve::ServeArgs;

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

/// `bistream` with no subcommand (`cargo run --release`): the relay server, with the same
/// flags and environment variables as `bistream relay serve`.
pub async fn serve_default(args: ServeArgs) -> anyhow::Result<ExitCode> {
    serve::run(args).await
}

pub async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RelayCommand::Serve(a) => serve::run(a).await,
        RelayCommand::Listen(a) => client::listen(a).await,
        RelayCommand::Send(a) => client::send(a).await,
    }
}

/// What to do about a bind failure, when there is something to say.
pub(crate) fn bind_hint(e: &ServerError) -> Option<&'static str> {
    match e {
        ServerError::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            Some(
                "hint: another process is using that port (is a relay already running?); \
                 pick another with --port 8701 (or BISTREAM_RELAY_PORT=8701), or --port 0 \
                 for any free port",
            )
        }
        ServerError::MetricsBind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            Some("hint: the metrics port is in use; pick another with --metrics-addr HOST:PORT (port 0 for any free port)")
        }
        _ => None,
    }
}
