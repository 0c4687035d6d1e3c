//! Our side's requests and controls: frames from local requesters and responder tasks
//! (`Cmd`), and cancel / REQUEST_N / close (`Ctl`), assigning our stream ids.

use bistream_rsocket_proto::Frame;

use super::{Driver, Slot, Stop};
use crate::shared::{Cmd, Ctl, Kind, Sink};
use crate::RsError;

impl Driver {
    pub(super) fn on_ctl(&mut self, ctl: Ctl) -> Option<Stop> {
        match ctl {
            Ctl::Cancel(stream) => {
                if let Some(s) = self.streams.remove(&stream) {
                    self.reasm.remove(stream);
                    if let Some(a) = s.abort {
                        a.abort();
                    }
                    self.send(Frame::Cancel { stream });
                }
            }
            Ctl::RequestN(stream, n) => {
                if self.streams.contains_key(&stream) {
                    self.send(Frame::RequestN { stream, n });
                }
            }
            Ctl::Close(reason) => {
                return Some(Stop {
                    cause: RsError::Closed(reason),
                    error: None,
                })
            }
        }
        None
    }

    pub(super) fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Frame(f) => {
                let stream = f.stream();
                let Some(slot) = self.streams.get_mut(&stream) else {
                    return;
                };
                let terminal = match &f {
                    Frame::Payload { complete, .. } => *complete,
                    Frame::Error { .. } => true,
                    _ => false,
                };
                if terminal && !slot.responder {
                    // Our side of a channel we opened is complete.
                    slot.credit = None;
                    if slot.inbound.is_none() {
                        self.streams.remove(&stream);
                    }
                }
                self.send(f);
            }
            Cmd::Start {
                kind,
                payload,
                sink,
                id,
            } => {
                let stream = self.next_id;
                self.next_id = self.next_id.wrapping_add(2) & 0x7FFF_FFFF;
                let window = self.shared.window;
                let mut slot = Slot {
                    responder: false,
                    abort: None,
                    credit: None,
                    inbound: None,
                    rr: None,
                };
                match sink {
                    Sink::Rr(tx) => slot.rr = Some(tx),
                    Sink::Items { tx, credit } => {
                        slot.inbound = Some(tx);
                        slot.credit = credit;
                    }
                }
                let f = match kind {
                    Kind::Response => Frame::RequestResponse {
                        stream,
                        follows: false,
                        payload,
                    },
                    Kind::Stream => Frame::RequestStream {
                        stream,
                        follows: false,
                        initial_n: window,
                        payload,
                    },
                    Kind::Channel { complete } => {
                        if complete {
                            slot.credit = None;
                        }
                        Frame::RequestChannel {
                            stream,
                            follows: false,
                            complete,
                            initial_n: window,
                            payload,
                        }
                    }
                };
                self.streams.insert(stream, slot);
                let _ = id.send(stream);
                self.send(f);
            }
            Cmd::Fnf(payload) => {
                let stream = self.next_id;
                self.next_id = self.next_id.wrapping_add(2) & 0x7FFF_FFFF;
                self.send(Frame::RequestFnf {
                    stream,
                    follows: false,
                    payload,
                });
            }
            Cmd::MetadataPush(metadata) => self.send(Frame::MetadataPush { metadata }),
        }
    }
}
