//! The typed parse of one received item (a stream item, a response's or a request's `data`):
//! [`from_item`] gives exactly what `serde_json::from_str::<T>` gives, but the common scalars — an
//! integer that fits `u64`/`i64`, `true`, `false`, `null` and a string without escapes — skip
//! serde_json's per-call setup, its generic number path and its trailing-whitespace check.
//!
//! How it stays equal to serde_json: the fast path visits exactly what serde_json's own
//! deserializer visits for that method and text (`visit_u64` for a non-negative integer,
//! `visit_i64` for a negative one, `visit_borrowed_str` for a plain string, `visit_unit` or
//! `visit_none` for `null` as the method asks, `visit_some` for anything else under
//! `deserialize_option`). Every other method and text (objects, arrays, floats, `-0`, big
//! integers, escapes, whitespace, 128-bit integers, bytes, enums, serde_json's raw-value
//! newtype) is handed to `serde_json::Deserializer` on the same text, followed by its `end()`
//! check, which is what `serde_json::from_str` does. Any error, and a value that was never
//! consumed, re-runs `serde_json::from_str` and returns its answer, so error texts (with their
//! line and column) are serde_json's own. A property test (`tests/item.rs`) checks all of this
//! against `serde_json::from_str` for many types and texts.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::de::{Deserialize, Deserializer, Visitor};
use serde_json::Error;

/// The newtype name through which `Box<RawValue>` / `&RawValue` ask serde_json for raw text.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Parses `text`, one JSON value, into `T`: the same `Ok` value as
/// `serde_json::from_str::<T>(text)` for every `T`, and on failure serde_json's own error.
///
/// ```
/// use bistream_rpc_proto::item::from_item;
///
/// assert_eq!(from_item::<u64>("42")?, 42);
/// assert_eq!(from_item::<i32>("-7")?, -7);
/// assert_eq!(from_item::<&str>(r#""plain""#)?, "plain");
/// assert_eq!(from_item::<Option<bool>>("null")?, None);
/// // Everything else is serde_json's answer on the same text.
/// assert_eq!(from_item::<Vec<f64>>("[1.5, 2e3]")?, vec![1.5, 2000.0]);
/// let err = from_item::<u8>("300").unwrap_err();
/// assert_eq!(err.to_string(), serde_json::from_str::<u8>("300").unwrap_err().to_string());
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// On a failure `T::deserialize` runs a second time, inside `serde_json::from_str` (a `T` whose
/// `Deserialize` has side effects sees them twice then; serde's derived and std impls have none).
///
/// # Errors
/// Exactly `serde_json::from_str::<T>(text)`'s error when that fails.
#[inline]
pub fn from_item<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Error> {
    let consumed = Cell::new(false);
    match T::deserialize(Item {
        text,
        consumed: &consumed,
    }) {
        Ok(v) if consumed.get() => Ok(v),
        // Failed, or `T` never read the value (serde_json would report trailing characters):
        // serde_json's answer, with its error text and position.
        _ => slow(text),
    }
}

/// serde_json's answer, kept out of line: errors are rare, and the hot path stays small.
#[cold]
#[inline(never)]
fn slow<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Error> {
    serde_json::from_str(text)
}

/// Whether the serde_json linked in was built with `arbitrary_precision` (then every number
/// goes to serde_json: it visits numbers differently there). 0 = not known yet, 1 = no, 2 = yes.
static ARBITRARY_PRECISION: AtomicU8 = AtomicU8::new(0);

#[inline]
fn arbitrary_precision() -> bool {
    match ARBITRARY_PRECISION.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => probe_arbitrary_precision(),
    }
}

#[cold]
fn probe_arbitrary_precision() -> bool {
    // Without the feature a number beyond f64 is an error; with it, a `Number` holds its text.
    let yes = serde_json::from_str::<serde_json::Number>("1e400").is_ok();
    ARBITRARY_PRECISION.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
    yes
}

/// What the fast path knows how to visit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind<'a> {
    U64(u64),
    I64(i64),
    Bool(bool),
    Null,
    /// A string without escapes or control characters: its text between the quotes.
    Str(&'a str),
    /// Anything else: serde_json decides.
    Other,
}

/// The kind of `text` when all of `text` is exactly one such scalar (no whitespace).
#[inline]
fn classify(text: &str) -> Kind<'_> {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0'..=b'9') => match digits(b) {
            Some(v) if !arbitrary_precision() => Kind::U64(v),
            _ => Kind::Other,
        },
        Some(b'-') => match digits(&b[1..]) {
            // -0 is a float to serde_json; below -2^63 too.
            Some(m @ 1..=0x8000_0000_0000_0000) if !arbitrary_precision() => {
                Kind::I64((m as i64).wrapping_neg())
            }
            _ => Kind::Other,
        },
        Some(b'"') => plain_str(text).map_or(Kind::Other, Kind::Str),
        Some(b't') if b == b"true" => Kind::Bool(true),
        Some(b'f') if b == b"false" => Kind::Bool(false),
        Some(b'n') if b == b"null" => Kind::Null,
        _ => Kind::Other,
    }
}

