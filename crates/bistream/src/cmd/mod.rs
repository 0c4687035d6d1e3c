//! One module per subcommand: its clap arguments and the function that runs it; plus how a
//! command-line error is reported (exit code 2, naming the environment variable at fault).

pub mod bench;
pub mod logs;
pub mod packet;
pub mod relay;
pub mod rpc;
pub mod rpc_rsocket;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Prints a clap error (or `--help`/`--version`) and returns its exit code: 0 for help and
/// version, 2 for bad arguments. When the bad value came from an environment variable rather
/// than the command line, says which variable, since clap only names the flag.
pub fn clap_exit(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        if let Some(var) = env_source(&e) {
            eprintln!(
                "note: that value comes from the environment variable {var}; fix or unset it"
            );
        }
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// The environment variable that supplied the rejected value, if the flag itself is absent
/// from the command line.
fn env_source(e: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--port <PORT>" -> "port"
    let long = arg
        .split_whitespace()
        .next()?
        .strip_prefix("--")?
        .to_string();
    let cmd = <crate::Cli as clap::CommandFactory>::command();
    let (var, short) = find_env(&cmd, &long)?;
    let on_command_line = std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == format!("--{long}")
            || a.starts_with(&format!("--{long}="))
            || short.is_some_and(|c| a.starts_with(&format!("-{c}")))
    });
    (!on_command_line).then_some(var)
}

/// The set environment variable behind flag `--long` (and the flag's short form).
fn find_env(cmd: &clap::Command, long: &str) -> Option<(String, Option<char>)> {
    for a in cmd.get_arguments() {
        if a.get_long() == Some(long) {
            if let Some(var) = a.get_env() {
                if std::env::var_os(var).is_some() {
                    return Some((var.to_string_lossy().into_owned(), a.get_short()));
                }
            }
        }
    }
    cmd.get_subcommands().find_map(|s| find_env(s, long))
}
