//! Building a request's `data` object: the caller's fields, in their order and bytes, with
//! `"operation"` first. Values are kept as raw JSON so numbers pass through exactly.

use bistream_rpc_proto::frame::Text;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::RpcError;

struct Fields<'a>(Vec<(Text<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Fields<'a>, M::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<Text<'de>, &'de RawValue>()? {
                    v.push((k, val));
                }
                Ok(Fields(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The request `data` text for `op` given the caller's JSON value text (`null` or an object).
/// An existing `operation` field is replaced; other fields keep their order and bytes.
pub fn request_data(op: &str, json: &str) -> Result<String, RpcError> {
    let mut out = String::with_capacity(json.len() + op.len() + 20);
    out.push_str("{\"operation\":");
    bistream_rpc_proto::frame::push_json_str(&mut out, op);
    if json.trim() == "null" {
        out.push('}');
        return Ok(out);
    }
    let fields: Fields<'_> = serde_json::from_str(json)
        .map_err(|e| RpcError::Data(format!("request data must be a JSON object: {e}")))?;
    for (k, v) in fields.0 {
        if k.0 == "operation" {
            continue;
        }
        out.push(',');
        bistream_rpc_proto::frame::push_json_str(&mut out, &k.0);
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_first_values_exact() {
        let d = request_data(
            "echo",
            r#"{"b":9007199254740993,"operation":"x","a":-9223372036854775808}"#,
        )
        .unwrap();
        assert_eq!(
            d,
            r#"{"operation":"echo","b":9007199254740993,"a":-9223372036854775808}"#
        );
        assert_eq!(request_data("o", "null").unwrap(), r#"{"operation":"o"}"#);
        assert!(request_data("o", "[1]").is_err());
        assert!(request_data("o", "5").is_err());
    }
}
