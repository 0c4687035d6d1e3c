//! A pass-through stream under the WebSocket that follows the client's frame boundaries, so
//! the connection knows when tungstenite holds no partial input and its buffers can be dropped.
//!
//! tungstenite sizes its read buffer to the largest frame received and its write buffer to the
//! largest frame sent, and never shrinks either: a connection that once carried 1 MiB kept
//! ~2 MiB for life (+1.9 GB for 1,000 such clients). Rebuilding the WebSocket on the same
//! stream frees both, but is only correct when the bytes handed to tungstenite form whole
//! frames and no fragmented message is open; this stream tracks exactly that, reading only
//! frame headers (2–14 bytes per frame) as the bytes go by.
//!
//! The same bookkeeping bounds what clients can make the relay hold in unfinished messages:
//! the payload bytes of every open message of 16 KiB or more are drawn from one
//! process-wide [`FrameBudget`]; a read that would take it past its limit fails with
//! [`BudgetExhausted`], and the connection is closed 1013. Without it, 1,000 unauthenticated
//! connections that each sent most of a 1 MiB frame and stalled held ~1 GB until the
//! registration timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A received frame at least this long marks the connection for a buffer rebuild when idle.
pub(crate) const LARGE_FRAME: u64 = 16 * 1024;

/// Bytes of unfinished large messages all connections may hold together.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    held: AtomicU64,
    limit: u64,
}

impl FrameBudget {
    pub(crate) fn new(limit: u64) -> Self {
        FrameBudget {
            held: AtomicU64::new(0),
            limit,
        }
    }

    /// Takes `n` bytes, or nothing if that would pass the limit.
    fn take(&self, n: u64) -> bool {
        let before = self.held.fetch_add(n, Relaxed);
        if before.saturating_add(n) > self.limit {
            self.held.fetch_sub(n, Relaxed);
            return false;
        }
        true
    }

    fn give(&self, n: u64) {
        self.held.fetch_sub(n, Relaxed);
    }

    /// Bytes currently held.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }
}

/// The read error of a connection whose unfinished message would pass the [`FrameBudget`].
#[derive(Debug, thiserror::Error)]
#[error("unfinished large messages of all clients are over the relay's budget")]
pub(crate) struct BudgetExhausted;

/// Whether `e` is a [`BudgetExhausted`] read error.
pub(crate) fn is_budget_exhausted(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<BudgetExhausted>())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The HTTP upgrade request, until its blank line; `matched` bytes of `\r\n\r\n` seen.
    Http { matched: u8 },
    /// A frame header, `have` bytes of it so far.
    Header { have: u8 },
    /// Payload bytes still to pass.
    Payload { left: u64 },
}

/// The stream under the WebSocket (see the module doc). `inner` is `None` once the stream was
/// moved to a rebuilt WebSocket; the old one is dropped right after.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    inner: Option<S>,
    phase: Phase,
    header: [u8; 14],
    /// A data frame without FIN was seen and its final continuation has not.
    in_message: bool,
    /// A large frame went by since the last [`Tracked::take_large`].
    large: bool,
    /// The frame being read carries message data (not a control frame).
    data_frame: bool,
    /// Payload bytes of the open message seen so far (0 between messages).
    message_bytes: u64,
    /// Where unfinished large messages draw from, and how much this stream holds of it.
    budget: Option<Arc<FrameBudget>>,
    charged: u64,
    /// The budget refused this stream's message: its share was given back at once, and every
    /// later read fails, so nothing more of the abandoned message is buffered or charged.
    refused: bool,
}

impl<S> Tracked<S> {
    /// Wraps a stream whose first bytes are the HTTP upgrade request.
    pub(crate) fn new(inner: S) -> Self {
        Tracked {
            inner: Some(inner),
            phase: Phase::Http { matched: 0 },
            header: [0; 14],
            in_message: false,
            large: false,
            data_frame: false,
            message_bytes: 0,
            budget: None,
            charged: 0,
            refused: false,
        }
    }

