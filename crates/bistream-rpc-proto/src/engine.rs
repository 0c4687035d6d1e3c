//! The sans-IO protocol engine: it owns the protocol state of one connection (our calls, the
//! requests we serve, negotiation, limits, the invalid-frame counter) and nothing else. Feed it
//! received messages with [`Engine::on_frame`] and local actions with its methods; take the
//! frames to write with [`Engine::take_output`] and what happened with [`Engine::next_event`].
//! It never blocks, never does I/O and never reads a clock, so any transport or runtime can
//! drive it and tests run it in memory.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;

use crate::batch::{SizeHint, TextBatch};
use crate::frame::{
    encode, error_data, DecodeError, ErrorCode, Extension, FrameRef, FrameType, Hello, Model,
    RequestId, PROTOCOL_VERSION,
};
use crate::types::{
    CallFailure, CallMap, EngineConfig, Event, Limits, Negotiated, ServeKey, Side, Stats,
};

#[derive(Debug)]
struct Call {
    model: Model,
    local_ended: bool,
    remote_ended: bool,
}

#[derive(Debug)]
struct Serve {
    model: Model,
    remote_ended: bool,
}

/// The protocol state machine of one connection. See the [crate docs](crate) for an example.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    nego: Negotiated,
    seen_first: bool,
    closed: bool,
    calls: CallMap<Call>,
    served: HashMap<ServeKey, Serve>,
    served_streams: usize,
    ff_in_flight: usize,
    invalid_in_row: u32,
    stats: Stats,
    out: TextBatch,
    /// The size of the last output taken (the next one starts with that much room).
    out_hint: SizeHint,
    events: VecDeque<Event>,
    /// The head of the last stream item received (the decoder's fast path).
    known: crate::fast::Known,
    /// That head's request id is one of our calls (its caller is our peer id).
    known_is_ours: bool,
    /// The size of the last batch of stream items made (a new one starts with that much room).
    batch_hint: SizeHint,
}

/// Most bytes of room a new output starts with (a burst of large frames does not make every
/// later small one reserve as much).
const OUT_HINT_BYTES: usize = 256 * 1024;

/// A received text message is not UTF-8 ([`Engine::on_text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("text message is not UTF-8")]
pub struct NotUtf8;

impl Engine {
    /// A new engine; an initiator with extensions on queues its `hello` right away.
    pub fn new(cfg: EngineConfig) -> Self {
        let nego = if cfg.extensions {
            Negotiated::Pending
        } else {
            Negotiated::Base
        };
        let mut e = Self {
            cfg,
            nego,
            seen_first: false,
            closed: false,
            calls: CallMap::default(),
            served: HashMap::new(),
            served_streams: 0,
            ff_in_flight: 0,
            invalid_in_row: 0,
            stats: Stats::default(),
            out: TextBatch::default(),
            out_hint: SizeHint::default(),
            events: VecDeque::new(),
            known: crate::fast::Known::default(),
            known_is_ours: false,
            batch_hint: SizeHint::default(),
        };
        if e.cfg.extensions && e.cfg.side == Side::Initiator {
            e.push_hello();
        }
        e
    }

    /// Our peer id.
    pub fn peer_id(&self) -> &str {
        &self.cfg.peer_id
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }

    /// Negotiation state.
    pub fn negotiated(&self) -> &Negotiated {
        &self.nego
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Our calls awaiting their end.
    pub fn pending_calls(&self) -> usize {
        self.calls.len()
    }

    /// Requests being served (request/response, streams and bi-streams).
    pub fn served(&self) -> usize {
        self.served.len() + self.ff_in_flight
    }

    /// Frames to write, oldest first, one `String` each.
    pub fn take_output(&mut self) -> Vec<String> {
        self.take_frames().iter().map(str::to_owned).collect()
    }

    /// Frames to write, oldest first, in one buffer (a transport's writer takes these: one
    /// allocation per batch, not per frame). The next output starts with as much room as this
    /// one used, up to [`OUT_HINT_BYTES`].
    pub fn take_frames(&mut self) -> TextBatch {
        self.out_hint.record(&self.out);
        std::mem::take(&mut self.out)
    }

    /// True when frames wait in the output.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, oldest first.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How many events wait to be taken with [`Engine::next_event`] (a driver that feeds
    /// several frames before taking events bounds them with this).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    fn ext(&self, e: Extension) -> bool {
        match &self.nego {
            Negotiated::Extended {
                cancel,
                request_n,
                keepalive,
                ..
            } => match e {
                Extension::Cancel => *cancel,
                Extension::RequestN => *request_n,
                Extension::Keepalive => *keepalive,
            },
            _ => false,
        }
    }

