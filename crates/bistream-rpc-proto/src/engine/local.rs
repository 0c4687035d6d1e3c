//! The engine's local actions: opening calls, sending items and ends, answering and failing
//! requests we serve, cancelling, granting credit and keepalives. Each one checks the protocol
//! state and queues the frames to write.

use super::{Call, Engine};
use crate::frame::{encode_prefix, ErrorCode, Extension, FrameType, Model};
use crate::types::{EngineError, ServeKey, Target};

impl Engine {
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
        let bytes: usize = items
            .iter()
            .map(|d| prefix.len() + d.as_ref().len() + 1)
            .sum();
        self.out.reserve(items.len(), bytes);
        for d in items {
            self.out.push_with(|s| {
                s.push_str(&prefix);
                s.push_str(d.as_ref());
                s.push('}');
            });
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

    /// Ends a stream whose consumer did not drain its full inbound queue in time (the
    /// receiver had stopped reading the connection for it): a stream or bi-stream we serve
    /// gets an `error` frame with code `timeout`; a call of ours is dropped and, when
    /// negotiated, cancelled with `cancel` (a caller has no `error` frame to send: a base
    /// peer's later frames for it are dropped as unmatched). Counted in [`Stats::stalled`];
    /// `false` when the target was no longer open.
    ///
    /// [`Stats::stalled`]: crate::Stats::stalled
    pub fn cut_stalled(&mut self, target: &Target, message: &str) -> bool {
        let open = match target {
            Target::Call(id) => {
                let open = self.calls.contains_key(id);
                self.cancel_call(*id);
                open
            }
            Target::Serve(k) => self.fail(k, ErrorCode::Timeout, message).is_ok(),
        };
        if open {
            self.stats.stalled += 1;
        }
        open
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
