//! The driver's side of what the engine reports: replies and items delivered to calls and
//! handlers (bounded queues; a full one stops reading the transport: `deliver.rs`), negotiation, and the
//! credit of our producers (initial window, grants, debt of items sent without credit).

use super::*;

impl<R: FrameReader> Driver<R> {
    /// Handles engine events; returns when the connection must stop.
    pub(super) async fn drain_events(
        &mut self,
        tick: &mut tokio::time::Interval,
        wdead: &mut tokio::sync::oneshot::Receiver<String>,
    ) -> Option<Stop> {
        while let Some(ev) = self.engine.next_event() {
            match ev {
                Event::Negotiated(n) => self.on_negotiated(n),
                Event::Response { call, data } => {
                    if let Some(CallSink::Rr(tx)) = self.calls.remove(&call) {
                        let _ = tx.send(Ok(data));
                    }
                }
                Event::Items { call, mut items } => {
                    // One lookup and one queue entry per batch of items (D48).
                    items.trim();
                    let full = match self.calls.get(&call) {
                        Some(CallSink::Stream { tx: Some(tx), .. }) => match tx.try_send(items) {
                            Err(TrySend::Full(b)) => Some((tx.clone(), b)),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some((tx, items)) = full {
                        let target = Target::Call(call);
                        if let Some(stop) = self.deliver(target, tx, items, tick, wdead).await {
                            return Some(stop);
                        }
                    }
                }
                Event::End { call } => {
                    let remove = match self.calls.get_mut(&call) {
                        Some(CallSink::Stream {
                            tx,
                            outcome,
                            local_ended,
                            ..
                        }) => {
                            let _ = outcome.set(Ok(()));
                            *tx = None;
                            *local_ended
                        }
                        _ => false,
                    };
                    if remove {
                        self.calls.remove(&call);
                    }
                }
                Event::Failed { call, failure } => {
                    if let Some(sink) = self.calls.remove(&call) {
                        let e = match failure {
                            CallFailure::Remote { code, message } => {
                                RpcError::Remote { code, message }
                            }
                            CallFailure::Protocol(p) => RpcError::Protocol(p),
                        };
                        fail_sink(sink, e);
                    }
                }
                Event::Serve {
                    key,
                    model,
                    op,
                    data,
                } => self.serve(key, model, &op, data),
                Event::FireAndForget { op, data } => {
                    if let Some(Handler::Ff(h)) = self.router.get(&op) {
                        let fut = h(data);
                        let cmd = self.shared.cmd.clone();
                        // Reap finished ones so the set stays as small as the engine's limit.
                        while self.ff_tasks.try_join_next().is_some() {}
                        self.ff_tasks.spawn(async move {
                            fut.await;
                            let _ = cmd.send(Cmd::FfDone).await;
                        });
                    }
                }
                Event::ServeItems { key, mut items } => {
                    items.trim();
                    if let Some((tx, _)) = self.serving.get(&key).and_then(|s| s.inbound.as_ref()) {
                        let tx = tx.clone();
                        let target = Target::Serve(key);
                        if let Some(stop) = self.deliver(target, tx, items, tick, wdead).await {
                            return Some(stop);
                        }
                    }
                }
                Event::ServeEnd { key } => {
                    if let Some(s) = self.serving.get_mut(&key) {
                        if let Some((_, outcome)) = s.inbound.take() {
                            let _ = outcome.set(Ok(()));
                        }
                    }
                }
                Event::ServeCancelled { key } => {
                    if let Some(s) = self.serving.remove(&key) {
                        if let Some(a) = s.abort {
                            a.abort();
                        }
                        if let Some((_, outcome)) = s.inbound {
                            let _ = outcome.set(Err(RpcError::Cancelled));
                        }
                    }
                }
                Event::Credit { target, n } => self.grant_local(&target, u64::from(n)),
                Event::Dropped { reason } => {
                    bistream_core::limited!(DROPPED_LOG, WARN, peer = %self.shared.peer_id,
                        reason = %client_text(&reason), "rpc frame dropped");
                }
                Event::Close { code, reason } => {
                    tracing::warn!(peer = %self.shared.peer_id, %reason, "closing rpc connection");
                    return Some(Stop::Local { code, reason });
                }
            }
        }
        None
    }

    pub(super) fn on_negotiated(&mut self, n: Negotiated) {
        tracing::debug!(peer = %self.shared.peer_id, negotiated = ?n, "rpc negotiation");
        if let Negotiated::Extended {
            request_n,
            keepalive,
            window,
            ..
        } = n
        {
            self.keepalive_on = keepalive && self.keepalive.is_some();
            if request_n {
                self.shared.peer_window.store(window, Ordering::Release);
                self.shared.credit_on.store(true, Ordering::Release);
                // Streams opened before negotiation settled get their initial window now
                // (less what they already sent).
                let targets: Vec<Target> = self
                    .calls
                    .iter()
                    .filter(|(_, s)| {
                        matches!(
                            s,
                            CallSink::Stream {
                                credit: Some(_),
                                ..
                            }
                        )
                    })
                    .map(|(id, _)| Target::Call(*id))
                    .chain(
                        self.serving
                            .iter()
                            .filter(|(_, s)| s.credit.is_some())
                            .map(|(k, _)| Target::Serve(k.clone())),
                    )
                    .collect();
                for t in targets {
                    self.grant_local(&t, u64::from(window));
                }
            }
        }
    }

    /// A new producer's credit: the peer's window when credit is in force.
    pub(super) fn initial_credit(&self) -> Arc<Semaphore> {
        let n = if self.engine.credit_in_force() {
            self.shared.peer_window.load(Ordering::Acquire)
        } else {
            0
        };
        Arc::new(Semaphore::new(n as usize))
    }

    /// The credit of one of our producers and its debt.
    pub(super) fn credit_mut(&mut self, target: &Target) -> Option<(&Arc<Semaphore>, &mut u64)> {
        match target {
            Target::Call(id) => match self.calls.get_mut(id) {
                Some(CallSink::Stream {
                    credit: Some(c),
                    debt,
                    ..
                }) => Some((c, debt)),
                _ => None,
            },
            Target::Serve(k) => match self.serving.get_mut(k) {
                Some(Serving {
                    credit: Some(c),
                    debt,
                    ..
                }) => Some((c, debt)),
                _ => None,
            },
        }
    }

    /// Gives one of our producers `n` credits (a grant from the peer, or the initial window),
    /// paying its debt first.
    pub(super) fn grant_local(&mut self, target: &Target, n: u64) {
        if let Some((sem, debt)) = self.credit_mut(target) {
            let pay = n.min(*debt);
            *debt -= pay;
            let add = usize::try_from(n - pay).unwrap_or(usize::MAX);
            if add > 0 && sem.available_permits() < Semaphore::MAX_PERMITS / 2 {
                sem.add_permits(add.min(Semaphore::MAX_PERMITS / 2));
            }
        }
    }
}
