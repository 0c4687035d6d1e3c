//! `bistream bench`: runs benchmark suites (each part against its real peer and its floor) and
//! writes the report; `bistream bench floor-server` (hidden) serves a floor for them.

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
    /// Suites to run: `all`, or any of the suite names (relay, packet).
    #[arg(value_name = "SUITE", default_value = "all")]
    suites: Vec<String>,
    /// Smoke-test mode: one short run per figure and 100 idle clients (under 90 s in total).
    #[arg(long)]
    quick: bool,
    /// Runs per figure (the report shows the median and the min–max spread).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: Option<u32>,
    /// Measured seconds per run (after a warm-up of a sixth of it, at most 1 s).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Folder for BENCHMARKS.md, benchmarks.json and the latency SVGs [default: docs/ of the
    /// workspace, or of the current folder outside a checkout].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Exit with failure when any figure could not be measured (for the smoke test).
    #[arg(long)]
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

/// The folder holding `.venv` and `docs`: the nearest ancestor of the current folder with a
/// `Cargo.toml` declaring a workspace, else the current folder.
fn project_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest)
            .map(|t| t.contains("[workspace]"))
            .unwrap_or(false)
        {
            return dir.to_path_buf();
        }
    }
    cwd
}

fn resolve(root: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir()
            .map(|c| c.join(&p))
            .unwrap_or_else(|_| root.join(p))
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
        if s == "all" {
            suites.extend(names.iter().map(|n| n.to_string()));
        } else if names.contains(&s.as_str()) {
            suites.push(s.clone());
        } else {
            anyhow::bail!(
                "unknown suite {:?}: expected all or one of {}",
                s.escape_debug().to_string(),
                names.join(", ")
            );
        }
    }
    suites.dedup();
    let root = project_root();
    let exe = std::env::current_exe().context("cannot locate the bistream binary")?;
    let mut cfg = bistream_bench::Config::new(args.quick, &root, exe);
    cfg.suites = suites;
    if let Some(r) = args.runs {
        cfg.runs = r as usize;
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && (0.05..=3600.0).contains(&d)) {
            anyhow::bail!("--duration must be between 0.05 and 3600 seconds, got {d}");
        }
        cfg.duration = std::time::Duration::from_secs_f64(d);
        cfg.warmup = std::time::Duration::from_secs_f64((d / 6.0).min(1.0));
    }
    if let Some(o) = args.out {
        cfg.out_dir = resolve(&root, o);
    }
    if let Some(p) = args.relay_python {
        cfg.relay_python = resolve(&root, p);
    }
    if let Some(p) = args.packet_python {
        cfg.packet_python = resolve(&root, p);
    }
    cfg.command_line = std::env::args()
        .skip(1)
        .fold("bistream".to_string(), |acc, a| acc + " " + &a);
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
    }
    let missing = report.unavailable();
    if args.strict && !missing.is_empty() {
        eprintln!("bistream bench: {} figure(s) not measured:", missing.len());
        for m in &missing {
            eprintln!("  {m}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
