//! The `bistream` command: one binary with a subcommand per part. With no subcommand it runs
//! the relay server with its embedded defaults (`cargo run --release`).
#![forbid(unsafe_code)]

mod cmd;
mod logging;

use clap::{CommandFactory, Parser, Subcommand};

/// Bidirectional streaming between processes: a ProxyStore-compatible relay, cs.packetstream
/// packet connections, multiplexed RPC and log tailing.
#[derive(Debug, Parser)]
#[command(name = "bistream", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ProxyStore relay: `serve` the signaling server, or `listen`/`send` as a client.
    Relay(cmd::relay::RelayArgs),
    /// cs.packetstream-compatible packet connections: `serve` and `call`.
    Packet(cmd::packet::PacketArgs),
    /// Multiplexed request/response and streaming RPC (slipstream).
    Rpc(cmd::rpc::RpcArgs),
    /// Tail logs over WebSocket or HTTP with stream limits.
    Logs(cmd::logs::LogsArgs),
    /// Benchmark each part against its real peer and the physical floor.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => cmd::relay::name_env_source(e, &Cli::command()).exit(),
    };
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("bistream: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bistream: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => cmd::relay::serve_default().await,
            Some(Command::Relay(a)) => cmd::relay::run(a).await,
            Some(Command::Packet(a)) => cmd::packet::run(a).await,
            Some(Command::Rpc(a)) => cmd::rpc::run(a).await,
            Some(Command::Logs(a)) => cmd::logs::run(a).await,
            Some(Command::Bench(a)) => cmd::bench::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bistream: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
