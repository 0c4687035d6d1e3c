//! `bistream logs tail`: print a log stream's lines as they arrive, from a WebSocket or HTTP
//! URL, or from a Ray job (`--ray DASHBOARD --job ID`), with exact limits and an exit code
//! per error class.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bistream_core::{validate_timeout, ClientError, Status, StreamLimits};
use bistream_logs::ray::{JobInfo, RayJob};
use bistream_logs::{StatsCell, Tail, TailOptions};

const EXIT_CODES: &str = "\
Exit codes:
  0   the stream ended normally (Ray: the job finished and its whole log was shown)
  2   bad command line
  3   400 invalid input (URL, header, timeout, job id, limits)
  4   401/403 the server refused the credentials
  5   404 not found (endpoint, or unknown Ray job)
  6   408 timeout (connecting, or no data within --idle-timeout)
  7   429 a limit was reached (every line within it was printed)
  8   503 connection refused, DNS failure, reset or abnormal close
  9   500 unexpected error
  10  Ray: the stream was cut off while the job still runs and the rest could not be recovered
Errors go to stderr with their status code, e.g. `bistream: 429 limit exceeded: ...`.";

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(subcommand)]
    command: LogsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LogsCommand {
    /// Print the lines of a log stream to stdout as they arrive.
    #[command(after_help = EXIT_CODES)]
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
struct TailArgs {
    /// ws://, wss://, http:// or https:// URL of the log stream (not with --ray).
    #[arg(required_unless_present = "ray", conflicts_with = "ray")]
    url: Option<String>,
    /// Follow a Ray job's log: the dashboard URL, e.g. http://127.0.0.1:8265 (needs --job).
    #[arg(long, value_name = "DASHBOARD_URL", requires = "job")]
    ray: Option<String>,
    /// The Ray job's submission id (with --ray).
    #[arg(long, value_name = "SUBMISSION_ID", requires = "ray")]
    job: Option<String>,
    /// Request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "K: V")]
    headers: Vec<String>,
    /// Stop with a 429 after this many lines.
    #[arg(long, default_value_t = bistream_core::limits::DEFAULT_MAX_LINES)]
    max_lines: u64,
    /// Stop with a 429 after this many bytes of lines.
    #[arg(long, default_value_t = bistream_core::limits::DEFAULT_MAX_BYTES)]
    max_bytes: u64,
    /// Stop with a 429 after this many WebSocket messages (not used for HTTP).
    #[arg(long, default_value_t = bistream_core::limits::DEFAULT_MAX_MESSAGES)]
    max_messages: u64,
    /// Skip (and count) lines longer than this many bytes.
    #[arg(long, default_value_t = bistream_core::limits::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: u64,
    /// Seconds allowed for connecting (at most 300).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Seconds to wait for data before giving up with a 408; 0 waits forever. Default: the
    /// --timeout value. Not used with --ray (quiet jobs are normal).
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Text every error message starts with (default: the URL's host, or `job ID`).
    #[arg(long)]
    context: Option<String>,
    /// For wss:// and https://: trust only the certificates in this PEM file (a private CA or
    /// a self-signed server certificate) instead of the system roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<std::path::PathBuf>,
}

/// The exit code for an error's status class (documented in `EXIT_CODES`).
fn exit_code(status: Status) -> u8 {
    match status {
        Status::InvalidInput => 3,
        Status::Unauthorized | Status::Forbidden => 4,
        Status::NotFound => 5,
        Status::Timeout => 6,
        Status::LimitExceeded => 7,
        Status::ConnectionFailed => 8,
        _ => 9,
    }
}

const EXIT_CUT_OFF: u8 = 10;

pub async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let LogsCommand::Tail(args) = args.command;
    let result = match &args.ray {
        Some(_) => tail_ray(&args).await,
        None => tail_url(&args).await,
    };
    Ok(match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bistream: {e}");
            ExitCode::from(exit_code(e.status()))
        }
    })
}

