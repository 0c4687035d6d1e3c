//! Binding, the accept loop, the opening handshake, the connection cap, the periodic client
//! log and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_proto::{CloseCode, AT_CAPACITY_REASON};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{
    Authenticator, Introspection, JwtAuth, NoAuth, RequestCredentials, StaticTokens,
};
use crate::config::DEFAULT_MAX_CONNECTIONS;
use crate::config::{AuthConfig, RelayConfig};
use crate::conn::{Conn, Shared};
use crate::fdlimit::{effective_cap, raise_nofile};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::tracked::{FrameBudget, Tracked};
use bistream_core::fdlimit::AcceptBackoff;
use bistream_core::logsafe::client_text;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The relay address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What we tried to bind.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The ops (metrics) address could not be bound.
    #[error("cannot listen on metrics address {addr}: {source}")]
    MetricsBind {
        /// What we tried to bind.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Bad TLS files.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Bad authentication settings (unreadable token file, bad key, ...).
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
}

/// Extra handshakes allowed only to tell clients over the cap to retry later (beyond this,
/// their TCP connections are dropped at once). Counted in the descriptor reserve.
const REJECT_SLOTS: usize = 64;

/// The relay server. [`RelayServer::bind`] starts it and returns a [`RunningRelay`].
///
/// ```no_run
/// use bistream_relay_server::{RelayConfig, RelayServer};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RelayConfig { port: 0, ..RelayConfig::default() };
/// let relay = RelayServer::bind(config).await?;
/// println!("relay listening on {}", relay.url());
/// relay.shutdown().await;
/// # Ok(()) }
/// ```
pub struct RelayServer;

impl RelayServer {
    /// Binds the relay (and the ops endpoint, if configured) and starts serving.
    pub async fn bind(config: RelayConfig) -> Result<RunningRelay, ServerError> {
        let auth = build_authenticator(&config.auth)?;
        RelayServer::bind_with_authenticator(config, auth).await
    }

    /// Like [`RelayServer::bind`] with a custom [`Authenticator`] (`config.auth` is ignored).
    pub async fn bind_with_authenticator(
        config: RelayConfig,
        auth: Arc<dyn Authenticator>,
    ) -> Result<RunningRelay, ServerError> {
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::acceptor(files)?),
            None => None,
        };
        let budget = effective_cap(config.max_connections, raise_nofile());
        if budget.cap < config.max_connections {
            // Only a cap the user asked for is worth a warning; the built-in default is
            // meant to be lowered to what the machine allows.
            if config.max_connections == DEFAULT_MAX_CONNECTIONS {
                tracing::info!(
                    default = config.max_connections,
                    nofile = ?budget.nofile,
                    effective = budget.cap,
                    "connection cap follows the file-descriptor limit"
                );
            } else {
                tracing::warn!(
                    configured = config.max_connections,
                    nofile = ?budget.nofile,
                    effective = budget.cap,
                    "max_connections is more than the file-descriptor limit allows: lowered (raise `ulimit -n` to serve more)"
                );
            }
        }
        let listener =
            listen(&config.host, config.port)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: format!("{}:{}", config.host, config.port),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: format!("{}:{}", config.host, config.port),
            source,
        })?;
        let metrics_listener = match &config.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr.as_str()).await.map_err(|source| {
                ServerError::MetricsBind {
                    addr: addr.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(|source| ServerError::MetricsBind {
                addr: config.metrics_addr.clone().unwrap_or_default(),
                source,
            })?),
            None => None,
        };
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_bytes)
            .write_buffer_size(16 * 1024)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(config.max_frame_bytes))
            .max_frame_size(Some(config.max_frame_bytes));
        let shared = Arc::new(Shared {
            registry: Registry::new(),
            metrics: Arc::new(Metrics::default()),
            auth,
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            next_conn_id: AtomicU64::new(1),
            ws_config,
            frame_budget: Arc::new(FrameBudget::new(config.large_message_budget_bytes as u64)),
            config,
        });
        let tracker = TaskTracker::new();
        let acceptor = Acceptor {
            shared: shared.clone(),
            tls,
            permits: Arc::new(Semaphore::new(budget.cap)),
            reject_permits: Arc::new(Semaphore::new(REJECT_SLOTS)),
            tracker: tracker.clone(),
        };
        let mut background = Vec::new();
        if let Some(cluster) = shared.config.cluster.clone() {
            background.extend(crate::cluster::start(&shared, cluster));
        }
        let accept_task = tokio::spawn(acceptor.run(listener));
        if let Some(l) = metrics_listener {
            let router = crate::ops::router(shared.clone());
            let stop = shared.shutdown.clone();
            background.push(tokio::spawn(async move {
                let res = axum::serve(l, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = res {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            }));
        }
        if let Some(every) = shared.config.client_log_interval {
            background.push(tokio::spawn(client_log(shared.clone(), every)));
        }
        tracing::info!(
            addr = %local_addr,
            tls = shared.config.tls.is_some(),
            auth = shared.auth.method(),
            max_message_bytes = ?shared.config.max_message_bytes,
            max_frame_bytes = shared.config.max_frame_bytes,
            max_connections = budget.cap,
            nofile = ?budget.nofile,
            "relay server listening"
        );
        Ok(RunningRelay {
            max_connections: budget.cap,
            local_addr,
            metrics_addr,
            shared,
            tracker,
            accept_task,
            background,
        })
    }
}

