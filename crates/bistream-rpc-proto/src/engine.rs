//! The sans-IO protocol engine: it owns the protocol state of one connection (our calls, the
//! requests we serve, negotiation, limits, the invalid-frame counter) and nothing else. Feed it
//! received messages with [`Engine::on_frame`] and local actions with its methods; take the
//! frames to write with [`Engine::take_output`] and what happened with [`Engine::next_event`].
//! It never blocks, never does I/O and never reads a clock, so any transport or runtime can
//! drive it and tests run it in memory.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::frame::{
    decode_ref, encode, encode_prefix, error_data, DecodeError, ErrorCode, Extension, FrameRef, FrameType, Hello,
    Model, RequestId, PROTOCOL_VERSION,
};
use crate::types::{
    CallFailure, EngineConfig, EngineError, Event, Limits, Negotiated, ServeKey, Side, Stats,
    Target,
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
    calls: HashMap<u64, Call>,
    served: HashMap<ServeKey, Serve>,
    served_streams: usize,
    ff_in_flight: usize,
    invalid_in_row: u32,
    stats: Stats,
    out: Vec<String>,
    events: VecDeque<Event>,
}

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
            calls: HashMap::new(),
            served: HashMap::new(),
            served_streams: 0,
            ff_in_flight: 0,
            invalid_in_row: 0,
            stats: Stats::default(),
            out: Vec::new(),
            events: VecDeque::new(),
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

    /// Frames to write, oldest first.
    pub fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.out)
    }

    /// Moves the frames to write into `dst` (keeps both allocations).
    pub fn drain_output_into(&mut self, dst: &mut Vec<String>) {
        dst.append(&mut self.out);
    }

    /// True when frames wait in the output.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, oldest first.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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

    fn push(&mut self, ty: FrameType, id: Option<(&str, i128)>, data: Option<&str>) {
        let mut s = String::with_capacity(96 + data.map_or(4, str::len));
        encode(&mut s, ty, &self.cfg.peer_id, id, data);
        self.out.push(s);
        self.stats.frames_out += 1;
    }

    /// A frame under one of our own call ids.
    fn push_own(&mut self, ty: FrameType, call: u64, data: Option<&str>) {
        let mut s = String::with_capacity(96 + data.map_or(4, str::len));
        let me = &self.cfg.peer_id;
        encode(&mut s, ty, me, Some((me, call.into())), data);
        self.out.push(s);
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
        if self.closed {
            return;
        }
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
            return self.invalid(DecodeError {
                request_id: id,
                frame_type: None,
                reason,
            });
        }
        let frame = match decode_ref(text) {
            Ok(f) => f,
            Err(e) => {
                self.settle_base_if_pending();
                return self.invalid(e);
            }
        };
        if !self.seen_first {
            self.seen_first = true;
            if self.nego == Negotiated::Pending {
                if frame.ty == FrameType::Hello {
                    return self.on_hello(frame);
                }
                self.settle(Negotiated::Base);
            }
        }
        self.dispatch(frame, lookup);
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
                code: 1008,
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

    fn dispatch(&mut self, f: FrameRef<'_>, lookup: &dyn Fn(&str) -> Option<Model>) {
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
                let Some((peer, n)) = f.request_id else { return };
                if *peer == *self.cfg.peer_id && n >= 0 && n <= i128::from(u64::MAX) {
                    self.on_call_frame(f.ty, n as u64, f.data);
                } else {
                    let id = RequestId {
                        peer: peer.into_owned(),
                        n,
                    };
                    self.on_serve_frame(f.ty, id, f.data);
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
            Some(_) => "not a fire-and-forget operation",
            None => "unknown operation",
        };
        self.events.push_back(Event::Dropped {
            reason: format!("fire_and_forget {}: {reason}", clip(&op)),
        });
    }

    /// A fire-and-forget handler finished (frees its in-flight slot).
    pub fn fire_and_forget_done(&mut self) {
        self.ff_in_flight = self.ff_in_flight.saturating_sub(1);
    }

    fn on_call_frame(&mut self, ty: FrameType, call: u64, data: Option<&RawValue>) {
        let Some(c) = self.calls.get_mut(&call) else {
            self.stats.unmatched += 1;
            return;
        };
        let model = c.model;
        let streaming = matches!(model, Model::RequestStream | Model::StreamStream);
        match ty {
            FrameType::Response if model == Model::RequestResponse => {
                self.calls.remove(&call);
                let data = data.map_or_else(null_raw, RawValue::to_owned);
                self.events.push_back(Event::Response { call, data });
            }
            FrameType::StreamData if streaming && !c.remote_ended => {
                let data = data.map_or_else(null_raw, RawValue::to_owned);
                self.events.push_back(Event::Item { call, data });
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
                let failure = match data
                    .and_then(|d| serde_json::from_str::<ErrorData>(d.get()).ok())
                {
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

    fn on_serve_frame(&mut self, ty: FrameType, key: RequestId, data: Option<&RawValue>) {
        let Some(s) = self.served.get_mut(&key) else {
            self.stats.unmatched += 1;
            return;
        };
        match ty {
            FrameType::StreamData if s.model == Model::StreamStream && !s.remote_ended => {
                let data = data.map_or_else(null_raw, RawValue::to_owned);
                self.events.push_back(Event::ServeItem { key, data });
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

    fn on_request_n(&mut self, target: Target, data: Option<&RawValue>) {
        match data
            .and_then(|d| serde_json::from_str::<RequestNData>(d.get()).ok())
        {
            Some(r) if r.n > 0 => self.events.push_back(Event::Credit { target, n: r.n }),
            _ => self.events.push_back(Event::Dropped {
                reason: "request_n without a positive data.n".into(),
            }),
        }
    }

    // ---- local actions ----------------------------------------------------------------------

    /// Opens call `id` of `model` (not fire-and-forget). `data` is the request's JSON object
    /// text, `operation` included. The caller picks ids and never reuses one on a connection
    /// (a counter); an id still open is refused.
    pub fn start_call(&mut self, id: u64, model: Model, data: &str) -> Result<(), EngineError> {
        if self.closed {
            return Err(EngineError::Closed);
        }
        if model == Model::FireAndForget {
            return Err(EngineError::WrongState(
                "use fire_and_forget for fire-and-forget calls",
            ));
        }
        if self.calls.len() >= self.cfg.limits.max_pending_calls {
            return Err(EngineError::TooManyCalls(self.cfg.limits.max_pending_calls));
        }
        if self.calls.contains_key(&id) {
            return Err(EngineError::WrongState("call id already in use"));
        }
        self.calls.insert(
            id,
            Call {
                model,
                local_ended: false,
                remote_ended: false,
            },
        );
        self.push_own(model.request_type(), id, Some(data));
        Ok(())
    }

    /// Sends a fire-and-forget request (`"requestId": null`, as the seed).
    pub fn fire_and_forget(&mut self, data: &str) -> Result<(), EngineError> {
        if self.closed {
            return Err(EngineError::Closed);
        }
        self.push(FrameType::FireAndForget, None, Some(data));
        Ok(())
    }

    /// Sends one stream item: on our bi-stream call, or on a stream/bi-stream we serve.
    pub fn send_item(&mut self, target: &Target, data: &str) -> Result<(), EngineError> {
        let key = self.open_key(target, true)?;
        self.push_with(FrameType::StreamData, key, Some(data));
        Ok(())
    }

    /// Sends several items of one stream in order (the fixed part of the frame is encoded
    /// once).
    pub fn send_items<S: AsRef<str>>(
        &mut self,
        target: &Target,
        items: &[S],
    ) -> Result<(), EngineError> {
        let (peer, n) = self.open_key(target, true)?;
        let mut prefix = String::with_capacity(96);
        encode_prefix(
            &mut prefix,
            FrameType::StreamData,
            &self.cfg.peer_id,
            Some((&peer, n)),
        );
        self.out.reserve(items.len());
        for d in items {
            let d = d.as_ref();
            let mut s = String::with_capacity(prefix.len() + d.len() + 1);
            s.push_str(&prefix);
            s.push_str(d);
            s.push('}');
            self.out.push(s);
        }
        self.stats.frames_out += items.len() as u64;
        Ok(())
    }

    /// Ends our side of a stream: our bi-stream call, or a stream/bi-stream we serve (which is
    /// then finished).
    pub fn end(&mut self, target: &Target) -> Result<(), EngineError> {
        let key = self.open_key(target, true)?;
        self.push_with(FrameType::StreamEnd, key, None);
        match target {
            Target::Call(id) => {
                if let Some(c) = self.calls.get_mut(id) {
                    c.local_ended = true;
                    if c.remote_ended {
                        self.calls.remove(id);
                    }
                }
            }
            Target::Serve(k) => self.finish_served(k),
        }
        Ok(())
    }

    /// Answers a request/response we serve.
    pub fn respond(&mut self, key: &ServeKey, data: &str) -> Result<(), EngineError> {
        match self.served.get(key) {
            Some(s) if s.model == Model::RequestResponse => {}
            Some(_) => return Err(EngineError::WrongState("respond on a stream request")),
            None => return Err(EngineError::NotOpen),
        }
        self.push(FrameType::Response, Some((&key.peer, key.n)), Some(data));
        self.finish_served(key);
        Ok(())
    }

    /// Ends a request we serve with an `error` frame (final).
    pub fn fail(
        &mut self,
        key: &ServeKey,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), EngineError> {
        if !self.served.contains_key(key) {
            return Err(EngineError::NotOpen);
        }
        self.push_error(key, code, message);
        self.finish_served(key);
        Ok(())
    }

    /// Our caller dropped a call: forget it and, when negotiated, tell the peer with `cancel`.
    pub fn cancel_call(&mut self, call: u64) {
        if self.calls.remove(&call).is_some() && self.ext(Extension::Cancel) && !self.closed {
            self.push_own(FrameType::Cancel, call, None);
        }
    }

    /// A served request's handler went away without answering (cancelled locally).
    pub fn abandon_served(&mut self, key: &ServeKey) {
        self.finish_served(key);
    }

    /// Grants the producer of a stream we consume `n` more items (only when negotiated).
    pub fn grant(&mut self, target: &Target, n: u32) {
        if n == 0 || !self.ext(Extension::RequestN) || self.closed {
            return;
        }
        if let Ok(key) = self.open_key(target, false) {
            let data = format!("{{\"n\":{n}}}");
            self.push_with(FrameType::RequestN, key, Some(&data));
        }
    }

    /// Sends a keepalive probe if negotiated; returns whether one was sent.
    pub fn keepalive(&mut self) -> bool {
        if !self.ext(Extension::Keepalive) || self.closed {
            return false;
        }
        self.push(FrameType::Keepalive, None, Some("{\"respond\":true}"));
        true
    }

    /// Marks the engine closed: later local actions fail with [`EngineError::Closed`].
    pub fn close(&mut self) {
        self.closed = true;
    }

    fn finish_served(&mut self, key: &ServeKey) {
        if let Some(s) = self.served.remove(key) {
            if s.model != Model::RequestResponse {
                self.served_streams -= 1;
            }
        }
    }

    /// The wire request id for a target that is open for sending (`sending`) or receiving.
    fn open_key(&self, target: &Target, sending: bool) -> Result<(String, i128), EngineError> {
        if self.closed {
            return Err(EngineError::Closed);
        }
        match target {
            Target::Call(id) => match self.calls.get(id) {
                Some(c) if sending && (c.model != Model::StreamStream || c.local_ended) => {
                    Err(EngineError::WrongState("not an open bi-stream side"))
                }
                Some(_) => Ok((self.cfg.peer_id.clone(), (*id).into())),
                None => Err(EngineError::NotOpen),
            },
            Target::Serve(k) => match self.served.get(k) {
                Some(s) if s.model == Model::RequestResponse => {
                    Err(EngineError::WrongState("not a stream"))
                }
                Some(_) => Ok((k.peer.clone(), k.n)),
                None => Err(EngineError::NotOpen),
            },
        }
    }

    fn push_with(&mut self, ty: FrameType, key: (String, i128), data: Option<&str>) {
        self.push(ty, Some((&key.0, key.1)), data);
    }
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "requestId", default)]
    request_id: Option<(String, i128)>,
}

fn owned_id(id: Option<(std::borrow::Cow<'_, str>, i128)>) -> Option<RequestId> {
    id.map(|(peer, n)| RequestId {
        peer: peer.into_owned(),
        n,
    })
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

#[cfg(test)]
mod tests;
