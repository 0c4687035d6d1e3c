//! Responder tasks: request/response and request/stream handlers are started directly on the
//! `Router` ([`bistream_rpc::Router::invoke_unary`], [`bistream_rpc::Router::invoke_stream`]);
//! channels go through the in-process rpc connection ([`crate::bridge`]), since a stream/stream
//! handler's receiver and sender belong to an rpc connection. Items flow back as PAYLOAD frames
//! within the requester's REQUEST_N credit, and handler failures become ERROR frames.

use std::future::Future;
use std::sync::Arc;

use bistream_rpc::queue::QueueRx;
use bistream_rpc::{Connection, HandlerError, Raw, RpcError};
use bistream_rsocket_proto::{ErrorCode, Frame, Payload};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::shared::{Cmd, Ctl, Inb, Shared};

/// What a responder task needs.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub stream: u32,
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

/// The ERROR a handler failure maps to (as [`error_of`]).
pub(crate) fn handler_error_of(e: &HandlerError) -> (ErrorCode, String) {
    let c = match e.code {
        bistream_rpc::ErrorCode::InvalidRequest | bistream_rpc::ErrorCode::UnknownOperation => {
            ErrorCode::Invalid
        }
        _ => ErrorCode::ApplicationError,
    };
    (c, e.message.clone())
}

fn raw_bytes(v: Raw) -> Bytes {
    Bytes::from(String::from(Box::<str>::from(v)).into_bytes())
}

impl Ctx {
    async fn send(&self, f: Frame) -> bool {
        self.shared.cmd.send(Cmd::Frame(f)).await.is_ok()
    }

    async fn fail(&self, e: &RpcError) {
        self.fail_with(error_of(e)).await;
    }

    async fn fail_with(&self, (code, message): (ErrorCode, String)) {
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

/// REQUEST_RESPONSE: one PAYLOAD with NEXT|COMPLETE, or an ERROR (also when the handler
/// takes longer than the configured timeout).
pub(crate) async fn response(
    cx: Ctx,
    answer: impl Future<Output = Result<Raw, HandlerError>> + Send,
) {
    match tokio::time::timeout(cx.shared.timeout, answer).await {
        Ok(Ok(v)) => {
            cx.item(v, true).await;
        }
        Ok(Err(e)) => cx.fail_with(handler_error_of(&e)).await,
        Err(_) => {
            let m = format!("the handler took longer than {:?}", cx.shared.timeout);
            cx.fail_with((ErrorCode::ApplicationError, m)).await;
        }
    }
}

/// Sends the handler's items within `credit`, then COMPLETE (which needs no credit). A
/// handler that produces no item within the timeout fails the stream.
async fn pump<S>(cx: &Ctx, items: S, credit: &Semaphore) -> Result<(), ()>
where
    S: Stream<Item = Result<Raw, (ErrorCode, String)>> + Send,
{
    tokio::pin!(items);
    loop {
        let item = match tokio::time::timeout(cx.shared.timeout, items.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                let m = format!("no item from the handler for {:?}", cx.shared.timeout);
                cx.fail_with((ErrorCode::ApplicationError, m)).await;
                return Err(());
            }
        };
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
                cx.fail_with(e).await;
                return Err(());
            }
        }
    }
    cx.complete().await;
    Ok(())
}

/// REQUEST_STREAM: items as PAYLOAD NEXT within the requester's credit, then COMPLETE.
pub(crate) async fn stream(
    cx: Ctx,
    items: impl Stream<Item = Result<Raw, HandlerError>> + Send,
    credit: Arc<Semaphore>,
) {
    let items = items.map(|r| r.map_err(|e| handler_error_of(&e)));
    let _ = pump(&cx, items, &credit).await;
}

/// REQUEST_CHANNEL: the request's payload is the first inbound item; we grant REQUEST_N for
/// more as the handler takes them; the handler's items go out within the requester's credit.
/// The handler's opening `data` has no fields (`{"operation": route}`).
pub(crate) async fn channel(
    cx: Ctx,
    rpc: Connection,
    route: String,
    data: Raw,
    credit: Arc<Semaphore>,
    mut inbound: QueueRx<Inb>,
    complete: bool,
) {
    let null = match RawValue::from_string("null".into()) {
        Ok(n) => n,
        Err(_) => return,
    };
    let (mut tx, items) = match rpc.stream_stream::<Raw, Raw, Raw>(&route, &null).await {
        Ok(x) => x,
        Err(e) => return cx.fail(&e).await,
    };
    let window = cx.shared.window;
    let feeder = async {
        if tx.send(&data).await.is_err() {
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
    let pumping = pump(&cx, items.map(|r| r.map_err(|e| error_of(&e))), &credit);
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
