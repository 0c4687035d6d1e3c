//! The builder: every setting of a [`RelayClient`], checked once by
//! [`RelayClientBuilder::build`], and the [`Config`] the running client reads.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bistream_core::{http_to_websocket_url, parse_web_url, sanitize};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::Connector;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::{RelayClient, RelayError};
use bistream_core::tls::{self, TlsOptions};

/// Default size of the queue of received messages waiting for `recv`.
pub const DEFAULT_INCOMING_CAPACITY: usize = 128;
/// Default largest message sent or received: 1 MiB, the limit of ProxyStore's server and client.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Builds a [`RelayClient`]. Nothing touches the network until the client's first `send`,
/// `recv` or `connect`.
///
/// ```
/// use std::time::Duration;
/// use bistream_relay_client::{Backoff, RelayClient};
///
/// let client = RelayClient::builder("ws://127.0.0.1:8700")
///     .name("worker-1")
///     .header("Authorization", "Bearer not-a-real-token")
///     .registration_timeout(Duration::from_secs(5))
///     .backoff(Backoff { max: Duration::from_secs(10), ..Backoff::default() })
///     .build()
///     .unwrap();
/// assert_eq!(client.name(), "worker-1");
///
/// // http(s):// addresses are converted to ws(s)://.
/// let client = RelayClient::builder("http://127.0.0.1:8700/").build().unwrap();
/// assert_eq!(client.address(), "ws://127.0.0.1:8700/");
///
/// // Bad input is reported by build(), before any connection is tried.
/// let err = RelayClient::builder("ftp://127.0.0.1:8700").build().unwrap_err();
/// assert!(err.to_string().contains("ws://"));
/// ```
#[derive(Clone)]
pub struct RelayClientBuilder {
    address: String,
    name: Option<String>,
    uuid: Option<Uuid>,
    headers: Vec<(String, String)>,
    registration_timeout: Duration,
    reconnect: bool,
    backoff: Backoff,
    stable_after: Duration,
    keepalive: Option<Duration>,
    incoming_capacity: usize,
    max_message_size: usize,
    tls: TlsOptions,
    #[cfg(test)]
    dialer: Option<Dialer>,
}

/// Tests only: makes the byte stream of each connection attempt instead of TCP.
#[cfg(test)]
pub(crate) type Dialer = Arc<dyn Fn() -> Box<dyn crate::connection::Io> + Send + Sync>;

impl fmt::Debug for RelayClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be bearer tokens: only their names are shown.
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RelayClientBuilder")
            .field("address", &sanitize(&self.address))
            .field("name", &self.name.as_deref().map(sanitize))
            .field("uuid", &self.uuid)
            .field("headers", &header_names)
            .field("registration_timeout", &self.registration_timeout)
            .field("reconnect", &self.reconnect)
            .field("backoff", &self.backoff)
            .field("stable_after", &self.stable_after)
            .field("keepalive", &self.keepalive)
            .field("incoming_capacity", &self.incoming_capacity)
            .field("max_message_size", &self.max_message_size)
            .field("tls", &self.tls)
            .finish()
    }
}