fn options(args: &TailArgs, context: String) -> Result<TailOptions, ClientError> {
    let bad = |m: String| ClientError::with_context(Status::InvalidInput, &context, m);
    let limits = StreamLimits::builder()
        .max_lines(args.max_lines)
        .max_bytes(args.max_bytes)
        .max_messages(args.max_messages)
        .max_message_size(args.max_message_size)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let connect = validate_timeout(args.timeout).map_err(|e| bad(format!("--timeout: {e}")))?;
    let idle = match args.idle_timeout {
        None => Some(connect),
        Some(0.0) => None,
        Some(s) => Some(validate_timeout(s).map_err(|e| bad(format!("--idle-timeout: {e}")))?),
    };
    let mut opts = TailOptions::new(context.clone())
        .limits(limits)
        .timeouts(connect, idle);
    if let Some(ca) = &args.ca_file {
        opts = opts.ca_file(ca);
    }
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else {
            // Only the name part is quoted: a malformed header may still hold a secret.
            let name: String = h.chars().take_while(|c| *c != ' ').take(40).collect();
            return Err(bad(format!("--header {name:?}...: expected `Name: value`")));
        };
        opts = opts.header(k.trim(), v.trim());
    }
    Ok(opts)
}

async fn tail_url(args: &TailArgs) -> Result<ExitCode, ClientError> {
    let url = args.url.clone().unwrap_or_default();
    let context = args
        .context
        .clone()
        .unwrap_or_else(|| url_host(&url).unwrap_or_else(|| "logs".to_owned()));
    let opts = options(args, context)?;
    let mut out = Printer::new();
    let mut tail = Tail::new(url, opts);
    tail.connect().await?;
    out.pump(&mut tail).await?;
    out.finish();
    Ok(ExitCode::SUCCESS)
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_owned())
}

async fn tail_ray(args: &TailArgs) -> Result<ExitCode, ClientError> {
    let dashboard = args.ray.clone().unwrap_or_default();
    let job_id = args.job.clone().unwrap_or_default();
    let opts = options(args, args.context.clone().unwrap_or_default())?;
    let job = RayJob::new(&dashboard, &job_id, opts)?;
    // An unknown job is a 404 here, whatever the WebSocket would say.
    job.status().await?;
    let mut out = Printer::new();
    let mut tail = job.tail();
    match tail.connect().await {
        Ok(()) => {}
        // The dashboard answered the status request, so a tail that cannot be opened (a
        // proxy that refuses the upgrade or lacks the route, a handshake that goes wrong)
        // says nothing about the job: follow its log file over HTTP instead.
        Err(e) => {
            out.note(&format!(
                "WebSocket tail unavailable ({e}); following job {job_id} over HTTP (the log file, polled every {} s)",
                HTTP_POLL.as_secs()
            ));
            return follow_http(&job, &mut out, &job_id).await;
        }
    }
    // An abnormal end is reported as is; a normal one proves nothing until the job's
    // status says it finished.
    out.pump(&mut tail).await?;
    let stats = tail.stats().snapshot();
    let seen = stats.lines + stats.skipped;
    let info = job.status().await?;
    if info.status.is_terminal() {
        // Ray also ends with a normal close when the tail broke just before the job
        // finished: check the file for lines past those shown (the held last line
        // without `\n` is among them).
        let held = tail.take_unterminated();
        return verify(&job, &mut out, &info, seen, held, &job_id).await;
    }
    out.note(&format!(
        "the log stream ended while job {job_id} is {}: recovering the rest from the log file",
        info.status.name()
    ));
    recover(&job, &mut out, info, seen, &job_id).await
}

/// How often the HTTP fallback reads the job's status and log file.
const HTTP_POLL: Duration = Duration::from_secs(1);
/// How long a finished job's log file may stay unreadable before the fallback gives up.
const FILE_GRACE: Duration = Duration::from_secs(30);

