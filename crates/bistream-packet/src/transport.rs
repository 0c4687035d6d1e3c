//! Ways to open a [`PacketConnection`]: the [`Builder`] (TCP, Unix sockets, our stdin/stdout, a
//! child process's stdin/stdout, any reader/writer pair), the [`OnDemand`] connector that opens
//! its streams on first use and closes them at shutdown, and [`serve`], an accept loop that
//! runs one connection per client with a shared handler and shuts down gracefully.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;

use crate::codec::Packet;
use crate::connection::{Config, PacketConnection, ResponseFuture};
use crate::error::{CloseReason, PacketError};
use crate::handler::RequestHandler;

/// Settings and an optional request handler; turns a transport into a [`PacketConnection`].
/// Cheap to clone (the handler is shared).
#[derive(Clone, Default)]
pub struct Builder {
    cfg: Config,
    handler: Option<Arc<dyn RequestHandler>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("cfg", &self.cfg)
            .field("handler", &self.handler.is_some())
            .finish()
    }
}

impl Builder {
    /// Default settings, no handler (a pure client: peer requests get `no request handler`).
    pub fn new() -> Builder {
        Builder::default()
    }
    /// Replaces the settings.
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }
    /// Edits the settings in place.
    pub fn configure(mut self, f: impl FnOnce(Config) -> Config) -> Self {
        self.cfg = f(self.cfg);
        self
    }
    /// Serves the peer's requests with `handler`.
    pub fn handler(mut self, handler: impl RequestHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }
    /// Serves the peer's requests with a shared handler.
    pub fn handler_arc(mut self, handler: Arc<dyn RequestHandler>) -> Self {
        self.handler = Some(handler);
        self
    }
    /// The settings.
    pub fn get_config(&self) -> &Config {
        &self.cfg
    }

    /// Any reader/writer pair.
    pub fn start<R, W>(&self, reader: R, writer: W) -> PacketConnection
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        PacketConnection::start(reader, writer, self.cfg.clone(), self.handler.clone())
    }

    /// A connected TCP stream (sets TCP_NODELAY).
    pub fn tcp(&self, stream: TcpStream) -> PacketConnection {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (r, w) = stream.into_split();
        self.start(r, w)
    }

    /// Connects to a TCP address.
    pub async fn connect_tcp(&self, addr: impl ToSocketAddrs) -> std::io::Result<PacketConnection> {
        Ok(self.tcp(TcpStream::connect(addr).await?))
    }

    /// A connected Unix stream socket.
    #[cfg(unix)]
    pub fn unix(&self, stream: tokio::net::UnixStream) -> PacketConnection {
        let (r, w) = stream.into_split();
        self.start(r, w)
    }

    /// Connects to a Unix socket path.
    #[cfg(unix)]
    pub async fn connect_unix(&self, path: impl AsRef<Path>) -> std::io::Result<PacketConnection> {
        Ok(self.unix(tokio::net::UnixStream::connect(path).await?))
    }

    /// Our own stdin (receive) and stdout (send). Nothing else may write to stdout meanwhile.
    pub fn stdio(&self) -> PacketConnection {
        self.start(tokio::io::stdin(), tokio::io::stdout())
    }

    /// A child process's stdout (receive) and stdin (send); the child must have been spawned
    /// with both piped. They are taken from `child`; closing the connection closes the
    /// child's stdin.
    pub fn child(&self, child: &mut tokio::process::Child) -> std::io::Result<PacketConnection> {
        let missing = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the child's {what} is not piped (or was already taken)"),
            )
        };
        let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
        Ok(self.start(stdout, stdin))
    }

    /// A connection opened on first use; see [`OnDemand`].
    pub fn on_demand<F, Fut, R, W>(&self, connect: F) -> OnDemand
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<(R, W)>> + Send + 'static,
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let builder = self.clone();
        let open: OpenFn = Arc::new(move || {
            let fut = connect();
            let builder = builder.clone();
            Box::pin(async move {
                let (r, w) = fut.await?;
                Ok(builder.start(r, w))
            })
        });
        OnDemand {
            open,
            conn: tokio::sync::Mutex::new(None),
        }
    }
}

type OpenFn = Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<PacketConnection>> + Send + Sync>;