impl RelayClientBuilder {
    pub(crate) fn new(address: impl Into<String>) -> Self {
        RelayClientBuilder {
            address: address.into(),
            name: None,
            uuid: None,
            headers: Vec::new(),
            registration_timeout: Duration::from_secs(10),
            reconnect: true,
            backoff: Backoff::default(),
            stable_after: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(20)),
            incoming_capacity: DEFAULT_INCOMING_CAPACITY,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            tls: TlsOptions::default(),
            #[cfg(test)]
            dialer: None,
        }
    }

    /// The name to register with (default: this machine's host name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The UUID to register with (default: a random v4 UUID). Reconnects reuse it.
    pub fn uuid(mut self, uuid: Uuid) -> Self {
        self.uuid = Some(uuid);
        self
    }

    /// Adds a header to the WebSocket handshake, e.g. `Authorization: Bearer <token>` for a
    /// relay with authentication. Values are never logged.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How long to wait for the WebSocket to open, and again for the registration reply
    /// (default 10 s, as ProxyStore).
    pub fn registration_timeout(mut self, timeout: Duration) -> Self {
        self.registration_timeout = timeout;
        self
    }

    /// Whether a background task reconnects (and re-registers) as soon as the connection
    /// drops (default on). When off, reconnection happens only inside `send`/`recv`/`connect`.
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// The retry schedule (default 1 s doubling to 60 s, 10 % jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A connection that stayed registered this long resets the backoff, and its loss is
    /// followed by an immediate reconnect attempt (default 10 s). A connection that ends
    /// sooner counts as a failed attempt, so a relay that accepts and then drops every
    /// connection is not hammered.
    pub fn stable_after(mut self, after: Duration) -> Self {
        self.stable_after = after;
        self
    }

    /// Ping the relay after this long without traffic and drop the connection (then
    /// reconnect) when nothing at all arrives for another such period (default 20 s, as
    /// Python websockets); `None` turns keepalive off.
    pub fn keepalive(mut self, interval: Option<Duration>) -> Self {
        self.keepalive = interval;
        self
    }

    /// How many received messages may wait for `recv` (default 128). When the queue is full
    /// the client stops reading the socket until `recv` makes room: the relay then waits to
    /// send to this client (TCP backpressure); nothing is dropped.
    pub fn incoming_capacity(mut self, capacity: usize) -> Self {
        self.incoming_capacity = capacity;
        self
    }

    /// The largest message sent or received, in bytes of JSON text (default 1 MiB). A larger
    /// outgoing message is refused by `send`; a larger incoming one breaks the connection
    /// (close 1009) and the client reconnects.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// TLS settings for `wss://` addresses (default: [`TlsOptions::SystemRoots`]). This and
    /// the three shortcuts below each replace the previous TLS setting: the last call wins.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Use this rustls configuration as is for `wss://` ([`TlsOptions::Custom`]).
    pub fn tls_config(self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls(TlsOptions::Custom(config))
    }

    /// Trust only the certificates in this PEM file for `wss://` ([`TlsOptions::CaFile`]):
    /// as CAs, and as exact pins, so a self-signed relay certificate made with
    /// `openssl req -x509` is accepted when it is in the file (host name and dates are still
    /// checked). The system roots are not used.
    pub fn ca_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls(TlsOptions::CaFile(path.into()))
    }

    /// **Dangerous**: accept any certificate for any host name on `wss://`
    /// ([`TlsOptions::DangerAcceptAnyCertificate`], ProxyStore's `verify_certificate=False`).
    /// Anyone on the network path can impersonate the relay and read the bearer token. For
    /// tests with throw-away certificates only; to trust one self-signed certificate, give it
    /// to [`ca_file`](Self::ca_file) instead. To verify again, set another TLS option.
    pub fn danger_accept_any_certificate(self) -> Self {
        self.tls(TlsOptions::DangerAcceptAnyCertificate)
    }

    /// Checks every setting and makes the client (without connecting).
    ///
    /// The address goes through [`bistream_core::http_to_websocket_url`]: `ws://` and `wss://`
    /// are kept, `http://` and `https://` become `ws://` and `wss://`, and the URL is
    /// normalised (lowercase scheme and host, default port dropped, `/` for an empty path).
    pub fn build(self) -> Result<RelayClient, RelayError> {
        let url = http_to_websocket_url(&self.address)?;
        let secure = parse_web_url(&url)?.0.is_tls();
        // Core's URL rules are stricter than the WebSocket library's; check anyway, so a
        // refusal shows here rather than on every connection attempt.
        if let Err(e) = url.as_str().into_client_request() {
            return Err(RelayError::InvalidConfig(format!(
                "the WebSocket library refused the relay address {}: {}",
                sanitize(&url),
                sanitize(&e.to_string())
            )));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let hn = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| {
                RelayError::InvalidHeader {
                    name: sanitize(name),
                    reason: e.to_string(),
                }
            })?;
            let mut hv =
                HeaderValue::from_str(value.trim()).map_err(|_| RelayError::InvalidHeader {
                    name: sanitize(name),
                    reason: "the value has characters not allowed in a header".into(),
                })?;
            hv.set_sensitive(true);
            headers.append(hn, hv);
        }
        self.backoff.validate()?;
        if self.registration_timeout.is_zero() {
            return Err(RelayError::InvalidConfig(
                "the registration timeout must be larger than zero".into(),
            ));
        }
        if self.incoming_capacity == 0 {
            return Err(RelayError::InvalidConfig(
                "the incoming queue capacity must be at least 1".into(),
            ));
        }
        if self.max_message_size < 1024 {
            return Err(RelayError::InvalidConfig(format!(
                "max_message_size {} is too small to hold a registration (at least 1024)",
                self.max_message_size
            )));
        }
        if self.keepalive.is_some_and(|k| k.is_zero()) {
            return Err(RelayError::InvalidConfig(
                "the keepalive interval must be larger than zero (or None)".into(),
            ));
        }
        let connector = if secure {
            Some(Connector::Rustls(tls::client_config(&self.tls)?))
        } else {
            None
        };
        let cfg = Config {
            log_address: sanitize(&url),
            url,
            headers,
            name: self.name.unwrap_or_else(default_name),
            uuid: self.uuid.unwrap_or_else(Uuid::new_v4),
            registration_timeout: self.registration_timeout,
            reconnect: self.reconnect,
            backoff: self.backoff,
            stable_after: self.stable_after,
            keepalive: self.keepalive,
            incoming_capacity: self.incoming_capacity,
            max_message_size: self.max_message_size,
            connector,
            #[cfg(test)]
            dialer: self.dialer,
        };
        Ok(RelayClient::from_config(cfg))
    }

    /// Tests only: every connection attempt runs over the stream this makes.
    #[cfg(test)]
    pub(crate) fn dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = Some(dialer);
        self
    }

    /// The TLS setting in effect (the last TLS call wins).
    #[cfg(test)]
    pub(crate) fn tls_options(&self) -> &TlsOptions {
        &self.tls
    }
}

