//! Delivering an item whose stream queue is full (over its byte bound): the driver stops
//! reading the transport until the consumer drains, but keeps serving local commands, controls
//! (so a consumer that gives up, CANCEL, frees it), finished tasks and our KEEPALIVEs.
//!
//! This is head-of-line backpressure, as in the rpc crate (DECISIONS D35, D40): while one
//! stream's consumer is slow, no frame of the connection is read. A consumer may wait for
//! something only this connection would deliver before it drains: another stream's item, an
//! answer, or the peer's REQUEST_N (a channel handler that needs credit to send before it reads
//! on; that REQUEST_N is behind the items we stopped reading). So a hold lasts at most
//! `RsConfig::timeout`: then that stream fails (ERROR/CANCEL to the peer, an error to its
//! consumer, a warning logged) and reading resumes. A consumer that drops its stream frees the
//! connection at once.

use super::*;

/// An item read but not queued yet.
pub(super) struct Held {
    pub stream: u32,
    pub tx: QueueTx<Inb>,
    pub item: Inb,
    /// The frame also completed the stream: queue the end after the item.
    pub complete: bool,
}

impl Driver {
    /// Queues `h`'s item, waiting for room; returns when the connection must stop.
    pub(super) async fn deliver(
        &mut self,
        h: Held,
        tick: &mut tokio::time::Interval,
        wdead: &mut tokio::sync::oneshot::Receiver<String>,
    ) -> Option<Stop> {
        let Held {
            stream,
            tx,
            item,
            complete,
        } = h;
        let deadline = Instant::now() + self.cfg.timeout;
        {
            let send = tx.send(item);
            tokio::pin!(send);
            loop {
                if self.budget.bytes.load(Ordering::Acquire) > HARD_CAP {
                    return Some(Stop {
                        cause: RsError::Lost("peer does not read its frames".into()),
                        error: Some((ErrorCode::ConnectionError, "peer does not read".into())),
                    });
                }
                let budget_ok = self.budget.bytes.load(Ordering::Acquire) < HIGH_WATER;
                tokio::select! {
                    biased;
                    // Queued, or the consumer is gone (the item is dropped with it).
                    _ = &mut send => break,
                    Some(ctl) = self.ctl_rx.recv() => {
                        if let Some(stop) = self.on_ctl(ctl) {
                            return Some(stop);
                        }
                    }
                    cmd = self.cmd_rx.recv(), if budget_ok => match cmd {
                        Some(cmd) => self.on_cmd(cmd),
                        None => return Some(Stop { cause: RsError::Closed("closed".into()), error: None }),
                    },
                    _ = self.budget.notify.notified(), if !budget_ok => {}
                    Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                        self.on_task_done(done);
                    }
                    r = &mut *wdead => return Some(Stop { cause: RsError::Lost(crate::writer::why_stopped(r)), error: None }),
                    () = tokio::time::sleep_until(deadline) => {
                        let t = self.cfg.timeout;
                        tracing::warn!(stream, timeout = ?t,
                            "rsocket stream's consumer took nothing while its queue was full: stream failed");
                        let msg = format!("the consumer did not drain its queue for {t:?}");
                        self.fail_stream(stream, ErrorCode::ApplicationError, &msg);
                        return None;
                    }
                    // We are the ones not reading: the peer's silence is not judged meanwhile,
                    // but our KEEPALIVEs still go out.
                    _ = tick.tick() => {
                        if self.keepalive.is_some() {
                            self.send(Frame::Keepalive { respond: true, position: 0, data: Bytes::new() });
                        }
                    }
                }
            }
        }
        self.last_rx = Instant::now();
        if complete {
            self.end_inbound(stream, &tx);
        }
        None
    }
}
