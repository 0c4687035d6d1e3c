//! What every relay client test needs: relay servers as processes (the real Python one and
//! ours), Python `RelayClient` peers, the `bistream` CLI, certificates, and waits that always
//! have a timeout. Nothing asserts on elapsed time.

use std::path::Path;
use std::time::Duration;

use std::process::Stdio;

use bistream_relay_client::{
    Backoff, ConnectionEvent, Events, RelayClient, RelayClientBuilder, RelayError, RelayMessage,
};
use bistream_testkit::{free_port, python_scripts_dir, relay_python, Peer};
use tokio::process::Command;
use uuid::Uuid;

pub const STEP: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// proxystore 1.1.0's `proxystore-relay`.
    Python,
    /// `bistream relay serve`.
    Ours,
}

/// A running relay server process (killed on drop).
pub struct Relay {
    pub port: u16,
    pub url: String,
    pub peer: Peer,
}

impl Relay {
    pub async fn start(kind: Kind) -> Relay {
        let port = match kind {
            Kind::Python => free_port(),
            Kind::Ours => 0,
        };
        Relay::start_on(kind, port, None).await
    }

    /// Starts on `port` (0 = any, ours only), optionally with a TOML config file.
    pub async fn start_on(kind: Kind, port: u16, config: Option<&Path>) -> Relay {
        let mut extra: Vec<String> = Vec::new();
        if let Some(cfg) = config {
            extra.push("--config".into());
            extra.push(cfg.display().to_string());
        }
        let scheme = if config.is_some() { "wss" } else { "ws" };
        Relay::start_with(kind, port, &extra, scheme).await
    }

    /// Starts with extra command-line arguments; `scheme` is ws or wss.
    pub async fn start_with(kind: Kind, port: u16, extra: &[String], scheme: &str) -> Relay {
        let mut cmd = match kind {
            Kind::Python => {
                let mut c = Command::new(relay_python());
                c.arg("-c")
                    .arg("from proxystore.p2p.relay.run import cli; cli()")
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
                c
            }
            Kind::Ours => {
                let mut c = bistream();
                c.args([
                    "relay",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                ]);
                c
            }
        };
        cmd.args(extra);
        let mut peer = Peer::spawn(cmd).expect("spawn relay server");
        let port = match kind {
            Kind::Python => {
                peer.wait_for_line("Relay server listening on port", STEP)
                    .await;
                port
            }
            Kind::Ours => {
                let line = peer.wait_for_line("relay listening on ", STEP).await;
                let port = line
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no port in {line:?}"));
                assert!(port != 0, "{line}");
                port
            }
        };
        drain_output(&mut peer);
        Relay {
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            peer,
        }
    }

    /// Stops the server gracefully (SIGTERM: clients get 1001).
    pub async fn stop(mut self) {
        self.peer.terminate(Duration::from_secs(10)).await;
    }
}

/// Keeps reading a server's stdout and stderr after its readiness line. The Python relay
/// logs one INFO line per forwarded message to stdout: with nobody reading, the pipe fills
/// after ~64 KiB and the whole server (its event loop blocked in a log write) stops.
pub fn drain_output(peer: &mut Peer) {
    peer.drain_stderr();
    if let Some(mut out) = peer.take_stdout() {
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    }
}

/// The real RelayServer with a fake token authenticator (tests/python/relay_client_fake_auth_server.py).
pub async fn start_fake_auth_relay() -> Relay {
    let mut cmd = Command::new(relay_python());
    cmd.arg(python_scripts_dir().join("relay_client_fake_auth_server.py"));
    let mut peer = Peer::spawn(cmd).expect("spawn fake-auth relay");
    let line = peer.wait_for_line("LISTENING ", STEP).await;
    let port: u16 = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    drain_output(&mut peer);
    Relay {
        port,
        url: format!("ws://127.0.0.1:{port}"),
        peer,
    }
}

/// A Python `RelayClient` peer (tests/python/relay_client_peer.py); returns it and its UUID.
pub async fn python_peer(url: &str, args: &[&str]) -> (Peer, Uuid) {
    let mut cmd = Command::new(relay_python());
    cmd.arg(python_scripts_dir().join("relay_client_peer.py"))
        .arg(url)
        .args(args);
    let mut peer = Peer::spawn(cmd).expect("spawn python peer");
    let line = peer.wait_for_line("READY ", STEP).await;
    let uuid = Uuid::parse_str(line.trim().trim_start_matches("READY ")).expect("uuid");
    (peer, uuid)
}

