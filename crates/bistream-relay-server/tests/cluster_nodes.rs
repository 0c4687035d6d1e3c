//! Node failures, with nodes as real processes (this test binary re-run as a relay node):
//! a SIGKILLed node's registrations leave Redis within 10 s and forwards to them get the
//! unknown-peer error; a SIGSTOPped (hung, connections still open) node's too, and after
//! SIGCONT it re-publishes them; a restarted node rejoins.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod cluster_support;
mod common;

use std::time::Duration;

use bistream_relay_server::{ClusterConfig, ClusterSection, RelayConfig, RelayServer};
use bistream_testkit::Peer;
use cluster_support::*;
use common::*;
use serde_json::Value;
use uuid::Uuid;

const CHILD_URL: &str = "BISTREAM_TEST_CLUSTER_CHILD_URL";
const CHILD_ID: &str = "BISTREAM_TEST_CLUSTER_CHILD_ID";

/// Not a test: the body of a node process started by the tests below (it does nothing
/// unless started by them, with the environment naming its Redis).
#[test]
#[ignore = "child process of the cluster node tests"]
fn cluster_node_child() {
    let (Ok(url), Ok(id)) = (std::env::var(CHILD_URL), std::env::var(CHILD_ID)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cluster = ClusterConfig::from_section(ClusterSection {
            url: Some(url),
            node_id: Some(id),
            heartbeat_interval: Some(1.0),
            registration_ttl: Some(4.0),
            redis_timeout: Some(2.0),
        })
        .unwrap();
        let relay = RelayServer::bind(RelayConfig {
            cluster,
            ..config()
        })
        .await
        .unwrap();
        println!("relay listening on {}", relay.url());
        std::future::pending::<()>().await;
    });
}

struct Node {
    peer: Peer,
    url: String,
}

async fn spawn_node(redis: &Redis, id: &str) -> Node {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["cluster_node_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_URL, redis.url())
        .env(CHILD_ID, id);
    let mut peer = Peer::spawn(cmd).unwrap();
    let line = peer
        .wait_for_line("relay listening on ", Duration::from_secs(60))
        .await;
    let url = line
        .split("relay listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    Node { peer, url }
}

async fn connect_url(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    ws
}

fn signal(node: &Node, sig: &str) {
    let pid = node.peer.child.id().expect("child running");
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Sends from `s` to `to` until `rx` gets it (bounces are drained), within `within`.
async fn until_delivered(s: &mut Ws, us: Uuid, rx: &mut Ws, to: Uuid, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    for i in 0.. {
        send(s, peer_message(us, "s", to, &format!("try {i}"))).await;
        tokio::select! {
            m = recv_json(rx) => {
                assert_eq!(m["source_uuid"], us.to_string(), "{m}");
                return;
            }
            b = recv_json(s) => assert!(b["error"].is_string(), "{b}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{to} not reachable in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends from `s` to `to` until it bounces with the unknown-peer error, within `within`.
async fn until_unknown(s: &mut Ws, us: Uuid, to: Uuid, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    let unknown = format!("Cannot forward peer connection message to peer {to} because this peer is not registered this relay server.");
    loop {
        send(s, peer_message(us, "s", to, "anyone?")).await;
        let b = recv_json(s).await;
        if b["error"] == unknown.as_str() {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still routed after {within:?}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn key_exists(redis: &Redis, uuid: Uuid) -> bool {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("EXISTS")
        .arg(format!("bistream:relay:client:{uuid}"))
        .query_async::<i64>(&mut c)
        .await
        .unwrap()
        == 1
}

async fn until_key_gone(redis: &Redis, uuid: Uuid, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while key_exists(redis, uuid).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "registration of {uuid} still in Redis after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_hung_nodes_expire_and_rejoin() {
    let redis = Redis::start().await;
    let n1 = start(node_config(config(), &redis, "n1")).await;
    let mut n2 = spawn_node(&redis, "n2").await;
    let n3 = spawn_node(&redis, "n3").await;

    let (mut s, us) = registered(&n1, "sender").await;
    let mut k = connect_url(&n2.url).await;
    let uk = Uuid::new_v4();
    register(&mut k, "on-n2", uk).await;
    let mut z = connect_url(&n3.url).await;
    let uz = Uuid::new_v4();
    register(&mut z, "on-n3", uz).await;
    let within = Duration::from_secs(15);
    until_delivered(&mut s, us, &mut k, uk, within).await;
    until_delivered(&mut s, us, &mut z, uz, within).await;
    assert!(key_exists(&redis, uk).await && key_exists(&redis, uz).await);

    // SIGKILL: the registration leaves Redis within 10 s; forwards get ProxyStore's text.
    let _ = n2.peer.child.start_kill();
    let _ = n2.peer.child.wait().await;
    let b = until_unknown(&mut s, us, uk, Duration::from_secs(10)).await;
    assert_eq!(b["description"], "anyone?");
    until_key_gone(&redis, uk, Duration::from_secs(10)).await;

    // SIGSTOP: hung with its Redis connections open; same outcome within 10 s.
    signal(&n3, "-STOP");
    until_key_gone(&redis, uz, Duration::from_secs(10)).await;
    until_unknown(&mut s, us, uz, Duration::from_secs(10)).await;
    // SIGCONT: the node's heartbeat re-publishes its live registration on the same socket.
    signal(&n3, "-CONT");
    until_delivered(&mut s, us, &mut z, uz, within).await;

    // Restart n2 (same node id, new process): it rejoins; the old UUID can be registered again.
    n2 = spawn_node(&redis, "n2").await;
    let mut k2 = connect_url(&n2.url).await;
    register(&mut k2, "on-n2-again", uk).await;
    until_delivered(&mut s, us, &mut k2, uk, within).await;
    // And the other way round.
    send(&mut k2, peer_message(uk, "k2", us, "hello n1")).await;
    assert_eq!(recv_json(&mut s).await["description"], "hello n1");

    // A live registration outlives the TTL (4 s): still reachable after 3 heartbeats' worth.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        key_exists(&redis, uk).await
            && key_exists(&redis, uz).await
            && key_exists(&redis, us).await
    );
    n1.shutdown().await;
    // A clean shutdown removes its registrations at once.
    assert!(!key_exists(&redis, us).await);
    drop(n3);
}
