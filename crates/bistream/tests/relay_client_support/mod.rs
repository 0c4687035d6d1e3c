//! Shared scenarios for the relay client interop tests: one body per behaviour, run against
//! the real Python relay (`relay_client_python.rs`) and against ours (`relay_client_ours.rs`).
//! Every wait has a timeout; nothing asserts on elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)] // each test file uses a subset

use std::path::Path;
use std::time::Duration;

use bistream_relay_client::{
    Backoff, ConnectionEvent, ConnectionState, DescriptionType, Events, RelayClient,
    RelayClientBuilder, RelayError, RelayMessage,
};
use bistream_relay_proto::unknown_peer_error;
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
    pub kind: Kind,
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
                let mut c = Command::new(env!("CARGO_BIN_EXE_bistream"));
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
            kind,
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
        kind: Kind::Python,
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

fn peer_msg(m: RelayMessage) -> bistream_relay_proto::PeerConnectionRequest {
    match m {
        RelayMessage::PeerConnection(p) => p,
        other => panic!("expected a peer_connection, got {other:?}"),
    }
}

// ---------------------------------------------------------------- scenarios

/// Lazy connect, registration, state and events.
pub async fn registers(relay: &Relay) {
    let client = fast(&relay.url).name("rust-a").build().unwrap();
    let mut events = client.events();
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert!(!client.is_connected());
    client.connect(true).await.unwrap();
    assert!(client.is_connected());
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(
        next_event(&mut events).await,
        ConnectionEvent::Connected { registrations: 1 }
    );
    // connect() again is a no-op.
    client.connect(false).await.unwrap();
    assert_eq!(client.stats().registrations, 1);
    client.close().await;
    assert_eq!(client.state(), ConnectionState::Closed);
    assert_eq!(next_event(&mut events).await, ConnectionEvent::Closed);
}

/// Rust → Python and Python → Rust through the relay, and a Python echo round trip.
pub async fn forwards_with_python(relay: &Relay) {
    let client = fast(&relay.url).name("rust-é").build().unwrap();
    client.connect(true).await.unwrap();

    // Rust -> Python (non-ASCII survives both encoders).
    let (mut py, py_uuid) = python_peer(&relay.url, &["--mode", "recv", "--count", "1"]).await;
    let text = "{\"sdp\": \"v=0 é 😀\", \"type\": \"offer\"}";
    client
        .send(client.peer_connection(py_uuid, DescriptionType::Offer, text))
        .await
        .unwrap();
    let line = py.next_stdout_line(STEP).await.expect("python printed");
    let got = peer_msg(RelayMessage::decode(&line).expect("python line decodes"));
    assert_eq!(got.source_uuid, client.uuid());
    assert_eq!(got.source_name, "rust-é");
    assert_eq!(got.peer_uuid, py_uuid);
    assert_eq!(got.description, text);
    assert_eq!(got.description_type, DescriptionType::Offer);
    assert_eq!(got.error, None);

    // Python -> Rust.
    let me = client.uuid().to_string();
    let (_py2, py2_uuid) = python_peer(
        &relay.url,
        &[
            "--mode",
            "send",
            "--to",
            &me,
            "--description",
            "from python ñ",
            "--type",
            "answer",
        ],
    )
    .await;
    let got = peer_msg(recv(&client).await);
    assert_eq!(got.source_uuid, py2_uuid);
    assert_eq!(got.source_name, "python-peer");
    assert_eq!(got.peer_uuid, client.uuid());
    assert_eq!(got.description, "from python ñ");
    assert_eq!(got.description_type, DescriptionType::Answer);

    // Round trip: Python echoes our offer back as an answer.
    let (_echo, echo_uuid) = python_peer(&relay.url, &["--mode", "echo", "--count", "3"]).await;
    for i in 0..3 {
        let d = format!("offer #{i}");
        client
            .send(client.peer_connection(echo_uuid, DescriptionType::Offer, d.clone()))
            .await
            .unwrap();
        let got = peer_msg(recv(&client).await);
        assert_eq!(got.source_uuid, echo_uuid);
        assert_eq!(got.description, format!("echo:{d}"));
        assert_eq!(got.description_type, DescriptionType::Answer);
    }
    client.close().await;
}