/// Builds the authenticator a config names (reads token files and keys).
pub fn build_authenticator(auth: &AuthConfig) -> Result<Arc<dyn Authenticator>, ServerError> {
    Ok(match auth {
        AuthConfig::None => Arc::new(NoAuth),
        AuthConfig::Tokens { file } => Arc::new(StaticTokens::load(file)?),
        AuthConfig::Jwt(c) => Arc::new(JwtAuth::new(c.clone())?),
        AuthConfig::Introspection(c) => Arc::new(Introspection::new(c.clone())?),
    })
}

async fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        match sock.bind(addr).and_then(|_| sock.listen(4096)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host resolved to no address",
        )
    }))
}

/// A running relay. Dropping it does not stop the server; call [`RunningRelay::shutdown`].
pub struct RunningRelay {
    max_connections: usize,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    accept_task: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every connection finished its close handshake before the deadline.
    pub drained: bool,
}

impl RunningRelay {
    /// The bound relay address (with the real port when port 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://addr` or `wss://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The connection cap in force: `max_connections`, lowered to what the file-descriptor
    /// limit allows.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The bound ops endpoint address, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The server's figures.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Number of registered clients.
    pub fn registered_clients(&self) -> usize {
        self.shared.registry.len()
    }

    /// Re-reads the authenticator's files (token file on SIGHUP).
    pub fn reload_auth(&self) -> Result<(), crate::auth::AuthSetupError> {
        self.shared.auth.reload()
    }

    /// Stops accepting, closes every client with 1001 and waits for the close handshakes up
    /// to `shutdown_timeout`; connections still open then are dropped.
    pub async fn shutdown(self) -> ShutdownReport {
        let shared = &self.shared;
        shared.shutdown.cancel();
        let _ = self.accept_task.await;
        self.tracker.close();
        tracing::info!(
            connections = shared.metrics.connections_open.load(Relaxed),
            "shutting down: closing clients with 1001"
        );
        let drained = tokio::time::timeout(shared.config.shutdown_timeout, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!("shutdown deadline passed: dropping the remaining connections");
            shared.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
        }
        shared.hard_stop.cancel();
        for t in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        tracing::info!("relay server shutdown");
        ShutdownReport { drained }
    }
}