    /// Draws the bytes of this stream's unfinished large messages from `budget`.
    pub(crate) fn with_budget(mut self, budget: Arc<FrameBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Wraps a stream whose opening handshake is already done (tests drive connections over
    /// in-memory pipes without one).
    #[cfg(test)]
    pub(crate) fn after_handshake(inner: S) -> Self {
        let mut t = Tracked::new(inner);
        t.phase = Phase::Header { have: 0 };
        t
    }

    /// Whether everything read so far is whole frames of whole messages.
    pub(crate) fn at_boundary(&self) -> bool {
        self.phase == Phase::Header { have: 0 } && !self.in_message
    }

    /// Whether a large frame went by since the last call.
    pub(crate) fn take_large(&mut self) -> bool {
        std::mem::take(&mut self.large)
    }

    /// Moves the stream (and the tracking state) out, for a rebuilt WebSocket.
    pub(crate) fn detach(&mut self) -> Option<Tracked<S>> {
        let inner = self.inner.take()?;
        Some(Tracked {
            inner: Some(inner),
            phase: self.phase,
            header: self.header,
            in_message: self.in_message,
            large: false,
            data_frame: self.data_frame,
            message_bytes: self.message_bytes,
            budget: self.budget.clone(),
            charged: std::mem::take(&mut self.charged),
            refused: self.refused,
        })
    }

    /// The wrapped stream.
    pub(crate) fn inner_mut(&mut self) -> Option<&mut S> {
        self.inner.as_mut()
    }

    fn header_len(&self) -> usize {
        let b1 = self.header[1];
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    fn payload_len(&self) -> u64 {
        let h = &self.header;
        match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        }
    }

    /// Follows `bytes`, which the WebSocket is about to receive.
    fn observe(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.phase {
                Phase::Http { matched } => {
                    let want = b"\r\n\r\n"[usize::from(matched)];
                    let m = if b == want {
                        matched + 1
                    } else {
                        u8::from(b == b'\r')
                    };
                    self.phase = if m == 4 {
                        Phase::Header { have: 0 }
                    } else {
                        Phase::Http { matched: m }
                    };
                    bytes = rest;
                }
                Phase::Header { have } => {
                    let i = usize::from(have);
                    if let Some(slot) = self.header.get_mut(i) {
                        *slot = b;
                    }
                    let have = have + 1;
                    bytes = rest;
                    if usize::from(have) < 2 || usize::from(have) < self.header_len() {
                        self.phase = Phase::Header { have };
                        continue;
                    }
                    let b0 = self.header[0];
                    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
                    self.data_frame = opcode < 8;
                    if self.data_frame {
                        // Data or continuation frame: a message is open until a FIN frame.
                        self.in_message = !fin;
                    }
                    let len = self.payload_len();
                    self.large |= len >= LARGE_FRAME;
                    self.phase = if len == 0 {
                        self.frame_done();
                        Phase::Header { have: 0 }
                    } else {
                        Phase::Payload { left: len }
                    };
                }
                Phase::Payload { left } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    let left = left - n as u64;
                    bytes = bytes.get(n..).unwrap_or_default();
                    if self.data_frame {
                        self.message_bytes = self.message_bytes.saturating_add(n as u64);
                    }
                    self.phase = if left == 0 {
                        self.frame_done();
                        Phase::Header { have: 0 }
                    } else {
                        Phase::Payload { left }
                    };
                }
            }
        }
    }
}

impl<S> Tracked<S> {
    /// A frame's payload is complete: a final data frame ends its message.
    fn frame_done(&mut self) {
        if self.data_frame && !self.in_message {
            self.message_bytes = 0;
        }
    }

