//! `item::from_item` against `serde_json::from_str`: the same `Ok` value (compared through
//! `Debug`, so `-0.0` and `0.0` differ) and the same error text, for many target types and for
//! texts at every integer boundary, floats, strings with and without escapes, literals, arrays,
//! objects, whitespace and junk; and the same visitor calls, method by method (a probe type
//! records which `visit_*` each `deserialize_*` gets).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};
use std::marker::PhantomData;

use bistream_rpc_proto::item::from_item;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, Visitor};
use serde_json::value::RawValue;

fn same<'a, T: Deserialize<'a> + Debug>(text: &'a str) -> Result<(), TestCaseError> {
    let fast = from_item::<T>(text);
    let slow = serde_json::from_str::<T>(text);
    let ty = std::any::type_name::<T>();
    match (&fast, &slow) {
        (Ok(a), Ok(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "{} {:?}", ty, text),
        (Err(a), Err(b)) => {
            prop_assert_eq!(a.to_string(), b.to_string(), "{} {:?}", ty, text);
            prop_assert_eq!(a.classify(), b.classify(), "{} {:?}", ty, text);
        }
        _ => prop_assert!(false, "{} {:?}: fast {:?} slow {:?}", ty, text, fast, slow),
    }
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Record {
    a: u64,
    b: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct NewU64(u64);

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct NewStr<'a>(&'a str);

#[derive(Debug, serde::Deserialize)]
struct UnitStruct;

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
enum Mixed {
    Unit,
    New(bool),
    Tuple(u64, String),
    Struct { x: i32 },
}

#[derive(Debug, serde::Deserialize)]
enum Plain {
    A,
    B,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Untagged {
    Int(u64),
    Neg(i64),
    Text(String),
    Flag(bool),
    Nothing(()),
}

#[derive(Debug, serde::Deserialize)]
#[serde(tag = "t")]
#[allow(dead_code)]
enum Tagged {
    One { v: u64 },
}

/// Reads nothing from the deserializer: serde_json then reports trailing characters.
#[derive(Debug)]
struct Lazy;

impl<'de> Deserialize<'de> for Lazy {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Lazy)
    }
}

/// Records the visitor calls it gets from deserialize method number `M`.
struct Probe<const M: u8>(String);

impl<const M: u8> Debug for Probe<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{M}:{}", self.0)
    }
}

struct Rec;