    /// True once `request_n` credit is in force on this connection.
    pub fn credit_in_force(&self) -> bool {
        self.ext(Extension::RequestN)
    }

    /// Room for the next output's first frame, sized after the last output taken.
    fn out_room(&mut self) {
        if self.out.is_empty() {
            self.out = self.out_hint.batch(OUT_HINT_BYTES, 0);
        }
    }

    fn push(&mut self, ty: FrameType, id: Option<(&str, i128)>, data: Option<&str>) {
        self.out_room();
        let me = &self.cfg.peer_id;
        self.out.push_with(|s| encode(s, ty, me, id, data));
        self.stats.frames_out += 1;
    }

    /// A frame under one of our own call ids.
    fn push_own(&mut self, ty: FrameType, call: u64, data: Option<&str>) {
        self.out_room();
        let me = &self.cfg.peer_id;
        self.out
            .push_with(|s| encode(s, ty, me, Some((me, call.into())), data));
        self.stats.frames_out += 1;
    }

    fn push_hello(&mut self) {
        let exts: Vec<&str> = Extension::ALL.iter().map(|e| e.as_str()).collect();
        let mut data = format!(
            "{{\"version\":{PROTOCOL_VERSION},\"extensions\":{},\"window\":{}",
            serde_json::to_string(&exts).unwrap_or_else(|_| "[]".into()),
            self.cfg.limits.window
        );
        if let Some(ms) = self.cfg.keepalive_ms {
            data.push_str(&format!(",\"keepalive_ms\":{ms}"));
        }
        data.push('}');
        self.push(FrameType::Hello, None, Some(&data));
    }

    fn push_error(&mut self, id: &RequestId, code: ErrorCode, message: &str) {
        let data = error_data(code.as_str(), message);
        self.push(FrameType::Error, Some((&id.peer, id.n)), Some(&data));
    }

    // ---- received frames ------------------------------------------------------------------

    /// Handles one received text message. `lookup` gives the model of a registered operation.
    pub fn on_frame(&mut self, text: &str, lookup: &dyn Fn(&str) -> Option<Model>) {
        // A `&str` is UTF-8: the error cannot happen.
        let _ = self.on_text(text.as_bytes(), lookup);
    }

    /// Handles one received text message given as the bytes the transport received, not yet
    /// checked as UTF-8 (the WebSocket reader's form): the check is made here, once, and
    /// skipped for stream items whose head matches the previous item's ([`crate::fast`]).
    /// `Err(NotUtf8)` when the message is not UTF-8: nothing else happened, and a WebSocket
    /// connection must close with 1007 (RFC 6455 §8.1).
    pub fn on_text(
        &mut self,
        frame: &[u8],
        lookup: &dyn Fn(&str) -> Option<Model>,
    ) -> Result<(), NotUtf8> {
        if self.closed {
            return Ok(());
        }
        if self.seen_first && frame.len() <= self.cfg.limits.max_frame_bytes {
            if let Some(item) = crate::fast::decode_item(frame, &mut self.known) {
                self.stats.frames_in += 1;
                if item.new_head {
                    self.known_is_ours = self.known.request_id().0 == self.cfg.peer_id;
                }
                self.on_known_item(item.data);
                return Ok(());
            }
        }
        let text = std::str::from_utf8(frame).map_err(|_| NotUtf8)?;
        self.stats.frames_in += 1;
        if text.len() > self.cfg.limits.max_frame_bytes {
            let reason = format!(
                "frame of {} bytes exceeds the limit of {} bytes",
                text.len(),
                self.cfg.limits.max_frame_bytes
            );
            let id = serde_json::from_str::<IdOnly>(text)
                .ok()
                .and_then(|i| i.request_id)
                .map(|(peer, n)| RequestId { peer, n });
            self.invalid(DecodeError {
                request_id: id,
                frame_type: None,
                reason,
            });
            return Ok(());
        }
        let frame = match crate::frame::decode_ref_full(text) {
            Ok(f) => f,
            Err(e) => {
                self.settle_base_if_pending();
                self.invalid(e);
                return Ok(());
            }
        };
        if !self.seen_first {
            self.seen_first = true;
            if self.nego == Negotiated::Pending {
                if frame.ty == FrameType::Hello {
                    self.on_hello(frame);
                    return Ok(());
                }
                self.settle(Negotiated::Base);
            }
        }
        self.dispatch(frame, lookup);
        Ok(())
    }

