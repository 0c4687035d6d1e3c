//! Benchmark harness: each bistream part measured against its real peer and its floor in the
//! same run, printed as a table of absolute figures, ratios and the part's targets
//! (PASS/SHORT), and written as `BENCHMARKS.md`, `benchmarks.json` and latency plots.
//!
//! Every server under test runs as its own process (ours through the `bistream` binary, the
//! Python peers from their venvs, the floors through the hidden `bistream bench floor-server`)
//! and is driven by the same Rust load generator, so all sides pay the same client costs.
//!
//! A suite is a module with a [`SuiteDef`]; adding one is that module plus one line in
//! [`SUITES`].
#![forbid(unsafe_code)]

pub mod floor;
pub mod hist;
pub mod load;
pub mod machine;
pub mod plot;
pub mod proc;
pub mod report;
mod suites;

/// The `logs` suite's stream (its servers and the raw-read floor), for profiling drivers such as
/// `examples/logs_tail_profile.rs` that must read exactly what the suite measures.
pub mod logs_stream {
    pub use crate::suites::logs::{block, floor, servers};
}

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

pub use floor::{run_floor_server, FloorKind};
use hist::Histogram;
use report::{Cell, Row};

/// A suite's entry point: runs every measurement and returns rows and latency series.
pub type SuiteFn = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = SuiteOutput> + Send + 'a>>;

/// One benchmark suite.
pub struct SuiteDef {
    /// Name on the command line (`bistream bench <name>`).
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Runs it.
    pub run: SuiteFn,
}

/// Every suite, in the order `all` runs them. Add a suite here.
pub static SUITES: &[SuiteDef] = &[
    suites::relay::SUITE,
    suites::packet::SUITE,
    suites::logs::SUITE,
    suites::cluster::SUITE,
    suites::rpc::SUITE,
    suites::soak::SUITE,
];

/// The suite names, for the command line.
pub fn suite_names() -> Vec<&'static str> {
    SUITES.iter().map(|s| s.name).collect()
}

/// What one run of `bistream bench` does.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Suites to run, by name (already validated against [`SUITES`]).
    pub suites: Vec<String>,
    /// Quick mode: short runs, one run each, small client counts (smoke test).
    pub quick: bool,
    /// Runs per measurement (the median and spread are reported).
    pub runs: usize,
    /// Measured time of one throughput or latency run (seconds in JSON).
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Unmeasured warm-up before each run (seconds in JSON).
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Idle client counts of the relay memory measurement.
    pub idle_clients: Vec<usize>,
    /// Where the report files go.
    pub out_dir: PathBuf,
    /// Python of the venv with `proxystore==1.1.0` (the real relay).
    pub relay_python: PathBuf,
    /// Python of the venv with `cs-packetstream` (the real packet implementation).
    pub packet_python: PathBuf,
    /// The `bistream` binary (servers and floor servers are spawned from it).
    pub exe: PathBuf,
    /// The command line, for the report.
    pub command_line: String,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Config {
    /// Defaults for full (`quick = false`) or quick mode. Paths are relative to `root`; the
    /// report goes to `root/target/bench` (never to the committed `docs/` unless asked with
    /// an explicit output folder).
    pub fn new(quick: bool, root: &std::path::Path, exe: PathBuf) -> Config {
        Config {
            suites: suite_names().iter().map(|s| s.to_string()).collect(),
            quick,
            runs: if quick { 1 } else { 5 },
            duration: Duration::from_millis(if quick { 400 } else { 3000 }),
            warmup: Duration::from_millis(if quick { 100 } else { 500 }),
            idle_clients: if quick { vec![100] } else { vec![1000, 10_000] },
            out_dir: root.join("target").join("bench"),
            relay_python: root.join(".venv/relay/bin/python"),
            packet_python: root.join(".venv/packet/bin/python"),
            exe,
            command_line: String::new(),
        }
    }
}

impl Config {
    /// For each selected suite whose real peer cannot run (its venv's Python is missing): the
    /// suite, the missing path and how to provide it. Checked before measuring anything.
    pub fn missing_peers(&self) -> Vec<String> {
        let needs = [
            (
                "relay",
                &self.relay_python,
                "--relay-python",
                "BISTREAM_RELAY_PYTHON",
            ),
            (
                "packet",
                &self.packet_python,
                "--packet-python",
                "BISTREAM_PACKET_PYTHON",
            ),
        ];
        needs
            .iter()
            .filter(|(suite, path, _, _)| self.suites.iter().any(|s| s == suite) && !path.exists())
            .map(|(suite, path, flag, var)| {
                format!(
                    "{suite}: the Python peer is missing ({} does not exist): run \
                     scripts/setup-test-env from a bistream checkout, or point {flag} / {var} \
                     at a Python that has it",
                    path.display()
                )
            })
            .collect()
    }
}

/// A latency distribution to plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Which chart (one SVG per chart): e.g. "relay".
    pub chart: String,
    /// Legend label.
    pub label: String,
    /// The latency distribution.
    pub hist: Histogram,
}

