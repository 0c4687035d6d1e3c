//! The driver's local commands: calls opened by handles, items, ends, answers and failures
//! sent by handlers (checked by the engine, with credit charged for items sent without it),
//! and the end of handler tasks (a panic becomes `handler_failed`).

use super::*;

impl<R: FrameReader> Driver<R> {
    pub(super) fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start {
                id,
                model,
                data,
                sink,
            } => match self.engine.start_call(id, model, &data) {
                Ok(()) => {
                    self.calls.insert(id, sink);
                    if self.engine.credit_in_force() {
                        let w = self.shared.peer_window.load(Ordering::Acquire);
                        self.grant_local(&Target::Call(id), u64::from(w));
                    }
                }
                Err(e) => fail_sink(sink, RpcError::Limit(e.to_string())),
            },
            Cmd::Ff { data } => {
                let _ = self.engine.fire_and_forget(&data);
            }
            Cmd::Items {
                target,
                data,
                credited,
            } => {
                let sent = self.engine.send_items(&target, &data).is_ok();
                // Items sent without credit count against the peer's window all the same once
                // credit is (or may become) in force: charge them to the stream.
                let may_apply = self.engine.credit_in_force()
                    || *self.engine.negotiated() == Negotiated::Pending;
                if sent && !credited && may_apply {
                    if let Some((sem, debt)) = self.credit_mut(&target) {
                        *debt += data.len() as u64;
                        let paid = sem.forget_permits(usize::try_from(*debt).unwrap_or(usize::MAX));
                        *debt -= paid as u64;
                    }
                }
            }
            Cmd::End { target } => {
                if self.engine.end(&target).is_ok() {
                    match &target {
                        Target::Serve(k) => {
                            self.serving.remove(k);
                        }
                        Target::Call(id) => {
                            let remove = match self.calls.get_mut(id) {
                                Some(CallSink::Stream {
                                    tx, local_ended, ..
                                }) => {
                                    *local_ended = true;
                                    tx.is_none()
                                }
                                _ => false,
                            };
                            if remove {
                                self.calls.remove(id);
                            }
                        }
                    }
                }
            }
            Cmd::Respond { key, data } => {
                if self.engine.respond(&key, &data).is_ok() {
                    self.serving.remove(&key);
                }
            }
            Cmd::Fail { key, code, message } => {
                if self.engine.fail(&key, code, &message).is_ok() {
                    self.serving.remove(&key);
                }
            }
            Cmd::FfDone => self.engine.fire_and_forget_done(),
        }
    }

    pub(super) fn on_task_done(
        &mut self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let (id, panicked) = match done {
            Ok((id, ())) => (id, false),
            Err(e) => (e.id(), e.is_panic()),
        };
        let Some(key) = self.task_keys.remove(&id) else {
            return;
        };
        if panicked {
            tracing::error!(request = ?key, "rpc handler panicked");
            if self
                .engine
                .fail(
                    &key,
                    bistream_rpc_proto::ErrorCode::HandlerFailed,
                    "handler panicked",
                )
                .is_ok()
            {
                self.serving.remove(&key);
            }
        }
    }
}
