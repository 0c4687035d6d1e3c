//! The reconnecting client: its builder, the connect-and-register loop with backoff, the
//! background reconnect task, and the public `send`/`recv`/`close` calls.
//!
//! Structure: one `Inner` shared (by `Arc`) between the application's [`RelayClient`] handle
//! and two kinds of task. A *connection task* (one per registered WebSocket, see
//! `connection.rs`) owns the socket: it reads continuously (so pings are answered even when
//! nobody calls `recv`), pushes decoded messages into one bounded queue that survives
//! reconnects, and writes what `send` hands it. The *supervisor* (only with background
//! reconnect on) waits for a connection to end and runs the connect loop again. Every
//! connection attempt runs under one lock, so concurrent callers never open two sockets.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bistream_relay_proto::{
    DescriptionType, PeerConnectionRequest, RelayMessage, RelayRegistrationRequest,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::{Backoff, BackoffState};
use crate::connection::{self, Outgoing, WsStream};
use crate::events::{ConnectionEvent, ConnectionState, Events, EVENT_CAPACITY};
use crate::tls::{self, TlsOptions};
use crate::RelayError;

/// Default size of the queue of received messages waiting for `recv`.
pub const DEFAULT_INCOMING_CAPACITY: usize = 128;
/// Default largest message sent or received: 1 MiB, the limit of ProxyStore's server and client.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Outgoing messages waiting for the connection task (each `send` waits for its own write).
const OUTGOING_CAPACITY: usize = 32;

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
/// // Bad input is reported by build(), before any connection is tried.
/// let err = RelayClient::builder("http://127.0.0.1:8700").build().unwrap_err();
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
}

impl fmt::Debug for RelayClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be bearer tokens: only their names are shown.
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RelayClientBuilder")
            .field("address", &redact_address(&self.address))
            .field("name", &self.name)
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
    fn new(address: impl Into<String>) -> Self {
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
    pub fn build(self) -> Result<RelayClient, RelayError> {
        let secure = if self.address.starts_with("wss://") {
            true
        } else if self.address.starts_with("ws://") {
            false
        } else {
            return Err(RelayError::InvalidAddress {
                address: redact_address(&self.address),
                reason: "a relay address must start with ws:// or wss://".into(),
            });
        };
        // Parse once now so a malformed address fails here rather than on every attempt.
        let request = self.address.as_str().into_client_request().map_err(|e| {
            RelayError::InvalidAddress {
                address: redact_address(&self.address),
                reason: e.to_string(),
            }
        })?;
        if request.uri().host().is_none_or(str::is_empty) {
            return Err(RelayError::InvalidAddress {
                address: redact_address(&self.address),
                reason: "no host".into(),
            });
        }
        if has_bad_port(request.uri()) {
            return Err(RelayError::InvalidAddress {
                address: redact_address(&self.address),
                reason: "the port is not a number from 0 to 65535".into(),
            });
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let hn = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| {
                RelayError::InvalidHeader {
                    name: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            let mut hv =
                HeaderValue::from_str(value.trim()).map_err(|_| RelayError::InvalidHeader {
                    name: name.clone(),
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
        let name = self.name.unwrap_or_else(default_name);
        let uuid = self.uuid.unwrap_or_else(Uuid::new_v4);
        let (incoming_tx, incoming_rx) = mpsc::channel(self.incoming_capacity);
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let cfg = Config {
            log_address: redact_address(&self.address),
            url: self.address,
            headers,
            name,
            uuid,
            registration_timeout: self.registration_timeout,
            reconnect: self.reconnect,
            backoff: self.backoff,
            stable_after: self.stable_after,
            keepalive: self.keepalive,
            max_message_size: self.max_message_size,
            connector,
        };
        Ok(RelayClient {
            inner: Arc::new(Inner {
                shared: Mutex::new(Shared {
                    conn: None,
                    failed: None,
                    backoff: cfg.backoff.start(),
                    last_disconnect: None,
                    supervisor: None,
                    conn_task: None,
                }),
                cfg,
                cancel: CancellationToken::new(),
                connect_lock: tokio::sync::Mutex::new(()),
                incoming_tx,
                incoming_rx: tokio::sync::Mutex::new(incoming_rx),
                state,
                events,
                stats: Counters::default(),
            }),
        })
    }
}

/// Whether the authority names a port that is not a valid `u16` (the URI parser accepts
/// `:99999` and then reports no port at all).
fn has_bad_port(uri: &tokio_tungstenite::tungstenite::http::Uri) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    let host_port = authority.as_str().rsplit('@').next().unwrap_or("");
    // Skip an IPv6 literal's colons.
    let after_host = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    match after_host.rfind(':') {
        Some(i) => after_host[i + 1..].parse::<u16>().is_err(),
        None => false,
    }
}

fn default_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bistream-relay-client".to_string())
}

/// The address with any `user:password@` part hidden, for logs and errors.
pub(crate) fn redact_address(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else {
        return address.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => address.to_string(),
    }
}

pub(crate) struct Config {
    url: String,
    pub(crate) log_address: String,
    headers: HeaderMap,
    name: String,
    uuid: Uuid,
    registration_timeout: Duration,
    reconnect: bool,
    backoff: Backoff,
    stable_after: Duration,
    pub(crate) keepalive: Option<Duration>,
    max_message_size: usize,
    connector: Option<Connector>,
}

impl Config {
    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
            .read_buffer_size(64 * 1024)
            .write_buffer_size(64 * 1024)
            // One message plus framing: `send` waits for each write, so no more is ever queued.
            .max_write_buffer_size(self.max_message_size + 64 * 1024)
    }
}

/// Counters of what the client did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Successful registrations (1 + reconnects).
    pub registrations: u64,
    /// Messages written to the relay.
    pub messages_sent: u64,
    /// Relay messages received and queued for `recv`.
    pub messages_received: u64,
    /// Text frames that did not decode (each returned once by `recv` as an error).
    pub decode_errors: u64,
    /// Binary frames from the relay, which the protocol does not use (ignored and logged).
    pub binary_frames_ignored: u64,
    /// Received messages discarded because the client was closed before `recv` took them
    /// from a paused connection.
    pub dropped_on_close: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) registrations: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) binary_frames_ignored: AtomicU64,
    pub(crate) dropped_on_close: AtomicU64,
}

