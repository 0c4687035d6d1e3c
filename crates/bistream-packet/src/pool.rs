//! A small process-wide pool of receive buffers for large packet bodies.
//!
//! Why: a large body (≥ [`LARGE_BODY`]) used to get a fresh allocation per packet, which glibc
//! often returns to the kernel (`madvise`) once the payload is dropped; the next body then pays
//! a page fault and a kernel page clear per 4 KiB before the socket copy can even start
//! (~10 % of the CPU time of each side of a 1 MiB echo under `perf`). A body read into a
//! pooled buffer is handed out as a [`Bytes`] whose owner returns the buffer here when the
//! last reference goes, so the same warm pages are reused.
//!
//! Bounds: at most [`MAX_BUFFERS`] idle buffers and [`MAX_BYTES`] idle bytes in the whole
//! process (not per connection); a buffer that does not fit is freed. A pooled buffer is only
//! reused for a body between half its capacity and its capacity, so a small body never pins a
//! huge buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

/// Bodies at least this long are read into pooled buffers (smaller ones stay in the reader's
/// `BytesMut`, where they are split off without copying).
pub(crate) const LARGE_BODY: usize = 64 * 1024;
/// Idle buffers kept, process-wide.
pub(crate) const MAX_BUFFERS: usize = 16;
/// Idle bytes (capacity) kept, process-wide.
pub(crate) const MAX_BYTES: usize = 32 * 1024 * 1024;

struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

fn lock() -> std::sync::MutexGuard<'static, Pool> {
    // The pool holds no invariant a panic could break beyond a miscount of idle bytes.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes of large bodies allocated before they arrive, process-wide: beyond this, a body's
/// buffer grows as its bytes arrive instead of being sized from its (untrusted) length.
pub(crate) const MAX_AHEAD: usize = 64 * 1024 * 1024;
/// First size, and smallest growth step, of a body buffer that grows as bytes arrive.
pub(crate) const GROW_STEP: usize = 256 * 1024;

static AHEAD: AtomicUsize = AtomicUsize::new(0);

/// A share of [`MAX_AHEAD`]; given back on drop.
pub(crate) struct Ahead(usize);

impl Drop for Ahead {
    fn drop(&mut self) {
        AHEAD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Reserves `n` bytes of the up-front allocation budget, if available.
pub(crate) fn reserve_ahead(n: usize) -> Option<Ahead> {
    AHEAD
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
            cur.checked_add(n).filter(|&t| t <= MAX_AHEAD)
        })
        .ok()
        .map(|_| Ahead(n))
}

/// Bytes of the up-front budget in use.
#[cfg(test)]
pub(crate) fn ahead_in_use() -> usize {
    AHEAD.load(Ordering::Relaxed)
}

/// An idle pooled buffer with capacity for `need` bytes (and at most twice that), if any.
pub(crate) fn take_idle(need: usize) -> Option<Vec<u8>> {
    let mut p = lock();
    let fit = p
        .free
        .iter()
        .position(|b| b.capacity() >= need && b.capacity() / 2 <= need)?;
    let b = p.free.swap_remove(fit);
    p.bytes = p.bytes.saturating_sub(b.capacity());
    Some(b)
}

/// An empty buffer with capacity for `need` bytes: a pooled one when one fits, else new.
#[cfg(test)]
pub(crate) fn take(need: usize) -> Vec<u8> {
    take_idle(need).unwrap_or_else(|| Vec::with_capacity(need))
}

/// Returns a buffer to the pool (or frees it when the pool is full).
fn give(mut b: Vec<u8>) {
    b.clear();
    let cap = b.capacity();
    let mut p = lock();
    if p.free.len() < MAX_BUFFERS && p.bytes + cap <= MAX_BYTES {
        p.bytes += cap;
        p.free.push(b);
    }
}

/// The owner of a pooled body inside a [`Bytes`]: gives the buffer back on drop.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// Freezes a filled pooled buffer into `Bytes` (no copy); the buffer returns to the pool when
/// the last `Bytes` sharing it is dropped.
pub(crate) fn freeze(b: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_front_allocation_is_bounded_process_wide() {
        // Other tests may hold some of the budget meanwhile: only what holds regardless.
        let mut held = Vec::new();
        while let Some(g) = reserve_ahead(MAX_AHEAD / 8) {
            held.push(g);
            assert!(ahead_in_use() <= MAX_AHEAD);
        }
        assert!(held.len() <= 8);
        assert!(reserve_ahead(MAX_AHEAD + 1).is_none());
        drop(held);
        assert!(reserve_ahead(usize::MAX).is_none());
    }

    #[test]
    fn buffers_are_reused_and_bounded() {
        // Other tests in this binary may use the pool concurrently: only assert what holds
        // regardless (a returned buffer has the right capacity and comes back empty).
        let mut b = take(LARGE_BODY);
        assert!(b.capacity() >= LARGE_BODY && b.is_empty());
        b.extend_from_slice(&[1u8; LARGE_BODY]);
        let bytes = freeze(b);
        let half = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&half[..], &[1u8; 10]);
        drop(half);
        let again = take(LARGE_BODY);
        assert!(again.is_empty() && again.capacity() >= LARGE_BODY);
        // A tiny body never takes a big buffer.
        let small = take(16);
        assert!(small.capacity() < LARGE_BODY);
        // The pool never exceeds its bounds.
        let bufs: Vec<Vec<u8>> = (0..MAX_BUFFERS + 4).map(|_| take(LARGE_BODY)).collect();
        for b in bufs {
            drop(freeze(b));
        }
        let p = lock();
        assert!(p.free.len() <= MAX_BUFFERS && p.bytes <= MAX_BYTES);
    }
}
