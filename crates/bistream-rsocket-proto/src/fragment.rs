//! Fragmentation (FOLLOWS) and reassembly. A payload too large for the frame limit is sent as
//! its original frame with F set, then PAYLOAD frames with F set on all but the last; metadata
//! goes first, then data. The [`Reassembler`] joins fragments per stream, bounded in bytes.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::{Frame, Payload};

/// Smallest fragment size [`fragment`] uses (the spec's minimum is 64).
pub const MIN_MTU: usize = 64;

fn header_len(f: &Frame) -> usize {
    match f {
        Frame::RequestStream { .. } | Frame::RequestChannel { .. } => 10,
        _ => 6,
    }
}

fn with_payload(first: &Frame, is_first: bool, follows: bool, payload: Payload) -> Frame {
    let stream = first.stream();
    if !is_first {
        let (complete, next) = match first {
            Frame::Payload { complete, next, .. } => (*complete && !follows, *next),
            Frame::RequestChannel { complete, .. } => (*complete && !follows, true),
            _ => (false, true),
        };
        return Frame::Payload {
            stream,
            follows,
            complete,
            next,
            payload,
        };
    }
    match first {
        Frame::RequestResponse { .. } => Frame::RequestResponse {
            stream,
            follows,
            payload,
        },
        Frame::RequestFnf { .. } => Frame::RequestFnf {
            stream,
            follows,
            payload,
        },
        Frame::RequestStream { initial_n, .. } => Frame::RequestStream {
            stream,
            follows,
            initial_n: *initial_n,
            payload,
        },
        Frame::RequestChannel {
            initial_n,
            complete,
            ..
        } => Frame::RequestChannel {
            stream,
            follows,
            complete: *complete && !follows,
            initial_n: *initial_n,
            payload,
        },
        Frame::Payload { complete, next, .. } => Frame::Payload {
            stream,
            follows,
            complete: *complete && !follows,
            next: *next,
            payload,
        },
        other => other.clone(),
    }
}

/// Splits `frame` into fragments of at most `mtu` encoded bytes each (`mtu` is raised to
/// [`MIN_MTU`]). Frames that fit, and frames that cannot be fragmented, come back alone.
///
/// ```
/// use bistream_rsocket_proto::{fragment, Frame, Payload, Reassembler};
/// let f = Frame::Payload { stream: 2, follows: false, complete: true, next: true,
///                          payload: Payload::data(vec![7u8; 1000]) };
/// let parts = fragment(f.clone(), 100);
/// assert!(parts.len() > 10 && parts.iter().all(|p| p.encoded_len() <= 100));
/// let mut r = Reassembler::new(1 << 20, 1 << 24);
/// let mut out = None;
/// for p in parts { out = r.push(p).unwrap(); }
/// assert_eq!(out, Some(f));
/// ```
pub fn fragment(frame: Frame, mtu: usize) -> Vec<Frame> {
    let mtu = mtu.max(MIN_MTU);
    let Some(p) = frame.payload() else {
        return vec![frame];
    };
    if frame.encoded_len() <= mtu {
        return vec![frame];
    }
    let mut meta: Option<Bytes> = p.metadata.clone();
    let mut data = p.data.clone();
    let mut out = Vec::new();
    let mut is_first = true;
    loop {
        let head = if is_first { header_len(&frame) } else { 6 };
        let mut budget = mtu - head;
        let frag_meta = match meta.as_mut() {
            Some(m) if !m.is_empty() || is_first => {
                budget -= 3;
                let take = budget.min(m.len());
                budget -= take;
                Some(m.split_to(take))
            }
            _ => None,
        };
        if meta.as_ref().is_some_and(Bytes::is_empty) {
            meta = None;
        }
        let take = if meta.is_none() {
            budget.min(data.len())
        } else {
            0
        };
        let frag_data = data.split_to(take);
        let last = meta.is_none() && data.is_empty();
        out.push(with_payload(
            &frame,
            is_first,
            !last,
            Payload::new(frag_meta, frag_data),
        ));
        if last {
            return out;
        }
        is_first = false;
    }
}

/// Why reassembly failed (the stream must be failed; the connection may go on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// The reassembled payload would exceed the per-message limit.
    #[error("fragmented payload on stream {stream} exceeds {limit} bytes")]
    TooLarge {
        /// Stream.
        stream: u32,
        /// The limit.
        limit: usize,
    },
    /// All streams' partial payloads together would exceed the connection's limit.
    #[error("fragments buffered on this connection exceed {0} bytes")]
    TotalTooLarge(usize),
    /// A request frame arrived on a stream whose fragments are not complete.
    #[error("frame {0} on stream {1} interrupts a fragmented payload")]
    Interleaved(&'static str, u32),
}