/// Python's "on demand" `recv_send` callable: the streams are opened by `connect` on first
/// use, and closed by [`OnDemand::close`]. A later use after the connection ended opens a new
/// one.
///
/// ```no_run
/// use bistream_packet::Builder;
/// # async fn demo() -> Result<(), bistream_packet::PacketError> {
/// let conn = Builder::new().on_demand(|| async {
///     let s = tokio::net::TcpStream::connect("127.0.0.1:9000").await?;
///     s.set_nodelay(true)?;
///     Ok(s.into_split())
/// });
/// let (flags, payload) = conn.call(0, 0, &b"hi"[..], 0).await?; // connects here
/// conn.close().await; // ERQ, EOF, closes the socket
/// # Ok(()) }
/// ```
pub struct OnDemand {
    open: OpenFn,
    conn: tokio::sync::Mutex<Option<PacketConnection>>,
}

impl OnDemand {
    /// The open connection, opening it if needed.
    pub async fn connection(&self) -> Result<PacketConnection, PacketError> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref() {
            if c.is_open() {
                return Ok(c.clone());
            }
        }
        let c = (self.open)().await.map_err(PacketError::Connect)?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Whether the streams are currently open.
    pub async fn is_connected(&self) -> bool {
        self.conn.lock().await.as_ref().is_some_and(|c| c.is_open())
    }

    /// [`PacketConnection::submit`], opening first if needed.
    pub async fn submit(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
    ) -> Result<ResponseFuture, PacketError> {
        self.connection()
            .await?
            .submit(rq_type, flags, payload, channel)
            .await
    }

    /// [`PacketConnection::call`], opening first if needed.
    pub async fn call(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
    ) -> Result<(u64, Bytes), PacketError> {
        self.connection()
            .await?
            .call(rq_type, flags, payload, channel)
            .await
    }

    /// Closes the streams gracefully if they are open; `None` if nothing was open.
    pub async fn close(&self) -> Option<CloseReason> {
        let c = self.conn.lock().await.take()?;
        Some(c.close().await)
    }
}

/// A listening socket for [`serve`].
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix stream socket listener.
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// The bound address as `HOST:PORT` or `unix:PATH`.
    pub fn local_addr_string(&self) -> std::io::Result<String> {
        match self {
            Listener::Tcp(l) => Ok(l.local_addr()?.to_string()),
            #[cfg(unix)]
            Listener::Unix(l) => {
                let a = l.local_addr()?;
                Ok(match a.as_pathname() {
                    Some(p) => format!("unix:{}", p.display()),
                    None => "unix:(unnamed)".into(),
                })
            }
        }
    }

    /// Binds `HOST:PORT` (port 0 allowed) or `unix:PATH`.
    pub async fn bind(addr: &str) -> std::io::Result<Listener> {
        #[cfg(unix)]
        if let Some(path) = addr.strip_prefix("unix:") {
            return Ok(Listener::Unix(tokio::net::UnixListener::bind(path)?));
        }
        Ok(Listener::Tcp(TcpListener::bind(addr).await?))
    }
}

/// Settings of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once. Default: derived from the file-descriptor limit
    /// ([`crate::limits::default_connection_cap`]: the soft limit is raised to the hard
    /// limit, minus a reserve of 64), so that idle connections, which are legitimate in this
    /// protocol, cannot lock others out. At the cap the listener keeps accepting and closes
    /// each excess connection at once (counted in [`ServeStats::rejected_at_cap`], logged).
    pub max_connections: usize,
    /// At shutdown, how long each connection may take to close gracefully before it is
    /// dropped (default 10 s).
    pub shutdown_timeout: Duration,
    /// Counters of the accept loop, shared with the caller.
    pub stats: Arc<ServeStats>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: crate::limits::default_connection_cap(),
            shutdown_timeout: Duration::from_secs(10),
            stats: Arc::default(),
        }
    }
}

/// Counters of [`serve`].
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Connections closed at once because [`ServeOptions::max_connections`] were open.
    pub rejected_at_cap: AtomicU64,
    /// `accept` failures (e.g. EMFILE), each followed by a short back-off.
    pub accept_errors: AtomicU64,
}

