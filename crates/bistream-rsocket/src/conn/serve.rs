//! Serving the peer's requests: routing metadata to an operation, the model check, the
//! per-connection limits, and starting the responder task (the `Router` directly, or the rpc
//! bridge for channels).

use std::sync::Arc;

use bistream_core::logsafe::client_text;
use bistream_rpc::Connection;
use bistream_rsocket_proto::{ErrorCode, Frame};
use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use super::{Driver, Role, Slot};
use crate::shared::add_credit;
use crate::{bridge, responder};

impl Driver {
    fn route(&self, meta: Option<&Bytes>) -> Result<String, String> {
        let meta = meta.map(|b| &b[..]).unwrap_or_default();
        let r = if self.routing_only {
            bistream_rsocket_proto::metadata::parse_routing(meta).map(|t| t.into_iter().next())
        } else {
            bistream_rsocket_proto::metadata::route_of(meta)
        };
        match r {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err("no route: the metadata carries no routing entry".into()),
            Err(e) => Err(format!("bad metadata: {e}")),
        }
    }

    pub(super) fn on_request(&mut self, f: Frame) {
        let stream = f.stream();
        let peer_parity = if self.role == Role::Server { 1 } else { 0 };
        let fnf = matches!(f, Frame::RequestFnf { .. });
        if stream % 2 != peer_parity {
            if fnf {
                self.dropped += 1;
                bistream_core::limited!(
                    super::PEER_LOG,
                    WARN,
                    stream,
                    "rsocket fire-and-forget on a stream id of the wrong parity: dropped"
                );
            } else {
                self.stream_error(stream, ErrorCode::Invalid, "stream id of the wrong parity");
            }
            return;
        }
        if self.streams.contains_key(&stream) {
            self.dropped += 1;
            bistream_core::limited!(
                super::PEER_LOG,
                WARN,
                stream,
                "rsocket request on a stream id in use: ignored"
            );
            return;
        }
        let Some(payload) = f.payload().cloned() else {
            return;
        };
        let channel = matches!(f, Frame::RequestChannel { .. });
        let parsed = self.route(payload.metadata.as_ref()).and_then(|route| {
            let data = responder::json_data(&payload.data)?;
            if channel {
                // A channel's payload is its first item, passed as it is.
                return Ok((route, data));
            }
            // The handler sees what it sees over our own protocol: the data object with
            // "operation" first.
            let data = bistream_rpc::request_data(&route, data.get())
                .map_err(|e| responder::error_of(&e).1)
                .and_then(|d| RawValue::from_string(d).map_err(|e| e.to_string()))?;
            Ok((route, data))
        });
        let (route, data) = match parsed {
            Ok(x) => x,
            Err(e) => {
                if fnf {
                    self.dropped += 1;
                    bistream_core::limited!(super::PEER_LOG, WARN, stream, error = %client_text(&e), "rsocket fire-and-forget dropped");
                } else {
                    self.stream_error(stream, ErrorCode::Invalid, e);
                }
                return;
            }
        };
        let want = match &f {
            Frame::RequestResponse { .. } => bistream_rpc::Model::RequestResponse,
            Frame::RequestFnf { .. } => bistream_rpc::Model::FireAndForget,
            Frame::RequestStream { .. } => bistream_rpc::Model::RequestStream,
            _ => bistream_rpc::Model::StreamStream,
        };
        match self.router.model(&route) {
            Some(m) if m == want => {}
            other => {
                let e = match other {
                    None => format!("unknown route {route:?}"),
                    Some(m) => format!("route {route:?} is {m:?}, not {want:?}"),
                };
                if fnf {
                    self.dropped += 1;
                    bistream_core::limited!(super::PEER_LOG, WARN, stream, error = %client_text(&e), "rsocket fire-and-forget dropped");
                } else {
                    self.stream_error(stream, ErrorCode::Invalid, e);
                }
                return;
            }
        }
        if fnf {
            let Ok(permit) = self.ff_running.clone().try_acquire_owned() else {
                self.dropped += 1;
                bistream_core::limited!(super::PEER_LOG, WARN, stream, route = %client_text(&route), "rsocket fire-and-forget dropped: too many running");
                return;
            };
            if let Ok(run) = self.router.invoke_ff(&route, data) {
                tokio::spawn(async move {
                    run.await;
                    drop(permit);
                });
            }
            return;
        }
        let responders = self.streams.values().filter(|s| s.responder).count();
        if responders >= self.cfg.max_streams {
            self.stream_error(
                stream,
                ErrorCode::Rejected,
                "too many streams on this connection",
            );
            return;
        }
        let ctx = responder::Ctx {
            shared: self.shared.clone(),
            stream,
        };
        let mut slot = Slot {
            responder: true,
            abort: None,
            credit: None,
            inbound: None,
            rr: None,
        };
        let abort = match f {
            Frame::RequestResponse { .. } => {
                let answer = self.router.invoke_unary(&route, data);
                self.tasks.spawn(responder::response(ctx, answer))
            }
            Frame::RequestStream { initial_n, .. } => {
                let Ok(items) = self.router.invoke_stream(&route, data) else {
                    return;
                };
                let credit = Arc::new(Semaphore::new(0));
                add_credit(&credit, initial_n);
                slot.credit = Some(credit.clone());
                self.tasks.spawn(responder::stream(ctx, items, credit))
            }
            Frame::RequestChannel {
                initial_n,
                complete,
                ..
            } => {
                let credit = Arc::new(Semaphore::new(0));
                add_credit(&credit, initial_n);
                slot.credit = Some(credit.clone());
                let (tx, rx) = self.shared.inbound_queue();
                if !complete {
                    slot.inbound = Some(tx);
                }
                let rpc = self.rpc_bridge();
                self.tasks.spawn(responder::channel(
                    ctx, rpc, route, data, credit, rx, complete,
                ))
            }
            _ => return,
        };
        self.task_stream.insert(abort.id(), stream);
        slot.abort = Some(abort);
        self.streams.insert(stream, slot);
    }

    /// The caller end of the in-process rpc connection serving channels (started once).
    fn rpc_bridge(&mut self) -> Connection {
        let (router, cfg) = (&self.router, &self.cfg);
        let (caller, _) = self
            .rpc
            .get_or_insert_with(|| bridge::start(router.clone(), cfg.rpc_config()));
        caller.clone()
    }
}
