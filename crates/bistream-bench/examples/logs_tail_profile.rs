//! Profiling driver for the log tail's hot path (not part of the library): one process serves
//! the `logs` bench suite's stream (`serve`), another reads it (`ours`, `floor`), so a profiler
//! attached to the reader sees only the client. Per-line cost is then compared by instruction
//! counts (`valgrind --tool=callgrind`, `perf stat -e instructions`), which the load of a
//! shared machine does not move, instead of by wall-clock rates, which it does.
//!
//! ```text
//! cargo run --release -p bistream-bench --example logs_tail_profile -- serve 300 &   # prints 2 URLs
//! valgrind --tool=callgrind target/release/examples/logs_tail_profile ours ws://127.0.0.1:P/tail
//! valgrind --tool=callgrind target/release/examples/logs_tail_profile floor ws://127.0.0.1:P/tail
//! ```
//!
//! The servers and the floor are the suite's own (`bistream_bench::logs_stream`): ~85-byte
//! lines, WebSocket text frames of 10 lines (Ray's framing) or chunked HTTP with 64 KiB chunks;
//! the floor reads the same bytes over the same transport stack without line work. `ours` tails
//! it through `Tail::next_lines` (what `logs tail` does) with limits that never trip. Both print
//! the CPU and wall seconds of the reading thread.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use bistream_bench::logs_stream;
use bistream_core::StreamLimits;
use bistream_logs::{Tail, TailOptions};

async fn ours(url: &str) -> u64 {
    let limits = StreamLimits::builder()
        .max_lines(u64::MAX)
        .max_messages(u64::MAX)
        .max_bytes(u64::MAX)
        .build()
        .unwrap();
    let mut tail = Tail::new(url, TailOptions::new("profile").limits(limits));
    let mut n = 0u64;
    while let Some(batch) = tail
        .next_lines(|line| {
            n += 1;
            std::hint::black_box(line);
        })
        .await
    {
        batch.unwrap();
    }
    n
}

/// CPU time of this thread so far, in seconds (the reader runs on a current-thread runtime,
/// so this is the read path's CPU), from /proc/thread-self/schedstat (nanoseconds).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or_default();
    let arg = args.get(2).cloned().unwrap_or_default();
    if mode == "serve" {
        let blocks: usize = arg.parse().unwrap_or(300);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (http, ws) = logs_stream::servers(blocks).await.unwrap();
            println!("{http}\n{ws}\nlines {}", logs_stream::block().1 * blocks);
            std::future::pending::<()>().await;
        });
        return;
    }
    // The bench runs on the `bistream` binary's multi-thread runtime; the reader here runs on
    // a current-thread one, so the count is the read path's own instructions.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    match mode {
        "ours" => println!("ours: {} lines", rt.block_on(ours(&arg))),
        // The floor reads bytes without splitting lines; the rate it returns needs the count.
        "floor" => drop(rt.block_on(logs_stream::floor(&arg, 0)).unwrap()),
        _ => panic!("usage: logs_tail_profile serve BLOCKS | ours URL | floor URL"),
    }
    println!(
        "{mode}: {:.4} s CPU, {:.4} s wall",
        cpu_secs() - cpu0,
        t0.elapsed().as_secs_f64()
    );
}
