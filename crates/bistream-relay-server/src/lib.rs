//! The relay (signaling) server: a drop-in replacement for ProxyStore's `proxystore-relay`
//! (`proxystore==1.1.0` wire protocol), faster and with the original's bugs fixed.
//!
//! Clients open a WebSocket (any path), register a UUID with `relay_registration`, and send
//! `peer_connection` messages that the relay forwards to the client registered under
//! `peer_uuid` when both belong to the same user. See `docs/relay.md` for configuration,
//! authentication methods, metrics, close codes and every difference from ProxyStore.
//!
//! ```no_run
//! use bistream_relay_server::{RelayConfig, RelayServer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let relay = RelayServer::bind(RelayConfig { port: 0, ..Default::default() }).await?;
//! println!("relay listening on {}", relay.url());
//! // ... later:
//! let report = relay.shutdown().await; // clients get 1001
//! assert!(report.drained);
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cluster;
pub mod config;
mod conn;
mod fdlimit;
pub mod metrics;
mod ops;
mod registry;
mod server;
mod tls;
mod tracked;

pub use auth::AuthSetupError;
/// The close reasons the server sends, defined with the protocol (re-exported for callers
/// that used them from here).
pub use bistream_relay_proto::{
    AT_CAPACITY_REASON, KEEPALIVE_TIMEOUT_REASON, SEND_QUEUE_FULL_REASON as SEND_QUEUE_FULL,
};
pub use cluster::{ClusterConfig, ClusterSection};
pub use config::{AuthConfig, ConfigError, FileConfig, RelayConfig, TlsFiles};
pub use conn::MAX_NAME_BYTES;
pub use metrics::{Metrics, MetricsSnapshot};
pub use server::{build_authenticator, RelayServer, RunningRelay, ServerError, ShutdownReport};
pub use tls::TlsError;