/// One registered connection, as seen by callers: where to hand outgoing messages and a
/// token cancelled when the connection task has ended.
pub(crate) struct ConnHandle {
    out_tx: mpsc::Sender<Outgoing>,
    pub(crate) ended: CancellationToken,
    connected_at: Instant,
}

struct Shared {
    conn: Option<Arc<ConnHandle>>,
    failed: Option<RelayError>,
    backoff: BackoffState,
    last_disconnect: Option<RelayError>,
    supervisor: Option<JoinHandle<()>>,
    conn_task: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    pub(crate) cfg: Config,
    /// Cancelled by `close()` or by dropping the [`RelayClient`]: stops every task.
    pub(crate) cancel: CancellationToken,
    connect_lock: tokio::sync::Mutex<()>,
    shared: Mutex<Shared>,
    pub(crate) incoming_tx: mpsc::Sender<Result<RelayMessage, RelayError>>,
    incoming_rx: tokio::sync::Mutex<mpsc::Receiver<Result<RelayMessage, RelayError>>>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ConnectionEvent>,
    pub(crate) stats: Counters,
}

/// Who runs the connect loop: the application (an error is returned to it) or the
/// background supervisor (an error that is not retried stops the client for good, since
/// nobody else would see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Application,
    Supervisor,
}

impl Inner {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock would be a bug in this crate; the data (plain
        // fields) stays consistent, so keep going rather than poison every caller.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_state(&self, s: ConnectionState) {
        self.state.send_replace(s);
    }

    pub(crate) fn emit(&self, e: ConnectionEvent) {
        // No receivers is fine: events are optional to observe.
        let _ = self.events.send(e);
    }