/// Accepts connections on `listener` and serves each with `builder` (its handler and
/// settings) until `shutdown` completes; then stops accepting and closes every connection
/// gracefully (ERQ, running handlers answered, EOF), waiting up to
/// [`ServeOptions::shutdown_timeout`] each.
pub async fn serve(
    listener: Listener,
    builder: Builder,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(tokio::sync::Semaphore::new(
        opts.max_connections.clamp(1, 1 << 20),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let mut next_id: u64 = 0;
    let mut backoff = bistream_core::fdlimit::AcceptBackoff::default();
    let stats = opts.stats.clone();
    tracing::info!(
        max_connections = opts.max_connections,
        "packet server accepting"
    );
    loop {
        // Accept first, then look for room: a full server keeps its backlog moving and tells
        // the excess clients at once (their connection closes) instead of leaving them hanging.
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            a = accept_stream(&listener) => match a {
                Ok(s) => {
                    backoff.succeeded();
                    s
                }
                Err(e) => {
                    // e.g. EMFILE: keep serving the others; back off (10 ms doubling to 1 s),
                    // logged once per episode.
                    let n = stats.accept_errors.fetch_add(1, Relaxed) + 1;
                    let (pause, first) = backoff.failed();
                    if first {
                        tracing::warn!(error = %e, failures = n, "accept failed: backing off");
                    }
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            let n = stats.rejected_at_cap.fetch_add(1, Relaxed) + 1;
            // Logged at the first few and then at powers of two: a flood cannot flood the log.
            if n <= 8 || n.is_power_of_two() {
                tracing::warn!(
                    max_connections = opts.max_connections,
                    rejected = n,
                    peer = %stream.peer(),
                    "connection limit reached: closing the new connection"
                );
            }
            stream.refuse();
            continue;
        };
        stats.accepted.fetch_add(1, Relaxed);
        let conn = stream.start(&builder);
        next_id += 1;
        let id = next_id;
        let mut stop = stop_rx.clone();
        let timeout = opts.shutdown_timeout;
        while tasks.try_join_next().is_some() {}
        let stats = stats.clone();
        stats.active.fetch_add(1, Relaxed);
        tasks.spawn(async move {
            let _permit = permit;
            let _active = ActiveGuard(stats);
            tracing::debug!(conn = id, "connection accepted");
            let reason = tokio::select! {
                r = conn.closed() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    match tokio::time::timeout(timeout, conn.close()).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(conn = id, "graceful close timed out; dropping the connection");
                            conn.abort();
                            conn.closed().await
                        }
                    }
                }
            };
            tracing::debug!(conn = id, %reason, "connection ended");
        });
    }
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Decrements [`ServeStats::active`] when a connection's task ends.
struct ActiveGuard(Arc<ServeStats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// An accepted stream, not yet a connection.
enum Accepted {
    Tcp(TcpStream, std::net::SocketAddr),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Accepted {
    /// Closes a connection refused at the cap. Best effort, without waiting: ERQ then EOF,
    /// as a closing peer sends them, so a packetstream client sees the server end (its
    /// pending requests fail) rather than only a reset.
    fn refuse(self) {
        let mut bye = bytes::BytesMut::new();
        for p in [Packet::erq(), Packet::eof()] {
            if p.encode(&mut bye, crate::DEFAULT_MAX_PACKET).is_err() {
                return;
            }
        }
        let _ = match &self {
            Accepted::Tcp(s, _) => s.try_write(&bye),
            #[cfg(unix)]
            Accepted::Unix(s) => s.try_write(&bye),
        };
    }

    fn peer(&self) -> String {
        match self {
            Accepted::Tcp(_, a) => a.to_string(),
            #[cfg(unix)]
            Accepted::Unix(_) => "unix".into(),
        }
    }

    fn start(self, builder: &Builder) -> PacketConnection {
        match self {
            Accepted::Tcp(s, peer) => builder
                .clone()
                .configure(|c| c.with_name(format!("tcp:{peer}")))
                .tcp(s),
            #[cfg(unix)]
            Accepted::Unix(s) => builder.unix(s),
        }
    }
}

async fn accept_stream(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            Ok(Accepted::Tcp(s, peer))
        }
        #[cfg(unix)]
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok(Accepted::Unix(s))
        }
    }
}

/// Shortcuts with default settings and no handler (a pure client); use [`Builder`] for more.
impl PacketConnection {
    /// A client connection over a connected TCP stream (sets TCP_NODELAY).
    pub fn from_tcp(stream: TcpStream) -> PacketConnection {
        Builder::new().tcp(stream)
    }

    /// A client connection over a connected Unix stream socket.
    #[cfg(unix)]
    pub fn from_unix(stream: tokio::net::UnixStream) -> PacketConnection {
        Builder::new().unix(stream)
    }

    /// A client connection over any reader/writer pair.
    pub fn from_pair<R, W>(reader: R, writer: W) -> PacketConnection
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Builder::new().start(reader, writer)
    }
}