struct Partial {
    first: Frame,
    meta: Option<BytesMut>,
    data: BytesMut,
    next: bool,
}

impl Partial {
    fn len(&self) -> usize {
        self.meta.as_ref().map_or(0, BytesMut::len) + self.data.len()
    }

    fn add(&mut self, p: &Payload) {
        if let Some(m) = &p.metadata {
            self.meta
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(m);
        }
        self.data.extend_from_slice(&p.data);
    }
}

/// Joins fragments per stream. Bounded: `max_message` bytes per payload, `max_total` bytes
/// over all streams.
#[derive(Default)]
pub struct Reassembler {
    partial: HashMap<u32, Partial>,
    max_message: usize,
    max_total: usize,
    total: usize,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("streams", &self.partial.len())
            .field("bytes", &self.total)
            .finish()
    }
}

impl Reassembler {
    /// A reassembler with these bounds.
    pub fn new(max_message: usize, max_total: usize) -> Self {
        Self {
            partial: HashMap::new(),
            max_message,
            max_total,
            total: 0,
        }
    }

    /// Bytes buffered now.
    pub fn buffered(&self) -> usize {
        self.total
    }

    /// Forgets `stream`'s partial payload (the stream ended or was cancelled).
    pub fn remove(&mut self, stream: u32) {
        if let Some(p) = self.partial.remove(&stream) {
            self.total -= p.len();
        }
    }

    fn grow(&mut self, stream: u32, by: usize, now: usize) -> Result<(), ReassemblyError> {
        if now + by > self.max_message {
            self.remove(stream);
            return Err(ReassemblyError::TooLarge {
                stream,
                limit: self.max_message,
            });
        }
        if self.total + by > self.max_total {
            self.remove(stream);
            return Err(ReassemblyError::TotalTooLarge(self.max_total));
        }
        self.total += by;
        Ok(())
    }

