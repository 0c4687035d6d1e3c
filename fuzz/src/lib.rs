//! The checks behind bistream's fuzz targets, one public function per target. Each takes the
//! raw bytes libFuzzer (or a seed file) supplies, feeds them to one decoder through its public
//! API, and panics only when an oracle is violated: a decoder must never panic, and what it
//! accepts must survive a round trip (or, for the differential target, two decoders must agree).
//!
//! Keeping the checks here, rather than in the `fuzz_targets/` files, lets the seed replay test
//! (`tests/seeds.rs`) run them on stable Rust.
#![forbid(unsafe_code)]

mod codecs;
mod relay;

#[cfg(feature = "relay-server")]
mod config;
#[cfg(feature = "logs")]
mod logs;

pub use codecs::{packet_decode, rpc_frame, ws_frame};
#[cfg(feature = "relay-server")]
pub use config::relay_config;
#[cfg(feature = "logs")]
pub use logs::log_lines;
pub use relay::{relay_differential, relay_fastpath, relay_message};

/// A target's check: panics when an oracle is violated.
pub type Check = fn(&[u8]);

/// The targets built with the enabled features, as `(name, check)`.
pub fn targets() -> Vec<(&'static str, Check)> {
    #[allow(unused_mut)]
    let mut t: Vec<(&'static str, Check)> = vec![
        ("relay_message", relay_message),
        ("relay_fastpath", relay_fastpath),
        ("relay_differential", relay_differential),
        ("packet_decode", packet_decode),
        ("rpc_frame", rpc_frame),
        ("ws_frame", ws_frame),
    ];
    #[cfg(feature = "logs")]
    t.push(("log_lines", log_lines));
    #[cfg(feature = "relay-server")]
    t.push(("relay_config", relay_config));
    t
}
