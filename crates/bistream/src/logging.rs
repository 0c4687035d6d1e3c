//! `--log-level` / `--log-format` and the tracing subscriber they set up. Logs go to stderr so
//! stdout stays free for command output (addresses, JSON lines, responses).

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The level words `--log-level` accepts on their own.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log level (error, warn, info, debug, trace, off) or a filter such as
    /// "info,bistream_relay_server=debug".
    #[arg(
        long,
        global = true,
        env = "BISTREAM_LOG_LEVEL",
        default_value = "info",
        value_parser = parse_filter
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

/// Accepts a level word or tracing filter directives. A bare word that is not a level is
/// refused: tracing would read `wran` as a target name and silently log nothing.
fn parse_filter(s: &str) -> Result<String, String> {
    let expected = format!(
        "expected one of {}, or TARGET=LEVEL directives such as \"info,bistream_relay_server=debug\"",
        LEVELS.join(", ")
    );
    let directives: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!("empty log level: {expected}"));
    }
    for directive in &directives {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!("unknown log level {directive:?}: {expected}"));
        }
    }
    // tracing's parser does not skip spaces around commas; a user would expect it to.
    let normalized = directives.join(",");
    EnvFilter::try_new(&normalized).map_err(|e| format!("{e}: {expected}"))?;
    Ok(normalized)
}

/// tungstenite's client handshake logs the whole HTTP request at TRACE, `Authorization`
/// header (the relay token) included. It is silenced unless the filter names tungstenite
/// itself (someone debugging the handshake on purpose).
const HIDE_CLIENT_REQUEST: &str = "tungstenite::handshake::client=off";

/// The filter to install: the user's, plus [`HIDE_CLIENT_REQUEST`].
fn effective_filter(user: &str) -> String {
    if user.contains("tungstenite") {
        user.to_string()
    } else {
        format!("{user},{HIDE_CLIENT_REQUEST}")
    }
}

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(effective_filter(&args.log_level))
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.log_level))?;
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

#[cfg(test)]
mod tests {
    use super::parse_filter;

    #[test]
    fn levels_and_directives_are_accepted() {
        for ok in [
            "info",
            "WARN",
            "off",
            "bistream=debug",
            "info,bistream_relay_server=trace",
        ] {
            assert_eq!(parse_filter(ok).as_deref(), Ok(ok), "{ok}");
        }
        assert_eq!(
            parse_filter(" warn, tokio=off ").as_deref(),
            Ok("warn,tokio=off")
        );
    }

    #[test]
    fn typos_name_the_valid_levels() {
        for bad in ["wran", "info,dbug", "", "  ", "bistream=loud"] {
            let e = parse_filter(bad).unwrap_err();
            assert!(
                e.contains("error, warn, info, debug, trace, off"),
                "{bad}: {e}"
            );
        }
    }
}
