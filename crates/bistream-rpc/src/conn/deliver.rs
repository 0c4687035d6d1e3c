//! Delivering an item whose stream queue is full (in items or bytes): the driver stops reading
//! the transport until the consumer drains (backpressure: nothing is dropped, and a base peer
//! is held back by TCP), but keeps serving controls (a consumer that gives up frees it at
//! once), commands, finished tasks and our keepalives.
//!
//! While one stream's consumer is slow, no frame of the connection is read. A consumer may wait
//! for something only this connection would deliver before it drains: another call's answer,
//! or the peer's `request_n` (a bi-stream handler that needs credit to send before it reads on;
//! that grant sits behind the items we stopped reading). So a hold lasts at most the
//! connection's timeout (`RpcConfig::timeout`, 600 s by default): then that one stream fails
//! (`error`/`timeout` to the peer for a stream we serve, `cancel` for a call of ours when
//! negotiated; its queued items and then an error for its consumer; a warning logged; counted
//! in the engine's `Stats::stalled`) and reading resumes for the others. A writer that dies
//! meanwhile ends the driver at once (DECISIONS D40 for RSocket's same hold).

use super::*;

impl<R: FrameReader> Driver<R> {
    /// Queues `item` (a batch of items) for `target`'s consumer, waiting for room; returns
    /// when the connection must stop.
    pub(super) async fn deliver(
        &mut self,
        target: Target,
        tx: QueueTx,
        item: TextBatch,
        tick: &mut tokio::time::Interval,
        wdead: &mut tokio::sync::oneshot::Receiver<String>,
    ) -> Option<Stop> {
        let item = match tx.try_send(item) {
            Ok(()) | Err(TrySend::Closed) => return None,
            Err(TrySend::Full(item)) => item,
        };
        let deadline = Instant::now() + self.hold_limit;
        {
            let send = tx.send(item);
            tokio::pin!(send);
            loop {
                self.flush();
                let budget_ok = self.budget_ok();
                tokio::select! {
                    biased;
                    // Queued, or the consumer is gone (the item is dropped with it).
                    _ = &mut send => break,
                    Some(ctl) = self.ctl_rx.recv() => {
                        if let Some(stop) = self.on_ctl(ctl) {
                            return Some(stop);
                        }
                    }
                    Some(cmd) = self.cmd_rx.recv(), if budget_ok => self.on_cmd(cmd),
                    _ = self.budget.notify.notified(), if !budget_ok => {}
                    Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                        self.on_task_done(done);
                    }
                    r = &mut *wdead => {
                        return Some(Stop::Peer(RpcError::Lost(crate::writer::why_stopped(r))));
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        self.cut_stalled(&target);
                        self.flush();
                        return None;
                    }
                    // We are the ones not reading: the peer's silence is not judged meanwhile,
                    // but our keepalives still go out.
                    _ = tick.tick(), if self.keepalive_on => {
                        self.engine.keepalive();
                    }
                }
            }
        }
        self.last_rx = Instant::now();
        None
    }

    /// Fails `target`, whose consumer left its full queue undrained for the hold limit.
    fn cut_stalled(&mut self, target: &Target) {
        let t = self.hold_limit;
        let message = format!("the consumer did not drain its stream queue for {t:?}");
        let mut open = self.engine.cut_stalled(target, &message);
        // The consumer takes what is queued, then this error (its sender is dropped here).
        let e = RpcError::Timeout(t);
        match target {
            Target::Call(id) => {
                if let Some(sink) = self.calls.remove(id) {
                    open = true;
                    fail_sink(sink, e);
                }
            }
            Target::Serve(k) => {
                if let Some(s) = self.serving.remove(k) {
                    open = true;
                    if let Some(a) = s.abort {
                        a.abort();
                    }
                    if let Some((_, outcome)) = s.inbound {
                        let _ = outcome.set(Err(e));
                    }
                    if let Some(c) = s.credit {
                        c.close();
                    }
                }
            }
        }
        if open {
            tracing::warn!(peer = %self.shared.peer_id, stream = ?target, timeout = ?t,
                "rpc stream's consumer took nothing while its queue was full: stream failed");
        }
    }
}
