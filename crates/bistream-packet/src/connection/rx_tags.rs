//! Receive-side tag bookkeeping: a window of recently seen tags per channel (to detect a
//! reused tag) and the peer requests in progress.

use std::collections::HashMap;

use super::shared::TagMap;

/// The number of recent tags remembered per receive channel to detect reuse. A tag more than
/// this far below the highest tag seen on its channel counts as reused.
pub const TAG_WINDOW: u64 = 4096;

/// Receive-side tag bookkeeping: a window of recently seen tags per channel, and the requests
/// in progress (with a "poisoned" mark when a duplicate arrived while it ran).
pub(super) struct RxTags {
    pub(super) channels: HashMap<u64, RxChannel>,
    pub(super) in_progress: TagMap<bool>,
    pub(super) max_channels: usize,
}

pub(super) struct RxChannel {
    pub(super) max: u64,
    pub(super) bits: Vec<u64>,
}

pub(super) enum Admit {
    Ok,
    Duplicate,
    TooManyChannels,
}

impl RxChannel {
    pub(super) fn new(tag: u64) -> RxChannel {
        let mut c = RxChannel {
            max: tag,
            bits: vec![0; (TAG_WINDOW / 64) as usize],
        };
        c.set(tag, true);
        c
    }
    pub(super) fn idx(tag: u64) -> (usize, u64) {
        let i = tag % TAG_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }
    pub(super) fn get(&self, tag: u64) -> bool {
        let (w, m) = Self::idx(tag);
        self.bits.get(w).is_some_and(|x| x & m != 0)
    }
    pub(super) fn set(&mut self, tag: u64, on: bool) {
        let (w, m) = Self::idx(tag);
        if let Some(x) = self.bits.get_mut(w) {
            if on {
                *x |= m
            } else {
                *x &= !m
            }
        }
    }
    pub(super) fn admit(&mut self, tag: u64) -> bool {
        if tag > self.max {
            if tag - self.max >= TAG_WINDOW {
                self.bits.iter_mut().for_each(|x| *x = 0);
            } else {
                for t in self.max + 1..tag {
                    self.set(t, false);
                }
            }
            self.max = tag;
            self.set(tag, true);
            true
        } else if self.max - tag >= TAG_WINDOW || self.get(tag) {
            false
        } else {
            self.set(tag, true);
            true
        }
    }
}

impl RxTags {
    pub(super) fn admit(&mut self, channel: u64, tag: u64) -> Admit {
        let full = self.channels.len() >= self.max_channels;
        let ok = match self.channels.get_mut(&channel) {
            Some(c) => c.admit(tag),
            None if full => return Admit::TooManyChannels,
            None => {
                self.channels.insert(channel, RxChannel::new(tag));
                true
            }
        };
        if ok {
            self.in_progress.insert((channel, tag), false);
            Admit::Ok
        } else {
            if let Some(p) = self.in_progress.get_mut(&(channel, tag)) {
                *p = true;
            }
            Admit::Duplicate
        }
    }
    /// Ends a request; true when a duplicate poisoned it (its response must not be sent).
    pub(super) fn finish(&mut self, channel: u64, tag: u64) -> bool {
        self.in_progress.remove(&(channel, tag)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(max_channels: usize) -> RxTags {
        RxTags {
            channels: HashMap::new(),
            in_progress: TagMap::default(),
            max_channels,
        }
    }

    fn ok(a: Admit) -> bool {
        matches!(a, Admit::Ok)
    }

    #[test]
    fn a_tag_is_admitted_once_in_any_order_within_the_window() {
        let mut t = tags(4);
        for tag in [5, 3, 9, 4, 6] {
            assert!(ok(t.admit(0, tag)), "{tag}");
        }
        for tag in [5, 3, 9, 4, 6] {
            assert!(matches!(t.admit(0, tag), Admit::Duplicate), "{tag}");
        }
        // Tags skipped so far are still free.
        for tag in [7, 8, 0, 1, 2] {
            assert!(ok(t.admit(0, tag)), "{tag}");
        }
        // Channels are independent.
        assert!(ok(t.admit(1, 5)));
    }

    #[test]
    fn the_window_slides_and_older_tags_count_as_reused() {
        let mut c = RxChannel::new(10);
        assert!(c.admit(10 + TAG_WINDOW - 1));
        // 10 is still inside the window and was seen; 11 is inside and was not.
        assert!(!c.admit(10));
        assert!(c.admit(11));
        // Moving the top by one pushes 10 out: below the window counts as reused.
        assert!(c.admit(10 + TAG_WINDOW));
        assert!(!c.admit(10));
        // A jump by more than the window clears everything below.
        let top = 10 + 3 * TAG_WINDOW;
        assert!(c.admit(top));
        assert!(c.admit(top - 1));
        assert!(!c.admit(top - TAG_WINDOW));
        // Bits of slots reused across the jump were cleared.
        assert!(c.admit(top - TAG_WINDOW + 1));
        // Extremes do not overflow.
        let mut c = RxChannel::new(u64::MAX);
        assert!(!c.admit(u64::MAX));
        assert!(c.admit(u64::MAX - 1));
        assert!(!c.admit(0));
    }

    #[test]
    fn channels_beyond_the_limit_are_refused_and_duplicates_poison_in_progress() {
        let mut t = tags(2);
        assert!(ok(t.admit(0, 1)));
        assert!(ok(t.admit(7, 1)));
        assert!(matches!(t.admit(8, 1), Admit::TooManyChannels));
        // A known channel still works at the limit.
        assert!(ok(t.admit(7, 2)));
        // A duplicate while (7, 2) runs poisons it: its response must not be sent.
        assert!(matches!(t.admit(7, 2), Admit::Duplicate));
        assert!(t.finish(7, 2));
        // Finished without a duplicate: not poisoned; finishing twice is harmless.
        assert!(!t.finish(0, 1));
        assert!(!t.finish(0, 1));
        // A finished tag is still remembered (no reuse after completion either).
        assert!(matches!(t.admit(0, 1), Admit::Duplicate));
    }
}
