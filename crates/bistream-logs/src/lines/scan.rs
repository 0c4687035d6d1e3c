//! The `\n` positions of a text, found 64 bytes at a time ([`Newlines`]): one pass over the
//! chunk that yields every line end, instead of one `memchr` search per line.
//!
//! A search per line pays its setup (alignment, the unrolled loop's entry and exit) once per
//! line: for ~85-byte log lines that was ~60 instructions per line, more than the bytes
//! themselves. Here each 64-byte block is compared once into a 64-bit mask (SSE2 on x86_64:
//! four loads, compares and `pmovmskb`; a word-at-a-time version elsewhere) and each line end
//! is then a `trailing_zeros` and a clear of the lowest bit.

/// The offsets of the `\n` bytes of `bytes` from a starting offset on, in order.
pub(super) struct Newlines<'a> {
    bytes: &'a [u8],
    /// Offset of the block `mask` describes.
    block: usize,
    /// The `\n` bytes of that block not yet returned: bit `i` is offset `block + i`.
    mask: u64,
}

impl<'a> Newlines<'a> {
    /// The `\n` offsets of `bytes` at or after `from`.
    #[inline]
    pub(super) fn new(bytes: &'a [u8], from: usize) -> Self {
        Self {
            bytes,
            block: from,
            mask: bytes.get(from..).map_or(0, newline_mask),
        }
    }
}

impl Iterator for Newlines<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.block += BLOCK;
            let rest = self.bytes.get(self.block..).filter(|r| !r.is_empty())?;
            self.mask = newline_mask(rest);
        }
        let at = self.block + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(at)
    }
}

/// Bytes compared per mask.
const BLOCK: usize = 64;

/// Bit `i` set when byte `i` of the first 64 of `bytes` is `\n` (past its end: clear).
#[inline]
fn newline_mask(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<BLOCK>() {
        Some(block) => block_mask(block),
        None => short_mask(bytes),
    }
}

/// [`newline_mask`] of the last block of a text, shorter than 64 bytes: copied into a
/// zeroed block (once per chunk).
#[cold]
fn short_mask(bytes: &[u8]) -> u64 {
    let mut block = [0u8; BLOCK];
    if let Some(head) = block.get_mut(..bytes.len()) {
        head.copy_from_slice(bytes);
    }
    block_mask(&block)
}

/// Bit `i` set when `block[i]` is `\n`: SSE2 (part of every x86_64), 16 bytes per compare.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn block_mask(block: &[u8; BLOCK]) -> u64 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let nl = set_splat_i8_m128i(b'\n' as i8);
    let mut mask = 0u64;
    for (i, lane) in block.chunks_exact(16).enumerate() {
        // Always 16 bytes (the length is a constant: no check is left in the code).
        let Ok(lane) = <&[u8; 16]>::try_from(lane) else {
            continue;
        };
        let hits = move_mask_i8_m128i(cmp_eq_mask_i8_m128i(load_unaligned_m128i(lane), nl));
        // `pmovmskb` sets only the low 16 bits.
        mask |= u64::from(hits as u16) << (16 * i);
    }
    mask
}

/// Bit `i` set when `block[i]` is `\n`: word at a time, for targets without SSE2.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn block_mask(block: &[u8; BLOCK]) -> u64 {
    portable_block_mask(block)
}

/// [`block_mask`] in plain integer arithmetic, 8 bytes at a time (also the reference the SSE2
/// version is tested against).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn portable_block_mask(block: &[u8; BLOCK]) -> u64 {
    let mut mask = 0u64;
    for (i, word) in block.chunks_exact(8).enumerate() {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            continue;
        };
        mask |= word_mask(u64::from_le_bytes(word)) << (8 * i);
    }
    mask
}

/// Bit `i` (0..8) set when byte `i` (little-endian) of `word` is `\n`.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn word_mask(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ 0x0a0a_0a0a_0a0a_0a0a;
    // The high bit of each byte is set when that byte of `x` is not zero; adding within the
    // low seven bits never carries into the next byte, so this is exact (no false hits).
    let nonzero = ((x & LOW7) + LOW7) | x;
    let zero_bits = (!nonzero & !LOW7) >> 7;
    // Gathers bit 8k (k = 0..8) into bit 56 + k, then shifts the byte down.
    zero_bits.wrapping_mul(0x0102_0408_1020_4080) >> 56
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(bytes: &[u8], from: usize) -> Vec<usize> {
        (from..bytes.len()).filter(|&i| bytes[i] == b'\n').collect()
    }

    fn naive_mask(block: &[u8; BLOCK]) -> u64 {
        block
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// Bytes around `\n` in value and in bits (0x0a with its high bit, 0x0b, 0x09, 0x8a), so
    /// a compare or a carry that is off by one bit shows.
    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'\n'),
            Just(b'\n'),
            Just(0x8a),
            Just(0x0b),
            Just(0x09),
            Just(0x0a ^ 0x01),
            Just(0x00),
            Just(0xff),
            Just(0x80),
            any::<u8>(),
        ]
    }

    #[test]
    fn edges() {
        assert_eq!(Newlines::new(b"", 0).count(), 0);
        assert_eq!(Newlines::new(b"\n", 1).count(), 0);
        assert_eq!(Newlines::new(b"\n", 5).count(), 0);
        let mut all = [b'\n'; 200];
        all[64] = b'x';
        assert_eq!(
            Newlines::new(&all, 3).collect::<Vec<_>>(),
            naive(&all, 3),
            "every byte a newline but one, across blocks"
        );
        let mut none = [b'a'; 300];
        none[299] = b'\n';
        assert_eq!(Newlines::new(&none, 0).collect::<Vec<_>>(), [299]);
    }

    proptest! {
        #[test]
        fn masks_agree(block in proptest::collection::vec(byte(), BLOCK)) {
            let block: [u8; BLOCK] = block.try_into().unwrap();
            let want = naive_mask(&block);
            prop_assert_eq!(block_mask(&block), want);
            prop_assert_eq!(portable_block_mask(&block), want);
        }

        #[test]
        fn finds_every_newline(
            bytes in proptest::collection::vec(byte(), 0..400),
            from in 0usize..420,
        ) {
            prop_assert_eq!(Newlines::new(&bytes, from).collect::<Vec<_>>(), naive(&bytes, from));
        }
    }
}
