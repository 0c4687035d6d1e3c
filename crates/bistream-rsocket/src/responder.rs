//! Responder tasks: each RSocket request is forwarded to the in-process rpc connection that
//! serves the `Router` ([`crate::bridge`]); items flow back as PAYLOAD frames within the
//! requester's REQUEST_N credit, and handler failures become ERROR frames.

use std::sync::Arc;

use bistream_rpc::{Connection, Raw, RpcError};
use bistream_rsocket_proto::{ErrorCode, Frame, Payload};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Semaphore};

use crate::shared::{Cmd, Ctl, Inb, Shared};

/// What a responder task needs.
pub(crate) struct Ctx {
    pub rpc: Connection,
    pub shared: Arc<Shared>,
    pub stream: u32,
    pub route: String,
    pub data: Raw,
}

/// A request's JSON data (empty data is `null`: no fields).
pub(crate) fn json_data(b: &Bytes) -> Result<Raw, String> {
    if b.is_empty() {
        return RawValue::from_string("null".into()).map_err(|e| e.to_string());
    }
    let s = std::str::from_utf8(b).map_err(|_| "data is not UTF-8 JSON".to_string())?;
    serde_json::from_str::<Raw>(s).map_err(|e| format!("data is not JSON: {e}"))
}

/// The ERROR an rpc failure maps to: bad requests are INVALID, the rest APPLICATION_ERROR.
pub(crate) fn error_of(e: &RpcError) -> (ErrorCode, String) {
    match e {
        RpcError::Remote { code, message } => {
            let c = match code.as_str() {
                "invalid_request" | "unknown_operation" => ErrorCode::Invalid,
                _ => ErrorCode::ApplicationError,
            };
            (c, message.clone())
        }
        RpcError::Data(m) => (ErrorCode::Invalid, m.clone()),
        other => (ErrorCode::ApplicationError, other.to_string()),
    }
}

fn raw_bytes(v: Raw) -> Bytes {
    Bytes::from(String::from(Box::<str>::from(v)).into_bytes())
}

impl Ctx {
    async fn send(&self, f: Frame) -> bool {
        self.shared.cmd.send(Cmd::Frame(f)).await.is_ok()
    }

    async fn fail(&self, e: &RpcError) {
        let (code, message) = error_of(e);
        self.send(Frame::Error {
            stream: self.stream,
            code,
            message,
        })
        .await;
    }

    async fn item(&self, v: Raw, complete: bool) -> bool {
        self.send(Frame::Payload {
            stream: self.stream,
            follows: false,
            complete,
            next: true,
            payload: Payload::data(raw_bytes(v)),
        })
        .await
    }

    async fn complete(&self) {
        self.send(Frame::Payload {
            stream: self.stream,
            follows: false,
            complete: true,
            next: false,
            payload: Payload::default(),
        })
        .await;
    }
}

/// REQUEST_RESPONSE: one PAYLOAD with NEXT|COMPLETE, or an ERROR.
pub(crate) async fn response(cx: Ctx) {
    match cx
        .rpc
        .request_response::<Raw, Raw>(&cx.route, &cx.data)
        .await
    {
        Ok(v) => {
            cx.item(v, true).await;
        }
        Err(e) => cx.fail(&e).await,
    }
}

/// Sends the handler's items within `credit`, then COMPLETE (which needs no credit).
async fn pump(
    cx: &Ctx,
    mut items: bistream_rpc::ResponseStream<Raw>,
    credit: &Semaphore,
) -> Result<(), ()> {
    while let Some(item) = items.next().await {
        match item {
            Ok(v) => {
                match credit.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return Err(()),
                }
                if !cx.item(v, false).await {
                    return Err(());
                }
            }
            Err(e) => {
                cx.fail(&e).await;
                return Err(());
            }
        }
    }
    cx.complete().await;
    Ok(())
}

/// REQUEST_STREAM: items as PAYLOAD NEXT within the requester's credit, then COMPLETE.
pub(crate) async fn stream(cx: Ctx, credit: Arc<Semaphore>) {
    match cx.rpc.request_stream::<Raw, Raw>(&cx.route, &cx.data).await {
        Ok(items) => {
            let _ = pump(&cx, items, &credit).await;
        }
        Err(e) => cx.fail(&e).await,
    }
}

/// REQUEST_CHANNEL: the request's payload is the first inbound item; we grant REQUEST_N for
/// more as the handler takes them; the handler's items go out within the requester's credit.
/// The handler's opening `data` has no fields (`{"operation": route}`).
pub(crate) async fn channel(
    cx: Ctx,
    credit: Arc<Semaphore>,
    mut inbound: mpsc::Receiver<Inb>,
    complete: bool,
) {
    let null = match RawValue::from_string("null".into()) {
        Ok(n) => n,
        Err(_) => return,
    };
    let (mut tx, items) = match cx
        .rpc
        .stream_stream::<Raw, Raw, Raw>(&cx.route, &null)
        .await
    {
        Ok(x) => x,
        Err(e) => return cx.fail(&e).await,
    };
    let window = cx.shared.window;
    let feeder = async {
        if tx.send(&cx.data).await.is_err() {
            return Ok(());
        }
        if complete {
            let _ = tx.end().await;
            return Ok(());
        }
        let _ = cx.shared.ctl.send(Ctl::RequestN(cx.stream, window));
        let mut taken = 0u32;
        loop {
            match inbound.recv().await {
                Some(Inb::Item(p)) => {
                    let v = match json_data(&p.data) {
                        Ok(v) => v,
                        Err(e) => return Err(e),
                    };
                    if tx.send(&v).await.is_err() {
                        return Ok(());
                    }
                    taken += 1;
                    if taken >= window / 2 {
                        let _ = cx.shared.ctl.send(Ctl::RequestN(cx.stream, taken));
                        taken = 0;
                    }
                }
                Some(Inb::Complete) => {
                    let _ = tx.end().await;
                    return Ok(());
                }
                Some(Inb::Error(_)) | None => return Ok(()),
            }
        }
    };
    let pumping = pump(&cx, items, &credit);
    tokio::pin!(feeder, pumping);
    let mut fed = false;
    loop {
        tokio::select! {
            r = &mut feeder, if !fed => {
                fed = true;
                if let Err(e) = r {
                    cx.send(Frame::Error { stream: cx.stream, code: ErrorCode::Invalid, message: e }).await;
                    return;
                }
            }
            _ = &mut pumping => {
                if !fed {
                    // The handler is done: stop the requester's items.
                    cx.send(Frame::Cancel { stream: cx.stream }).await;
                }
                return;
            }
        }
    }
}