struct Acceptor {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    permits: Arc<Semaphore>,
    reject_permits: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl Acceptor {
    async fn run(self, listener: TcpListener) {
        let this = Arc::new(self);
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = this.shared.shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            let (tcp, addr) = match accepted {
                Ok(x) => {
                    backoff.succeeded();
                    x
                }
                Err(e) => {
                    // EMFILE and friends: back off (10 ms doubling to 1 s) instead of spinning,
                    // and log once per episode rather than per failure.
                    Metrics::inc(&this.shared.metrics.accept_errors);
                    let (pause, first) = backoff.failed();
                    if first {
                        tracing::warn!(error = %e, "accept failed: backing off (see relay_accept_errors_total)");
                    }
                    tokio::select! {
                        _ = this.shared.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match this.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let a = this.clone();
                    this.tracker
                        .spawn(async move { a.serve(tcp, addr, Some(permit)).await });
                }
                Err(_) => {
                    Metrics::inc(&this.shared.metrics.connections_rejected);
                    if let Ok(slot) = this.reject_permits.clone().try_acquire_owned() {
                        let a = this.clone();
                        this.tracker.spawn(async move {
                            a.serve(tcp, addr, None).await;
                            drop(slot);
                        });
                    } else {
                        bistream_core::limited!(this.shared.metrics.log, from addr, WARN, %addr, "connection cap reached: dropping connection");
                    }
                }
            }
        }
    }

    /// Handshakes and runs one connection; `permit == None` means over the cap: the client
    /// is told to retry later (1013).
    async fn serve(&self, tcp: TcpStream, addr: SocketAddr, permit: Option<OwnedSemaphorePermit>) {
        let limit = self.shared.config.handshake_timeout;
        match &self.tls {
            None => self.serve_stream(tcp, addr, permit).await,
            Some(acceptor) => {
                let tls = tokio::select! {
                    r = tokio::time::timeout(limit, acceptor.accept(tcp)) => r,
                    _ = self.shared.shutdown.cancelled() => return,
                };
                match tls {
                    Ok(Ok(s)) => Box::pin(self.serve_stream(s, addr, permit)).await,
                    Ok(Err(e)) => {
                        Metrics::inc(&self.shared.metrics.handshake_failures);
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        Metrics::inc(&self.shared.metrics.handshake_failures);
                        tracing::debug!(%addr, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve_stream<S>(
        &self,
        stream: S,
        addr: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let keep_auth = self.shared.auth.needs_credentials();
        let mut creds = RequestCredentials::default();
        // The error type is fixed by tungstenite's `Callback` trait.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, resp: Response| {
            if keep_auth {
                creds.authorization = req
                    .headers()
                    .get(tokio_tungstenite::tungstenite::http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes().to_vec());
            }
            Ok(resp)
        };
        let limit = self.shared.config.handshake_timeout;
        let stream = Tracked::new(stream).with_budget(self.shared.frame_budget.clone());
        let hs = tokio::select! {
            // Boxed: the handshake state is large and short-lived; the task keeps only its own.
            r = Box::pin(tokio::time::timeout(limit, tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(self.shared.ws_config)))) => r,
            _ = self.shared.shutdown.cancelled() => return,
        };
        let ws = match hs {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                Metrics::inc(&self.shared.metrics.handshake_failures);
                tracing::debug!(%addr, error = %e, "WebSocket handshake failed");
                return;
            }
            Err(_) => {
                Metrics::inc(&self.shared.metrics.handshake_failures);
                tracing::debug!(%addr, "WebSocket handshake timed out");
                return;
            }
        };
        match permit {
            Some(p) => {
                // Boxed at its exact size, apart from the (freed) handshake state.
                Box::pin(Conn::new(ws, self.shared.clone(), addr, creds).run()).await;
                drop(p);
            }
            None => {
                let mut ws = ws;
                bistream_core::limited!(self.shared.metrics.log, from addr, WARN, %addr, "connection cap reached: closing 1013");
                self.shared
                    .metrics
                    .server_close(CloseCode::TryAgainLater.code());
                let frame = CloseFrame {
                    code: WsCloseCode::from(CloseCode::TryAgainLater.code()),
                    reason: AT_CAPACITY_REASON.into(),
                };
                let close_timeout = self.shared.config.close_timeout;
                let _ = tokio::time::timeout(close_timeout, async {
                    use futures_util::StreamExt;
                    if ws.close(Some(frame)).await.is_ok() {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                })
                .await;
            }
        }
    }
}

/// Every `every`, log "Connected clients: N" (ProxyStore's periodic line), listing each client
/// while there are fewer than `client_log_limit`. At INFO only when the count changed since the
/// last line; an unchanged count goes to DEBUG (an idle relay does not fill its log).
async fn client_log(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut last = None;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let n = shared.registry.len();
        let changed = last != Some(n);
        last = Some(n);
        let connections = shared.metrics.connections_open.load(Relaxed);
        if changed {
            tracing::info!(clients = n, connections, "Connected clients: {n}");
        } else {
            tracing::debug!(clients = n, connections, "Connected clients: {n}");
        }
        let limit = shared.config.client_log_limit;
        if n > 0 && n < limit {
            for (uuid, name, user) in shared.registry.sample(limit) {
                let (name, user) = (client_text(&name), client_text(user.id()));
                if changed {
                    tracing::info!("Client(uuid={uuid}, name={name}, user={user})");
                } else {
                    tracing::debug!("Client(uuid={uuid}, name={name}, user={user})");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Each idle client costs its task's state: keep it small (measured: serve 1.6 KiB, the
    /// connection 2.6 KiB; an inline 4 KiB buffer once made it 10 KiB and 17 KiB RSS/client).
    #[tokio::test]
    async fn task_state_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (srv, _) = l.accept().await.unwrap();
        let shared = std::sync::Arc::new(crate::conn::Shared {
            config: crate::RelayConfig::default(),
            registry: crate::registry::Registry::new(),
            metrics: Default::default(),
            auth: std::sync::Arc::new(crate::auth::NoAuth),
            shutdown: Default::default(),
            hard_stop: Default::default(),
            next_conn_id: Default::default(),
            ws_config: Default::default(),
            frame_budget: std::sync::Arc::new(crate::tracked::FrameBudget::new(1 << 20)),
        });
        let acc = super::Acceptor {
            shared: shared.clone(),
            tls: None,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            reject_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            tracker: Default::default(),
        };
        let serve = acc.serve(c, addr, None);
        assert!(
            std::mem::size_of_val(&serve) <= 3 * 1024,
            "serve future is {} bytes",
            std::mem::size_of_val(&serve)
        );
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            crate::tracked::Tracked::new(srv),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let run = crate::conn::Conn::new(ws, shared, addr, Default::default()).run();
        assert!(
            std::mem::size_of_val(&run) <= 4 * 1024,
            "connection future is {} bytes",
            std::mem::size_of_val(&run)
        );
    }
}
