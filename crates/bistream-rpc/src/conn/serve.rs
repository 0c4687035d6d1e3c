//! Starting handlers for requests we serve: request/response handlers that answer at once
//! run inline, the others get a task; request/stream items go to the driver in batches.

use super::*;

impl<R: FrameReader> Driver<R> {
    pub(super) fn serve(&mut self, key: ServeKey, model: Model, op: &str, data: Raw) {
        let Some(h) = self.router.get(op).cloned() else {
            return;
        };
        let shared = self.shared.clone();
        let cmd = shared.cmd.clone();
        let mut slot = Serving {
            abort: None,
            inbound: None,
            credit: None,
            debt: 0,
        };
        let k = key.clone();
        let abort = match (h, model) {
            (Handler::Rr(h), _) => {
                let mut fut = h(data);
                // Most handlers answer without waiting (echo): answer at once, without a task.
                let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
                let first =
                    std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
                let answer = match first {
                    Ok(Poll::Pending) => None,
                    Ok(Poll::Ready(r)) => Some(r),
                    Err(_) => {
                        tracing::error!(request = ?key, "rpc handler panicked");
                        Some(Err(HandlerError::failed("handler panicked")))
                    }
                };
                if let Some(r) = answer {
                    let _ = match r {
                        Ok(v) => self.engine.respond(&key, v.get()),
                        Err(e) => self.engine.fail(&key, e.code, &e.message),
                    };
                    return;
                }
                self.tasks.spawn(async move {
                    let c = match fut.await {
                        Ok(v) => Cmd::Respond {
                            key: k,
                            data: String::from(Box::<str>::from(v)),
                        },
                        Err(e) => Cmd::Fail {
                            key: k,
                            code: e.code,
                            message: e.message,
                        },
                    };
                    let _ = cmd.send(c).await;
                })
            }
            (Handler::Rs(h), _) => {
                let credit = self.initial_credit();
                slot.credit = Some(credit.clone());
                let items = h(data);
                self.tasks.spawn(produce(
                    items,
                    Producer::new(Target::Serve(k.clone()), shared.clone(), credit, None),
                    k,
                    cmd,
                ))
            }
            (Handler::Ss(h), _) => {
                let credit = self.initial_credit();
                slot.credit = Some(credit.clone());
                let (tx, rx) = shared.stream_queue();
                let outcome: Outcome = Arc::new(OnceLock::new());
                slot.inbound = Some((tx, outcome.clone()));
                let items = Items::new(rx, outcome, Target::Serve(k.clone()), shared.clone());
                let sender = ServeSender::new(k.clone(), shared.clone(), credit);
                let fut = h(data, ServeReceiver::new(items), sender);
                self.tasks.spawn(async move {
                    let c = match fut.await {
                        Ok(()) => Cmd::End {
                            target: Target::Serve(k),
                        },
                        Err(e) => Cmd::Fail {
                            key: k,
                            code: e.code,
                            message: e.message,
                        },
                    };
                    let _ = cmd.send(c).await;
                })
            }
            (Handler::Ff(_), _) => return,
        };
        self.task_keys.insert(abort.id(), key.clone());
        slot.abort = Some(abort);
        self.serving.insert(key, slot);
    }
}

/// Items a request/stream handler may hand over in one command (256 measured +20% stream
/// items/s over 64 in an alternated A/B: DECISIONS D18).
const BATCH: usize = 256;

/// Bytes of items a batch may hold: a batch stops growing past this, so a fast stream of large
/// items is not held back in bulk (toward a base peer no credit limits the batch).
const BATCH_BYTES: usize = 256 * 1024;

/// Runs a request/stream handler's items to the end: takes every item that is ready at once
/// (up to [`BATCH`] items and about [`BATCH_BYTES`]) and sends them in one command, so a fast
/// stream costs one hand-off per batch, not per item.
async fn produce(mut items: RawItems, mut p: Producer, key: ServeKey, cmd: mpsc::Sender<Cmd>) {
    let mut batch: Vec<String> = Vec::with_capacity(BATCH);
    loop {
        let mut bytes = 0;
        let mut end = match items.next().await {
            Some(Ok(v)) => {
                bytes += v.len();
                batch.push(v);
                None
            }
            Some(Err(e)) => Some(Err(e)),
            None => Some(Ok(())),
        };
        let room = p.room(BATCH);
        while end.is_none() && batch.len() < room && bytes < BATCH_BYTES {
            match items.next().now_or_never() {
                Some(Some(Ok(v))) => {
                    bytes += v.len();
                    batch.push(v);
                }
                Some(Some(Err(e))) => end = Some(Err(e)),
                Some(None) => end = Some(Ok(())),
                None => break,
            }
        }
        if !batch.is_empty() && p.send_many(&mut batch).await.is_err() {
            return;
        }
        match end {
            None => {}
            Some(Ok(())) => {
                let _ = p.end().await;
                return;
            }
            Some(Err(e)) => {
                let _ = cmd
                    .send(Cmd::Fail {
                        key,
                        code: e.code,
                        message: e.message,
                    })
                    .await;
                return;
            }
        }
    }
}
