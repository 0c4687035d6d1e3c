//! `BSUInt`, the variable-length unsigned integer of cs.binary: **big-endian** base-128 (the most
//! significant 7-bit group first, every byte but the last has its 0x80 bit set). Not LEB128.
//!
//! The encoder writes the minimal form. The decoder accepts non-minimal forms (leading 0x80
//! bytes), as Python does, but bounds the length to [`MAX_VARINT_LEN`] bytes and rejects values
//! that do not fit in a `u64`.

use crate::error::DecodeError;

/// The longest varint accepted, in bytes: the minimal form of `u64::MAX`. Non-minimal forms are
/// accepted up to this length; anything longer is a protocol error.
pub const MAX_VARINT_LEN: usize = 10;

/// Number of bytes [`encode`] writes for `n`.
#[inline]
pub fn encoded_len(n: u64) -> usize {
    let bits = 64 - (n | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends the minimal big-endian base-128 form of `n` to `out`.
#[inline]
pub fn encode(n: u64, out: &mut impl bytes::BufMut) {
    let len = encoded_len(n);
    let mut tmp = [0u8; MAX_VARINT_LEN];
    for (i, slot) in tmp[..len].iter_mut().enumerate() {
        let shift = 7 * (len - 1 - i);
        let group = ((n >> shift) & 0x7f) as u8;
        *slot = if i + 1 < len { group | 0x80 } else { group };
    }
    out.put_slice(&tmp[..len]);
}

/// Decodes one varint from the start of `buf`.
///
/// Returns `Ok(Some((value, bytes_used)))`, `Ok(None)` when `buf` ends before the varint does
/// (and it is not yet too long), or an error for a varint longer than [`MAX_VARINT_LEN`] bytes
/// or a value above `u64::MAX`.
#[inline]
pub fn decode(buf: &[u8]) -> Result<Option<(u64, usize)>, DecodeError> {
    let mut n: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if i >= MAX_VARINT_LEN {
            return Err(DecodeError::VarintTooLong);
        }
        if n > (u64::MAX >> 7) {
            return Err(DecodeError::VarintOverflow);
        }
        n = (n << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok(Some((n, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(DecodeError::VarintTooLong);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        encode(n, &mut v);
        v
    }

    #[test]
    fn golden_values_from_the_reference() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x81, 0x00]),
            (255, &[0x81, 0x7f]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x81, 0x80, 0x00]),
            (2097151, &[0xff, 0xff, 0x7f]),
            (2097152, &[0x81, 0x80, 0x80, 0x00]),
            (1048576, &[0xc0, 0x80, 0x00]),
            (1048581, &[0xc0, 0x80, 0x05]),
        ];
        for &(n, bytes) in cases {
            assert_eq!(enc(n), bytes, "encode {n}");
            assert_eq!(encoded_len(n), bytes.len());
            assert_eq!(decode(bytes).unwrap(), Some((n, bytes.len())), "decode {n}");
        }
    }

    #[test]
    fn u64_max_round_trips_in_ten_bytes() {
        let v = enc(u64::MAX);
        assert_eq!(v.len(), 10);
        assert_eq!(v[0], 0x81);
        assert_eq!(decode(&v).unwrap(), Some((u64::MAX, 10)));
    }

    #[test]
    fn non_minimal_forms_are_accepted() {
        assert_eq!(decode(&[0x80, 0x80, 0x05]).unwrap(), Some((5, 3)));
        assert_eq!(decode(&[0x80, 0x00]).unwrap(), Some((0, 2)));
    }

    #[test]
    fn incomplete_is_none() {
        assert_eq!(decode(&[]).unwrap(), None);
        assert_eq!(decode(&[0x81]).unwrap(), None);
        assert_eq!(decode(&[0x80; 9]).unwrap(), None);
    }

    #[test]
    fn too_long_and_overflow_are_errors() {
        assert_eq!(decode(&[0x80; 10]), Err(DecodeError::VarintTooLong));
        assert_eq!(decode(&[0x80; 11]), Err(DecodeError::VarintTooLong));
        // 2^64 needs 65 bits: 82 80 .. 00 (10 bytes)
        let two64 = [0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(decode(&two64), Err(DecodeError::VarintOverflow));
    }
}
