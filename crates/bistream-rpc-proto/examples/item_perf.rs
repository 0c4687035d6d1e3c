//! Profiling driver for the typed item parse: parses N bare-integer item texts (`"0"`, `"1"`, …,
//! like a `count` stream's items) into `u64` with `item::from_item`, or with
//! `serde_json::from_str` when the second argument is `serde`, and prints the sum (so the work
//! is not optimized away). Run under `valgrind --tool=callgrind` and divide by N for
//! instructions per item; the texts are made before the timed loop.
//!
//! `cargo run --release -p bistream-rpc-proto --example item_perf -- 200000 [item|serde|none] [u64|str]`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(200_000);
    let serde = args.get(2).map(String::as_str) == Some("serde");
    // `none`: make the texts and sum their lengths only (the floor to subtract).
    let none = args.get(2).map(String::as_str) == Some("none");
    let strings = args.get(3).map(String::as_str) == Some("str");
    let texts: Vec<String> = (0..n)
        .map(|i| {
            if strings {
                format!("\"item {i}\"")
            } else {
                i.to_string()
            }
        })
        .collect();
    let mut sum = 0u64;
    for t in &texts {
        let t = std::hint::black_box(t.as_str());
        sum += if none {
            t.len() as u64
        } else if strings {
            let s: &str = if serde {
                serde_json::from_str(t).unwrap()
            } else {
                bistream_rpc_proto::from_item(t).unwrap()
            };
            s.len() as u64
        } else if serde {
            serde_json::from_str::<u64>(t).unwrap()
        } else {
            bistream_rpc_proto::from_item::<u64>(t).unwrap()
        };
    }
    println!("{n} items, sum {sum}");
}
