//! `bistream bench`: runs benchmark suites (each part against its real peer and its floor) and
//! writes the report; `bistream bench floor-server` (hidden) serves a floor for them.
//!
//! The report goes to `target/bench/` of the checkout by default: the committed report in
//! `docs/` changes only when asked (`--out docs`). A figure that cannot be measured makes the
//! command fail (exit 1) unless `--allow-missing`; a missing Python peer is reported before
//! anything is measured, with the full way to install it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bistream_bench::FloorKind;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// Suites to run: `all`, or any of the suite names.
    #[arg(value_name = "SUITE", default_value = "all", value_parser = suite_parser())]
    suites: Vec<String>,
    /// Smoke-test mode: one short run per figure and 100 idle clients (under 90 s in total).
    /// Too short to judge the targets: results say met/below, never PASS/SHORT.
    #[arg(long)]
    quick: bool,
    /// Runs per figure (the report shows the median and the min–max spread).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: Option<u32>,
    /// Measured seconds per run, 0.05 to 3600 (after a warm-up of a sixth of it, at most 1 s).
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    duration: Option<f64>,
    /// Folder for BENCHMARKS.md, benchmarks.json and the latency SVGs [default: target/bench of
    /// the checkout, or ./bistream-bench outside one]. `--out docs` updates the committed report.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Exit 0 even when some figures could not be measured (e.g. no Python peers installed):
    /// those columns say "not available" and why.
    #[arg(long)]
    allow_missing: bool,
    /// Fail when any figure could not be measured (the default; kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "allow_missing")]
    strict: bool,
    /// Print the table only; write no files.
    #[arg(long, conflicts_with = "out")]
    no_write: bool,
    /// Python of the venv with proxystore 1.1.0 [default: .venv/relay/bin/python].
    #[arg(long, value_name = "PATH", env = "BISTREAM_RELAY_PYTHON")]
    relay_python: Option<PathBuf>,
    /// Python of the venv with cs-packetstream [default: .venv/packet/bin/python].
    #[arg(long, value_name = "PATH", env = "BISTREAM_PACKET_PYTHON")]
    packet_python: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Serve a floor (ws-echo or tcp-echo) on ADDR and print the bound address (internal).
    #[command(hide = true)]
    FloorServer {
        kind: FloorKind,
        #[arg(default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
}

/// `all` or a registered suite name (a bad name is a usage error: exit 2, names listed).
fn suite_parser() -> clap::builder::PossibleValuesParser {
    let mut names = vec!["all"];
    names.extend(bistream_bench::suite_names());
    clap::builder::PossibleValuesParser::new(names)
}

/// `--duration`: seconds from 0.05 to 3600, by bistream-core's duration rule.
fn parse_duration(s: &str) -> Result<f64, String> {
    bistream_core::parse_secs(s, 0.05, 3600.0)
        .map(|d| d.as_secs_f64())
        .map_err(|e| e.to_string())
}

/// The checkout holding `.venv` and `target`: the nearest ancestor of the current folder with
/// a `Cargo.toml` declaring a workspace.
fn checkout_root() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .map(|t| t.contains("[workspace]"))
                .unwrap_or(false)
        })
        .map(Path::to_path_buf)
}

/// Relative paths on the command line are relative to the current folder.
fn resolve(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(BenchCommand::FloorServer { kind, addr }) = args.command {
        bistream_bench::run_floor_server(kind, addr).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let names = bistream_bench::suite_names();
    let mut suites = Vec::new();
    for s in &args.suites {
        let add: Vec<String> = if s == "all" {
            names.iter().map(|n| n.to_string()).collect()
        } else {
            vec![s.clone()]
        };
        for a in add {
            if !suites.contains(&a) {
                suites.push(a);
            }
        }
    }
    let checkout = checkout_root();
    let root = checkout
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let exe = std::env::current_exe().context("cannot locate the bistream binary")?;
    let mut cfg = bistream_bench::Config::new(args.quick, &root, exe);
    cfg.suites = suites;
    if checkout.is_none() {
        cfg.out_dir = root.join("bistream-bench");
    }
    if let Some(r) = args.runs {
        cfg.runs = r as usize;
    }
    if let Some(d) = args.duration {
        cfg.duration = std::time::Duration::from_secs_f64(d);
        cfg.warmup = std::time::Duration::from_secs_f64((d / 6.0).min(1.0));
    }
    if let Some(o) = args.out {
        cfg.out_dir = resolve(o);
    }
    if let Some(p) = args.relay_python {
        cfg.relay_python = resolve(p);
    }
    if let Some(p) = args.packet_python {
        cfg.packet_python = resolve(p);
    }
    cfg.command_line = std::env::args()
        .skip(1)
        .fold("bistream".to_string(), |acc, a| acc + " " + &a);
    let missing_peers = cfg.missing_peers();
    if !missing_peers.is_empty() {
        for m in &missing_peers {
            eprintln!("bistream bench: {m}");
        }
        if !args.allow_missing {
            eprintln!(
                "bistream bench: not measuring without the peers (pass --allow-missing to \
                 measure the rest and mark them \"not available\")"
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    if !args.no_write {
        // Fail now rather than after minutes of measuring.
        std::fs::create_dir_all(&cfg.out_dir)
            .with_context(|| format!("cannot create {}", cfg.out_dir.display()))?;
    }
    let report = bistream_bench::run(cfg).await?;
    print!("{}", bistream_bench::render_text(&report));
    if !args.no_write {
        for p in bistream_bench::write_outputs(&report)? {
            eprintln!("wrote {}", p.display());
        }
        if let Some(c) = &checkout {
            let docs = c.join("docs");
            if report.config.out_dir != docs {
                eprintln!(
                    "(the committed report in {} is unchanged; `--out docs` updates it)",
                    docs.display()
                );
            }
        }
    }
    // Never truncated here: the table clips long reasons to fit, this list does not.
    let missing = report.unavailable();
    if !missing.is_empty() {
        eprintln!("bistream bench: {} figure(s) not measured:", missing.len());
        for m in &missing {
            eprintln!("  {m}");
        }
        if !args.allow_missing {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_is_checked_by_core() {
        assert_eq!(parse_duration(" 2.5 ").unwrap(), 2.5);
        assert_eq!(parse_duration("0.05").unwrap(), 0.05);
        for bad in ["0", "0.01", "3601", "nan", "inf", "soon", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("3601")
            .unwrap_err()
            .contains("from 0.05 to 3600"));
        assert!(!parse_duration("\x1b[2J").unwrap_err().contains('\x1b'));
    }
}