    /// Charges the budget for the open message (when large), or gives back what a finished
    /// one held. Fails when the budget cannot take it.
    fn settle(&mut self) -> io::Result<()> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if self.refused {
            return Err(io::Error::other(BudgetExhausted));
        }
        let want = if self.message_bytes >= LARGE_FRAME {
            self.message_bytes
        } else {
            0
        };
        if want > self.charged {
            if !budget.take(want - self.charged) {
                // Give the abandoned message's share back now, not when the 1013 close ends,
                // so that others are not refused for bytes that are already given up.
                budget.give(std::mem::take(&mut self.charged));
                self.refused = true;
                return Err(io::Error::other(BudgetExhausted));
            }
        } else {
            budget.give(self.charged - want);
        }
        self.charged = want;
        Ok(())
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(std::mem::take(&mut self.charged));
        }
    }
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream moved to a rebuilt WebSocket",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(detached()));
        };
        if this.refused {
            return Poll::Ready(Err(io::Error::other(BudgetExhausted)));
        }
        let before = buf.filled().len();
        let r = Pin::new(inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = buf.filled().get(before..).unwrap_or_default();
            this.observe(new);
            if let Err(e) = this.settle() {
                return Poll::Ready(Err(e));
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(detached())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(detached())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked() -> Tracked<()> {
        let mut t = Tracked::new(());
        t.observe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        t
    }

    /// A masked client frame header for `len` payload bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![(u8::from(fin) << 7) | opcode];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn follows_frames_split_anywhere() {
        let mut stream = Vec::new();
        for (fin, op, len) in [
            (true, 1, 5u64),
            (false, 1, 200),
            (true, 9, 3),
            (true, 0, 70_000),
            (true, 2, 0),
        ] {
            stream.extend(header(fin, op, len));
            stream.extend(std::iter::repeat_n(b'x', len as usize));
        }
        for chunk in [1, 2, 3, 7, 4096] {
            let mut t = tracked();
            assert!(t.at_boundary());
            let mut boundaries = 0;
            for part in stream.chunks(chunk) {
                t.observe(part);
                boundaries += usize::from(t.at_boundary());
            }
            assert!(t.at_boundary(), "chunk {chunk}");
            assert!(t.take_large());
            assert!(!t.take_large());
            assert!(boundaries >= 1);
        }
    }

    #[test]
    fn open_fragmented_message_is_not_a_boundary() {
        let mut t = tracked();
        t.observe(&header(false, 1, 0));
        assert!(!t.at_boundary());
        // A control frame in between does not close the message.
        t.observe(&header(true, 9, 0));
        assert!(!t.at_boundary());
        t.observe(&header(true, 0, 0));
        assert!(t.at_boundary());
        // Mid-header and mid-payload are not boundaries either.
        t.observe(&[0x81]);
        assert!(!t.at_boundary());
        t.observe(&[0x82, 1, 2, 3, 4, b'a']);
        assert!(!t.at_boundary());
        t.observe(b"b");
        assert!(t.at_boundary());
    }

    /// Feeds `bytes` as one read would, settling the budget after it.
    fn read(t: &mut Tracked<()>, bytes: &[u8]) -> io::Result<()> {
        t.observe(bytes);
        t.settle()
    }

    #[test]
    fn unfinished_large_messages_draw_from_one_budget() {
        let budget = Arc::new(FrameBudget::new(100 * 1024));
        let mut a = tracked().with_budget(budget.clone());
        let mut b = tracked().with_budget(budget.clone());
        let body = vec![b'x'; 60 * 1024];
        // Small messages never touch the budget, even while another holds most of it.
        read(&mut a, &header(true, 1, 80 * 1024)).unwrap();
        read(&mut a, &body).unwrap();
        assert_eq!(budget.held(), 60 * 1024);
        read(&mut b, &header(true, 1, 100)).unwrap();
        read(&mut b, &body[..100]).unwrap();
        assert_eq!(budget.held(), 60 * 1024);
        // A second large message that would pass the limit is refused.
        read(&mut b, &header(true, 1, 80 * 1024)).unwrap();
        let e = read(&mut b, &body).unwrap_err();
        assert!(is_budget_exhausted(&e), "{e}");
        // The first one completes and gives its share back; fragments count as one message.
        read(&mut a, &body[..20 * 1024]).unwrap();
        assert!(a.at_boundary());
        assert_eq!(budget.held(), 0);
        let mut c = tracked().with_budget(budget.clone());
        read(&mut c, &header(false, 1, 30 * 1024)).unwrap();
        read(&mut c, &body[..30 * 1024]).unwrap();
        read(&mut c, &header(true, 9, 0)).unwrap();
        read(&mut c, &header(false, 0, 30 * 1024)).unwrap();
        read(&mut c, &body[..30 * 1024]).unwrap();
        assert_eq!(budget.held(), 60 * 1024);
        // A rebuild moves the share with the stream; dropping the stream gives it back.
        let moved = c.detach().unwrap();
        drop(c);
        assert_eq!(budget.held(), 60 * 1024);
        drop(moved);
        assert_eq!(budget.held(), 0);
    }

    /// Found by a flaky hostile test under load: a refused stream held its share until its
    /// 1013 close finished, so a second stream could be refused for bytes already given up.
    #[test]
    fn a_refused_message_gives_its_share_back_at_once() {
        let budget = Arc::new(FrameBudget::new(100 * 1024));
        let mut a = tracked().with_budget(budget.clone());
        let mut b = tracked().with_budget(budget.clone());
        let body = vec![b'x'; 40 * 1024];
        read(&mut a, &header(true, 1, 80 * 1024)).unwrap();
        read(&mut a, &body).unwrap();
        read(&mut b, &header(true, 1, 80 * 1024)).unwrap();
        read(&mut b, &body[..30 * 1024]).unwrap();
        assert_eq!(budget.held(), 70 * 1024);
        let e = read(&mut b, &body).unwrap_err();
        assert!(is_budget_exhausted(&e), "{e}");
        // b is still alive (its close is under way) but holds nothing, and stays refused.
        assert_eq!(budget.held(), 40 * 1024);
        let e = read(&mut b, &body[..1]).unwrap_err();
        assert!(is_budget_exhausted(&e), "{e}");
        assert_eq!(budget.held(), 40 * 1024);
        // a can finish its message with the room b gave back.
        read(&mut a, &body).unwrap();
        assert!(a.at_boundary());
        assert_eq!(budget.held(), 0);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