/// A message to an unregistered UUID comes back with the relay's error text.
pub async fn unknown_peer_bounces(relay: &Relay) {
    let client = fast(&relay.url).build().unwrap();
    let nobody = Uuid::new_v4();
    // send() connects lazily.
    client
        .send(client.peer_connection(nobody, DescriptionType::Offer, "x"))
        .await
        .unwrap();
    let got = peer_msg(recv(&client).await);
    assert_eq!(got.peer_uuid, nobody);
    assert_eq!(got.source_uuid, client.uuid());
    assert_eq!(got.error, Some(unknown_peer_error(&nobody)));
    // The connection stays usable.
    client
        .send(client.peer_connection(client.uuid(), DescriptionType::Answer, "to myself"))
        .await
        .unwrap();
    let got = peer_msg(recv(&client).await);
    assert_eq!(got.description, "to myself");
    assert_eq!(got.error, None);
    client.close().await;
}

/// Two Rust clients; the receiver does not read while 40 messages arrive (queue of 2): the
/// reader pauses, nothing is dropped, order is kept.
pub async fn backpressure_keeps_every_message(relay: &Relay) {
    let a = fast(&relay.url).build().unwrap();
    let b = fast(&relay.url).incoming_capacity(2).build().unwrap();
    b.connect(true).await.unwrap();
    for i in 0..40 {
        a.send(a.peer_connection(b.uuid(), DescriptionType::Offer, format!("m{i}")))
            .await
            .unwrap();
    }
    // A round trip through the relay after the burst: a's own echo arrives once the relay
    // has processed everything a sent before it.
    a.send(a.peer_connection(a.uuid(), DescriptionType::Offer, "fence"))
        .await
        .unwrap();
    assert_eq!(peer_msg(recv(&a).await).description, "fence");
    for i in 0..40 {
        let got = peer_msg(recv(&b).await);
        assert_eq!(got.description, format!("m{i}"));
    }
    assert_eq!(b.stats().messages_received, 40);
    assert_eq!(b.stats().registrations, 1);
    a.close().await;
    b.close().await;
}

/// 4004: the same UUID registered elsewhere stops the old client for good (no reconnect).
pub async fn duplicate_uuid_is_fatal(relay: &Relay) {
    let id = Uuid::new_v4();
    let old = fast(&relay.url).uuid(id).build().unwrap();
    let mut events = old.events();
    old.connect(true).await.unwrap();
    let new = fast(&relay.url).uuid(id).build().unwrap();
    new.connect(true).await.unwrap();

    let err = tokio::time::timeout(STEP, old.recv())
        .await
        .expect("recv should end")
        .unwrap_err();
    match &err {
        RelayError::FatalClose { code: 4004, reason } => {
            assert!(reason.contains("same ID"), "{reason}")
        }
        other => panic!("expected 4004, got {other:?}"),
    }
    assert!(matches!(old.state(), ConnectionState::Failed(_)));
    // Every later call returns the same error, without reconnecting.
    assert_eq!(old.connect(true).await.unwrap_err(), err);
    assert_eq!(
        old.send(old.peer_connection(id, DescriptionType::Offer, "x"))
            .await
            .unwrap_err(),
        err
    );
    let (_, skipped) = wait_event(&mut events, |e| matches!(e, ConnectionEvent::Failed(_))).await;
    assert!(
        !skipped
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Retrying { .. })),
        "{skipped:?}"
    );
    assert_eq!(old.stats().registrations, 1);
    // The new owner of the UUID still works.
    new.send(new.peer_connection(id, DescriptionType::Offer, "still here"))
        .await
        .unwrap();
    assert_eq!(peer_msg(recv(&new).await).description, "still here");
    new.close().await;
}