    /// A stream item taken by the fast path: routed as [`Engine::dispatch`] routes a
    /// `stream_data` frame with the remembered head's request id.
    fn on_known_item(&mut self, data: Option<&str>) {
        self.invalid_in_row = 0;
        let (caller, n) = self.known.request_id();
        if self.known_is_ours {
            self.on_call_frame(FrameType::StreamData, n, data);
        } else {
            let key = RequestId {
                peer: caller.to_owned(),
                n: i128::from(n),
            };
            self.on_serve_frame(FrameType::StreamData, key, data);
        }
    }

    /// Handles a binary message (not part of the protocol): counted as invalid.
    pub fn on_binary(&mut self, len: usize) {
        self.stats.frames_in += 1;
        self.settle_base_if_pending();
        self.invalid(DecodeError {
            request_id: None,
            frame_type: None,
            reason: format!("binary message of {len} bytes (frames are JSON text)"),
        });
    }

    fn settle_base_if_pending(&mut self) {
        if !self.seen_first {
            self.seen_first = true;
            if self.nego == Negotiated::Pending {
                self.settle(Negotiated::Base);
            }
        }
    }

    fn settle(&mut self, n: Negotiated) {
        self.nego = n.clone();
        self.events.push_back(Event::Negotiated(n));
    }

    fn on_hello(&mut self, frame: FrameRef<'_>) {
        let hello = frame
            .data
            .and_then(|d| serde_json::from_str::<Hello>(d.get()).ok());
        let Some(hello) = hello else {
            self.settle(Negotiated::Base);
            return self.invalid(DecodeError {
                request_id: None,
                frame_type: Some("hello".into()),
                reason: "hello without a valid data object".into(),
            });
        };
        self.invalid_in_row = 0;
        if self.cfg.side == Side::Acceptor {
            self.push_hello();
        }
        let has = |e: Extension| hello.extensions.iter().any(|x| x == e.as_str());
        self.settle(Negotiated::Extended {
            cancel: has(Extension::Cancel),
            request_n: has(Extension::RequestN) && hello.window.is_some_and(|w| w > 0),
            keepalive: has(Extension::Keepalive),
            window: hello.window.unwrap_or(0),
            keepalive_ms: hello.keepalive_ms,
        });
    }

    fn invalid(&mut self, e: DecodeError) {
        self.stats.invalid += 1;
        self.invalid_in_row += 1;
        let mut reason = e.reason.clone();
        if let Some(id) = &e.request_id {
            let is_error = e.frame_type.as_deref() == Some("error");
            if id.peer == self.cfg.peer_id && id.n >= 0 && id.n <= i128::from(u64::MAX) {
                // A broken reply to one of our calls: that call fails.
                let call = id.n as u64;
                if self.calls.remove(&call).is_some() {
                    self.events.push_back(Event::Failed {
                        call,
                        failure: CallFailure::Protocol(e.reason.clone()),
                    });
                }
            } else if !is_error {
                let msg = format!("invalid frame: {}", e.reason);
                self.push_error(id, ErrorCode::InvalidRequest, &msg);
                // A bad frame for a request we serve ends that request.
                self.forget_served(id);
                reason.push_str(" (answered invalid_request)");
            }
        }
        self.events.push_back(Event::Dropped {
            reason: format!("invalid frame: {reason}"),
        });
        if self.invalid_in_row >= self.cfg.limits.max_invalid_in_row {
            self.closed = true;
            self.events.push_back(Event::Close {
                code: crate::close::POLICY_VIOLATION,
                reason: format!("{} invalid frames in a row", self.invalid_in_row),
            });
        }
    }

    fn forget_served(&mut self, id: &RequestId) {
        if let Some(s) = self.served.remove(id) {
            if s.model != Model::RequestResponse {
                self.served_streams -= 1;
            }
            self.events
                .push_back(Event::ServeCancelled { key: id.clone() });
        }
    }
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "requestId", default)]
    request_id: Option<(String, i128)>,
}

#[cfg(test)]
mod tests;

mod local;
mod recv;