impl<'de> Visitor<'de> for Rec {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(format!("bool({v})"))
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(format!("i64({v})"))
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(format!("u64({v})"))
    }
    fn visit_i128<E>(self, v: i128) -> Result<String, E> {
        Ok(format!("i128({v})"))
    }
    fn visit_u128<E>(self, v: u128) -> Result<String, E> {
        Ok(format!("u128({v})"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(format!("f64({v:?})"))
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(format!("str({v:?})"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<String, E> {
        Ok(format!("borrowed_str({v:?})"))
    }
    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(format!("string({v:?})"))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<String, E> {
        Ok(format!("bytes({v:?})"))
    }
    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<String, E> {
        Ok(format!("borrowed_bytes({v:?})"))
    }
    fn visit_none<E>(self) -> Result<String, E> {
        Ok("none".into())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        Ok(format!("some({})", d.deserialize_any(Rec)?))
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("unit".into())
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        Ok(format!("newtype({})", d.deserialize_any(Rec)?))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(format!("seq({n})"))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut keys = String::new();
        while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
            write!(keys, "{k:?},").unwrap();
        }
        Ok(format!("map({keys})"))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<String, A::Error> {
        let (name, v): (String, _) = data.variant()?;
        de::VariantAccess::unit_variant(v)?;
        Ok(format!("enum({name:?})"))
    }
}

const METHODS: u8 = 32;

impl<'de, const M: u8> Deserialize<'de> for Probe<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const FIELDS: &[&str] = &["a", "b"];
        let r = match M {
            0 => d.deserialize_any(Rec),
            1 => d.deserialize_bool(Rec),
            2 => d.deserialize_i8(Rec),
            3 => d.deserialize_i16(Rec),
            4 => d.deserialize_i32(Rec),
            5 => d.deserialize_i64(Rec),
            6 => d.deserialize_i128(Rec),
            7 => d.deserialize_u8(Rec),
            8 => d.deserialize_u16(Rec),
            9 => d.deserialize_u32(Rec),
            10 => d.deserialize_u64(Rec),
            11 => d.deserialize_u128(Rec),
            12 => d.deserialize_f32(Rec),
            13 => d.deserialize_f64(Rec),
            14 => d.deserialize_char(Rec),
            15 => d.deserialize_str(Rec),
            16 => d.deserialize_string(Rec),
            17 => d.deserialize_bytes(Rec),
            18 => d.deserialize_byte_buf(Rec),
            19 => d.deserialize_option(Rec),
            20 => d.deserialize_unit(Rec),
            21 => d.deserialize_unit_struct("U", Rec),
            22 => d.deserialize_newtype_struct("N", Rec),
            23 => d.deserialize_seq(Rec),
            24 => d.deserialize_tuple(2, Rec),
            25 => d.deserialize_tuple_struct("T", 2, Rec),
            26 => d.deserialize_map(Rec),
            27 => d.deserialize_struct("S", FIELDS, Rec),
            28 => d.deserialize_enum("E", FIELDS, Rec),
            29 => d.deserialize_identifier(Rec),
            30 => d.deserialize_ignored_any(Rec),
            _ => d.deserialize_newtype_struct("$serde_json::private::RawValue", Rec),
        };
        r.map(Probe)
    }
}

macro_rules! probes {
    ($text:expr, $($m:literal)*) => {{
        const _: () = assert!([$($m),*].len() == METHODS as usize);
        $(same::<Probe<$m>>($text)?;)*
    }};
}

/// Every comparison for one text.
fn check(text: &str) -> Result<(), TestCaseError> {
    same::<u64>(text)?;
    same::<i64>(text)?;
    same::<u8>(text)?;
    same::<i8>(text)?;
    same::<u16>(text)?;
    same::<i32>(text)?;
    same::<u32>(text)?;
    same::<u128>(text)?;
    same::<i128>(text)?;
    same::<f64>(text)?;
    same::<f32>(text)?;
    same::<bool>(text)?;
    same::<String>(text)?;
    same::<&str>(text)?;
    same::<Cow<'_, str>>(text)?;
    same::<char>(text)?;
    same::<()>(text)?;
    same::<Option<u64>>(text)?;
    same::<Option<i64>>(text)?;
    same::<Option<String>>(text)?;
    same::<Option<&str>>(text)?;
    same::<Option<()>>(text)?;
    same::<Option<Option<bool>>>(text)?;
    same::<serde_json::Value>(text)?;
    same::<serde_json::Number>(text)?;
    same::<Box<RawValue>>(text)?;
    same::<&RawValue>(text)?;
    same::<Option<Box<RawValue>>>(text)?;
    same::<Record>(text)?;
    same::<NewU64>(text)?;
    same::<NewStr<'_>>(text)?;
    same::<UnitStruct>(text)?;
    same::<PhantomData<u64>>(text)?;
    same::<Mixed>(text)?;
    same::<Plain>(text)?;
    same::<Untagged>(text)?;
    same::<Tagged>(text)?;
    same::<Vec<u64>>(text)?;
    same::<(u64, String)>(text)?;
    same::<BTreeMap<String, u64>>(text)?;
    same::<IgnoredAny>(text)?;
    same::<Lazy>(text)?;
    same::<Option<Lazy>>(text)?;
    same::<Vec<u8>>(text)?;
    same::<serde_bytes_like::Bytes>(text)?;
    probes!(text, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29
        30 31);
    Ok(())
}

/// `deserialize_bytes` without a bytes crate: borrowed bytes as serde_json hands them out.
mod serde_bytes_like {
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, Visitor};

    #[derive(Debug)]
    #[allow(dead_code)]
    pub struct Bytes(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

/// Integers around every boundary a target type has, and the odd spellings.
fn boundary_texts() -> Vec<String> {
    let mut out: Vec<String> = [
        "0", "-0", "00", "-00", "01", "-01", "0.0", "-0.0", "1", "-1", "+1", "-", "", "0x10",
        "1_000", "9.", ".5", "1e", "1e+", "--1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pivots: [i128; 16] = [
        0,
        i8::MAX as i128,
        u8::MAX as i128,
        i16::MAX as i128,
        u16::MAX as i128,
        i32::MAX as i128,
        u32::MAX as i128,
        1 << 53,
        i64::MAX as i128,
        u64::MAX as i128,
        10_000_000_000_000_000_000,
        99_999_999_999_999_999,
        999_999_999_999_999_999,
        9_999_999_999_999_999_999,
        i128::MAX,
        (u64::MAX as i128) * 10,
    ];
    for p in pivots {
        for d in -2i128..=2 {
            if let Some(v) = p.checked_add(d) {
                out.push(v.to_string());
                out.push(format!("-{}", v.unsigned_abs()));
            }
        }
    }
    out.push(u128::MAX.to_string());
    out.push(format!("{}0", u128::MAX));
    out.push(i128::MIN.to_string());
    out.push("18446744073709551616".into());
    out.push("-9223372036854775808".into());
    out.push("-9223372036854775809".into());
    out.push("-18446744073709551616".into());
    out.push("123456789012345678901234567890".into());
    out
}

fn other_texts() -> Vec<&'static str> {
    vec![
        "1.5",
        "-1.5",
        "1e3",
        "1E3",
        "1e+3",
        "1e-3",
        "-1e-3",
        "1.0e2",
        "2.5E-1",
        "1e400",
        "-1e400",
        "1e-400",
        "4.9e-324",
        "1.7976931348623157e308",
        "9007199254740993.0",
        "3.4028235e38",
        "3.5e38",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "nulll",
        "True",
        "NULL",
        " true",
        "true ",
        "\ttrue\n",
        " 1",
        "1 ",
        " -1 ",
        "\"\"",
        "\"a\"",
        "\"é\"",
        "\"x\u{7f}\"",
        "\"\u{10ffff}\"",
        "\"a\\nb\"",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "\"\\\"\"",
        "\"\\\\\"",
        "\"a\"b\"",
        "\"\u{1}\"",
        "\"\t\"",
        "\"",
        "\"abc",
        "abc\"",
        " \"a\" ",
        "\"A\"",
        "\"B\"",
        "\"Unit\"",
        "\"C\"",
        "\"ab\"",
        "[]",
        "[1]",
        "[1,2]",
        "[1,\"x\"]",
        "[1, 2 ]",
        "[[]]",
        "[-1]",
        "[256]",
        "{}",
        "{\"a\":1}",
        "{\"a\":1,\"b\":\"x\"}",
        "{\"a\":1,\"b\":null}",
        "{\"a\":-1}",
        "{\"Unit\":null}",
        "{\"New\":true}",
        "{\"Tuple\":[1,\"x\"]}",
        "{\"Struct\":{\"x\":-5}}",
        "{\"t\":\"One\",\"v\":3}",
        "{\"A\":null}",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "1,",
        "1 2",
        "nulltrue",
        "\"a\"\"b\"",
        "[1]]",
        "{\"a\":1}}",
        "\u{feff}1",
    ]
}

#[test]
fn boundaries_and_samples_agree() {
    for t in boundary_texts() {
        check(&t).unwrap();
        check(&format!("\"{t}\"")).unwrap();
        check(&format!("[{t}]")).unwrap();
    }
    for t in other_texts() {
        check(t).unwrap();
    }
}

#[test]
fn scalars_are_still_right() {
    assert_eq!(from_item::<u64>("18446744073709551615").unwrap(), u64::MAX);
    assert_eq!(from_item::<i64>("-9223372036854775808").unwrap(), i64::MIN);
    assert_eq!(
        from_item::<f64>("9007199254740993").unwrap(),
        9007199254740992.0
    );
    assert_eq!(
        from_item::<f64>("-0").unwrap().to_bits(),
        (-0.0f64).to_bits()
    );
    assert_eq!(from_item::<&str>("\"a b\"").unwrap(), "a b");
    assert_eq!(from_item::<Option<u64>>("null").unwrap(), None);
    assert_eq!(from_item::<Option<u64>>("7").unwrap(), Some(7));
    assert_eq!(
        from_item::<Box<RawValue>>("[1, 2]").unwrap().get(),
        "[1, 2]"
    );
    let e = from_item::<u8>("256").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value: integer `256`, expected u8 at line 1 column 3"
    );
    let e = from_item::<Lazy>("1").unwrap_err();
    assert_eq!(e.to_string(), "trailing characters at line 1 column 1");
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<u64>().prop_map(Into::into),
        any::<i64>().prop_map(Into::into),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Into::into),
        "[a-zé\"\\\\\u{1}\u{7f} ]{0,6}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-c]{1,2}", inner, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u128>().prop_map(|v| v.to_string()),
        any::<i128>().prop_map(|v| v.to_string()),
        (0u32..64, -3i64..=3)
            .prop_map(|(s, d)| (1i128 << s).saturating_add(i128::from(d)).to_string()),
        (0u32..64, -3i64..=3)
            .prop_map(|(s, d)| format!("-{}", (1i128 << s).saturating_add(i128::from(d)))),
        "-?[0-9]{1,22}",
        "-?[0-9]{1,4}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<f32>().prop_map(|f| f.to_string()),
        // Strings: plain, escaped, with control characters, quotes and non-ASCII.
        "\"[a-zA-Z0-9 é€😀\u{7f}]{0,10}\"",
        "\"[a-z\\\\\"nu0-9é\u{1}\t]{0,8}\"",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        any::<String>().prop_map(|s| format!("\"{s}\"")),
        prop_oneof![
            Just("true"),
            Just("false"),
            Just("null"),
            Just("tru"),
            Just("nul")
        ]
        .prop_map(String::from),
        arb_json().prop_map(|v| v.to_string()),
        arb_json().prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
        "[ -~]{0,6}",
        // Whitespace around a scalar.
        (
            "[ \t\n\r]{0,2}",
            "-?[0-9]{1,3}|true|null|\"x\"",
            "[ \t\n\r]{0,2}"
        )
            .prop_map(|(a, v, b)| format!("{a}{v}{b}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_serde_json(text in arb_text()) {
        check(&text)?;
    }
}
