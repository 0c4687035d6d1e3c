//! One log tail ([`Tail`]): a transport, the line splitter and the limit tracker, pulled one
//! line (or one received chunk of lines) at a time; and its async [`Stream`](futures_util::Stream)
//! form ([`LogStream`]).
//!
//! Pull-based on purpose: nothing is read ahead of the consumer beyond one chunk, so a slow
//! consumer pushes back on the server through TCP, memory holds one chunk plus at most one
//! partial line, and dropping the tail drops the socket at once.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bistream_core::{Admitted, ClientError, LimitExceeded, LimitTracker, Oversize, Status};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::lines::{LineSplitter, Piece};
use crate::options::TailOptions;
use crate::source::{Chunk, Source};

/// How many received chunks one [`Tail::next_lines`] call takes at most without waiting.
const DRAIN_CHUNKS: usize = 64;

/// Counters of one tail, readable while it runs (see [`Tail::stats`], [`LogStream::stats`]).
#[derive(Debug, Default)]
pub struct StatsCell {
    lines: AtomicU64,
    bytes: AtomicU64,
    skipped: AtomicU64,
    skipped_bytes: AtomicU64,
    messages: AtomicU64,
    received: AtomicU64,
}

/// A snapshot of a tail's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Lines delivered.
    pub lines: u64,
    /// Bytes of the delivered lines (without terminators).
    pub bytes: u64,
    /// Lines skipped because they were longer than `max_message_size`.
    pub skipped: u64,
    /// Total size of the skipped lines.
    pub skipped_bytes: u64,
    /// WebSocket messages received.
    pub messages: u64,
    /// Raw bytes received from the transport.
    pub received: u64,
}