    /// The error every call returns once the client is closed or has failed for good.
    fn terminal_error(&self) -> Option<RelayError> {
        if let Some(e) = &self.shared().failed {
            return Some(e.clone());
        }
        if self.cancel.is_cancelled() {
            return Some(RelayError::Closed);
        }
        None
    }

    fn live_conn(&self) -> Option<Arc<ConnHandle>> {
        self.shared()
            .conn
            .as_ref()
            .filter(|c| !c.ended.is_cancelled())
            .cloned()
    }

    fn fail(&self, e: RelayError) {
        {
            let mut sh = self.shared();
            if sh.failed.is_some() {
                return;
            }
            sh.failed = Some(e.clone());
        }
        tracing::error!(relay = %self.cfg.log_address, error = %e, "relay client stopped");
        self.set_state(ConnectionState::Failed(e.clone()));
        self.emit(ConnectionEvent::Failed(e));
    }

    /// Called by a connection task when its socket is gone.
    pub(crate) fn connection_ended(&self, code: u16, reason: String) {
        if self.cancel.is_cancelled() {
            return;
        }
        let err = RelayError::from_close(code, reason.clone());
        self.shared().last_disconnect = Some(err.clone());
        tracing::warn!(relay = %self.cfg.log_address, code, reason = %reason, "relay connection lost");
        self.emit(ConnectionEvent::Disconnected { code, reason });
        if let RelayError::FatalClose { .. } = err {
            self.fail(err);
        } else {
            self.set_state(ConnectionState::Disconnected);
        }
    }

