//! The machine and versions a report was measured with (CPU, cores, kernel, rustc, Python and
//! peer package versions, git commit), the UTC timestamp, and the Markdown report.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::{report, Config, Report};

/// Facts about where and with what the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores visible to the process.
    pub cores: usize,
    /// Total RAM.
    pub memory: String,
    /// Kernel (uname).
    pub kernel: String,
    /// Compiler version.
    pub rustc: String,
    /// Version of the binary measured.
    pub bistream_version: String,
    /// Commit of the checkout (and whether it was dirty).
    pub git_commit: String,
    /// The relay peer measured (package and version).
    pub relay_peer: String,
    /// The packet peer measured (package and version).
    pub packet_peer: String,
    /// The soft open-file limit during the run.
    pub open_file_limit: String,
}

async fn output(cmd: &str, args: &[&str], cwd: Option<&Path>) -> Option<String> {
    let mut c = tokio::process::Command::new(cmd);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), c.output())
        .await
        .ok()?
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

async fn python_versions(python: &Path, packages: &[&str]) -> String {
    if !python.exists() {
        return format!("not available ({} missing)", python.display());
    }
    let code = format!(
        "import sys, importlib.metadata as m\nprint('Python ' + sys.version.split()[0] + ', ' + ', '.join(p + ' ' + m.version(p) for p in {packages:?}))"
    );
    output(&python.to_string_lossy(), &["-c", &code], None)
        .await
        .unwrap_or_else(|| "unknown (version query failed)".into())
}

impl Machine {
    /// Probes this machine.
    pub async fn probe(cfg: &Config) -> Machine {
        let exe_dir = cfg.exe.parent().map(Path::to_path_buf);
        let git = match output(
            "git",
            &["rev-parse", "--short=12", "HEAD"],
            exe_dir.as_deref(),
        )
        .await
        {
            Some(c) => {
                let dirty = output("git", &["status", "--porcelain"], exe_dir.as_deref())
                    .await
                    .map(|s| !s.is_empty())
                    .unwrap_or(false);
                if dirty {
                    format!("{c} (work tree has uncommitted changes)")
                } else {
                    c
                }
            }
            None => "unknown".into(),
        };
        let lim = bistream_core::fdlimit::nofile_limit();
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
        let nofile = format!("{} soft / {} hard", show(lim.soft), show(lim.hard));
        Machine {
            cpu: proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory: proc_field("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| format!("Linux {}", s.trim()))
                .unwrap_or_else(|_| std::env::consts::OS.to_string()),
            rustc: output("rustc", &["--version"], None)
                .await
                .unwrap_or_else(|| "unknown (rustc not on PATH)".into()),
            bistream_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: git,
            relay_peer: python_versions(&cfg.relay_python, &["proxystore", "websockets"]).await,
            packet_peer: python_versions(&cfg.packet_python, &["cs.packetstream", "cs.binary"])
                .await,
            open_file_limit: nofile,
        }
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The whole `BENCHMARKS.md`.
pub fn markdown(r: &Report, svgs: &[String]) -> String {
    let m = &r.machine;
    let c = &r.config;
    let mut s = String::from("# bistream benchmarks\n\n");
    s.push_str(
        "Generated by `bistream bench`: each part is measured against its real peer (the \
         Python implementation) and against the physical floor (raw sockets) in the same run. \
         Every server is its own process, driven by the same Rust load generator. Figures are \
         medians over the runs, with [min–max] over runs. Ratio = ours ÷ the named column. \
         **Do not compare figures across machines or runs; compare the ratios of one run.**\n\n",
    );
    s.push_str(&format!("- Generated: {}\n", r.generated_at));
    s.push_str(&format!("- Command: `{}`\n", c.command_line));
    s.push_str(&format!(
        "- Mode: {} — {} run(s) per figure, {:.1} s measured after {:.1} s warm-up per run; idle clients: {:?}\n",
        if c.quick { "quick" } else { "full" },
        c.runs,
        c.duration.as_secs_f64(),
        c.warmup.as_secs_f64(),
        c.idle_clients
    ));
    s.push_str(&format!(
        "- Machine: {} ({} cores visible), {} RAM, {}\n",
        m.cpu, m.cores, m.memory, m.kernel
    ));
    s.push_str(&format!("- Open-file limit: {}\n", m.open_file_limit));
    s.push_str(&format!(
        "- bistream {} at git {}; {}\n",
        m.bistream_version, m.git_commit, m.rustc
    ));
    s.push_str(&format!("- Relay peer: {}\n", m.relay_peer));
    s.push_str(&format!("- Packet peer: {}\n\n", m.packet_peer));
    s.push_str("## Results\n\n");
    s.push_str(&report::markdown_table(&r.rows, c.quick));
    if c.quick {
        s.push_str(&format!("\n{}.\n", report::QUICK_NOTE));
    }
    if !r.notes.is_empty() {
        s.push_str("\n## Workloads and caveats\n\n");
        for n in &r.notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s.push_str(
        "\n## Reproducing\n\n\
         `scripts/setup-test-env` (the Python peers), then `cargo run --release -- bench all` \
         (full: 5 runs of 3 s per figure, 1,000 and 10,000 idle clients; about 8 minutes on 2 cores), \
         or one suite (`bench relay`), `--quick` (one short run, too short to judge: no \
         PASS/SHORT; `scripts/test` runs it with `--out target/bench-smoke`), `--runs N`, \
         `--duration SECONDS`, `--out DIR` (default `target/bench`; `--out docs` updates this \
         report), `--relay-python`/`--packet-python`. A figure that cannot be measured says why \
         (\"not available: ...\") and makes the exit code 1 unless `--allow-missing`. Machine \
         noise is large on a shared VM: read the [min–max] spread before a median. Adding a suite \
         (rpc, logs, cluster) is a module in `crates/bistream-bench/src/suites/` and one line in `SUITES`.\n",
    );
    if !svgs.is_empty() {
        s.push_str("\n## Latency distributions\n\n");
        for f in svgs {
            s.push_str(&format!("![{f}]({f})\n\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::now_utc();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