impl StatsCell {
    /// The current values.
    pub fn snapshot(&self) -> LogStats {
        LogStats {
            lines: self.lines.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            skipped_bytes: self.skipped_bytes.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}

enum State {
    NotConnected(String),
    Streaming(Source),
    Done,
}

/// A log tail: connect lazily, then [`next_line`](Tail::next_line) until `None`.
///
/// Errors come as the last item: limits (429, after every line within them), timeouts (408),
/// connection failures and abnormal ends (503, after the lines received before them).
pub struct Tail {
    state: State,
    opts: TailOptions,
    splitter: LineSplitter,
    tracker: LimitTracker,
    stats: Arc<StatsCell>,
    /// The counters, owned here and published to `stats` with plain stores: a `fetch_add`
    /// per line is a locked instruction, a relaxed store is an ordinary write.
    counts: LogStats,
    hold_last: bool,
    held: Option<String>,
    wait_deadline: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("context", &self.opts.context)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl Tail {
    /// A tail of `url` (`ws`, `wss`, `http` or `https`) that connects on first use.
    pub fn new(url: impl Into<String>, opts: TailOptions) -> Self {
        let max_line = usize::try_from(opts.limits.max_message_size()).unwrap_or(usize::MAX);
        Self {
            state: State::NotConnected(url.into()),
            splitter: LineSplitter::new(max_line),
            tracker: LimitTracker::new(opts.limits).with_oversize(Oversize::Skip),
            stats: Arc::new(StatsCell::default()),
            counts: LogStats::default(),
            opts,
            hold_last: false,
            held: None,
            wait_deadline: None,
        }
    }

    /// Connects now (otherwise the first [`next_line`](Self::next_line) does).
    ///
    /// # Errors
    /// The connection's [`ClientError`] (400 bad URL or header, 503 refused or DNS, 408
    /// timeout, 404 and other HTTP statuses named).
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        if let State::NotConnected(url) = &self.state {
            let url = url.clone();
            match Source::connect(&url, &self.opts).await {
                Ok(source) => self.state = State::Streaming(source),
                Err(e) => {
                    self.state = State::Done;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Keeps a last line that has no `\n` out of the stream at a normal end; take it with
    /// [`take_unterminated`](Self::take_unterminated). For sources (Ray) whose normal close
    /// can hide a truncation inside a line.
    #[must_use]
    pub fn hold_unterminated_last_line(mut self, hold: bool) -> Self {
        self.hold_last = hold;
        self
    }

    /// The last line without `\n` held back at a normal end (see
    /// [`hold_unterminated_last_line`](Self::hold_unterminated_last_line)).
    pub fn take_unterminated(&mut self) -> Option<String> {
        self.held.take()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<StatsCell> {
        Arc::clone(&self.stats)
    }

    /// The queue size of its limits (used by [`BlockingLogs`](crate::BlockingLogs)).
    pub fn queue_size(&self) -> usize {
        self.opts.limits.queue_size()
    }

    /// The context string errors carry.
    pub fn context(&self) -> &str {
        &self.opts.context
    }

    /// Whether a line may be ready without waiting for the network (callers flush their
    /// output when not).
    pub fn has_buffered_data(&self) -> bool {
        !self.splitter.needs_data()
    }

    /// The next line; `None` after a normal end or after the error was returned.
    ///
    /// Cancel-safe once connected: dropping the future between lines loses nothing, and the
    /// idle timeout keeps counting from when the wait began.
    pub async fn next_line(&mut self) -> Option<Result<String, ClientError>> {
        Some(self.next_line_ref().await?.map(Cow::into_owned))
    }

    /// As [`next_line`](Self::next_line), but a line that lies inside one received chunk
    /// (nearly all of them) is borrowed from it instead of copied into a new `String`: for
    /// callers that only look at each line (print, match, count), no allocation per line.
    /// Same limits, errors and cancel-safety.
    ///
    /// ```no_run
    /// use bistream_logs::{Tail, TailOptions};
    ///
    /// # async fn run() -> Result<(), bistream_core::ClientError> {
    /// let mut tail = Tail::new("http://127.0.0.1:8080/logs", TailOptions::new("job 1"));
    /// let mut errors = 0;
    /// while let Some(line) = tail.next_line_ref().await {
    ///     errors += usize::from(line?.contains("ERROR"));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next_line_ref(&mut self) -> Option<Result<Cow<'_, str>, ClientError>> {
        loop {
            if let Err(e) = self.ready().await? {
                return Some(Err(e));
            }
            while let Some(span) = self.splitter.next_span() {
                match self.admit(span.size(), span.is_overlong()) {
                    Ok(true) => {
                        self.publish();
                        return Some(Ok(self.splitter.text(span)));
                    }
                    Ok(false) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            match self.pull().await {
                Ok(true) => {}
                Ok(false) => return self.last_line().map(|r| r.map(Cow::Owned)),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next batch of lines: waits as [`next_line_ref`](Self::next_line_ref) does for
    /// the first, then hands `f` every line already received (the rest of the current
    /// chunk, and of the chunks the transport already holds after it, up to 64 chunks),
    /// each borrowed from its chunk, and returns how many. The fastest way through a tail:
    /// one call per burst of chunks, not per line. Same limits and cancel-safety; `None` after a
    /// normal end or after the error was returned. An error (a limit reached inside the
    /// chunk) is returned after `f` was given every line before it.
    ///
    /// ```no_run
    /// use bistream_logs::{Tail, TailOptions};
    ///
    /// # async fn run() -> Result<(), bistream_core::ClientError> {
    /// let mut tail = Tail::new("ws://127.0.0.1:8080/tail", TailOptions::new("job 1"));
    /// let mut errors = 0;
    /// while let Some(batch) = tail.next_lines(|line| errors += usize::from(line.contains("ERROR"))).await {
    ///     batch?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next_lines(
        &mut self,
        mut f: impl FnMut(&str),
    ) -> Option<Result<usize, ClientError>> {
        let (mut n, mut chunks) = (0, 0);
        loop {
            if let Err(e) = self.ready().await? {
                return Some(Err(e));
            }
            loop {
                n += match self.checked_batch(&mut f) {
                    Ok(k) => k,
                    Err(e) => return Some(Err(e)),
                };
                // What the fast path left: a line joined across chunks, an overlong one, one
                // in a chunk with invalid UTF-8, the line a limit stops, or the chunk's end.
                let Some(span) = self.splitter.next_span() else {
                    break;
                };
                match self.admit(span.size(), span.is_overlong()) {
                    Ok(true) => {
                        f(&self.splitter.text(span));
                        n += 1;
                    }
                    Ok(false) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            let pulled = if n == 0 {
                self.pull().await
            } else {
                // The chunks the transport has already received (a burst of WebSocket
                // messages) go out in this call too: no wait, and no return and re-entry per
                // message. Bounded, so a caller that also waits on something else (a timer
                // in a `select!`) gets control back while a fast server keeps sending.
                chunks += 1;
                match self.pull_ready(chunks).await {
                    Some(pulled) => pulled,
                    None => {
                        self.publish();
                        return Some(Ok(n));
                    }
                }
            };
            match pulled {
                Ok(true) => {}
                Ok(false) => {
                    // The counters so far (a drained call has not published them yet).
                    self.publish();
                    return match self.last_line() {
                        None if n == 0 => None,
                        None => Some(Ok(n)),
                        Some(Ok(line)) => {
                            f(&line);
                            Some(Ok(n + 1))
                        }
                        Some(Err(e)) => Some(Err(e)),
                    };
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The fast path of [`next_lines`](Self::next_lines): hands `f` the run of lines of the
    /// current chunk that are in checked text and that the limits provably accept, checked
    /// against the room the tracker had at the start (`LineSplitter::checked_run`, no call
    /// into the tracker per line), then admits them to the tracker as one batch; returns how
    /// many. The first line
    /// that does not fit the room (or needs the general path) is left to `next_span` and
    /// `admit`, which find its exact fate (skipped, or the 429 naming the count), so limits
    /// stay exact.
    fn checked_batch(&mut self, f: &mut impl FnMut(&str)) -> Result<usize, ClientError> {
        if self.splitter.needs_data() {
            return Ok(0);
        }
        let Some(room) = self.tracker.line_room() else {
            return Ok(0);
        };
        let (count, total) = self.splitter.checked_run(room, f);
        if count == 0 {
            return Ok(0);
        }
        // Every line was within `max_size`, so that bounds the longest.
        if !self.tracker.admit_lines(count, total, room.max_size) {
            // Cannot happen: every line was checked against the tracker's own room.
            let e = ClientError::with_context(
                Status::Internal,
                &self.opts.context,
                "limit accounting of a batch of lines disagreed with the tracker",
            );
            return Err(self.fail(e));
        }
        self.counts.lines += count;
        self.counts.bytes += total;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Connects if not yet done: `None` once the tail has ended, `Some(Err)` if connecting
    /// failed (the tail then ends).
    async fn ready(&mut self) -> Option<Result<(), ClientError>> {
        match self.state {
            State::Done => None,
            State::NotConnected(_) => Some(self.connect().await),
            State::Streaming(_) => Some(Ok(())),
        }
    }

    /// Waits for the next chunk and feeds it to the splitter: `Ok(true)` fed (or nothing to
    /// wait for: the tail ended), `Ok(false)` a normal end of the stream, or the error that
    /// ends the tail.
    async fn pull(&mut self) -> Result<bool, ClientError> {
        self.publish();
        // The chunk is read to its end: hand its buffer back before the read. tungstenite
        // cuts each message out of one read buffer; while the last one is held, every read
        // has to go to a fresh allocation no larger than a few messages, so it reads ~2 KiB
        // per `recvfrom` instead of up to its whole 128 KiB (50× the system calls).
        self.splitter.release();
        let State::Streaming(source) = &mut self.state else {
            return Ok(true);
        };
        // The wait's deadline survives a cancelled call (a `select!` in the caller), so
        // the idle timeout is not restarted by polling again.
        let got = source
            .next_chunk(
                self.opts.idle_timeout,
                &mut self.wait_deadline,
                &self.opts.context,
            )
            .await;
        self.wait_deadline = None;
        self.take(got)
    }

    /// As [`pull`](Self::pull), but only for a chunk that is already there: `None` when the
    /// transport would have to wait (nothing is waited for, the idle timeout does not start)
    /// or when `chunks` already reached [`DRAIN_CHUNKS`].
    async fn pull_ready(&mut self, chunks: usize) -> Option<Result<bool, ClientError>> {
        if chunks >= DRAIN_CHUNKS {
            return None;
        }
        self.splitter.release();
        let State::Streaming(source) = &mut self.state else {
            return None;
        };
        let got = {
            let read = std::pin::pin!(source.read(&self.opts.context));
            match futures_util::poll!(read) {
                Poll::Ready(got) => got,
                Poll::Pending => return None,
            }
        };
        Some(self.take(got))
    }

    /// Feeds a chunk the source gave to the splitter (see [`pull`](Self::pull)).
    fn take(&mut self, got: Result<Chunk, ClientError>) -> Result<bool, ClientError> {
        match got {
            Ok(Chunk::Text(text)) => {
                self.count_chunk(text.len(), true)?;
                self.splitter.feed_text(text);
            }
            Ok(Chunk::Data { bytes, message }) => {
                self.count_chunk(bytes.len(), message)?;
                self.splitter.feed(bytes);
            }
            Ok(Chunk::End) => {
                self.state = State::Done;
                return Ok(false);
            }
            Err(e) => return Err(self.fail(e)),
        }
        Ok(true)
    }

    /// Counts a received chunk of `len` bytes (and a transport message toward
    /// `max_messages` when `message`).
    fn count_chunk(&mut self, len: usize, message: bool) -> Result<(), ClientError> {
        if message {
            if let Err(e) = self.tracker.count_message() {
                return Err(self.limit(e));
            }
            self.counts.messages += 1;
        }
        self.counts.received += len as u64;
        Ok(())
    }

    /// At a normal end: the last line without `\n`, if any (held back instead when asked).
    fn last_line(&mut self) -> Option<Result<String, ClientError>> {
        let last = self.splitter.finish()?;
        if self.hold_last {
            if let Piece::Line { text, .. } = last {
                self.held = Some(text);
                return None;
            }
        }
        let (size, overlong) = match &last {
            Piece::Line { size, .. } => (*size, false),
            Piece::Overlong { size } => (usize::try_from(*size).unwrap_or(usize::MAX), true),
        };
        let admitted = self.admit(size, overlong);
        self.publish();
        match (admitted, last) {
            (Ok(true), Piece::Line { text, .. }) => Some(Ok(text)),
            (Ok(_), _) => None,
            (Err(e), _) => Some(Err(e)),
        }
    }

    /// Publishes the counters to the shared [`StatsCell`] (once per line or batch, and
    /// before each wait): relaxed stores, ordinary writes.
    fn publish(&self) {
        let (c, s) = (&self.counts, &self.stats);
        s.lines.store(c.lines, Ordering::Relaxed);
        s.bytes.store(c.bytes, Ordering::Relaxed);
        s.skipped.store(c.skipped, Ordering::Relaxed);
        s.skipped_bytes.store(c.skipped_bytes, Ordering::Relaxed);
        s.messages.store(c.messages, Ordering::Relaxed);
        s.received.store(c.received, Ordering::Relaxed);
    }

    /// Counts a line of `size` bytes against the limits: `Ok(true)` deliver it, `Ok(false)`
    /// it was skipped (longer than `max_message_size`), or the 429 that ends the tail.
    fn admit(&mut self, size: usize, overlong: bool) -> Result<bool, ClientError> {
        match self.tracker.admit_line(size) {
            Ok(Admitted::Accepted) if !overlong => {
                self.counts.lines += 1;
                self.counts.bytes += size as u64;
                Ok(true)
            }
            // The tracker skips what the splitter found overlong (same limit); never here.
            Ok(Admitted::Accepted) => Ok(false),
            Ok(Admitted::Skipped { size }) => {
                self.counts.skipped += 1;
                self.counts.skipped_bytes = self.counts.skipped_bytes.saturating_add(size);
                tracing::debug!(context = %self.opts.context, size, "skipped a line longer than max_message_size");
                Ok(false)
            }
            Err(e) => Err(self.limit(e)),
        }
    }

    /// Ends the tail with `e`, closing the connection now.
    fn fail(&mut self, e: ClientError) -> ClientError {
        self.state = State::Done;
        self.publish();
        e
    }

    /// Ends the tail with the 429 for `e`, naming the limit and the count.
    fn limit(&mut self, e: LimitExceeded) -> ClientError {
        let e = ClientError::with_context(Status::LimitExceeded, &self.opts.context, e.to_string());
        self.fail(e)
    }

    /// This tail as an async [`Stream`](futures_util::Stream) of lines.
    pub fn into_stream(self) -> LogStream {
        let stats = self.stats();
        let inner = futures_util::stream::unfold(self, |mut tail| async move {
            let item = tail.next_line().await?;
            Some((item, tail))
        })
        .boxed();
        LogStream { inner, stats }
    }
}

/// The lines of a tail as an async stream; errors are the last item. Dropping it closes the
/// connection at once.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use bistream_logs::{LogStream, Tail, TailOptions};
///
/// # async fn run() -> Result<(), bistream_core::ClientError> {
/// let mut lines: LogStream = Tail::new("ws://127.0.0.1:8265/api/jobs/raysubmit_1/logs/tail",
///     TailOptions::new("job raysubmit_1")).into_stream();
/// while let Some(line) = lines.next().await {
///     println!("{}", line?);
/// }
/// # Ok(()) }
/// ```
pub struct LogStream {
    inner: BoxStream<'static, Result<String, ClientError>>,
    stats: Arc<StatsCell>,
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl LogStream {
    /// A stream whose only item is `error` (input rejected before connecting).
    pub fn failed(error: ClientError) -> Self {
        Self {
            inner: futures_util::stream::iter([Err(error)]).boxed(),
            stats: Arc::new(StatsCell::default()),
        }
    }

    /// The live counters.
    pub fn stats(&self) -> LogStats {
        self.stats.snapshot()
    }
}

impl futures_util::Stream for LogStream {
    type Item = Result<String, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
