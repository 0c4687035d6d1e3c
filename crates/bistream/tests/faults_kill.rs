//! Faults: a server process SIGKILLed mid-session (no close frame, no FIN from a graceful
//! shutdown: the kernel resets the sockets).
//!
//! * relay: our `bistream-relay-client` and the real ProxyStore `RelayClient` (proxystore 1.1.0
//!   from `.venv/relay`) are registered and have exchanged a message; the relay is killed and
//!   restarted on the same port; both reconnect and re-register under their UUIDs, and a
//!   message forwarded between them after the restart arrives.
//! * rpc: calls pending on a `bistream rpc serve` process (a `sleep` of 10 minutes, a stream
//!   that has not ended) fail with a connection-lost error as soon as it is killed.
//! * packet: requests pending on a `bistream packet serve --demo` process (frozen with SIGSTOP
//!   first so that none can be answered) fail with `Closed` when it is killed.
//!
//! Every wait is bounded; nothing asserts on elapsed time (the bounds are far above the
//! expected times, so a hang fails the test and a slow machine does not).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use bistream_relay_client::{Backoff, ConnectionEvent, RelayClient, RelayMessage};
use bistream_relay_proto::{DescriptionType, PeerConnectionRequest};
use bistream_testkit::{relay_python, send_signal, Peer};
use tokio::process::Command;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");
const T: Duration = Duration::from_secs(30);

/// `bistream <args>`, waiting for its first stdout line holding `needle`; returns the line.
async fn spawn(args: &[&str], needle: &str) -> (Peer, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("NO_COLOR", "1");
    let mut peer = Peer::spawn(cmd).expect("spawn bistream");
    let line = peer.wait_for_line(needle, T).await;
    peer.drain_output();
    (peer, line)
}

async fn start_relay(port: u16) -> (Peer, u16) {
    let (peer, line) = spawn(
        &[
            "relay",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "warn",
        ],
        "relay listening on ",
    )
    .await;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (peer, port)
}

fn kill(peer: &Peer) {
    assert!(
        send_signal(peer.pid().unwrap(), "KILL"),
        "kill -KILL failed"
    );
}

/// The real ProxyStore RelayClient as an echo peer that survives relay restarts: when its
/// `recv()` raises ConnectionClosed it calls `recv()` again, which reconnects (with ProxyStore's
/// own retry and backoff) and registers the same UUID again. Its background reconnect task is
/// off so that only one reconnect runs at a time (with both, two registrations of one UUID
/// race and take each other over). Other errors from a reconnect are retried by the script.
const PY_ECHO: &str = r#"
import asyncio, sys, websockets
from proxystore.p2p.relay.client import RelayClient
from proxystore.p2p.relay.messages import PeerConnectionRequest

async def main():
    c = RelayClient(sys.argv[1], client_name='py-fault', timeout=5, reconnect_task=False)
    await c.connect()
    print('READY', c.uuid, flush=True)
    done = 0
    while done < 2:
        try:
            m = await c.recv()
        except websockets.exceptions.ConnectionClosed:
            print('LOST', flush=True)
            continue
        except Exception as e:
            # A reconnect attempt that reaches the port while the killed relay's sockets are
            # torn down gets EOF mid-handshake (websockets' InvalidMessage), which ProxyStore's
            # connect() does not retry: the application retries, as a real one would.
            print('RETRY', type(e).__name__, flush=True)
            await asyncio.sleep(0.2)
            continue
        if not isinstance(m, PeerConnectionRequest) or m.error:
            continue
        await c.send(PeerConnectionRequest(
            source_uuid=c.uuid, source_name=c.name, peer_uuid=m.source_uuid,
            description_type='answer', description='echo:' + m.description))
        print('ECHOED', m.description, flush=True)
        done += 1
    await c.close()

asyncio.run(main())
"#;

async fn next(events: &mut bistream_relay_client::Events) -> ConnectionEvent {
    tokio::time::timeout(T, events.next())
        .await
        .expect("an event in time")
        .expect("events")
}

fn offer(client: &RelayClient, to: Uuid, text: &str) -> RelayMessage {
    RelayMessage::PeerConnection(PeerConnectionRequest {
        source_uuid: client.uuid(),
        source_name: "rust-fault".into(),
        peer_uuid: to,
        description_type: DescriptionType::Offer,
        description: text.into(),
        error: None,
    })
}

