//! Helpers of the cluster tests: a private `redis-server` (free port, no persistence, killed
//! on drop; never a system service) and relay nodes configured for it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use bistream_relay_server::{ClusterConfig, ClusterSection, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A redis-server of our own.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// `requirepass`, also put in the nodes' URL.
    password: Option<String>,
    /// The database in the nodes' URL.
    db: u32,
}

impl Redis {
    /// Starts redis-server on a free loopback port (panics with a hint if it is not installed).
    pub async fn start() -> Redis {
        Redis::start_with(None, 0).await
    }

    /// [`Redis::start`] with a password required, the nodes using database `db`.
    pub async fn start_with(password: Option<&str>, db: u32) -> Redis {
        let mut r = Redis {
            port: bistream_testkit::free_port(),
            child: None,
            password: password.map(str::to_string),
            db,
        };
        r.restart().await;
        r
    }

    /// (Re)starts the server on the same port; returns once it answers PING.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_string(), p.clone()]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (scripts/setup-test-env installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH")
        )
    }

    /// SIGKILLs the server and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub fn url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("redis://{auth}127.0.0.1:{}/{}", self.port, self.db)
    }

    /// A cluster config for node `id` with a fast heartbeat (1 s, registrations live 4 s).
    pub fn cluster(&self, id: &str) -> ClusterConfig {
        ClusterConfig::from_section(ClusterSection {
            url: Some(self.url()),
            node_id: Some(id.to_string()),
            heartbeat_interval: Some(1.0),
            registration_ttl: Some(4.0),
            redis_timeout: Some(2.0),
        })
        .expect("valid cluster config")
        .expect("cluster on")
    }
}

/// A node config: the tests' usual relay config plus the cluster and a metrics endpoint.
pub fn node_config(base: RelayConfig, redis: &Redis, id: &str) -> RelayConfig {
    RelayConfig {
        cluster: Some(redis.cluster(id)),
        metrics_addr: Some("127.0.0.1:0".into()),
        ..base
    }
}

/// The value of a metric line starting with `prefix` (first match), from `/metrics`.
pub async fn metric(relay: &bistream_relay_server::RunningRelay, prefix: &str) -> Option<f64> {
    let addr = relay.metrics_addr().expect("metrics endpoint");
    let (_, body) = bistream_testkit::http_get(addr, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
