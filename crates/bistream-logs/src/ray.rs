//! Ray job logs ([`RayJob`]): the dashboard's WebSocket tail, the job status that tells a
//! finished log from a truncated one, and the file endpoint that recovers the rest.
//!
//! Ray ends its tail with a *normal* Close 1000 in several error cases while the job still
//! runs (a line over 4 MiB, invalid UTF-8, a write that stops inside a character), so the
//! end of the stream proves nothing by itself: the caller asks [`RayJob::status`] and, when
//! the job is not finished, reads the log file from [`RayJob::recover`] past the lines it
//! already has. Ray's tail reads the file in text mode (`\r`, `\r\n` and `\n` all end a
//! line), so [`Recovery`] splits the raw file the same way to skip exactly those lines.

use std::collections::VecDeque;

use bistream_core::{
    http_to_websocket_url, parse_web_url, validate_resource_id, websocket_to_http_url, ClientError,
    Status,
};

use crate::options::TailOptions;
use crate::tail::Tail;

/// A job's state as the dashboard reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting to start.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped by a user.
    Stopped,
    /// A state this client does not know.
    Other(String),
}

impl JobStatus {
    fn parse(s: &str) -> Self {
        match s {
            "PENDING" => JobStatus::Pending,
            "RUNNING" => JobStatus::Running,
            "SUCCEEDED" => JobStatus::Succeeded,
            "FAILED" => JobStatus::Failed,
            "STOPPED" => JobStatus::Stopped,
            other => JobStatus::Other(other.to_owned()),
        }
    }

    /// Whether the job has ended (its log is complete).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Stopped
        )
    }

    /// Ray's name for it.
    pub fn name(&self) -> &str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Stopped => "STOPPED",
            JobStatus::Other(s) => s,
        }
    }
}

/// What `GET /api/jobs/{id}` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The state.
    pub status: JobStatus,
    /// The driver's node address, when known (the file endpoint needs a node).
    pub driver_node_ip: Option<String>,
}

/// One submission job on a Ray dashboard.
#[derive(Debug, Clone)]
pub struct RayJob {
    base: String,
    job: String,
    opts: TailOptions,
}

impl RayJob {
    /// The job `job` on the dashboard at `dashboard` (`http(s)://host:8265`, or `ws(s)`).
    /// `opts` carries headers, the connect timeout and the limits; the idle timeout is
    /// ignored (quiet jobs are normal) and the context defaults to `job {id}`.
    ///
    /// # Errors
    /// A 400 for an invalid job id (core's rules) or dashboard URL.
    ///
    /// ```
    /// use bistream_logs::{ray::RayJob, TailOptions};
    /// let job = RayJob::new("http://127.0.0.1:8265/", "raysubmit_1", TailOptions::new(""))?;
    /// assert_eq!(job.tail_url(), "ws://127.0.0.1:8265/api/jobs/raysubmit_1/logs/tail");
    /// assert_eq!(RayJob::new("http://h:8265", "job/../x", TailOptions::new("")).unwrap_err().status_code(), 400);
    /// # Ok::<(), bistream_core::ClientError>(())
    /// ```
    pub fn new(dashboard: &str, job: &str, opts: TailOptions) -> Result<Self, ClientError> {
        let job = validate_resource_id(job, "job")?.to_owned();
        let mut opts = opts;
        if opts.context.is_empty() {
            opts.context = format!("job {job}");
        }
        let ctx = opts.context.clone();
        let base = websocket_to_http_url(dashboard.trim_end_matches('/'))
            .map_err(|e| ClientError::with_context(Status::InvalidInput, &ctx, e.to_string()))?;
        let base = base.trim_end_matches('/').to_owned();
        let connect = opts.connect_timeout;
        Ok(Self {
            base,
            job,
            opts: opts.timeouts(connect, None),
        })
    }

    /// The WebSocket tail endpoint.
    pub fn tail_url(&self) -> String {
        let http = format!("{}/api/jobs/{}/logs/tail", self.base, self.job);
        http_to_websocket_url(&http).unwrap_or(http)
    }

    /// The context errors carry.
    pub fn context(&self) -> &str {
        &self.opts.context
    }

