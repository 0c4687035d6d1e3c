//! A reconnecting client for ProxyStore-compatible relay servers (`proxystore==1.1.0`'s
//! `proxystore-relay`, and `bistream relay serve`).
//!
//! A relay lets clients that cannot reach each other directly exchange small signaling
//! messages (WebRTC offers and answers): each client opens a WebSocket to the relay,
//! registers a UUID, and sends [`PeerConnectionRequest`]s addressed to other UUIDs. The wire
//! format is [`bistream_relay_proto`], shared with the server crate.
//!
//! What this client does for you, like ProxyStore's Python `RelayClient`:
//! * opens the connection lazily (first `send`/`recv`, or [`RelayClient::connect`]);
//! * registers, waiting up to the registration timeout for the relay's reply;
//! * reconnects in the background with exponential [`Backoff`] (1 s doubling to 60 s, with
//!   jitter) after refused connections, timeouts, DNS failures and non-fatal closes, and
//!   re-registers under the same UUID;
//! * stops for good on close codes 4001, 4002 and 4004 with a typed
//!   [`RelayError::FatalClose`] (the Python client exits the whole process instead);
//! * reads the socket continuously, so pings are answered even when the application does
//!   not call `recv`; received messages wait in a bounded queue (when it is full the client
//!   stops reading and the relay waits; nothing is dropped);
//! * reports its state as [`ConnectionState`] and a stream of [`ConnectionEvent`]s;
//! * takes `ws://`, `wss://`, `http://` or `https://` addresses (through
//!   [`bistream_core::http_to_websocket_url`]) and, for `wss://`, one [`TlsOptions`] setting:
//!   the system roots, a CA file whose certificates also pin a self-signed relay certificate
//!   (as made by `openssl req -x509`), a rustls configuration, or no verification (dangerous);
//! * passes every text a relay sends that can reach a log or an error (close reasons,
//!   rejections) through [`bistream_core::sanitize()`], and shows its address that way too.
//!
//! # Example
//!
//! Two clients exchange an offer and an answer through a relay:
//!
//! ```no_run
//! use bistream_relay_client::{DescriptionType, RelayClient, RelayError, RelayMessage};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), RelayError> {
//!     let relay = "ws://127.0.0.1:8700";
//!     let alice = RelayClient::builder(relay).name("alice").build()?;
//!     let bob = RelayClient::builder(relay).name("bob").build()?;
//!     // Register both (send/recv would also connect on first use).
//!     alice.connect(true).await?;
//!     bob.connect(true).await?;
//!
//!     alice
//!         .send(alice.peer_connection(bob.uuid(), DescriptionType::Offer, "v=0 offer"))
//!         .await?;
//!     let RelayMessage::PeerConnection(offer) = bob.recv().await? else {
//!         panic!("expected a peer message");
//!     };
//!     assert_eq!(offer.source_uuid, alice.uuid());
//!
//!     bob.send(bob.peer_connection(offer.source_uuid, DescriptionType::Answer, "v=0 answer"))
//!         .await?;
//!     match alice.recv().await? {
//!         RelayMessage::PeerConnection(answer) => println!("{}", answer.description),
//!         other => println!("unexpected: {other:?}"),
//!     }
//!
//!     // A peer the relay does not know: the message comes back with `error` set.
//!     let nobody = uuid::Uuid::new_v4();
//!     alice.send(alice.peer_connection(nobody, DescriptionType::Offer, "x")).await?;
//!     if let RelayMessage::PeerConnection(m) = alice.recv().await? {
//!         eprintln!("undeliverable: {}", m.error.unwrap_or_default());
//!     }
//!
//!     // Authentication failures are errors, not endless retries.
//!     let denied = RelayClient::builder(relay).header("Authorization", "Bearer bad").build()?;
//!     match denied.connect(true).await {
//!         Err(e) if e.is_auth_failure() => eprintln!("denied: {e}"),
//!         other => println!("{other:?}"),
//!     }
//!
//!     alice.close().await;
//!     bob.close().await; // or just drop them
//!     Ok(())
//! }
//! ```

mod backoff;
mod builder;
mod client;
mod connection;
mod error;
mod events;
mod inner;
mod registration;
mod supervisor;

pub use backoff::{Backoff, BackoffState};
/// The TLS settings and their errors: bistream-core's one TLS client setup.
pub use bistream_core::tls::{TlsConfigError, TlsOptions};
pub use builder::{RelayClientBuilder, DEFAULT_INCOMING_CAPACITY, DEFAULT_MAX_MESSAGE_SIZE};
pub use client::RelayClient;
pub use error::RelayError;
pub use events::{ConnectionEvent, ConnectionState, Events};
pub use inner::ClientStats;

/// The wire messages, re-exported from [`bistream_relay_proto`] so one import is enough.
pub use bistream_relay_proto::{
    DescriptionType, PeerConnectionRequest, RelayMessage, RelayRegistrationRequest, RelayResponse,
};
/// Re-exported for [`TlsOptions::Custom`] and [`RelayClientBuilder::tls_config`].
pub use rustls;