    async fn connect(self: &Arc<Self>, retry: bool, caller: Caller) -> Result<(), RelayError> {
        if let Some(e) = self.terminal_error() {
            return Err(e);
        }
        let _guard = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(RelayError::Closed),
            g = self.connect_lock.lock() => g,
        };
        // Whoever held the lock before may have connected, failed, or been closed.
        if let Some(e) = self.terminal_error() {
            return Err(e);
        }
        if self.live_conn().is_some() {
            return Ok(());
        }
        self.establish(retry, caller).await
    }

    /// The connect loop (called with the connect lock held).
    async fn establish(self: &Arc<Self>, retry: bool, caller: Caller) -> Result<(), RelayError> {
        // After a lost connection: reconnect at once if it had been up for a while,
        // otherwise count the loss as a failed attempt and wait first.
        let first_wait = {
            let mut sh = self.shared();
            match sh.conn.take() {
                Some(old) if old.connected_at.elapsed() >= self.cfg.stable_after => {
                    sh.backoff.reset();
                    None
                }
                Some(_) if retry => {
                    let err = sh
                        .last_disconnect
                        .clone()
                        .unwrap_or(RelayError::Disconnected {
                            code: 1006,
                            reason: "connection lost".into(),
                        });
                    let delay = sh.backoff.next_delay();
                    Some((sh.backoff.attempts(), delay, err))
                }
                _ => None,
            }
        };
        if let Some((attempt, delay, error)) = first_wait {
            self.wait_before_retry(attempt, delay, error).await?;
        }
        loop {
            let attempt = self.shared().backoff.attempts() + 1;
            self.set_state(ConnectionState::Connecting { attempt });
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Err(RelayError::Closed),
                r = self.register_once() => r,
            };
            match result {
                Ok(ws) => {
                    self.install(ws);
                    return Ok(());
                }
                Err(RelayError::Closed) => return Err(RelayError::Closed),
                Err(e) if retry && e.is_retryable() => {
                    let (attempt, delay) = {
                        let mut sh = self.shared();
                        let d = sh.backoff.next_delay();
                        (sh.backoff.attempts(), d)
                    };
                    self.wait_before_retry(attempt, delay, e).await?;
                }
                Err(e) => {
                    if matches!(e, RelayError::FatalClose { .. }) || caller == Caller::Supervisor {
                        self.fail(e.clone());
                    } else {
                        self.set_state(ConnectionState::Disconnected);
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn wait_before_retry(
        &self,
        attempt: u32,
        delay: Duration,
        error: RelayError,
    ) -> Result<(), RelayError> {
        tracing::warn!(
            relay = %self.cfg.log_address,
            error = %error,
            attempt,
            "relay registration failed; retrying in {:.1} s",
            delay.as_secs_f64()
        );
        self.set_state(ConnectionState::Retrying { delay });
        self.emit(ConnectionEvent::Retrying {
            attempt,
            delay,
            error,
        });
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(RelayError::Closed),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// One attempt: open the WebSocket, send the registration, wait for the reply.
    async fn register_once(&self) -> Result<WsStream, RelayError> {
        let cfg = &self.cfg;
        let timeout = cfg.registration_timeout;
        let mut request =
            cfg.url
                .as_str()
                .into_client_request()
                .map_err(|e| RelayError::InvalidAddress {
                    address: cfg.log_address.clone(),
                    reason: e.to_string(),
                })?;
        for (name, value) in &cfg.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let open = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(cfg.ws_config()),
            true,
            cfg.connector.clone(),
        );
        let (mut ws, _response) = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| RelayError::Timeout {
                after: timeout,
                during: "opening the WebSocket",
            })?
            .map_err(RelayError::from_ws)?;

        let registration = RelayMessage::Registration(RelayRegistrationRequest {
            name: cfg.name.clone(),
            uuid: cfg.uuid,
        })
        .encode();
        let reply = async {
            ws.send(Message::text(registration))
                .await
                .map_err(RelayError::from_ws)?;
            loop {
                let msg = match ws.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(RelayError::from_ws(e)),
                    None => {
                        return Err(RelayError::Disconnected {
                            code: 1006,
                            reason: "connection dropped during registration".into(),
                        })
                    }
                };
                match msg {
                    Message::Text(t) => return registration_reply(&t),
                    Message::Binary(b) => {
                        return Err(RelayError::RegistrationRejected(format!(
                            "the relay answered with a {}-byte binary frame",
                            b.len()
                        )))
                    }
                    Message::Close(frame) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        return Err(RelayError::from_close(code, reason));
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
        };
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(())) => Ok(ws),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RelayError::Timeout {
                after: timeout,
                during: "waiting for the registration reply",
            }),
        }
    }

    /// Makes a registered socket the current connection and starts its task.
    fn install(self: &Arc<Self>, ws: WsStream) {
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let handle = Arc::new(ConnHandle {
            out_tx,
            ended: CancellationToken::new(),
            connected_at: Instant::now(),
        });
        let registrations = self.stats.registrations.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            relay = %self.cfg.log_address,
            uuid = %self.cfg.uuid,
            name = %self.cfg.name,
            registrations,
            "registered with the relay"
        );
        // State and event first, so they can never follow the connection's own end.
        self.set_state(ConnectionState::Connected);
        self.emit(ConnectionEvent::Connected { registrations });
        let task = tokio::spawn(connection::run(
            self.clone(),
            ws,
            out_rx,
            handle.ended.clone(),
        ));
        let mut sh = self.shared();
        sh.conn = Some(handle);
        sh.conn_task = Some(task);
        if self.cfg.reconnect && sh.supervisor.is_none() {
            sh.supervisor = Some(tokio::spawn(supervise(self.clone())));
        }
    }

    /// Closes the client once: stops the tasks; `true` for the first call.
    fn shut_down(&self) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        self.cancel.cancel();
        if !self.state.borrow().is_terminal() {
            self.set_state(ConnectionState::Closed);
        }
        self.emit(ConnectionEvent::Closed);
        true
    }
}

fn registration_reply(text: &str) -> Result<(), RelayError> {
    match RelayMessage::decode(text) {
        Ok(RelayMessage::Response(r)) if r.success => Ok(()),
        Ok(RelayMessage::Response(r)) => Err(RelayError::RegistrationRejected(
            r.message
                .unwrap_or_else(|| "the relay replied success=false with no message".into()),
        )),
        Ok(other) => Err(RelayError::RegistrationRejected(format!(
            "the relay replied with a {} message instead of a relay_response",
            other.type_name()
        ))),
        Err(e) => Err(RelayError::RegistrationRejected(format!(
            "the relay's reply could not be decoded: {e}"
        ))),
    }
}