    /// Feeds one frame: `Some(frame)` when a whole frame is available (the frame itself when it
    /// was not fragmented), `None` while fragments are pending.
    pub fn push(&mut self, f: Frame) -> Result<Option<Frame>, ReassemblyError> {
        let stream = f.stream();
        if let Some(part) = self.partial.get(&stream) {
            let now = part.len();
            match &f {
                Frame::Payload {
                    follows,
                    complete,
                    next,
                    payload,
                    ..
                } => {
                    let (follows, complete, next) = (*follows, *complete, *next);
                    self.grow(stream, payload.len(), now)?;
                    let Some(part) = self.partial.get_mut(&stream) else {
                        return Ok(None);
                    };
                    part.add(payload);
                    part.next |= next;
                    if follows {
                        return Ok(None);
                    }
                    let Some(part) = self.partial.remove(&stream) else {
                        return Ok(None);
                    };
                    self.total -= part.len();
                    let payload = Payload::new(part.meta.map(BytesMut::freeze), part.data.freeze());
                    let whole = match part.first {
                        Frame::Payload { .. } => Frame::Payload {
                            stream,
                            follows: false,
                            complete,
                            next: part.next,
                            payload,
                        },
                        Frame::RequestChannel { initial_n, .. } => Frame::RequestChannel {
                            stream,
                            follows: false,
                            complete,
                            initial_n,
                            payload,
                        },
                        first => with_payload(&first, true, false, payload),
                    };
                    return Ok(Some(whole));
                }
                Frame::Cancel { .. } | Frame::Error { .. } => {
                    self.remove(stream);
                    return Ok(Some(f));
                }
                Frame::RequestN { .. } => return Ok(Some(f)),
                Frame::RequestResponse { .. }
                | Frame::RequestFnf { .. }
                | Frame::RequestStream { .. }
                | Frame::RequestChannel { .. } => {
                    self.remove(stream);
                    return Err(ReassemblyError::Interleaved("request", stream));
                }
                _ => return Ok(Some(f)),
            }
        }
        if !f.follows() {
            return Ok(Some(f));
        }
        let Some(p) = f.payload() else {
            return Ok(Some(f));
        };
        self.grow(stream, p.len(), 0)?;
        let mut part = Partial {
            meta: None,
            data: BytesMut::new(),
            next: matches!(f, Frame::Payload { next: true, .. }),
            first: f.clone(),
        };
        part.add(p);
        self.partial.insert(stream, part);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn join(parts: Vec<Frame>) -> Frame {
        let mut r = Reassembler::new(1 << 24, 1 << 24);
        let n = parts.len();
        for (i, p) in parts.into_iter().enumerate() {
            let out = r.push(p).unwrap();
            if i + 1 == n {
                assert_eq!(r.buffered(), 0);
                return out.unwrap();
            }
            assert!(out.is_none());
        }
        unreachable!()
    }

    #[test]
    fn request_channel_fragments_carry_complete_last() {
        let f = Frame::RequestChannel {
            stream: 1,
            follows: false,
            complete: true,
            initial_n: 5,
            payload: Payload::new(
                Some(Bytes::from(vec![1u8; 150])),
                Bytes::from(vec![2u8; 300]),
            ),
        };
        let parts = fragment(f.clone(), 64);
        assert!(matches!(
            parts[0],
            Frame::RequestChannel {
                follows: true,
                complete: false,
                ..
            }
        ));
        for p in &parts[1..parts.len() - 1] {
            assert!(matches!(
                p,
                Frame::Payload {
                    follows: true,
                    complete: false,
                    ..
                }
            ));
        }
        assert!(matches!(
            parts.last(),
            Some(Frame::Payload {
                follows: false,
                complete: true,
                ..
            })
        ));
        assert_eq!(join(parts), f);
    }

    #[test]
    fn empty_metadata_survives() {
        let f = Frame::RequestResponse {
            stream: 3,
            follows: false,
            payload: Payload::new(Some(Bytes::new()), Bytes::from(vec![9u8; 500])),
        };
        assert_eq!(join(fragment(f.clone(), 100)), f);
    }

    #[test]
    fn bounds_and_interleaving() {
        let f = Frame::Payload {
            stream: 2,
            follows: false,
            complete: false,
            next: true,
            payload: Payload::data(vec![0u8; 1000]),
        };
        let parts = fragment(f, 100);
        let mut r = Reassembler::new(500, 1 << 20);
        let mut err = None;
        for p in parts {
            if let Err(e) = r.push(p) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(
            err,
            Some(ReassemblyError::TooLarge {
                stream: 2,
                limit: 500
            })
        );
        assert_eq!(r.buffered(), 0);

        let mut r = Reassembler::new(1 << 20, 150);
        let a = Frame::RequestFnf {
            stream: 1,
            follows: true,
            payload: Payload::data(vec![0u8; 100]),
        };
        let b = Frame::RequestFnf {
            stream: 3,
            follows: true,
            payload: Payload::data(vec![0u8; 100]),
        };
        assert_eq!(r.push(a.clone()).unwrap(), None);
        assert_eq!(r.push(b).unwrap_err(), ReassemblyError::TotalTooLarge(150));
        assert_eq!(
            r.push(a).unwrap_err(),
            ReassemblyError::Interleaved("request", 1)
        );
        assert_eq!(r.buffered(), 0);
        // CANCEL drops a partial payload.
        let c = Frame::RequestStream {
            stream: 5,
            follows: true,
            initial_n: 1,
            payload: Payload::data(vec![1u8; 10]),
        };
        assert_eq!(r.push(c).unwrap(), None);
        assert_eq!(
            r.push(Frame::Cancel { stream: 5 }).unwrap(),
            Some(Frame::Cancel { stream: 5 })
        );
        assert_eq!(r.buffered(), 0);
    }

    proptest! {
        #[test]
        fn fragments_round_trip(
            kind in 0u8..5,
            meta in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..700)),
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            mtu in 64usize..400,
            flag in any::<bool>(),
        ) {
            let payload = Payload::new(meta.map(Bytes::from), Bytes::from(data));
            let f = match kind {
                0 => Frame::RequestResponse { stream: 1, follows: false, payload },
                1 => Frame::RequestFnf { stream: 1, follows: false, payload },
                2 => Frame::RequestStream { stream: 1, follows: false, initial_n: 9, payload },
                3 => Frame::RequestChannel { stream: 1, follows: false, complete: flag, initial_n: 9, payload },
                _ => Frame::Payload { stream: 1, follows: false, complete: flag, next: true, payload },
            };
            let parts = fragment(f.clone(), mtu);
            for p in &parts {
                prop_assert!(p.encoded_len() <= mtu);
                // Every fragment survives the codec.
                prop_assert_eq!(&crate::decode(crate::encode(p).freeze()).unwrap(), p);
            }
            prop_assert_eq!(join(parts), f);
        }
    }
}
