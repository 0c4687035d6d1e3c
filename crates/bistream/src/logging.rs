//! `--log-level` / `--log-format` and the tracing subscriber they set up. Logs go to stderr so
//! stdout stays free for command output (addresses, JSON lines, responses).

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log level or filter directive (error, warn, info, debug, trace, or e.g. "bistream=debug").
    #[arg(
        long,
        global = true,
        env = "BISTREAM_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "BISTREAM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level).map_err(|e| {
        anyhow::anyhow!(
            "invalid --log-level {:?}: {e}",
            args.log_level.escape_debug().to_string()
        )
    })?;
    // Colour only on a terminal: logs piped to files or to tests stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let res = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    res.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}