/// What a suite returns.
#[derive(Debug, Default)]
pub struct SuiteOutput {
    /// The table rows, in order.
    pub rows: Vec<Row>,
    /// Latency distributions to plot.
    pub series: Vec<Series>,
    /// Free-text facts about the workload, printed under the table.
    pub notes: Vec<String>,
}

/// What suites get: the configuration, the progress display, and scratch space.
pub struct Ctx {
    /// The run's configuration.
    pub cfg: Config,
    progress: MultiProgress,
    /// Temporary folder for the embedded Python helper scripts.
    pub scratch: tempfile::TempDir,
}

impl Ctx {
    /// A progress bar of `len` steps for a suite (hidden when stderr is not a terminal).
    pub fn bar(&self, suite: &str, len: u64) -> ProgressBar {
        let pb = self.progress.add(ProgressBar::new(len));
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {elapsed} {msg}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_prefix(suite.to_string());
        pb
    }

    /// Writes an embedded helper script into the scratch folder and returns its path.
    pub fn script(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let p = self.scratch.path().join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(p)
    }

    /// Runs per measurement.
    pub fn runs(&self) -> usize {
        self.cfg.runs.max(1)
    }
}

/// Everything one `bistream bench` produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run finished (UTC, RFC 3339).
    pub generated_at: String,
    /// Where and with what it ran.
    pub machine: machine::Machine,
    /// What was asked.
    pub config: Config,
    /// Every suite's rows.
    pub rows: Vec<Row>,
    /// Workload notes, prefixed with the suite name.
    pub notes: Vec<String>,
    /// Latency distributions (plotted, not in the JSON).
    #[serde(skip)]
    pub series: Vec<Series>,
}

/// Runs the configured suites and returns the report (nothing written yet).
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    raise_fd_limit();
    let scratch = tempfile::Builder::new()
        .prefix("bistream-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let ctx = Ctx {
        cfg: cfg.clone(),
        progress: MultiProgress::new(),
        scratch,
    };
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let mut notes = Vec::new();
    for name in &cfg.suites {
        let Some(def) = SUITES.iter().find(|s| s.name == name) else {
            rows.push(
                Row::new(name, "suite", "", true)
                    .ours(Cell::NotAvailable(format!("unknown suite {name:?}"))),
            );
            continue;
        };
        let out = (def.run)(&ctx).await;
        rows.extend(out.rows);
        series.extend(out.series);
        notes.extend(out.notes.into_iter().map(|n| format!("{name}: {n}")));
    }
    let machine = machine::Machine::probe(&cfg).await;
    Ok(Report {
        generated_at: machine::now_utc(),
        machine,
        config: cfg,
        rows,
        notes,
        series,
    })
}

/// Raises the soft open-file limit to the hard limit (idle-client memory runs need ~2 fds per
/// client across the two processes; children inherit the limit).
pub fn raise_fd_limit() -> u64 {
    bistream_core::fdlimit::raise_nofile_limit()
        .soft
        .unwrap_or(u64::MAX)
}

impl Report {
    /// "suite / metric / column: reason" for every figure that could not be measured.
    pub fn unavailable(&self) -> Vec<String> {
        let mut v = Vec::new();
        for r in &self.rows {
            for (col, c) in [("ours", &r.ours), ("peer", &r.peer), ("floor", &r.floor)] {
                if let Cell::NotAvailable(why) = c {
                    v.push(format!("{} / {} / {col}: {why}", r.suite, r.metric));
                }
            }
        }
        v
    }
}

/// The plain-text table and notes for stdout.
pub fn render_text(r: &Report) -> String {
    let mut s = report::text_table(&r.rows, r.config.quick);
    if !r.notes.is_empty() || r.config.quick {
        s.push('\n');
        for n in &r.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        if r.config.quick {
            s.push_str(&format!("note: {}\n", report::QUICK_NOTE));
        }
    }
    s
}

/// Writes `BENCHMARKS.md`, `benchmarks.json` and `bench-<chart>-latency.svg` into the
/// configured output folder and returns the paths written.
pub fn write_outputs(r: &Report) -> anyhow::Result<Vec<PathBuf>> {
    let dir = &r.config.out_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut charts: Vec<String> = r.series.iter().map(|s| s.chart.clone()).collect();
    charts.dedup();
    let mut svgs = Vec::new();
    for chart in &charts {
        let file = format!("bench-{chart}-latency.svg");
        let path = dir.join(&file);
        let series: Vec<&Series> = r.series.iter().filter(|s| &s.chart == chart).collect();
        plot::latency_cdf(&path, chart, &series)
            .with_context(|| format!("cannot write {}", path.display()))?;
        svgs.push(file);
        written.push(path);
    }
    let md = machine::markdown(r, &svgs);
    let md_path = dir.join("BENCHMARKS.md");
    std::fs::write(&md_path, md).with_context(|| format!("cannot write {}", md_path.display()))?;
    written.push(md_path);
    let json_path = dir.join("benchmarks.json");
    let json = serde_json::to_string_pretty(r).context("cannot encode the report")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    written.push(json_path);
    Ok(written)
}