/// The relay restarts: the client reconnects and re-registers by itself, and a recv() that
/// was waiting across the outage gets the next message.
pub async fn survives_server_restart(kind: Kind) {
    let relay = Relay::start(kind).await;
    let port = relay.port;
    let client = std::sync::Arc::new(fast(&relay.url).build().unwrap());
    let mut events = client.events();
    client.connect(true).await.unwrap();
    next_event(&mut events).await; // Connected 1

    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.recv().await }
    });
    relay.stop().await;
    let (e, _) = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(e, ConnectionEvent::Disconnected { code: 1001, .. }),
        "{e:?}"
    );
    // Nothing listens now: at least one retry is announced.
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Retrying { .. })
    })
    .await;

    let relay = Relay::start_on(kind, port, None).await;
    let (e, _) = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    assert_eq!(e, ConnectionEvent::Connected { registrations: 2 });
    assert!(client.is_connected());

    // Registered again under the same UUID: a Python peer can reach it.
    let me = client.uuid().to_string();
    let (_py, py_uuid) = python_peer(
        &relay.url,
        &[
            "--mode",
            "send",
            "--to",
            &me,
            "--description",
            "after restart",
        ],
    )
    .await;
    let got = tokio::time::timeout(STEP, waiting)
        .await
        .expect("the waiting recv should finish")
        .expect("task")
        .expect("recv");
    let got = peer_msg(got);
    assert_eq!(got.source_uuid, py_uuid);
    assert_eq!(got.description, "after restart");
    client.close().await;
}

/// close() while the client is retrying ends a waiting recv() with Closed and stops every
/// background task (the event stream ends once the client is dropped).
pub async fn close_while_reconnecting(kind: Kind) {
    let relay = Relay::start(kind).await;
    let client = std::sync::Arc::new(fast(&relay.url).build().unwrap());
    let mut events = client.events();
    client.connect(true).await.unwrap();
    relay.stop().await;
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Retrying { .. })
    })
    .await;
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.recv().await }
    });
    client.close().await;
    let r = tokio::time::timeout(STEP, waiting)
        .await
        .expect("recv ends on close")
        .expect("task");
    assert_eq!(r, Err(RelayError::Closed));
    assert_eq!(client.state(), ConnectionState::Closed);
    drop(client);
    // All tasks hold the event sender; the stream ends only when they are all gone.
    let (_, rest) = wait_end(&mut events).await;
    assert!(
        !rest
            .iter()
            .skip_while(|e| **e != ConnectionEvent::Closed)
            .any(|e| matches!(
                e,
                ConnectionEvent::Retrying { .. } | ConnectionEvent::Connected { .. }
            )),
        "activity after close: {rest:?}"
    );
}

async fn wait_end(events: &mut Events) -> ((), Vec<ConnectionEvent>) {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(STEP, events.next())
            .await
            .expect("event stream should end after the client is dropped")
        {
            Some(e) => seen.push(e),
            None => return ((), seen),
        }
    }
}

/// Eight tasks share one client and send 50 messages each to it through the relay while
/// the main task receives: every message arrives exactly once, over one registration.
pub async fn concurrent_senders_share_one_client(relay: &Relay) {
    let client = std::sync::Arc::new(fast(&relay.url).build().unwrap());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let m = c.peer_connection(c.uuid(), DescriptionType::Offer, format!("{t}/{i}"));
                c.send(m).await.unwrap();
            }
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..400 {
        let m = peer_msg(recv(&client).await);
        assert!(
            seen.insert(m.description.clone()),
            "duplicate {}",
            m.description
        );
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(seen.len(), 400);
    // Exactly one registration although eight tasks raced to connect lazily.
    assert_eq!(client.stats().registrations, 1);
    assert_eq!(client.stats().messages_sent, 400);
}

/// Dropping a client closes its connection cleanly: the relay unregisters it, so a message
/// to its UUID bounces as unknown.
pub async fn drop_closes_the_connection(relay: &Relay) {
    let gone = fast(&relay.url).build().unwrap();
    gone.connect(true).await.unwrap();
    let gone_uuid = gone.uuid();
    let other = fast(&relay.url).build().unwrap();
    drop(gone);
    // Poll until the relay has processed the close (bounded by the timeout).
    tokio::time::timeout(STEP, async {
        loop {
            other
                .send(other.peer_connection(gone_uuid, DescriptionType::Offer, "anyone?"))
                .await
                .unwrap();
            // A message to ourselves marks the point where the relay has handled the first.
            other
                .send(other.peer_connection(other.uuid(), DescriptionType::Offer, "marker"))
                .await
                .unwrap();
            let mut bounced = false;
            loop {
                let m = peer_msg(recv(&other).await);
                if m.description == "marker" {
                    break;
                }
                if m.peer_uuid == gone_uuid && m.error == Some(unknown_peer_error(&gone_uuid)) {
                    bounced = true;
                }
            }
            if bounced {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay should unregister a dropped client");
}
