//! The load generator's clock and run control: workers loop while a shared phase goes
//! warm-up → measure → stop, count and time only what completes inside the measured window,
//! and hand back their counts and latency histograms. Also the TCP floors' clients (ping-pong
//! and bulk copy), which need nothing but a socket.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::hist::Histogram;

/// Nanoseconds since the first call in this process (a shared monotonic clock, so a
/// timestamp taken by one task can be compared with the time another task receives it).
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The shared run phase. Clone it into every worker.
#[derive(Clone)]
pub struct Phase {
    state: Arc<AtomicU8>,
    stop_rx: watch::Receiver<bool>,
}

/// The controller's side of a [`Phase`].
pub struct PhaseControl {
    state: Arc<AtomicU8>,
    stop_tx: watch::Sender<bool>,
}

/// A new phase (in warm-up) and its controller.
pub fn phase() -> (Phase, PhaseControl) {
    let state = Arc::new(AtomicU8::new(WARMUP));
    let (stop_tx, stop_rx) = watch::channel(false);
    (
        Phase {
            state: state.clone(),
            stop_rx,
        },
        PhaseControl { state, stop_tx },
    )
}

impl Phase {
    /// Whether completions now count.
    pub fn measuring(&self) -> bool {
        self.state.load(Ordering::Relaxed) == MEASURE
    }

    /// Whether the run is over.
    pub fn stopped(&self) -> bool {
        self.state.load(Ordering::Relaxed) == STOP
    }

    /// Resolves when the run is over (for `select!` against a read).
    pub async fn until_stop(&mut self) {
        let _ = self.stop_rx.wait_for(|s| *s).await;
    }
}

/// What one worker hands back.
#[derive(Debug, Default)]
pub struct WorkerOut {
    /// Operations completed in the measured window.
    pub count: u64,
    /// Payload bytes moved in the measured window (one direction).
    pub bytes: u64,
    /// Latency of each counted operation.
    pub hist: Histogram,
}

impl WorkerOut {
    /// Counts one completed operation that started at `start_ns` (if measuring).
    pub fn complete(&mut self, phase: &Phase, start_ns: u64, bytes: u64) {
        if phase.measuring() {
            self.count += 1;
            self.bytes += bytes;
            self.hist.record(now_ns().saturating_sub(start_ns));
        }
    }
}

/// One run's totals.
#[derive(Debug, Default)]
pub struct RunOut {
    /// Operations completed.
    pub count: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Measured seconds.
    pub secs: f64,
    /// Per-operation latencies.
    pub hist: Histogram,
}

impl RunOut {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.secs
    }
    /// Megabytes (10^6) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    /// A latency quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        self.hist.quantile(q).map(|ns| ns as f64 / 1000.0)
    }
}

/// Runs the phases over already-started workers: warm-up, measure for `duration`, stop, then
/// collects every worker's output (each must end within 10 s of the stop).
pub async fn drive(
    ctl: PhaseControl,
    warmup: Duration,
    duration: Duration,
    workers: Vec<JoinHandle<anyhow::Result<WorkerOut>>>,
) -> anyhow::Result<RunOut> {
    tokio::time::sleep(warmup).await;
    ctl.state.store(MEASURE, Ordering::SeqCst);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    ctl.state.store(STOP, Ordering::SeqCst);
    let secs = t0.elapsed().as_secs_f64();
    let _ = ctl.stop_tx.send(true);
    let mut out = RunOut {
        secs,
        ..RunOut::default()
    };
    let mut first_err = None;
    for w in workers {
        let abort = w.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), w).await {
            Ok(Ok(Ok(o))) => {
                out.count += o.count;
                out.bytes += o.bytes;
                out.hist.merge(&o.hist);
            }
            Ok(Ok(Err(e))) => {
                first_err.get_or_insert(e);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(anyhow!("worker task failed: {e}"));
            }
            Err(_) => {
                abort.abort();
                first_err.get_or_insert(anyhow!("a worker did not stop within 10 s"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if out.count == 0 => Err(anyhow!(
            "nothing completed in the measured {:.2} s",
            out.secs
        )),
        None => Ok(out),
    }
}

/// Connects to `addr` with TCP_NODELAY.
pub async fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Raw TCP ping-pong against an echo server: one `size`-byte message out, the same back,
/// sequentially.
pub async fn tcp_ping_pong(
    addr: &str,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<RunOut> {
    let mut sock = connect(addr).await?;
    let (mut p, ctl) = phase();
    let w = tokio::spawn(async move {
        let msg = vec![7u8; size];
        let mut back = vec![0u8; size];
        let mut out = WorkerOut::default();
        while !p.stopped() {
            let t = now_ns();
            sock.write_all(&msg).await?;
            tokio::select! {
                r = sock.read_exact(&mut back) => { r?; }
                _ = p.until_stop() => break,
            }
            out.complete(&p, t, size as u64);
        }
        Ok(out)
    });
    drive(ctl, warmup, duration, vec![w]).await
}

/// Raw TCP copy through an echo server: a writer streams `chunk`-byte writes while a reader
/// takes the bytes back; `bytes` counts one direction ("each way").
pub async fn tcp_copy(
    addr: &str,
    chunk: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<RunOut> {
    let sock = connect(addr).await?;
    let (mut rd, mut wr) = sock.into_split();
    let (p, ctl) = phase();
    let mut pw = p.clone();
    let writer = tokio::spawn(async move {
        let msg = vec![7u8; chunk];
        while !pw.stopped() {
            tokio::select! {
                r = wr.write_all(&msg) => { r?; }
                _ = pw.until_stop() => break,
            }
        }
        Ok(WorkerOut::default())
    });
    let mut pr = p;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut out = WorkerOut::default();
        let mut in_chunk = 0usize;
        let mut t = now_ns();
        loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => r?,
                _ = pr.until_stop() => break,
            };
            if n == 0 {
                break;
            }
            if pr.measuring() {
                out.bytes += n as u64;
            }
            in_chunk += n;
            while in_chunk >= chunk {
                in_chunk -= chunk;
                out.complete(&pr, t, 0);
                t = now_ns();
            }
        }
        Ok(out)
    });
    drive(ctl, warmup, duration, vec![writer, reader]).await
}
