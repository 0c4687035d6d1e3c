//! The send side: the coalescing output buffer, the direct-write fast path and the writer
//! task that drains the send queue with vectored writes.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::config::Stats;
use super::shared::{lock, Outgoing, Shared};
use crate::codec::Packet;
use crate::error::{CloseReason, EncodeError};

/// Encoded packets waiting to be written: small packets are copied into `head`; a large
/// payload is referenced as its own chunk and written with a vectored write (no copy).
pub(super) struct OutBuf {
    pub(super) head: BytesMut,
    pub(super) chunks: VecDeque<Bytes>,
    pub(super) len: usize,
    /// Send budget held by the packets in here, given back once they are written.
    pub(super) charged: usize,
}

/// Payloads up to this size are copied into the coalescing buffer.
pub(super) const COPY_LIMIT: usize = 16 * 1024;
/// Largest payload written by the direct-write path.
pub(super) const DIRECT_LIMIT: usize = 64 * 1024;
/// Stop collecting packets for one write beyond this many bytes.
pub(super) const WRITE_HIGH_WATER: usize = 1024 * 1024;

impl OutBuf {
    pub(super) fn new() -> OutBuf {
        OutBuf {
            head: BytesMut::with_capacity(64 * 1024),
            chunks: VecDeque::new(),
            len: 0,
            charged: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0 && self.head.is_empty() && self.chunks.is_empty()
    }

    pub(super) fn push(&mut self, p: &Packet, max_packet: usize) -> Result<(), EncodeError> {
        let before = self.head.len();
        p.encode_header(&mut self.head, max_packet)?;
        self.len += self.head.len() - before + p.payload.len();
        if p.payload.len() <= COPY_LIMIT {
            self.head.extend_from_slice(&p.payload);
        } else {
            self.chunks.push_back(self.head.split().freeze());
            self.chunks.push_back(p.payload.clone());
        }
        Ok(())
    }
}

/// The send side, shared by the writer task and the direct-write fast path (a request or
/// response sent while the connection is otherwise idle is written by the task that makes
/// it, saving a task switch). Only polled under the mutex, never awaited while locked; a
/// partial write leaves the rest in `out` for the writer task, so nothing is ever cut.
pub(super) struct WriteState {
    pub(super) w: Pin<Box<dyn AsyncWrite + Send>>,
    pub(super) out: OutBuf,
    pub(super) need_flush: bool,
    /// EOF queued: nothing more may be added.
    pub(super) closed: bool,
    /// A write failed (the writer task reports it).
    pub(super) error: Option<std::io::Error>,
    /// The writer task is waiting on the transport: its waker is registered there, and a
    /// direct write (polling with a no-op waker) would replace it.
    pub(super) draining: bool,
}

impl WriteState {
    /// Writes `out` until it is empty and flushed, or until the writer is not ready
    /// (`Pending`, progress kept).
    pub(super) fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        stats: &Stats,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.out.head.is_empty() {
                let h = self.out.head.split().freeze();
                self.out.chunks.push_back(h);
            }
            if self.out.chunks.is_empty() {
                break;
            }
            let res = if self.out.chunks.len() > 1 && self.w.is_write_vectored() {
                let mut iov = [IoSlice::new(&[]); 64];
                let mut k = 0;
                for (slot, c) in iov.iter_mut().zip(self.out.chunks.iter()) {
                    *slot = IoSlice::new(c);
                    k += 1;
                }
                self.w.as_mut().poll_write_vectored(cx, &iov[..k])
            } else {
                match self.out.chunks.front() {
                    Some(c) => self.w.as_mut().poll_write(cx, c),
                    None => Poll::Ready(Ok(0)),
                }
            };
            let n = match res {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => n,
            };
            stats.bytes_sent.fetch_add(n as u64, Relaxed);
            let mut left = n;
            while left > 0 {
                let Some(front) = self.out.chunks.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.out.chunks.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        self.out.len = 0;
        if self.out.head.capacity() > 4 * WRITE_HIGH_WATER {
            self.out.head = BytesMut::new();
        }
        if self.need_flush {
            match self.w.as_mut().poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => self.need_flush = false,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Shared {
    /// Closes our write half now (tasks still holding `Shared` must not keep it open).
    pub(super) fn drop_transport(&self) {
        let mut st = lock(&self.wstate);
        st.closed = true;
        st.out = OutBuf::new();
        st.w = Box::pin(tokio::io::sink());
        drop(st);
        self.send_bytes.close();
    }

    /// Writes `p` from the calling task when nothing else is queued or being written; gives
    /// the packet back otherwise (the caller queues it).
    /// `held` is the number of queue slots the caller itself has reserved.
    pub(super) fn try_direct(&self, p: Packet, held: usize) -> Result<(), Packet> {
        // Large payloads are bandwidth-bound: the writer task handles them.
        if !self.cfg.direct_writes
            || p.payload.len() > DIRECT_LIMIT
            || self.tx.capacity() + held != self.tx.max_capacity()
        {
            return Err(p);
        }
        let Ok(mut st) = self.wstate.try_lock() else {
            return Err(p);
        };
        if st.closed || st.error.is_some() || st.draining || st.need_flush || !st.out.is_empty() {
            return Err(p);
        }
        if st.out.push(&p, self.cfg.max_packet).is_err() {
            return Err(p);
        }
        st.need_flush = true;
        self.stats.direct_writes.fetch_add(1, Relaxed);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match st.poll_drain(&mut cx, &self.stats) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => {
                drop(st);
                self.kick.notify_one();
            }
            Poll::Ready(Err(e)) => {
                st.error = Some(e);
                drop(st);
                self.kick.notify_one();
            }
        }
        Ok(())
    }

    /// Sends `p` directly when `solo` (nothing else in flight) and possible, else queues it.
    pub(super) async fn send_now_or_queue(&self, p: Packet, solo: bool) {
        let p = if solo {
            match self.try_direct(p, 0) {
                Ok(()) => return,
                Err(p) => p,
            }
        } else {
            p
        };
        self.queue(p).await;
    }
}

/// Writes everything in the output buffer, then gives back its send budget. Fails with
/// [`CloseReason::WriteStalled`] when bytes are waiting and none can be written for
/// [`super::Config::write_stall_timeout`] (the timer restarts at every partial write).
pub(super) async fn drain_out(sh: &Shared) -> Result<(), CloseReason> {
    let stall = sh.cfg.write_stall_timeout;
    let deadline = tokio::time::sleep(stall);
    tokio::pin!(deadline);
    let mut seen = sh.stats.bytes_sent.load(Relaxed);
    std::future::poll_fn(|cx| {
        let mut st = lock(&sh.wstate);
        if let Some(e) = st.error.take() {
            st.draining = false;
            return Poll::Ready(Err(CloseReason::Io(e.to_string())));
        }
        let r = st.poll_drain(cx, &sh.stats);
        st.draining = r.is_pending();
        match r {
            Poll::Ready(Ok(())) => {
                let n = std::mem::take(&mut st.out.charged);
                drop(st);
                sh.send_bytes.add_permits(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(CloseReason::Io(e.to_string()))),
            Poll::Pending => {
                drop(st);
                let now_sent = sh.stats.bytes_sent.load(Relaxed);
                if now_sent != seen {
                    seen = now_sent;
                    deadline.as_mut().reset(tokio::time::Instant::now() + stall);
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(CloseReason::WriteStalled(stall))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    })
    .await
}

pub(super) async fn write_loop(
    sh: Arc<Shared>,
    mut rx: mpsc::Receiver<Outgoing>,
) -> Result<(), CloseReason> {
    let mut finish = false;
    let res = write_packets(&sh, &mut rx, &mut finish).await;
    // Nothing more will be written: whoever waits for send budget gives up.
    sh.send_bytes.close();
    if let Err(reason) = &res {
        tracing::warn!(conn = %sh.cfg.name, %reason, "send side failed");
        {
            let mut st = lock(&sh.wstate);
            st.closed = true;
            st.error = None;
            // Drop what could not be written now, not when the connection ends.
            st.out = OutBuf::new();
        }
        sh.fail_all(reason.clone());
        // Keep draining until Finish (unless already seen) so nobody waits on a full queue.
        while let Some(m) = if finish { None } else { rx.recv().await } {
            if matches!(m, Outgoing::Finish) {
                break;
            }
            sh.stats.dropped_packets.fetch_add(1, Relaxed);
        }
        return res;
    }
    let _ = std::future::poll_fn(|cx| lock(&sh.wstate).w.as_mut().poll_shutdown(cx)).await;
    res
}

pub(super) async fn write_packets(
    sh: &Shared,
    rx: &mut mpsc::Receiver<Outgoing>,
    finish: &mut bool,
) -> Result<(), CloseReason> {
    let max = sh.cfg.max_packet;
    let grace = sh.cfg.packet_grace;
    let take = |m: Outgoing, out: &mut OutBuf, finish: &mut bool| match m {
        Outgoing::Packet(p, charged) => {
            out.charged += charged;
            if let Err(e) = out.push(&p, max) {
                // Unreachable for packets built by this crate (checked when made).
                sh.stats.dropped_packets.fetch_add(1, Relaxed);
                tracing::error!(conn = %sh.cfg.name, error = %e, "packet dropped: cannot encode");
            }
        }
        Outgoing::Finish => *finish = true,
    };
    let collect = |rx: &mut mpsc::Receiver<Outgoing>, finish: &mut bool| {
        let mut st = lock(&sh.wstate);
        while !*finish && st.out.len < WRITE_HIGH_WATER {
            match rx.try_recv() {
                Ok(m) => take(m, &mut st.out, finish),
                Err(_) => break,
            }
        }
        st.need_flush = true;
    };
    while !*finish {
        tokio::select! {
            biased;
            m = rx.recv() => {
                match m {
                    Some(m) => take(m, &mut lock(&sh.wstate).out, finish),
                    None => *finish = true,
                }
            }
            // the direct path left a partial write (or an error) for us
            _ = sh.kick.notified() => {}
        }
        loop {
            collect(rx, finish);
            if grace.is_zero() || *finish || lock(&sh.wstate).out.len >= WRITE_HIGH_WATER {
                break;
            }
            // packet_grace: give more packets a moment to arrive before writing.
            tokio::time::sleep(grace).await;
            if rx.is_empty() {
                break;
            }
        }
        drain_out(sh).await?;
    }
    {
        let mut st = lock(&sh.wstate);
        st.closed = true;
        Packet::eof()
            .encode_header(&mut st.out.head, max)
            .map_err(|e| CloseReason::Io(e.to_string()))?;
        st.out.len += 4;
        st.need_flush = true;
    }
    drain_out(sh).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// One step of the scripted transport, taken at each write call.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Accept at most this many bytes.
        Take(usize),
        /// Not ready.
        Block,
        /// Fail.
        Fail,
    }

    /// A transport that follows a script (then accepts everything), and records the bytes.
    struct Scripted {
        script: VecDeque<Step>,
        vectored: bool,
        out: Arc<Mutex<Vec<u8>>>,
        flushes: Arc<Mutex<usize>>,
    }

    impl Scripted {
        fn step(&mut self) -> Step {
            self.script.pop_front().unwrap_or(Step::Take(usize::MAX))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            match self.step() {
                Step::Take(n) => {
                    let n = n.min(buf.len());
                    self.out.lock().unwrap().extend_from_slice(&buf[..n]);
                    Poll::Ready(Ok(n))
                }
                Step::Block => Poll::Pending,
                Step::Fail => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            }
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            match self.step() {
                Step::Take(mut n) => {
                    let mut done = 0;
                    let mut out = self.out.lock().unwrap();
                    for b in bufs {
                        let k = n.min(b.len());
                        out.extend_from_slice(&b[..k]);
                        done += k;
                        n -= k;
                        if n == 0 {
                            break;
                        }
                    }
                    Poll::Ready(Ok(done))
                }
                Step::Block => Poll::Pending,
                Step::Fail => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            }
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            *self.flushes.lock().unwrap() += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn packets() -> Vec<Packet> {
        let mut v = Vec::new();
        for (i, len) in [0usize, 5, COPY_LIMIT, COPY_LIMIT + 1, 3, 200_000, 1]
            .into_iter()
            .enumerate()
        {
            let payload = Bytes::from((0..len).map(|b| (b * 7 + i) as u8).collect::<Vec<_>>());
            v.push(Packet::request(i as u64 % 3, i as u64, 1, 2, payload).unwrap());
        }
        v
    }

    fn expected(ps: &[Packet]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for p in ps {
            p.encode(&mut b, usize::MAX).unwrap();
        }
        b.to_vec()
    }

    /// Drains with the script, returning how many `Pending`s were seen.
    fn run(script: &[Step], vectored: bool) -> (Vec<u8>, usize, std::io::Result<()>, u64) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let flushes = Arc::new(Mutex::new(0));
        let mut st = WriteState {
            w: Box::pin(Scripted {
                script: script.iter().copied().collect(),
                vectored,
                out: out.clone(),
                flushes: flushes.clone(),
            }),
            out: OutBuf::new(),
            need_flush: true,
            closed: false,
            error: None,
            draining: false,
        };
        for p in packets() {
            st.out.push(&p, usize::MAX).unwrap();
        }
        let stats = Stats::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut pendings = 0;
        let res = loop {
            match st.poll_drain(&mut cx, &stats) {
                Poll::Ready(r) => break r,
                Poll::Pending => pendings += 1,
            }
            assert!(pendings < 10_000, "no progress");
        };
        if res.is_ok() {
            assert!(st.out.is_empty() && !st.need_flush);
            assert_eq!(*flushes.lock().unwrap(), 1);
        }
        let sent = stats.bytes_sent.load(Relaxed);
        let bytes = out.lock().unwrap().clone();
        (bytes, pendings, res, sent)
    }

    #[test]
    fn partial_writes_lose_and_repeat_nothing() {
        let want = expected(&packets());
        for vectored in [false, true] {
            // Everything at once.
            let (got, _, res, sent) = run(&[], vectored);
            assert!(res.is_ok());
            assert_eq!((got.len(), sent as usize), (want.len(), want.len()));
            assert_eq!(got, want);
            // One byte at a time for a while, blocked in between, then bigger odd pieces
            // that end inside headers, payloads and chunk boundaries.
            let mut script = Vec::new();
            for k in 0..300 {
                script.push(Step::Take(1));
                if k % 7 == 0 {
                    script.push(Step::Block);
                }
            }
            for k in 0..200 {
                script.push(Step::Take(1 + (k * 977) % 5000));
                script.push(Step::Block);
            }
            let (got, pendings, res, sent) = run(&script, vectored);
            assert!(res.is_ok());
            assert!(pendings > 0);
            assert_eq!(sent as usize, want.len());
            assert_eq!(got, want, "vectored {vectored}");
        }
    }

    #[test]
    fn write_errors_and_zero_writes_are_reported() {
        let (got, _, res, sent) = run(&[Step::Take(10), Step::Block, Step::Fail], true);
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
        assert_eq!((got.len(), sent), (10, 10));
        let (_, _, res, _) = run(&[Step::Take(0)], false);
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::WriteZero);
    }
}
