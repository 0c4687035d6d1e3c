//! The `cluster` suite's load runs: client pairs spread over the given relays keep messages in
//! flight (the relay suite's clients), while the CPU time and context switches of the watched
//! server processes are sampled over the same measured window.

use anyhow::{anyhow, bail, Context};
use uuid::Uuid;

use super::super::relay::{bouncer, connect_all, Side};
use crate::load::{self, drive, RunOut};
use crate::Ctx;

/// The sum over every thread of process `pid` of `read(text)` of its `/proc/<pid>/task/*/FILE`.
/// A thread may end between the listing and the read: it no longer counts.
fn sum_over_threads(
    pid: u32,
    file: &str,
    read: impl Fn(&str) -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(s) = std::fs::read_to_string(t?.path().join(file)) else {
            continue;
        };
        total += read(&s)?;
    }
    Ok(total)
}

/// CPU time (ns) used so far by every thread of process `pid` (Linux
/// `/proc/<pid>/task/*/schedstat`, first field: nanoseconds on a CPU).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    sum_over_threads(pid, "schedstat", |s| {
        s.split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("unreadable schedstat of process {pid}"))
    })
}

/// Context switches (voluntary + involuntary) so far of every thread of process `pid`
/// (`/proc/<pid>/task/*/status`).
fn ctx_switches(pid: u32) -> anyhow::Result<u64> {
    sum_over_threads(pid, "status", |s| {
        Ok(s.lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            .sum())
    })
}

/// What one throughput run measured: the load generator's figures and, per server process
/// watched, the CPU nanoseconds it used and its context switches during the measured window.
pub(super) struct Measured {
    pub(super) run: RunOut,
    cpu_ns: Vec<u64>,
    switches: Vec<u64>,
}

impl Measured {
    /// CPU µs per completed message of the processes at `which` (indexes into the watched
    /// processes).
    pub(super) fn cpu_us_per_msg(&self, which: &[usize]) -> anyhow::Result<f64> {
        if self.run.count == 0 {
            bail!("no messages completed");
        }
        let ns: u64 = which.iter().filter_map(|i| self.cpu_ns.get(*i)).sum();
        Ok(ns as f64 / 1000.0 / self.run.count as f64)
    }

    /// Context switches per completed message of the processes at `which`.
    pub(super) fn switches_per_msg(&self, which: &[usize]) -> anyhow::Result<f64> {
        self.per_msg(&self.switches, which)
    }

    fn per_msg(&self, counts: &[u64], which: &[usize]) -> anyhow::Result<f64> {
        if self.run.count == 0 {
            bail!("no messages completed");
        }
        let n: u64 = which.iter().filter_map(|i| counts.get(*i)).sum();
        Ok(n as f64 / self.run.count as f64)
    }
}

/// `pairs` pairs, A on `a_addr` and B on `b_addr`, `in_flight` messages per pair.
pub(super) async fn pairs_run(
    ctx: &Ctx,
    a_addr: &str,
    b_addr: &str,
    pairs: usize,
    in_flight: usize,
) -> anyhow::Result<RunOut> {
    Ok(measured_run(ctx, a_addr, b_addr, pairs, in_flight, &[])
        .await?
        .run)
}

/// [`pairs_run`], also sampling the CPU time of the processes `watch` at the start and the
/// end of the measured window (the same sleeps as [`drive`], started at the same moment).
pub(super) async fn measured_run(
    ctx: &Ctx,
    a_addr: &str,
    b_addr: &str,
    pairs: usize,
    in_flight: usize,
    watch: &[u32],
) -> anyhow::Result<Measured> {
    let ids: Vec<(Uuid, Uuid)> = (0..pairs)
        .map(|_| (Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    let targets: Vec<(Uuid, String)> = ids
        .iter()
        .flat_map(|(a, b)| [(*a, a_addr.to_string()), (*b, b_addr.to_string())])
        .collect();
    let mut conns = connect_all(Side::Ours, targets).await?.into_iter();
    let (phase, ctl) = load::phase();
    let mut workers = Vec::new();
    for (a, b) in ids {
        let (Some(wa), Some(wb)) = (conns.next(), conns.next()) else {
            bail!("lost a connection");
        };
        workers.push(tokio::spawn(bouncer(wa, a, b, in_flight, phase.clone())));
        workers.push(tokio::spawn(bouncer(wb, b, a, 0, phase.clone())));
    }
    let (warmup, duration) = (ctx.cfg.warmup, ctx.cfg.duration);
    let pids = watch.to_vec();
    let sampler = tokio::spawn(async move {
        let sample = |pids: &[u32], f: fn(u32) -> anyhow::Result<u64>| {
            pids.iter()
                .map(|p| f(*p))
                .collect::<anyhow::Result<Vec<u64>>>()
        };
        let delta = |end: Vec<u64>, start: Vec<u64>| -> Vec<u64> {
            end.iter()
                .zip(start)
                .map(|(e, s)| e.saturating_sub(s))
                .collect()
        };
        tokio::time::sleep(warmup).await;
        let (cpu0, cs0) = (sample(&pids, cpu_ns)?, sample(&pids, ctx_switches)?);
        tokio::time::sleep(duration).await;
        let (cpu1, cs1) = (sample(&pids, cpu_ns)?, sample(&pids, ctx_switches)?);
        Ok::<_, anyhow::Error>((delta(cpu1, cpu0), delta(cs1, cs0)))
    });
    let run = drive(ctl, warmup, duration, workers).await?;
    let (cpu_ns, switches) = sampler.await.context("the CPU sampler failed")??;
    Ok(Measured {
        run,
        cpu_ns,
        switches,
    })
}
