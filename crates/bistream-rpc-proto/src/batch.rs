//! JSON texts back to back in one buffer, with where each ends: a batch of them costs one
//! allocation and one free, not one per text. The engine uses it both ways: the stream items
//! of one call received in a row travel to the consumer as one batch ([`crate::Event::Items`],
//! DECISIONS D48), and the frames it encodes go to the transport's writer as one batch
//! ([`crate::Engine::take_frames`], D47).

/// JSON texts in order (stream items received together, or frames to write), back to back in
/// one buffer, and where each ends.
///
/// ```
/// use bistream_rpc_proto::TextBatch;
///
/// let mut b = TextBatch::default();
/// b.push("1");
/// b.push("{\"a\":[2]}");
/// assert_eq!(b.len(), 2);
/// assert_eq!(b.bytes(), 10);
/// assert_eq!(b.get(1), Some("{\"a\":[2]}"));
/// assert_eq!(b.iter().collect::<Vec<_>>(), ["1", "{\"a\":[2]}"]);
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TextBatch {
    text: String,
    ends: Vec<usize>,
}

impl TextBatch {
    /// An empty batch with room for `items` items of `bytes` bytes in all (it grows as
    /// needed).
    pub fn with_capacity(items: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(items),
        }
    }

    /// Appends one item's JSON text.
    pub fn push(&mut self, item: &str) {
        self.text.push_str(item);
        self.ends.push(self.text.len());
    }

    /// Appends one text written by `write`, which appends it to the buffer it is given (the
    /// engine encodes a frame in place this way).
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.text);
        self.ends.push(self.text.len());
    }

    /// Reserves room for `texts` more texts of `bytes` bytes in all.
    pub fn reserve(&mut self, texts: usize, bytes: usize) {
        self.ends.reserve(texts);
        self.text.reserve(bytes);
    }

    /// Gives back room it will not use (more than twice what its items need, plus a little):
    /// a batch made with room for a burst that did not come holds no more memory than its
    /// items, whatever waits in a queue.
    pub fn trim(&mut self) {
        if self.text.capacity() > 2 * self.text.len() + 64 {
            self.text.shrink_to_fit();
        }
        if self.ends.capacity() > 2 * self.ends.len() + 4 {
            self.ends.shrink_to_fit();
        }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when it holds no item.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The items' bytes in all.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// Item `i`'s JSON text.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = i
            .checked_sub(1)
            .and_then(|p| self.ends.get(p))
            .copied()
            .unwrap_or(0);
        self.text.get(start..end)
    }

    /// The items' texts back to back.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Where each item ends in [`TextBatch::as_str`], in order (item `i` starts where item
    /// `i - 1` ends, the first at 0).
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = self.text.get(start..end).unwrap_or_default();
            start = end;
            s
        })
    }
}

/// The size of the last batch made, so the next one starts with as much room: growing a batch
/// one text at a time cost more than its texts (D47, D48).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SizeHint {
    texts: usize,
    bytes: usize,
}

impl SizeHint {
    /// Remembers `b`'s size.
    pub(crate) fn record(&mut self, b: &TextBatch) {
        self.texts = b.len();
        self.bytes = b.bytes();
    }

    /// An empty batch with the last one's room (4 to 1,024 texts; 64 bytes to `max_bytes`,
    /// so a burst of large texts does not make every later batch reserve as much), plus
    /// `extra` bytes.
    pub(crate) fn batch(&self, max_bytes: usize, extra: usize) -> TextBatch {
        TextBatch::with_capacity(
            self.texts.clamp(4, 1024),
            extra + self.bytes.clamp(64, max_bytes.max(64)),
        )
    }
}
