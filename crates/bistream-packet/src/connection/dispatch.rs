//! Serving the peer's requests: admission (tags, channels, shutdown), running the handler
//! (inline when it completes at once, else in its own task), and queuing its response.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;

use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use super::config::reasons;
use super::rx_tags::Admit;
use super::shared::{lock, Shared};
use crate::codec::Packet;
use crate::error::HandlerError;
use crate::handler::{IncomingRequest, Reply, RequestHandler};

pub(super) async fn on_request(sh: &Arc<Shared>, p: Packet, rq_type: u64) {
    sh.stats.requests_received.fetch_add(1, Relaxed);
    let (channel, tag) = (p.channel, p.tag);
    let Some(handler) = sh.handler.clone() else {
        return sh.reject(channel, tag, reasons::NO_HANDLER).await;
    };
    if sh.peer_erq.load(Relaxed) {
        return sh.reject(channel, tag, reasons::NOT_ALLOWED).await;
    }
    if sh.reject_incoming.load(Relaxed) {
        return sh.reject(channel, tag, reasons::SHUTTING_DOWN).await;
    }
    let admit = lock(&sh.rx_tags).admit(channel, tag);
    match admit {
        Admit::Ok => {}
        Admit::Duplicate => {
            sh.stats.duplicate_tags.fetch_add(1, Relaxed);
            bistream_core::limited!(super::PEER_LOG, WARN, conn = %sh.cfg.name, channel, tag, "protocol error: request reuses a tag");
            let reason = format!("channel {channel}: tag already in use: {tag}");
            return sh.reject(channel, tag, &reason).await;
        }
        Admit::TooManyChannels => {
            return sh.reject(channel, tag, reasons::UNKNOWN_CHANNEL).await;
        }
    }
    // Backpressure: stop reading while too many accepted requests (or request bytes) are
    // unanswered; a request's bytes are held until its response is queued, and queuing
    // waits for send budget, so a peer that does not read its responses stops being read.
    let Some(queued) = admit_request(sh, p.payload.len()).await else {
        lock(&sh.rx_tags).finish(channel, tag);
        return sh.reject(channel, tag, reasons::SHUTTING_DOWN).await;
    };
    if sh.reject_incoming.load(Relaxed) {
        lock(&sh.rx_tags).finish(channel, tag);
        return sh.reject(channel, tag, reasons::SHUTTING_DOWN).await;
    }
    let rq = IncomingRequest {
        rq_type,
        flags: p.flags,
        payload: p.payload,
        channel,
        tag,
    };
    // Start the handler here: a handler that completes at its first poll (echo-like
    // services) is answered without a task switch; otherwise it continues in its own task.
    let (channel, tag, rq_type) = (rq.channel, rq.tag, rq.rq_type);
    let Ok(running) = sh.handlers_running.clone().try_acquire_owned() else {
        tokio::spawn(run_handler(sh.clone(), handler, rq, queued));
        return;
    };
    let mut fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(rq))) {
        Ok(f) => AssertUnwindSafe(f).catch_unwind(),
        Err(_) => {
            let p = response_packet(sh, channel, tag, rq_type, Err(()));
            return finish_request(sh, channel, tag, p).await;
        }
    };
    match futures_util::poll!(&mut fut) {
        Poll::Ready(res) => {
            let p = response_packet(sh, channel, tag, rq_type, res.map_err(|_| ()));
            finish_request(sh, channel, tag, p).await;
            drop((queued, running));
        }
        Poll::Pending => {
            let sh = sh.clone();
            tokio::spawn(async move {
                let res = fut.await;
                let p = response_packet(&sh, channel, tag, rq_type, res.map_err(|_| ()));
                finish_request(&sh, channel, tag, p).await;
                drop((queued, running));
            });
        }
    }
}