/// The HTTP fallback: reads the job's log file until the job has finished, each time past
/// the complete lines already shown (a last line still being written waits for its `\n`
/// or for the job's end). Right after a submission Ray answers the file endpoint with a
/// 500 (`no driver node id`, no log file yet): while the job has not ended that means
/// "not yet" and the polling goes on; once it has ended, the file gets [`FILE_GRACE`].
async fn follow_http(
    job: &RayJob,
    out: &mut Printer,
    job_id: &str,
) -> Result<ExitCode, ClientError> {
    let mut seen = 0u64;
    let mut waiting_noted = false;
    let mut unreadable_since: Option<tokio::time::Instant> = None;
    loop {
        let info = job.status().await?;
        let finished = info.status.is_terminal();
        let mut rec = job.recover(&info, seen);
        let mut failed = None;
        while let Some(item) = rec.next_line().await {
            match item {
                Ok(line) => out.line(&line)?,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        seen = rec.lines_passed();
        out.flush()?;
        match failed {
            None if finished => {
                out.finish();
                out.note(&format!("job {job_id} {}", info.status.name()));
                return Ok(ExitCode::SUCCESS);
            }
            None => unreadable_since = None,
            // Limits end the tail as they would over WebSocket.
            Some(e) if e.status() == Status::LimitExceeded => {
                out.finish();
                return Err(e);
            }
            Some(e) if !finished && seen == 0 && e.status() == Status::Internal => {
                if !waiting_noted {
                    out.note(&format!(
                        "job {job_id} is {}; its log file is not readable yet ({e}): waiting",
                        info.status.name()
                    ));
                    waiting_noted = true;
                }
            }
            Some(e) => {
                let since = *unreadable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= FILE_GRACE {
                    out.finish();
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(HTTP_POLL).await;
    }
}

/// After a normal end of a finished job: prints what the log file has past the `seen`
/// lines; if the file cannot be read, trusts the stream (and prints its held last line).
async fn verify(
    job: &RayJob,
    out: &mut Printer,
    info: &JobInfo,
    seen: u64,
    held: Option<String>,
    job_id: &str,
) -> Result<ExitCode, ClientError> {
    let mut rec = job.recover(info, seen);
    let mut extra = Vec::new();
    let mut failed = None;
    while let Some(item) = rec.next_line().await {
        match item {
            Ok(line) => extra.push(line),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let status = info.status.name();
    match failed {
        None => {
            let recovered = extra.len().saturating_sub(usize::from(held.is_some()));
            for line in &extra {
                out.line(line)?;
            }
            out.finish();
            if recovered > 0 {
                out.note(&format!("job {job_id} {status}; {recovered} lines the stream had cut off were recovered from the log file"));
            } else {
                out.note(&format!("job {job_id} {status}"));
            }
        }
        Some(e) => {
            if let Some(last) = held {
                out.line(&last)?;
            }
            out.finish();
            out.note(&format!(
                "job {job_id} {status} (the log file could not be read to check the stream: {e})"
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn recover(
    job: &RayJob,
    out: &mut Printer,
    info: JobInfo,
    seen: u64,
    job_id: &str,
) -> Result<ExitCode, ClientError> {
    let mut rec = job.recover(&info, seen);
    let mut recovered = 0u64;
    let failure = loop {
        match rec.next_line().await {
            None => break None,
            Some(Ok(line)) => {
                out.line(&line)?;
                recovered += 1;
            }
            Some(Err(e)) => break Some(e),
        }
    };
    out.finish();
    let after = job.status().await.map(|i| i.status);
    match (failure, after) {
        (None, Ok(s)) if s.is_terminal() => {
            out.note(&format!(
                "recovered {recovered} lines; job {job_id} {}",
                s.name()
            ));
            Ok(ExitCode::SUCCESS)
        }
        (failure, after) => {
            let why = match (&failure, &after) {
                (Some(e), _) => format!("the log file could not be read: {e}"),
                (None, Ok(s)) => format!("the job is still {}", s.name()),
                (None, Err(e)) => format!("its status is unknown: {e}"),
            };
            eprintln!(
                "bistream: job {job_id}: the log stream was cut off ({recovered} lines recovered); {why}"
            );
            Ok(ExitCode::from(EXIT_CUT_OFF))
        }
    }
}

/// Lines to stdout (flushed whenever the stream waits), and the progress line on stderr
/// when stderr is a terminal.
struct Printer {
    stdout: std::io::BufWriter<std::io::Stdout>,
    progress: Option<Progress>,
}

struct Progress {
    start: Instant,
    last: Instant,
    shown: bool,
}

impl Printer {
    fn new() -> Self {
        let progress = std::io::stderr().is_terminal().then(|| Progress {
            start: Instant::now(),
            last: Instant::now(),
            shown: false,
        });
        Self {
            stdout: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            progress,
        }
    }

    /// Prints every line of `tail` until it ends; the error, if any, after the lines.
    async fn pump(&mut self, tail: &mut Tail) -> Result<(), ClientError> {
        let stats = tail.stats();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !tail.has_buffered_data() {
                self.flush()?;
            }
            // Lines come a chunk at a time; the first write error stops the printing.
            let mut failed = None;
            let show_progress = self.progress.is_some();
            let Self { stdout, progress } = self;
            let mut print = |line: &str| {
                if failed.is_none() {
                    failed = Self::write_line(stdout, progress, line).err();
                }
            };
            let item = if show_progress {
                tokio::select! {
                    item = tail.next_lines(&mut print) => item,
                    _ = tick.tick() => {
                        self.draw(&stats);
                        continue;
                    }
                }
            } else {
                tail.next_lines(&mut print).await
            };
            if let Some(e) = failed {
                return Err(stdout_error(e));
            }
            match item {
                None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.finish();
                    return Err(e);
                }
            }
            if let Some(p) = &self.progress {
                if p.last.elapsed() >= Duration::from_millis(500) {
                    self.draw(&stats);
                }
            }
        }
        self.flush()
    }

    fn line(&mut self, line: &str) -> Result<(), ClientError> {
        Self::write_line(&mut self.stdout, &mut self.progress, line).map_err(stdout_error)
    }

    /// One line to `w`, after clearing the progress line if it is shown.
    fn write_line(
        w: &mut std::io::BufWriter<std::io::Stdout>,
        progress: &mut Option<Progress>,
        line: &str,
    ) -> std::io::Result<()> {
        if let Some(p) = progress {
            if p.shown {
                w.flush()?;
                eprint!("\r\x1b[2K");
                p.shown = false;
            }
        }
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        self.stdout.flush().map_err(stdout_error)
    }

    fn draw(&mut self, stats: &StatsCell) {
        let Some(p) = &mut self.progress else { return };
        let s = stats.snapshot();
        let (lines, bytes, skipped) = (s.lines, s.bytes, s.skipped);
        let secs = p.start.elapsed().as_secs_f64().max(1e-3);
        let _ = self.stdout.flush();
        eprint!(
            "\r\x1b[2K{lines} lines, {:.1} MiB, {:.0} lines/s, {skipped} skipped",
            bytes as f64 / (1024.0 * 1024.0),
            lines as f64 / secs
        );
        p.last = Instant::now();
        p.shown = true;
    }

    fn clear_progress(&mut self) {
        if let Some(p) = &mut self.progress {
            if p.shown {
                let _ = self.stdout.flush();
                eprint!("\r\x1b[2K");
                p.shown = false;
            }
        }
    }

    fn finish(&mut self) {
        let _ = self.stdout.flush();
        self.clear_progress();
    }

    /// A status note on stderr (never on stdout, which carries only log lines).
    fn note(&mut self, text: &str) {
        self.finish();
        eprintln!("bistream: {}", bistream_core::sanitize(text));
    }
}

fn stdout_error(e: std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // The reader went away (`| head`): stop quietly.
        std::process::exit(0);
    }
    ClientError::internal(format!("cannot write to stdout: {e}"))
}