/// The background reconnect task: waits for the current connection to end, then runs the
/// connect loop again. Ends when the client is closed or fails for good.
async fn supervise(inner: Arc<Inner>) {
    loop {
        let conn = inner.live_conn();
        if let Some(conn) = conn {
            tokio::select! {
                biased;
                _ = inner.cancel.cancelled() => return,
                _ = conn.ended.cancelled() => {}
            }
        }
        if inner.terminal_error().is_some() {
            return;
        }
        if inner.connect(true, Caller::Supervisor).await.is_err() {
            // Closed, or failed for good (already recorded and announced).
            return;
        }
    }
}

/// A reconnecting client of a ProxyStore-compatible relay server.
///
/// Register under a UUID, then exchange [`RelayMessage`]s with other clients through the
/// relay. The WebSocket is opened lazily, re-opened with backoff when it drops, and
/// re-registered under the same UUID; close codes 4001, 4002 and 4004 stop the client with
/// [`RelayError::FatalClose`] instead. Dropping the client closes it (the close frame is sent
/// by a background task); [`close`](Self::close) does the same and waits for it.
///
/// All methods take `&self`: share the client with an `Arc` to send from one task while
/// another receives.
///
/// ```no_run
/// use bistream_relay_client::{ConnectionEvent, DescriptionType, RelayClient, RelayMessage};
///
/// # async fn demo() -> Result<(), bistream_relay_client::RelayError> {
/// let client = RelayClient::builder("ws://127.0.0.1:8700").name("alice").build()?;
/// let mut events = client.events();
/// client.connect(true).await?; // optional: send/recv connect on first use
/// println!("registered as {}", client.uuid());
///
/// // Offer something to a peer; its answer arrives through recv().
/// let peer = uuid::Uuid::parse_str("11111111-2222-4333-8444-555555555555").unwrap();
/// client
///     .send(client.peer_connection(peer, DescriptionType::Offer, "v=0 ..."))
///     .await?;
/// match client.recv().await? {
///     RelayMessage::PeerConnection(m) if m.error.is_some() => {
///         eprintln!("the relay could not deliver: {}", m.error.unwrap_or_default())
///     }
///     RelayMessage::PeerConnection(m) => println!("{} says {}", m.source_name, m.description),
///     other => println!("relay says {other:?}"),
/// }
///
/// // Watch the connection from another task.
/// tokio::spawn(async move {
///     while let Some(event) = events.next().await {
///         if let ConnectionEvent::Retrying { delay, .. } = event {
///             eprintln!("relay down, retrying in {delay:?}");
///         }
///     }
/// });
/// client.close().await;
/// # Ok(()) }
/// ```
pub struct RelayClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayClient")
            .field("address", &self.inner.cfg.log_address)
            .field("name", &self.inner.cfg.name)
            .field("uuid", &self.inner.cfg.uuid)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl RelayClient {
    /// A builder for a client of the relay at `address` (`ws://` or `wss://`).
    pub fn builder(address: impl Into<String>) -> RelayClientBuilder {
        RelayClientBuilder::new(address)
    }

    /// A client with every default (see [`RelayClientBuilder`]).
    pub fn new(address: impl Into<String>) -> Result<RelayClient, RelayError> {
        Self::builder(address).build()
    }

    /// The UUID this client registers with.
    pub fn uuid(&self) -> Uuid {
        self.inner.cfg.uuid
    }

    /// The name this client registers with.
    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// The relay address (with any `user:password@` hidden).
    pub fn address(&self) -> &str {
        &self.inner.cfg.log_address
    }

    /// Whether a registered connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.live_conn().is_some()
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// A watch on the connection state (always holds the latest value).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// A bounded stream of connection events from now on.
    pub fn events(&self) -> Events {
        Events {
            rx: self.inner.events.subscribe(),
        }
    }

    /// Counters of what the client did so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            registrations: s.registrations.load(Ordering::Relaxed),
            messages_sent: s.messages_sent.load(Ordering::Relaxed),
            messages_received: s.messages_received.load(Ordering::Relaxed),
            decode_errors: s.decode_errors.load(Ordering::Relaxed),
            binary_frames_ignored: s.binary_frames_ignored.load(Ordering::Relaxed),
            dropped_on_close: s.dropped_on_close.load(Ordering::Relaxed),
        }
    }

    /// A peer-connection message from this client to `peer` (source UUID and name filled in).
    pub fn peer_connection(
        &self,
        peer: Uuid,
        description_type: DescriptionType,
        description: impl Into<String>,
    ) -> PeerConnectionRequest {
        PeerConnectionRequest {
            source_uuid: self.inner.cfg.uuid,
            source_name: self.inner.cfg.name.clone(),
            peer_uuid: peer,
            description_type,
            description: description.into(),
            error: None,
        }
    }

    /// Opens and registers a connection unless one is up. With `retry`, retryable failures
    /// (refused, timeout, DNS, non-fatal close, HTTP 5xx) are retried with backoff until
    /// success, a failure that is not retried, or `close()`; without it, one attempt is made.
    /// Concurrent calls share one attempt. Starts the background reconnect task when enabled.
    pub async fn connect(&self, retry: bool) -> Result<(), RelayError> {
        self.inner.connect(retry, Caller::Application).await
    }

    /// Sends a message, connecting first if needed (with retry). Returns once the message is
    /// written to the socket; the relay sends no acknowledgement (an undeliverable peer
    /// message comes back through [`recv`](Self::recv) with `error` set). If the connection
    /// drops before the write, the message is sent on the next connection; if it drops during
    /// the write, [`RelayError::SendFailed`] is returned (the relay may or may not have it).
    pub async fn send(&self, message: impl Into<RelayMessage>) -> Result<(), RelayError> {
        let text = message.into().encode();
        let limit = self.inner.cfg.max_message_size;
        if text.len() > limit {
            return Err(RelayError::MessageTooLarge {
                size: text.len(),
                limit,
            });
        }
        let text = Utf8Bytes::from(text);
        let inner = &self.inner;
        loop {
            if let Some(e) = inner.terminal_error() {
                return Err(e);
            }
            let Some(conn) = inner.live_conn() else {
                inner.connect(true, Caller::Application).await?;
                continue;
            };
            let (done_tx, done_rx) = oneshot::channel();
            let out = Outgoing {
                text: text.clone(),
                done: done_tx,
            };
            tokio::select! {
                biased;
                _ = inner.cancel.cancelled() => return Err(RelayError::Closed),
                r = conn.out_tx.send(out) => if r.is_err() {
                    // The connection is ending (its task refuses new writes just before it
                    // marks itself ended): let that finish, then go to the next connection.
                    tokio::task::yield_now().await;
                    continue;
                },
            }
            // The task answers every message it takes; a dropped answer means the connection
            // ended before taking it, so nothing was written and it is safe to try again.
            if let Ok(result) = done_rx.await {
                return result;
            }
        }
    }

    /// The next message from the relay: a peer's message, a message of ours bounced back
    /// with `error` set, or a `relay_response`. Connects first if needed. While the client is
    /// reconnecting this waits for the next message; it returns an error when the client is
    /// closed or has stopped for good (after every message already received was returned).
    /// [`RelayError::Decode`] reports one undecodable frame and is not terminal.
    pub async fn recv(&self) -> Result<RelayMessage, RelayError> {
        let inner = &self.inner;
        let mut rx = inner.incoming_rx.lock().await;
        loop {
            match rx.try_recv() {
                Ok(item) => return item,
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(RelayError::Closed),
            }
            if let Some(e) = inner.terminal_error() {
                return Err(e);
            }
            let Some(conn) = inner.live_conn() else {
                inner.connect(true, Caller::Application).await?;
                continue;
            };
            tokio::select! {
                item = rx.recv() => return item.unwrap_or(Err(RelayError::Closed)),
                _ = conn.ended.cancelled() => {}
                _ = inner.cancel.cancelled() => {}
            }
        }
    }

    /// Closes the client: stops reconnecting, sends a close frame (1000) and waits (at most a
    /// few seconds) for the background tasks to finish. Later calls return
    /// [`RelayError::Closed`]. Calling it again does nothing.
    pub async fn close(&self) {
        self.inner.shut_down();
        let (supervisor, conn_task) = {
            let mut sh = self.inner.shared();
            (sh.supervisor.take(), sh.conn_task.take())
        };
        for task in [supervisor, conn_task].into_iter().flatten() {
            // Both tasks watch the cancel token; the connection task's close handshake is
            // itself bounded, so this timeout only guards against a bug.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for RelayClient {
    fn drop(&mut self) {
        self.inner.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_validation() {
        for bad in [
            "http://127.0.0.1:1",
            "127.0.0.1:1",
            "",
            "WS://127.0.0.1:1",
            "ws//x",
        ] {
            let e = RelayClient::new(bad).unwrap_err();
            assert!(
                matches!(e, RelayError::InvalidAddress { .. }),
                "{bad:?}: {e:?}"
            );
            assert!(e.to_string().contains("ws:// or wss://"), "{e}");
        }
        for bad in ["ws://", "ws://:80/", "ws://host:99999/", "ws://a b/"] {
            let e = RelayClient::new(bad).unwrap_err();
            assert!(
                matches!(e, RelayError::InvalidAddress { .. }),
                "{bad:?}: {e:?}"
            );
        }
        for good in [
            "ws://127.0.0.1:8700",
            "ws://localhost/some/path?x=1",
            "ws://[::1]:8700/",
        ] {
            RelayClient::new(good).unwrap();
        }
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
        assert_eq!(c.address(), "wss://***@relay.example/x");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_address("ws://h:1/p@q"), "ws://h:1/p@q");
        assert_eq!(redact_address("ws://u:p@h:1/p"), "ws://***@h:1/p");
        assert_eq!(redact_address("nonsense"), "nonsense");
    }

    #[test]
    fn registration_replies() {
        assert!(registration_reply(
            r#"{"success": true, "message": null, "error": false, "message_type": "relay_response"}"#
        )
        .is_ok());
        let e = registration_reply(
            r#"{"success": false, "message": "UnauthorizedError: x", "error": true, "message_type": "relay_response"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            RelayError::RegistrationRejected("UnauthorizedError: x".into())
        );
        assert!(!e.is_retryable());
        for bad in [
            "garbage",
            r#"{"name": "n", "uuid": "11111111-2222-4333-8444-555555555555", "message_type": "relay_registration"}"#,
        ] {
            let e = registration_reply(bad).unwrap_err();
            assert!(matches!(e, RelayError::RegistrationRejected(_)), "{e:?}");
        }
    }

    #[tokio::test]
    async fn closed_client_refuses_work_without_connecting() {
        let c = RelayClient::new("ws://127.0.0.1:1").unwrap();
        c.close().await;
        assert_eq!(c.state(), ConnectionState::Closed);
        assert_eq!(c.connect(true).await, Err(RelayError::Closed));
        assert_eq!(c.recv().await, Err(RelayError::Closed));
        let msg = c.peer_connection(Uuid::new_v4(), DescriptionType::Offer, "x");
        assert_eq!(c.send(msg).await, Err(RelayError::Closed));
        c.close().await; // idempotent
    }

    #[tokio::test]
    async fn oversized_send_is_refused_locally() {
        let c = RelayClient::builder("ws://127.0.0.1:1")
            .max_message_size(2048)
            .build()
            .unwrap();
        let msg = c.peer_connection(Uuid::new_v4(), DescriptionType::Offer, "x".repeat(4096));
        match c.send(msg).await {
            Err(RelayError::MessageTooLarge { limit: 2048, size }) => assert!(size > 4096),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.stats().registrations, 0);
    }
}
