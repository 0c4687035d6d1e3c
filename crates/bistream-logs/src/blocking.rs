//! The blocking form of a tail ([`BlockingLogs`]): an iterator for synchronous callers, fed by
//! a runtime on its own thread through a queue of `queue_size` lines.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use bistream_core::{ClientError, Status};

use crate::tail::{LogStats, StatsCell, Tail};

/// Lines of a tail as a blocking iterator; errors are the last item.
///
/// At most `queue_size` lines wait between the network thread and the caller. Dropping the
/// iterator closes the connection promptly (the network thread is told and drops its socket
/// whether it is waiting for data or for room in the queue).
///
/// ```no_run
/// use bistream_logs::{BlockingLogs, Tail, TailOptions};
///
/// let lines = BlockingLogs::spawn(Tail::new("http://127.0.0.1:8080/logs", TailOptions::new("job 1")))?;
/// for line in lines {
///     println!("{}", line?);
/// }
/// # Ok::<(), bistream_core::ClientError>(())
/// ```
pub struct BlockingLogs {
    rx: Option<mpsc::Receiver<Result<String, ClientError>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<StatsCell>,
}

impl std::fmt::Debug for BlockingLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingLogs")
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl BlockingLogs {
    /// Starts the tail on a new thread with its own single-threaded runtime.
    ///
    /// # Errors
    /// A 500 [`ClientError`] if the thread or runtime cannot be created.
    pub fn spawn(tail: Tail) -> Result<Self, ClientError> {
        let queue = tail_queue_size(&tail);
        let stats = tail.stats();
        let ctx = tail.context().to_owned();
        let (tx, rx) = mpsc::sync_channel(queue);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                ClientError::with_context(
                    Status::Internal,
                    &ctx,
                    format!("cannot start a runtime: {e}"),
                )
            })?;
        let thread = std::thread::Builder::new()
            .name("bistream-logs".into())
            .spawn(move || runtime.block_on(pump(tail, tx, stop_rx)))
            .map_err(|e| {
                ClientError::with_context(
                    Status::Internal,
                    &ctx,
                    format!("cannot start a thread: {e}"),
                )
            })?;
        Ok(Self {
            rx: Some(rx),
            stop: Some(stop_tx),
            thread: Some(thread),
            stats,
        })
    }

    /// The live counters.
    pub fn stats(&self) -> LogStats {
        self.stats.snapshot()
    }
}

fn tail_queue_size(tail: &Tail) -> usize {
    tail.queue_size()
}

async fn pump(
    mut tail: Tail,
    tx: mpsc::SyncSender<Result<String, ClientError>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut stop => return,
            item = tail.next_line() => item,
        };
        let Some(item) = item else { return };
        // Blocks this thread while the queue is full: that is the back-pressure. A dropped
        // receiver makes it fail at once.
        if tx.send(item).is_err() {
            return;
        }
    }
}

impl Iterator for BlockingLogs {
    type Item = Result<String, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for BlockingLogs {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Dropping the receiver unblocks a send in progress.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