    /// A tail of the job's log over the WebSocket endpoint, without idle timeout, keeping a
    /// last line without `\n` aside until the caller knows the job ended.
    pub fn tail(&self) -> Tail {
        Tail::new(self.tail_url(), self.opts.clone()).hold_unterminated_last_line(true)
    }

    /// The job's state.
    ///
    /// # Errors
    /// 404 for an unknown job; connection and HTTP errors as for a tail.
    pub async fn status(&self) -> Result<JobInfo, ClientError> {
        let url = format!("{}/api/jobs/{}", self.base, self.job);
        let body = crate::source::get_small(&url, &self.opts, 4 * 1024 * 1024).await?;
        let ctx = self.context();
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ClientError::with_context(
                Status::Internal,
                ctx,
                format!("job details are not JSON: {e}"),
            )
        })?;
        let status = v.get("status").and_then(|s| s.as_str()).ok_or_else(|| {
            ClientError::with_context(Status::Internal, ctx, "job details have no status")
        })?;
        let driver_node_ip = v
            .get("driver_info")
            .and_then(|d| d.get("node_ip_address"))
            .and_then(|s| s.as_str())
            .map(str::to_owned);
        Ok(JobInfo {
            status: JobStatus::parse(status),
            driver_node_ip,
        })
    }

    /// The rest of the log from the file endpoint, past the first `seen` lines (counted the
    /// way Ray's tail counts them). While the job has not ended, a last line without `\n`
    /// is held back (it may still be growing): [`Recovery::lines_passed`] then counts only
    /// complete lines, so a later read past them neither repeats nor cuts that line.
    pub fn recover(&self, info: &JobInfo, seen: u64) -> Recovery {
        let node = info.driver_node_ip.clone().unwrap_or_else(|| {
            parse_web_url(&self.base)
                .ok()
                .and_then(|(_, u)| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "127.0.0.1".into())
        });
        let url = format!(
            "{}/api/v0/logs/file?submission_id={}&node_ip={}&lines=-1",
            self.base, self.job, node
        );
        let mut opts = self.opts.clone();
        opts.idle_timeout = Some(opts.connect_timeout);
        let tail = Tail::new(url, opts).hold_unterminated_last_line(!info.status.is_terminal());
        Recovery {
            stats: tail.stats(),
            tail,
            skip: seen,
            passed: seen,
            skipped_seen: 0,
            pending: VecDeque::new(),
        }
    }
}

/// The lines of the log file past those already seen, split as Ray's text-mode tail splits
/// them (a lone `\r` also ends a line).
#[derive(Debug)]
pub struct Recovery {
    tail: Tail,
    stats: std::sync::Arc<crate::StatsCell>,
    skip: u64,
    /// Lines of the file behind us: the `seen` ones, those returned, and oversized ones
    /// skipped past the seen part.
    passed: u64,
    /// Oversized lines the tail skipped so far (they are lines already seen, too).
    skipped_seen: u64,
    pending: VecDeque<String>,
}

impl Recovery {
    /// The underlying tail (for its counters).
    pub fn tail(&self) -> &Tail {
        &self.tail
    }

    /// How many lines of the file (counted as Ray's tail counts them, oversized ones
    /// included) are behind this reader: the `seen` ones plus those read past them. The
    /// `seen` to give the next [`RayJob::recover`] of the same job.
    pub fn lines_passed(&self) -> u64 {
        self.passed
    }

    /// The next recovered line.
    pub async fn next_line(&mut self) -> Option<Result<String, ClientError>> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                if self.skip > 0 {
                    self.skip -= 1;
                    continue;
                }
                self.passed += 1;
                return Some(Ok(line));
            }
            let next = self.tail.next_line().await;
            // Lines over max_message_size were skipped by the tail before this one: while
            // still inside the part already seen, they are among the lines to skip; past
            // it, they are lines passed.
            let skipped = self.stats.snapshot().skipped;
            let new = skipped - self.skipped_seen;
            let past_seen = new.saturating_sub(self.skip);
            self.skip -= new - past_seen;
            self.passed += past_seen;
            self.skipped_seen = skipped;
            match next? {
                Ok(line) if line.contains('\r') => {
                    self.pending.extend(line.split('\r').map(str::to_owned));
                }
                Ok(line) => self.pending.push_back(line),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