/// The permits of one accepted peer request: a place among
/// [`super::Config::max_queued_requests`] and its bytes of
/// [`super::Config::max_queued_request_bytes`].
pub(super) type Admission = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// Takes the permits of a request with a `len`-byte payload, waiting (the reader stops
/// reading) while they are not available; `None` when the connection is shutting down.
async fn admit_request(sh: &Shared, len: usize) -> Option<Admission> {
    // Capped at the whole budget: a larger request is accepted alone. The budget is at most
    // 2^30 (Config::clamp), so the count fits in u32.
    let n = len.clamp(1, sh.cfg.max_queued_request_bytes) as u32;
    let quick = (
        sh.handlers_queued.clone().try_acquire_owned(),
        sh.rx_bytes.clone().try_acquire_many_owned(n),
    );
    if let (Ok(q), Ok(b)) = quick {
        return Some((q, b));
    }
    sh.stats.read_pauses.fetch_add(1, Relaxed);
    tracing::debug!(conn = %sh.cfg.name, "backpressure: not reading until earlier requests are answered and sent");
    let q = sh.handlers_queued.clone().acquire_owned().await.ok()?;
    let b = sh.rx_bytes.clone().acquire_many_owned(n).await.ok()?;
    Some((q, b))
}

pub(super) async fn run_handler(
    sh: Arc<Shared>,
    handler: Arc<dyn RequestHandler>,
    rq: IncomingRequest,
    _queued: Admission,
) {
    let _running = sh.handlers_running.clone().acquire_owned().await.ok();
    let (channel, tag, rq_type) = (rq.channel, rq.tag, rq.rq_type);
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(rq))) {
        Ok(f) => AssertUnwindSafe(f).catch_unwind().await.map_err(|_| ()),
        Err(_) => Err(()),
    };
    let packet = response_packet(&sh, channel, tag, rq_type, result);
    finish_request(&sh, channel, tag, packet).await;
}

/// The response packet for a handler outcome (`Err(())`: the handler panicked).
pub(super) fn response_packet(
    sh: &Shared,
    channel: u64,
    tag: u64,
    rq_type: u64,
    result: Result<Result<Reply, HandlerError>, ()>,
) -> Packet {
    match result {
        Ok(Ok(reply)) => {
            let (flags, payload) = reply.into_parts();
            match Packet::response(channel, tag, true, flags, payload) {
                Ok(p)
                    if p.encoded_len().map(|l| l.0).unwrap_or(usize::MAX) <= sh.cfg.max_packet =>
                {
                    p
                }
                Ok(_) => {
                    sh.stats.handler_errors.fetch_add(1, Relaxed);
                    tracing::warn!(conn = %sh.cfg.name, channel, tag, rq_type, "handler response exceeds max_packet");
                    Packet::failure(channel, tag, reasons::EXCEPTION)
                }
                Err(e) => {
                    sh.stats.handler_errors.fetch_add(1, Relaxed);
                    tracing::warn!(conn = %sh.cfg.name, channel, tag, rq_type, error = %e, "handler response cannot be encoded");
                    Packet::failure(channel, tag, reasons::EXCEPTION)
                }
            }
        }
        Ok(Err(e)) => {
            sh.stats.handler_errors.fetch_add(1, Relaxed);
            tracing::debug!(conn = %sh.cfg.name, channel, tag, rq_type, error = %e, "handler failed");
            Packet::failure(channel, tag, reasons::EXCEPTION)
        }
        Err(()) => {
            sh.stats.handler_errors.fetch_add(1, Relaxed);
            tracing::error!(conn = %sh.cfg.name, channel, tag, rq_type, "handler panicked");
            Packet::failure(channel, tag, reasons::EXCEPTION)
        }
    }
}

/// Ends a request: queues its response unless a duplicate tag poisoned it.
pub(super) async fn finish_request(sh: &Shared, channel: u64, tag: u64, packet: Packet) {
    let poisoned = lock(&sh.rx_tags).finish(channel, tag);
    if poisoned {
        // A duplicate of this tag was already answered with "tag already in use"; exactly one
        // response per (channel, tag) goes out.
        tracing::debug!(conn = %sh.cfg.name, channel, tag, "response suppressed after a duplicate tag");
        return;
    }
    sh.stats.responses_sent.fetch_add(1, Relaxed);
    // Only request in progress and nothing more received: answer directly.
    let solo = !sh.rx_more.load(Relaxed)
        && sh.handlers_queued.available_permits() + 1 >= sh.cfg.max_queued_requests;
    sh.send_now_or_queue(packet, solo).await;
}
