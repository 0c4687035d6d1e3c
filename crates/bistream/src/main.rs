//! The `bistream` command: one binary with a subcommand per part. With no subcommand it runs
//! the relay server (`cargo run --release`), honouring the same flags and `BISTREAM_RELAY_*`
//! environment variables as `bistream relay serve`.

mod cmd;
mod logging;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// jemalloc returns freed pages to the system after `dirty_decay_ms` (its background thread
/// purges them while the relay is idle); glibc malloc kept +135 MiB after 10,000 churning
/// clients left, jemalloc was back within 16 MiB of the baseline after 8 s (D22).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bidirectional streaming between processes: a ProxyStore-compatible relay, cs.packetstream
/// packet connections, multiplexed RPC and log tailing.
#[derive(Debug, Parser)]
#[command(
    name = "bistream",
    version,
    propagate_version = true,
    about,
    long_about = None,
    after_help = "With no subcommand, bistream runs the relay server on 127.0.0.1:8700, exactly \
                  as `bistream relay serve` does: the relay server options above (and their \
                  BISTREAM_RELAY_* environment variables) apply. Example: `bistream --port 8701`.\n\
                  Exit codes: 0 success, 1 failure, 2 bad arguments or configuration; client \
                  commands document more in their --help."
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    /// Threads of the async runtime (default: one per CPU core). Give co-located processes
    /// a share each, e.g. `1` for each of two relay cluster nodes on a 2-core machine
    /// (docs/cluster.md, "Co-located nodes").
    #[arg(long, global = true, env = "BISTREAM_WORKER_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// The relay server options, used when no subcommand is given.
    #[command(flatten)]
    serve: cmd::relay::ServeArgs,
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

/// Parses the command line. The relay server options belong to the default mode only: given
/// on the command line together with a subcommand they are an error, not silently ignored
/// (their environment variables are read by `relay serve` itself).
fn parse() -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    if let Some(sub) = matches.subcommand_name() {
        let serve_only =
            <cmd::relay::ServeArgs as clap::Args>::augment_args(clap::Command::new("x"));
        for arg in serve_only.get_arguments() {
            let id = arg.get_id().as_str();
            if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                let flag = arg.get_long().unwrap_or(id);
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--{flag} is a relay server option: use it without a subcommand, or \
                         after `relay serve`, not before `{sub}`"
                    ),
                ));
            }
        }
    }
    Cli::from_arg_matches(&matches)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => return cmd::clap_exit(e),
    };
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("bistream: {e:#}");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.worker_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bistream: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => cmd::relay::serve_default(cli.serve).await,
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
            ExitCode::FAILURE
        }
    }
}