/// Sends `text` to `to` until its echo comes back (a send made before the peer re-registered
/// bounces and is sent again), bounded by `T`.
async fn echo_round_trip(client: &RelayClient, to: Uuid, text: &str, py: &mut Peer) {
    // Generous: the Python client's reconnect backoff grows while the machine is loaded.
    let bound = 3 * T;
    let echoed = tokio::time::timeout(bound, async {
        loop {
            client.send(offer(client, to, text)).await.expect("send");
            match tokio::time::timeout(Duration::from_secs(2), client.recv()).await {
                Ok(Ok(RelayMessage::PeerConnection(p))) if p.error.is_none() => {
                    assert_eq!(p.source_uuid, to);
                    assert_eq!(p.description, format!("echo:{text}"));
                    return;
                }
                // A bounce (the peer is not registered again yet), or nothing yet: retry.
                Ok(Ok(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(Err(e)) => panic!("recv failed: {e:?}"),
            }
        }
    })
    .await
    .is_ok();
    if !echoed {
        // Panics with everything the Python client printed.
        py.wait_for_line("no such line", Duration::from_secs(3))
            .await;
        panic!("no echo of {text:?} within {bound:?}");
    }
}

#[tokio::test]
async fn relay_sigkilled_and_restarted_both_clients_reconnect_and_reregister() {
    let (relay, port) = start_relay(0).await;
    let url = format!("ws://127.0.0.1:{port}");

    let mut cmd = Command::new(relay_python());
    cmd.arg("-c").arg(PY_ECHO).arg(&url);
    let mut py = Peer::spawn(cmd).expect("spawn the Python RelayClient");
    let line = py.wait_for_line("READY ", T).await;
    let py_uuid = Uuid::parse_str(line.trim().trim_start_matches("READY ")).unwrap();

    let client = RelayClient::builder(&url)
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            factor: 2.0,
            max: Duration::from_millis(400),
            jitter: 0.0,
        })
        .stable_after(Duration::from_millis(200))
        .registration_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut events = client.events();
    tokio::time::timeout(T, client.connect(true))
        .await
        .expect("connect in time")
        .expect("connect");
    echo_round_trip(&client, py_uuid, "before", &mut py).await;

    kill(&relay);
    loop {
        if let ConnectionEvent::Disconnected { .. } = next(&mut events).await {
            break;
        }
    }
    // Restart on the same port at once, while both retry (ProxyStore's backoff doubles from
    // 1 s: a late restart would only make its next attempt late).
    let (relay2, port2) = start_relay(port).await;
    assert_eq!(port2, port);
    py.wait_for_line("LOST", T).await;
    loop {
        if let ConnectionEvent::Connected { registrations } = next(&mut events).await {
            assert_eq!(registrations, 2);
            break;
        }
    }
    assert!(client.is_connected());
    // The Python client is registered again under the same UUID: it gets and echoes this.
    echo_round_trip(&client, py_uuid, "after", &mut py).await;
    py.wait_for_line("ECHOED after", T).await;
    client.close().await;
    drop(relay2);
}

#[tokio::test]
async fn rpc_calls_pending_on_a_killed_server_fail_promptly() {
    let (server, line) = spawn(
        &["rpc", "serve", "127.0.0.1:0", "--log-level", "warn"],
        "rpc listening on ",
    )
    .await;
    let url = line
        .trim()
        .trim_start_matches("rpc listening on ")
        .to_string();
    let conn = bistream_rpc::ws::connect(&url, bistream_rpc::ws::ClientOptions::default())
        .await
        .unwrap();
    // Works first.
    let v: serde_json::Value = conn
        .request_response("echo", &serde_json::json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(v["x"], 1);
    let mut calls = Vec::new();
    for _ in 0..5 {
        let c = conn.clone();
        calls.push(tokio::spawn(async move {
            c.request_response::<_, serde_json::Value>("sleep", &serde_json::json!({"ms": 600_000}))
                .await
        }));
    }
    // Let the requests reach the server (the sleep makes sure they are still pending).
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(&server);
    for c in calls {
        let r = tokio::time::timeout(T, c)
            .await
            .expect("a pending call must not hang after the server died")
            .unwrap();
        let e = r.expect_err("the server died before answering");
        assert!(
            matches!(
                e,
                bistream_rpc::RpcError::Lost(_) | bistream_rpc::RpcError::Closed { .. }
            ),
            "{e:?}"
        );
    }
    // And a new call fails at once too.
    let e = tokio::time::timeout(
        T,
        conn.request_response::<_, serde_json::Value>("echo", &serde_json::json!({})),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(
        matches!(
            e,
            bistream_rpc::RpcError::Lost(_) | bistream_rpc::RpcError::Closed { .. }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn packet_requests_pending_on_a_killed_server_fail_promptly() {
    // The address is the first stdout line; quiet logs so that no log line (which holds the
    // address too, as `addr=...`) can come first.
    let (server, line) = spawn(
        &[
            "packet",
            "serve",
            "127.0.0.1:0",
            "--demo",
            "--log-level",
            "warn",
        ],
        "127.0.0.1:",
    )
    .await;
    let addr = bistream_testkit::parse_addr(line.trim()).unwrap_or_else(|| line.trim().to_string());
    let conn = bistream_packet::Builder::new()
        .connect_tcp(addr.as_str())
        .await
        .unwrap();
    let (_, back) = tokio::time::timeout(T, conn.call(0, 7, &b"ok"[..], 0))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&back[..], b"ok");
    // Frozen: the requests below reach its socket but can never be answered.
    let pid = server.pid().unwrap();
    assert!(send_signal(pid, "STOP"));
    // The signal is delivered asynchronously: wait until the process is really stopped.
    tokio::time::timeout(T, async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if state == Some("T") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server stops on SIGSTOP");
    let mut pending = Vec::new();
    for i in 0..5u64 {
        pending.push(conn.submit(0, i, &b"never answered"[..], 0).await.unwrap());
    }
    kill(&server);
    for p in pending {
        let r = tokio::time::timeout(T, p)
            .await
            .expect("a pending request must not hang after the server died");
        assert!(
            matches!(r, Err(bistream_packet::PacketError::Closed(_))),
            "{r:?}"
        );
    }
}