fn default_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bistream-relay-client".to_string())
}

/// The checked settings of a client, read by its tasks.
pub(crate) struct Config {
    /// The `ws://` or `wss://` URL (normalised; may carry credentials: never log it).
    pub(crate) url: String,
    /// The URL through the sanitizer, for logs, errors and [`RelayClient::address`].
    pub(crate) log_address: String,
    pub(crate) headers: HeaderMap,
    pub(crate) name: String,
    pub(crate) uuid: Uuid,
    pub(crate) registration_timeout: Duration,
    pub(crate) reconnect: bool,
    pub(crate) backoff: Backoff,
    pub(crate) stable_after: Duration,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) incoming_capacity: usize,
    pub(crate) max_message_size: usize,
    pub(crate) connector: Option<Connector>,
    #[cfg(test)]
    pub(crate) dialer: Option<Dialer>,
}

impl Config {
    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
            .read_buffer_size(64 * 1024)
            .write_buffer_size(64 * 1024)
            // One message plus framing: `send` waits for each write, so no more is ever queued.
            .max_write_buffer_size(self.max_message_size + 64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectionState;
    use bistream_core::REDACTED;

    #[test]
    fn address_validation() {
        for bad in [
            "ftp://127.0.0.1:1",
            "127.0.0.1:1",
            "",
            "ws//x",
            "http:host",
            "ws://h/#frag",
        ] {
            let e = RelayClient::new(bad).unwrap_err();
            assert!(matches!(e, RelayError::InvalidAddress(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("ws://, wss://"), "{e}");
        }
        for bad in ["ws://", "ws://:80/", "ws://host:99999/", "ws://a b/"] {
            let e = RelayClient::new(bad).unwrap_err();
            assert!(matches!(e, RelayError::InvalidAddress(_)), "{bad:?}: {e:?}");
        }
        for (good, want) in [
            ("ws://127.0.0.1:8700", "ws://127.0.0.1:8700/"),
            (
                "ws://localhost/some/path?x=1",
                "ws://localhost/some/path?x=1",
            ),
            ("ws://[::1]:8700/", "ws://[::1]:8700/"),
            ("WS://127.0.0.1:1", "ws://127.0.0.1:1/"),
            ("http://127.0.0.1:8700", "ws://127.0.0.1:8700/"),
            ("https://relay.example:443/r", "wss://relay.example/r"),
            (
                "HTTP://Relay.Example:8700/x?y=1",
                "ws://relay.example:8700/x?y=1",
            ),
        ] {
            assert_eq!(RelayClient::new(good).unwrap().address(), want, "{good}");
        }
    }

    #[test]
    fn rejected_addresses_do_not_echo_secrets_or_controls() {
        for bad in [
            "ftp://bob:hunter2@relay/",
            "ws://bob:hunter2@relay/#x",
            "ws://relay/\x1b[31m?token=s3cr3t-value",
            "ws://relay/\u{202e}\n",
        ] {
            let e = RelayClient::new(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("s3cr3t"), "{e}");
            assert!(!e.contains('\x1b') && !e.contains('\u{202e}'), "{e}");
        }
        // Accepted: a bidi override in the path is percent-encoded, so it cannot reach a log.
        let c = RelayClient::new("ws://relay/\u{202e}").unwrap();
        assert_eq!(c.address(), "ws://relay/%E2%80%AE");
    }

    #[test]
    fn logged_address_hides_credentials_and_query_tokens() {
        let c = RelayClient::new("wss://bob:hunter2@relay.example/x?token=s3cr3t&v=1").unwrap();
        let shown = c.address();
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains(REDACTED), "{shown}");
        assert!(
            shown.starts_with("wss://") && shown.contains("relay.example/x?"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let b = RelayClient::builder("ws://relay/?access_token=abcdef123456");
        assert!(!format!("{b:?}").contains("abcdef123456"), "{b:?}");
    }

    #[test]
    fn defaults_and_header_validation() {
        let c = RelayClient::new("ws://127.0.0.1:1").unwrap();
        assert!(!c.name().is_empty());
        assert_eq!(c.uuid().get_version_num(), 4);
        assert_eq!(c.state(), ConnectionState::Disconnected);
        assert!(!c.is_connected());

        let e = RelayClient::builder("ws://127.0.0.1:1")
            .header("Bad Name", "x")
            .build()
            .unwrap_err();
        assert!(matches!(e, RelayError::InvalidHeader { .. }), "{e:?}");
        let e = RelayClient::builder("ws://127.0.0.1:1")
            .header("Authorization", "Bearer secret\nInjected: yes")
            .build()
            .unwrap_err();
        assert!(matches!(e, RelayError::InvalidHeader { .. }), "{e:?}");
        assert!(!e.to_string().contains("secret"), "{e}");
        // A hostile header name is escaped and bounded in the error.
        let e = RelayClient::builder("ws://127.0.0.1:1")
            .header(format!("\x1b[2J{}", "n".repeat(10_000)), "x")
            .build()
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\x1b') && e.len() < 5000, "{}", e.len());
    }

    #[test]
    fn config_validation() {
        let b = || RelayClient::builder("ws://127.0.0.1:1");
        for builder in [
            b().incoming_capacity(0),
            b().registration_timeout(Duration::ZERO),
            b().max_message_size(10),
            b().keepalive(Some(Duration::ZERO)),
            b().backoff(Backoff {
                factor: 0.0,
                ..Backoff::default()
            }),
        ] {
            let e = builder.build().unwrap_err();
            assert!(matches!(e, RelayError::InvalidConfig(_)), "{e:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let b = RelayClient::builder("wss://user:hunter2@relay.example/x")
            .header("Authorization", "Bearer tok3n")
            .danger_accept_any_certificate();
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("tok3n") && !dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("Authorization"), "{dbg}");
        let c = b.build().unwrap();
        assert_eq!(c.address(), format!("wss://{REDACTED}@relay.example/x"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// Each TLS call replaces the previous one; none silently undoes another's file.
    #[test]
    fn the_last_tls_setting_wins() {
        let b = || RelayClient::builder("wss://relay.example/");
        assert!(matches!(b().tls_options(), TlsOptions::SystemRoots));
        let t = b().danger_accept_any_certificate().ca_file("/x/ca.pem");
        assert!(matches!(t.tls_options(), TlsOptions::CaFile(p) if p.ends_with("ca.pem")));
        let t = b().ca_file("/x/ca.pem").danger_accept_any_certificate();
        assert!(matches!(
            t.tls_options(),
            TlsOptions::DangerAcceptAnyCertificate
        ));
        let t = b().ca_file("/x/ca.pem").tls(TlsOptions::SystemRoots);
        assert!(matches!(t.tls_options(), TlsOptions::SystemRoots));
        // The CA file is read by build(), for wss:// only.
        let e = b().ca_file("/nonexistent/ca.pem").build().unwrap_err();
        assert!(
            matches!(
                e,
                RelayError::TlsConfig(crate::TlsConfigError::CaFileUnreadable { .. })
            ),
            "{e:?}"
        );
        RelayClient::builder("ws://relay.example/")
            .ca_file("/nonexistent/ca.pem")
            .build()
            .unwrap();
    }
}