/// `b` as a JSON integer without sign, fraction or exponent (`0` or no leading zero) that fits
/// in `u64`.
#[inline]
fn digits(b: &[u8]) -> Option<u64> {
    match b {
        [b'0'] => Some(0),
        // A leading zero (serde_json: an error, or a float such as `0.5`), or nothing.
        [b'0', ..] | [] => None,
        _ if b.len() <= 8 => eight_digits(b),
        _ => long_digits(b),
    }
}

/// 1 to 8 bytes, all ASCII digits, as their value: the bytes go right-aligned into one word
/// (padded with `'0'`), which is checked and converted with a few word operations instead of
/// one multiply-add and branch per digit.
#[inline]
fn eight_digits(b: &[u8]) -> Option<u64> {
    let mut word = [b'0'; 8];
    // One arm per length, so each copy has a constant size (a load and a store, no memcpy).
    match b.len() {
        1 => word[7..].copy_from_slice(b),
        2 => word[6..].copy_from_slice(b),
        3 => word[5..].copy_from_slice(b),
        4 => word[4..].copy_from_slice(b),
        5 => word[3..].copy_from_slice(b),
        6 => word[2..].copy_from_slice(b),
        7 => word[1..].copy_from_slice(b),
        8 => word.copy_from_slice(b),
        _ => return None,
    }
    let x = u64::from_le_bytes(word);
    // Every byte in 0x30..=0x39: its high nibble is 3, and so is that of the byte plus 6. A
    // byte of 0xFA or more carries into the next, but fails its own high-nibble test first.
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let high = (x & HIGH) | ((x.wrapping_add(0x0606_0606_0606_0606) & HIGH) >> 4);
    if high != 0x3333_3333_3333_3333 {
        return None;
    }
    // The first byte is the most significant digit: combine pairs, then quads, then halves.
    let x = x & 0x0F0F_0F0F_0F0F_0F0F;
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((x.wrapping_mul(10_000) + (x >> 32)) & 0xFFFF_FFFF)
}

/// 9 or more digits, one at a time, refusing overflow.
fn long_digits(b: &[u8]) -> Option<u64> {
    if b.len() > 20 {
        return None;
    }
    let mut v = 0u64;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// The text between the quotes of a JSON string with no escape, quote or control character
/// inside (the strings serde_json hands out borrowed).
#[inline]
fn plain_str(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    inner
        .bytes()
        .all(|c| c >= 0x20 && c != b'"' && c != b'\\')
        .then_some(inner)
}

/// A deserializer over one item's text; see the module doc.
struct Item<'a, 'c> {
    text: &'a str,
    /// Set when the value was visited or serde_json read it to its end.
    consumed: &'c Cell<bool>,
}

impl<'a> Item<'a, '_> {
    /// Marks the value read (the fast path visited it).
    #[inline]
    fn take(&self) {
        self.consumed.set(true);
    }

    /// serde_json's deserializer on the same text, then its end check, as `from_str` does.
    #[inline(never)]
    fn delegate<V>(
        self,
        f: impl FnOnce(&mut serde_json::Deserializer<serde_json::de::StrRead<'a>>) -> Result<V, Error>,
    ) -> Result<V, Error> {
        let mut de = serde_json::Deserializer::from_str(self.text);
        let v = f(&mut de)?;
        de.end()?;
        self.take();
        Ok(v)
    }
}

/// Methods serde_json answers for numbers with `visit_u64` / `visit_i64` (via
/// `deserialize_number`), delegated for every other text.
macro_rules! number {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
            match classify(self.text) {
                Kind::U64(v) => { self.take(); visitor.visit_u64(v) }
                Kind::I64(v) => { self.take(); visitor.visit_i64(v) }
                _ => self.delegate(|de| de.$method(visitor)),
            }
        }
    )*};
}

/// Methods serde_json answers with `visit_borrowed_str` for a plain string.
macro_rules! string {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
            match classify(self.text) {
                Kind::Str(s) => { self.take(); visitor.visit_borrowed_str(s) }
                _ => self.delegate(|de| de.$method(visitor)),
            }
        }
    )*};
}

/// Methods always left to serde_json.
macro_rules! delegated {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
            self.delegate(|de| de.$method(visitor))
        }
    )*};
}

impl<'a> Deserializer<'a> for Item<'a, '_> {
    type Error = Error;

