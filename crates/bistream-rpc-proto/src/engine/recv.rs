//! The engine's receiving side: routes each decoded frame to a new request (with the
//! unknown-operation, wrong-model, duplicate-id and overload answers), to one of our calls, or
//! to a request we serve, and turns it into [`Event`]s.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Engine, Serve};
use crate::batch::TextBatch;
use crate::frame::{DecodeError, ErrorCode, Extension, FrameRef, FrameType, Model, RequestId};
use crate::types::{CallFailure, Event, Negotiated, Target};

#[derive(Deserialize)]
struct OpOnly<'a> {
    #[serde(borrow)]
    operation: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct ErrorData {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RequestNData {
    n: u32,
}

#[derive(Deserialize)]
struct KeepaliveData {
    #[serde(default)]
    respond: bool,
}

impl Engine {
    pub(super) fn dispatch(&mut self, f: FrameRef<'_>, lookup: &dyn Fn(&str) -> Option<Model>) {
        if let Some(model) = f.ty.model() {
            return self.on_request(f, model, lookup);
        }
        if f.ty.is_extension() && !matches!(self.nego, Negotiated::Extended { .. }) {
            return self.invalid(DecodeError {
                request_id: owned_id(f.request_id),
                frame_type: Some(f.ty.as_str().into()),
                reason: format!("{} frame without a negotiated hello", f.ty.as_str()),
            });
        }
        self.invalid_in_row = 0;
        match f.ty {
            FrameType::Hello => {
                // Only valid as the very first frame.
                self.invalid(DecodeError {
                    request_id: None,
                    frame_type: Some("hello".into()),
                    reason: "hello after the first frame".into(),
                });
            }
            FrameType::Keepalive => {
                let respond = f
                    .data
                    .and_then(|d| serde_json::from_str::<KeepaliveData>(d.get()).ok())
                    .is_some_and(|k| k.respond);
                if respond {
                    self.push(FrameType::Keepalive, None, Some("{\"respond\":false}"));
                }
            }
            _ => {
                let Some((peer, n)) = f.request_id else {
                    return;
                };
                if *peer == *self.cfg.peer_id && n >= 0 && n <= i128::from(u64::MAX) {
                    self.on_call_frame(f.ty, n as u64, f.data.map(RawValue::get));
                } else {
                    let id = RequestId {
                        peer: peer.into_owned(),
                        n,
                    };
                    self.on_serve_frame(f.ty, id, f.data.map(RawValue::get));
                }
            }
        }
    }

    fn on_request(
        &mut self,
        f: FrameRef<'_>,
        model: Model,
        lookup: &dyn Fn(&str) -> Option<Model>,
    ) {
        let op = f
            .data
            .and_then(|d| serde_json::from_str::<OpOnly>(d.get()).ok())
            .map(|o| o.operation.into_owned());
        let (Some(op), Some(data)) = (op, f.data.map(RawValue::to_owned)) else {
            return self.invalid(DecodeError {
                request_id: owned_id(f.request_id),
                frame_type: Some(f.ty.as_str().into()),
                reason: "data must be an object with a string \"operation\"".into(),
            });
        };
        self.invalid_in_row = 0;
        let Some(id) = owned_id(f.request_id) else {
            // fire_and_forget without a request id: nothing can be answered.
            return self.serve_fire_and_forget(op, data, lookup);
        };
        if model == Model::FireAndForget {
            return self.serve_fire_and_forget(op, data, lookup);
        }
        if id.peer == self.cfg.peer_id {
            return self.push_error(
                &id,
                ErrorCode::InvalidRequest,
                "requestId uses the callee's own peer id",
            );
        }
        if self.served.contains_key(&id) {
            self.stats.invalid += 1;
            return self.push_error(&id, ErrorCode::InvalidRequest, "requestId already in use");
        }
        match lookup(&op) {
            None => {
                let msg = format!("unknown operation: {}", clip(&op));
                self.push_error(&id, ErrorCode::UnknownOperation, &msg)
            }
            Some(m) if m != model => {
                let msg = format!(
                    "operation {} is a {} operation, called as {}",
                    clip(&op),
                    m.name(),
                    model.name()
                );
                self.push_error(&id, ErrorCode::InvalidRequest, &msg)
            }
            Some(_) => {
                let lim = &self.cfg.limits;
                let streaming = model != Model::RequestResponse;
                let over = if self.served() >= lim.max_in_flight {
                    Some(format!("{} requests in flight", lim.max_in_flight))
                } else if streaming && self.served_streams >= lim.max_streams {
                    Some(format!("{} streams open", lim.max_streams))
                } else {
                    None
                };
                if let Some(why) = over {
                    self.stats.overloaded += 1;
                    return self.push_error(
                        &id,
                        ErrorCode::Overloaded,
                        &format!("overloaded: {why} on this connection"),
                    );
                }
                if streaming {
                    self.served_streams += 1;
                }
                self.served.insert(
                    id.clone(),
                    Serve {
                        model,
                        remote_ended: false,
                    },
                );
                self.events.push_back(Event::Serve {
                    key: id,
                    model,
                    op,
                    data,
                });
            }
        }
    }

    fn serve_fire_and_forget(
        &mut self,
        op: String,
        data: Box<RawValue>,
        lookup: &dyn Fn(&str) -> Option<Model>,
    ) {
        let reason = match lookup(&op) {
            Some(Model::FireAndForget) if self.served() < self.cfg.limits.max_in_flight => {
                self.ff_in_flight += 1;
                return self.events.push_back(Event::FireAndForget { op, data });
            }
            Some(Model::FireAndForget) => {
                self.stats.overloaded += 1;
                "overloaded"
            }
            Some(_) => {
                self.stats.ff_refused += 1;
                "not a fire-and-forget operation"
            }
            None => {
                self.stats.ff_refused += 1;
                "unknown operation"
            }
        };
        self.events.push_back(Event::Dropped {
            reason: format!("fire_and_forget {}: {reason}", clip(&op)),
        });
    }

    /// A fire-and-forget handler finished (frees its in-flight slot).
    pub fn fire_and_forget_done(&mut self) {
        self.ff_in_flight = self.ff_in_flight.saturating_sub(1);
    }

    /// A frame under one of our call ids; `data` is the text of one JSON value (`None`: null).
    pub(super) fn on_call_frame(&mut self, ty: FrameType, call: u64, data: Option<&str>) {
        let Some(c) = self.calls.get_mut(&call) else {
            self.stats.unmatched += 1;
            return;
        };
        let model = c.model;
        let streaming = matches!(model, Model::RequestStream | Model::StreamStream);
        match ty {
            FrameType::Response if model == Model::RequestResponse => {
                self.calls.remove(&call);
                let ev = match owned_raw(data) {
                    Ok(data) => Event::Response { call, data },
                    Err(why) => Event::Failed {
                        call,
                        failure: CallFailure::Protocol(why),
                    },
                };
                self.events.push_back(ev);
            }
            FrameType::StreamData if streaming && !c.remote_ended => {
                self.push_item(Target::Call(call), data.unwrap_or("null"));
            }
            FrameType::StreamEnd if streaming && !c.remote_ended => {
                c.remote_ended = true;
                if model == Model::RequestStream || c.local_ended {
                    self.calls.remove(&call);
                }
                self.events.push_back(Event::End { call });
            }
            FrameType::Error => {
                self.calls.remove(&call);
                let failure = match data.and_then(|d| serde_json::from_str::<ErrorData>(d).ok()) {
                    Some(e) => CallFailure::Remote {
                        code: e.code,
                        message: e.message,
                    },
                    None => CallFailure::Protocol("error frame without code".into()),
                };
                self.events.push_back(Event::Failed { call, failure });
            }
            FrameType::RequestN => self.on_request_n(Target::Call(call), data),
            FrameType::Cancel => {
                self.stats.unmatched += 1;
            }
            _ => {
                self.calls.remove(&call);
                let why = format!("unexpected {} for a {} call", ty.as_str(), model.name());
                if self.ext(Extension::Cancel) {
                    self.push_own(FrameType::Cancel, call, None);
                }
                self.events.push_back(Event::Failed {
                    call,
                    failure: CallFailure::Protocol(why),
                });
            }
        }
    }

    /// A frame under a request we serve; `data` as in [`Engine::on_call_frame`].
    pub(super) fn on_serve_frame(&mut self, ty: FrameType, key: RequestId, data: Option<&str>) {
        let Some(s) = self.served.get_mut(&key) else {
            self.stats.unmatched += 1;
            return;
        };
        match ty {
            FrameType::StreamData if s.model == Model::StreamStream && !s.remote_ended => {
                self.push_item(Target::Serve(key), data.unwrap_or("null"));
            }
            FrameType::StreamEnd if s.model == Model::StreamStream && !s.remote_ended => {
                s.remote_ended = true;
                self.events.push_back(Event::ServeEnd { key });
            }
            FrameType::Cancel => self.forget_served(&key),
            FrameType::RequestN => self.on_request_n(Target::Serve(key), data),
            _ => {
                let why = format!(
                    "unexpected {} frame for a request being served",
                    ty.as_str()
                );
                self.invalid(DecodeError {
                    request_id: Some(key),
                    frame_type: Some(ty.as_str().into()),
                    reason: why,
                });
            }
        }
    }

    /// A received stream item: appended to the batch at the back of the events when that
    /// batch is the same call's (or served request's) and has room, else a new batch.
    // Inlined into both arms, where the target's variant is known (out of line, the append
    // path paid ~20 instructions per item to drop a `Target` it did not use).
    #[inline(always)]
    fn push_item(&mut self, target: Target, item: &str) {
        let (win, cap) = self.batch_bounds();
        let same = match (self.events.back_mut(), &target) {
            (Some(Event::Items { call, items }), Target::Call(t)) if call == t => Some(items),
            (Some(Event::ServeItems { key, items }), Target::Serve(t)) if key == t => Some(items),
            _ => None,
        };
        if let Some(items) = same.filter(|items| fits(items, item, win, cap)) {
            items.push(item);
            self.batch_hint.record(items);
            return;
        }
        let items = self.new_batch(item);
        self.events.push_back(match target {
            Target::Call(call) => Event::Items { call, items },
            Target::Serve(key) => Event::ServeItems { key, items },
        });
    }

    /// The most items and bytes one [`TextBatch`] may hold: the bounds of the stream queue it
    /// goes into whole, so a batch never holds more than the queue may.
    fn batch_bounds(&self) -> (usize, usize) {
        let lim = &self.cfg.limits;
        (lim.window.max(1) as usize, lim.stream_queue_bytes.max(1))
    }

    /// A batch holding `item`, with room for as many items and bytes as the last batch held
    /// (at most [`BATCH_HINT_BYTES`] bytes beyond `item`, so a batch of a few items never
    /// holds much more memory than its items).
    fn new_batch(&mut self, item: &str) -> TextBatch {
        let mut b = self.batch_hint.batch(BATCH_HINT_BYTES, item.len());
        b.push(item);
        self.batch_hint.record(&b);
        b
    }

    fn on_request_n(&mut self, target: Target, data: Option<&str>) {
        match data.and_then(|d| serde_json::from_str::<RequestNData>(d).ok()) {
            Some(r) if r.n > 0 => self.events.push_back(Event::Credit { target, n: r.n }),
            _ => {
                self.stats.invalid += 1;
                self.events.push_back(Event::Dropped {
                    reason: "request_n without a positive data.n".into(),
                });
            }
        }
    }
}

/// The most bytes of room a new batch gets beyond its first item from the size of the last.
const BATCH_HINT_BYTES: usize = 16 * 1024;

/// Whether `item` may join `batch`: the batch stays within `win` items and `cap` bytes.
fn fits(batch: &TextBatch, item: &str, win: usize, cap: usize) -> bool {
    batch.len() < win && batch.bytes() + item.len() <= cap
}

fn owned_id(id: Option<(std::borrow::Cow<'_, str>, i128)>) -> Option<RequestId> {
    id.map(|(peer, n)| RequestId {
        peer: peer.into_owned(),
        n,
    })
}

/// `data` as an owned raw value (`None` is `null`). The decoder checked it as one JSON value,
/// so the error (serde_json's own check again) is not expected; it fails the frame if it comes.
fn owned_raw(data: Option<&str>) -> Result<Box<RawValue>, String> {
    match data {
        None => Ok(null_raw()),
        Some(d) => RawValue::from_string(d.to_owned()).map_err(|e| format!("data: {e}")),
    }
}

/// `null` (the default raw value).
fn null_raw() -> Box<RawValue> {
    Box::<RawValue>::default()
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
