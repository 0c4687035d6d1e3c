//! The demo service of `bistream rpc serve`: `echo`, `count`, `upper`, `log`, `sleep`, `fail`
//! (specified in `docs/rpc.md`). Tests and the bench use it too.

use std::sync::Arc;
use std::time::Duration;

use bistream_rpc_proto::from_item;
use futures_util::stream;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{HandlerError, Raw, Router};

#[derive(Deserialize)]
struct Count {
    n: Option<serde_json::Number>,
    #[serde(default)]
    delay_ms: Option<serde_json::Number>,
}

#[derive(Deserialize)]
struct Sleep {
    ms: serde_json::Number,
}

fn non_negative(
    n: Option<&serde_json::Number>,
    field: &str,
    required: bool,
) -> Result<u64, HandlerError> {
    match n {
        None if !required => Ok(0),
        None => Err(HandlerError::invalid(format!("missing \"{field}\""))),
        Some(n) => n.as_u64().ok_or_else(|| {
            HandlerError::invalid(format!(
                "\"{field}\" must be a non-negative integer, got {n}"
            ))
        }),
    }
}

/// Longest `sleep`/`delay_ms` accepted (one hour), so a request cannot park a task forever.
pub const MAX_DEMO_DELAY_MS: u64 = 3_600_000;

/// The demo router. `log` lines (compact JSON of the whole `data`) go to `log`.
pub fn router(log: Arc<dyn Fn(&str) + Send + Sync>) -> Router {
    Router::new()
        .request_response("echo", |v: Raw| async move { Ok::<_, HandlerError>(v) })
        .request_stream("count", |c: Count| {
            let parsed = non_negative(c.n.as_ref(), "n", true).and_then(|n| {
                let d = non_negative(c.delay_ms.as_ref(), "delay_ms", false)?;
                if d > MAX_DEMO_DELAY_MS {
                    return Err(HandlerError::invalid(format!("\"delay_ms\" is over {MAX_DEMO_DELAY_MS}")));
                }
                Ok((n, d))
            });
            let (n, d, err) = match parsed {
                Ok((n, d)) => (n, d, None),
                Err(e) => (0, 0, Some(e)),
            };
            let first = stream::iter(err.map(Err));
            let items = stream::unfold(0u64, move |i| async move {
                if i >= n {
                    return None;
                }
                if d > 0 && i > 0 {
                    tokio::time::sleep(Duration::from_millis(d)).await;
                }
                Some((Ok(i), i + 1))
            });
            futures_util::StreamExt::chain(first, items)
        })
        .stream_stream(
            "upper",
            |_open: Raw, mut rx: crate::ServeReceiver<Raw>, mut tx: crate::ServeSender<String>| async move {
                while let Some(item) = rx.recv().await {
                    let item = item?;
                    let s: String = from_item(item.get()).map_err(|_| {
                        HandlerError::invalid(format!("upper takes string items, got {}", clip(item.get())))
                    })?;
                    tx.send(&s.to_uppercase()).await?;
                }
                Ok(())
            },
        )
        .fire_and_forget("log", move |v: Box<RawValue>| {
            let log = log.clone();
            async move { log(&compact(v.get())) }
        })
        .request_response("sleep", |s: Sleep| async move {
            let ms = non_negative(Some(&s.ms), "ms", true)?;
            if ms > MAX_DEMO_DELAY_MS {
                return Err(HandlerError::invalid(format!("\"ms\" is over {MAX_DEMO_DELAY_MS}")));
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(serde_json::json!({ "slept_ms": ms }))
        })
        .request_response("fail", |_v: Raw| async move {
            Err::<Raw, _>(HandlerError::failed("fail always fails"))
        })
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Compact JSON text of `raw` (whitespace outside strings removed; values unchanged).
pub fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_str = false;
    let mut esc = false;
    for c in raw.chars() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn compact_keeps_strings() {
        assert_eq!(
            super::compact("{ \"a b\" : [1, 2.50] }"),
            "{\"a b\":[1,2.50]}"
        );
        assert_eq!(super::compact(r#"{"q":"x\" y"}"#), r#"{"q":"x\" y"}"#);
    }
}