    number!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64);
    string!(deserialize_str deserialize_string deserialize_char deserialize_identifier);
    // serde_json parses 128-bit integers with `visit_i128` / `visit_u128`, and bytes as bytes.
    delegated!(deserialize_i128 deserialize_u128 deserialize_bytes deserialize_byte_buf
        deserialize_seq deserialize_map);

    #[inline]
    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match classify(self.text) {
            Kind::U64(v) => {
                self.take();
                visitor.visit_u64(v)
            }
            Kind::I64(v) => {
                self.take();
                visitor.visit_i64(v)
            }
            Kind::Bool(v) => {
                self.take();
                visitor.visit_bool(v)
            }
            Kind::Null => {
                self.take();
                visitor.visit_unit()
            }
            Kind::Str(s) => {
                self.take();
                visitor.visit_borrowed_str(s)
            }
            Kind::Other => self.delegate(|de| de.deserialize_any(visitor)),
        }
    }

    #[inline]
    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match classify(self.text) {
            Kind::Bool(v) => {
                self.take();
                visitor.visit_bool(v)
            }
            _ => self.delegate(|de| de.deserialize_bool(visitor)),
        }
    }

    #[inline]
    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match classify(self.text) {
            Kind::Null => {
                self.take();
                visitor.visit_none()
            }
            // serde_json hands itself to `visit_some` for every other value; the inner value
            // is then read through the same methods here.
            Kind::Other => self.delegate(|de| de.deserialize_option(visitor)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match classify(self.text) {
            Kind::Null => {
                self.take();
                visitor.visit_unit()
            }
            _ => self.delegate(|de| de.deserialize_unit(visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        // serde_json: `deserialize_unit`.
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == RAW_VALUE_TOKEN {
            return self.delegate(|de| de.deserialize_newtype_struct(name, visitor));
        }
        match classify(self.text) {
            Kind::Other => self.delegate(|de| de.deserialize_newtype_struct(name, visitor)),
            // serde_json hands itself to `visit_newtype_struct`.
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.delegate(|de| de.deserialize_tuple(len, visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.delegate(|de| de.deserialize_tuple_struct(name, len, visitor))
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.delegate(|de| de.deserialize_struct(name, fields, visitor))
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.delegate(|de| de.deserialize_enum(name, variants, visitor))
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match classify(self.text) {
            // serde_json skips the value, then visits unit.
            Kind::Other => self.delegate(|de| de.deserialize_ignored_any(visitor)),
            _ => {
                self.take();
                visitor.visit_unit()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_only_exact_scalars() {
        assert_eq!(classify("0"), Kind::U64(0));
        assert_eq!(classify("18446744073709551615"), Kind::U64(u64::MAX));
        assert_eq!(classify("18446744073709551616"), Kind::Other);
        assert_eq!(classify("99999999999999999999"), Kind::Other);
        assert_eq!(classify("-9223372036854775808"), Kind::I64(i64::MIN));
        assert_eq!(classify("-9223372036854775809"), Kind::Other);
        assert_eq!(classify("-1"), Kind::I64(-1));
        for other in [
            "-0",
            "00",
            "01",
            "-",
            "",
            " 1",
            "1 ",
            "1.0",
            "1e2",
            "+1",
            "-01",
            "tru",
            "true ",
            "nul",
            "\"",
            "\"a\\n\"",
            "\"a\"b\"",
            "\"\u{1}\"",
            "[]",
            "{}",
            "1a",
        ] {
            assert_eq!(classify(other), Kind::Other, "{other:?}");
        }
        assert_eq!(classify("\"é x\u{7f}\""), Kind::Str("é x\u{7f}"));
        assert_eq!(classify("\"\""), Kind::Str(""));
        assert_eq!(classify("true"), Kind::Bool(true));
        assert_eq!(classify("false"), Kind::Bool(false));
        assert_eq!(classify("null"), Kind::Null);
    }

    /// The digits a JSON integer without sign may have, the slow way.
    fn naive_digits(b: &[u8]) -> Option<u64> {
        if b.is_empty() || (b[0] == b'0' && b.len() > 1) || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    }

    #[test]
    fn digits_match_the_slow_way_at_every_length() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in 0..=22 {
            for fill in [b'0', b'1', b'5', b'9'] {
                let mut v = vec![fill; len];
                cases.push(v.clone());
                if len > 0 {
                    v[0] = b'1';
                    cases.push(v.clone());
                    // One byte out of range at each position.
                    for pos in 0..len {
                        for bad in [b'/', b':', b'a', b'-', b'.', 0xFA, 0xFF, 0x2F, 0xC3] {
                            let mut w = v.clone();
                            w[pos] = bad;
                            cases.push(w);
                        }
                    }
                }
            }
        }
        for v in [
            u64::MAX,
            u64::MAX - 1,
            10_000_000,
            99_999_999,
            100_000_000,
            12_345_678,
        ] {
            cases.push(v.to_string().into_bytes());
        }
        cases.push(b"18446744073709551616".to_vec());
        for c in cases {
            assert_eq!(digits(&c), naive_digits(&c), "{c:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn digits_match_the_slow_way(b in proptest::collection::vec(
            proptest::prop_oneof![b'0'..=b'9', proptest::num::u8::ANY], 0..22)) {
            proptest::prop_assert_eq!(digits(&b), naive_digits(&b));
        }
    }

    #[test]
    fn serde_json_here_has_no_arbitrary_precision() {
        // The workspace does not enable it; if it ever does, numbers go to serde_json.
        assert!(!arbitrary_precision());
    }
}