/// A client with a fast retry schedule (so tests of reconnects stay short).
pub fn fast(url: &str) -> RelayClientBuilder {
    RelayClient::builder(url)
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            factor: 2.0,
            max: Duration::from_millis(400),
            jitter: 0.0,
        })
        .stable_after(Duration::from_millis(200))
        .registration_timeout(Duration::from_secs(5))
}

pub async fn recv(client: &RelayClient) -> RelayMessage {
    tokio::time::timeout(STEP, client.recv())
        .await
        .expect("timed out waiting for a relay message")
        .expect("recv failed")
}

pub async fn next_event(events: &mut Events) -> ConnectionEvent {
    tokio::time::timeout(STEP, events.next())
        .await
        .expect("timed out waiting for a connection event")
        .expect("event stream ended")
}

/// Waits for an event matching `pred`, returning the ones skipped too.
pub async fn wait_event(
    events: &mut Events,
    pred: impl Fn(&ConnectionEvent) -> bool,
) -> (ConnectionEvent, Vec<ConnectionEvent>) {
    let mut seen = Vec::new();
    loop {
        let e = next_event(events).await;
        if pred(&e) {
            return (e, seen);
        }
        seen.push(e);
    }
}

pub fn peer_msg(m: RelayMessage) -> bistream_relay_proto::PeerConnectionRequest {
    match m {
        RelayMessage::PeerConnection(p) => p,
        other => panic!("expected a peer_connection, got {other:?}"),
    }
}

/// Waits until the stream ends (every task of a dropped client is gone), returning the events
/// seen on the way.
pub async fn wait_end(events: &mut Events) -> Vec<ConnectionEvent> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(STEP, events.next())
            .await
            .expect("event stream should end after the client is dropped")
        {
            Some(e) => seen.push(e),
            None => return seen,
        }
    }
}

/// The client stops for good: a `Failed` event arrives with no `Retrying` before it.
pub async fn assert_stopped_without_retry(events: &mut Events) {
    let (_, skipped) = wait_event(events, |e| matches!(e, ConnectionEvent::Failed(_))).await;
    assert!(
        !skipped
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Retrying { .. })),
        "{skipped:?}"
    );
}

/// `connect(true)` must end (not retry forever) with an error.
pub async fn connect_fails(client: &RelayClient) -> RelayError {
    tokio::time::timeout(STEP, client.connect(true))
        .await
        .expect("a fatal close must not be retried forever")
        .unwrap_err()
}

// ---------------------------------------------------------------- the CLI

/// `bistream` with quiet logs and no `BISTREAM_RELAY_*` settings from the environment.
pub fn bistream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bistream"));
    c.env("BISTREAM_LOG_LEVEL", "warn").env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("BISTREAM_RELAY_") && k != "BISTREAM_RELAY_PYTHON" {
            c.env_remove(k);
        }
    }
    c
}

/// A finished `bistream` run.
pub struct Done {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bistream ARGS` to completion (bounded).
pub async fn run(args: &[&str]) -> Done {
    let mut cmd = bistream();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("bistream {args:?} did not finish"))
        .expect("run bistream");
    Done {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `bistream relay listen URL EXTRA...`, after it printed its UUID.
pub async fn listen(url: &str, extra: &[&str]) -> (Peer, Uuid) {
    let mut cmd = bistream();
    cmd.args(["relay", "listen", url]).args(extra);
    let mut peer = Peer::spawn(cmd).expect("spawn listen");
    let first = peer
        .next_stdout_line(STEP)
        .await
        .expect("listen printed its uuid");
    let uuid = Uuid::parse_str(first.trim()).expect("first line is a UUID");
    (peer, uuid)
}

// ---------------------------------------------------------------- certificates

/// A server certificate and key written to a directory.
pub struct CertFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A self-signed certificate for 127.0.0.1 and localhost made by rcgen (no `CA:TRUE`).
pub fn rcgen_self_signed(dir: &std::path::Path) -> CertFiles {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
    files
}

/// A self-signed certificate made the way the docs tell people to, with the openssl CLI
/// (`CA:TRUE`, which plain WebPKI checking refuses as a server certificate).
pub fn openssl_self_signed(dir: &std::path::Path) -> CertFiles {
    let files = CertFiles {
        cert: dir.join("openssl-cert.pem"),
        key: dir.join("openssl-key.pem"),
    };
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-keyout")
        .arg(&files.key)
        .arg("-out")
        .arg(&files.cert)
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .output()
        .expect("the openssl command line tool is needed for this test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&files.cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "expected openssl's default CA:TRUE certificate"
    );
    files
}
