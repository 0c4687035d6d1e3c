//! The relay client against relay servers, all in one test binary, one file per concern (as
//! tonic's integration tests are laid out):
//!
//! | file | concern |
//! |---|---|
//! | `support.rs` | starting relays (the REAL `proxystore-relay` from `.venv/relay`, and ours as a process), Python `RelayClient` peers, the `bistream` CLI, waits with timeouts |
//! | `forwarding.rs` | registration, forwarding with Python clients, bounces, backpressure, concurrency, drop |
//! | `reconnect.rs` | relay restarts, close while reconnecting, the retry schedule |
//! | `auth.rs` | 4001/4002/4004 as typed errors that are never retried |
//! | `tls.rs` | `wss://` with a CA file (including an openssl-made self-signed cert), verification off |
//! | `cli.rs` | `bistream relay listen` / `send`: output, exit codes, bad arguments |
//!
//! A scenario is written once, as a function of the relay [`support::Kind`], and
//! [`on_both_relays!`] makes one test per relay from it. The library's own tests that need no
//! server process (scripted misbehaving relays, the paused-clock schedule) live in
//! `crates/bistream-relay-client/tests/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

/// One test per relay server for each `name => scenario` (the scenario takes a `Kind`).
macro_rules! on_both_relays {
    ($($name:ident => $scenario:path;)*) => {
        $(
            mod $name {
                use super::*;
                use crate::support::Kind;

                #[tokio::test]
                async fn python_relay() {
                    $scenario(Kind::Python).await;
                }

                #[tokio::test]
                async fn our_relay() {
                    $scenario(Kind::Ours).await;
                }
            }
        )*
    };
}

mod support;

mod auth;
mod cli;
mod forwarding;
mod reconnect;
mod tls;
