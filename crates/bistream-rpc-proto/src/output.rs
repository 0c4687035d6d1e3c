//! The engine's output: encoded frames back to back in one buffer, with where each ends, so a
//! batch of frames (a fast stream's items) costs one allocation and one free, not one per
//! frame — and the free happens once per batch on the writer's thread (DECISIONS D47).
//!
//! ```
//! use bistream_rpc_proto::Frames;
//!
//! let mut f = Frames::default();
//! f.push_with(|s| s.push_str("{\"a\":1}"));
//! f.push_with(|s| s.push_str("{\"b\":2}"));
//! assert_eq!(f.iter().collect::<Vec<_>>(), ["{\"a\":1}", "{\"b\":2}"]);
//! assert_eq!((f.len(), f.bytes()), (2, 14));
//! ```

/// Frames in order, in one buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frames {
    text: String,
    ends: Vec<usize>,
}

impl Frames {
    /// Empty, with room for `frames` frames of `bytes` bytes in all.
    pub fn with_capacity(frames: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(frames),
        }
    }

    /// Appends one frame, written by `write` (which appends to the buffer it is given).
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.text);
        self.ends.push(self.text.len());
    }

    /// How many frames.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is no frame.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The frames' bytes in all.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// Room reserved for more frames' bytes (for sizing the next batch alike).
    pub fn reserve(&mut self, frames: usize, bytes: usize) {
        self.ends.reserve(frames);
        self.text.reserve(bytes);
    }

    /// The frames, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        // Every end was taken right after a whole frame was appended: a char boundary.
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| self.text.get(a..b).unwrap_or_default())
    }
}
