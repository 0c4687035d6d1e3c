//! The real ProxyStore `RelayClient` (proxystore 1.1.0, `.venv/relay`) on two different
//! nodes of a cluster: an offer crosses nodes one way, the answer the other way, and a
//! message to an unknown peer comes back with ProxyStore's own error text.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod cluster_support;
mod common;

use std::time::Duration;

use bistream_testkit::{python_scripts_dir, relay_python, Peer};
use cluster_support::*;
use common::*;
use serde_json::Value;

fn python(relay_url: &str, args: &[&str]) -> Peer {
    let mut cmd = tokio::process::Command::new(relay_python());
    cmd.arg(python_scripts_dir().join("relay_client_peer.py"))
        .arg(relay_url)
        .args(args);
    Peer::spawn(cmd).expect("python with proxystore (scripts/setup-test-env)")
}

async fn json_lines_until(p: &mut Peer, end: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let line = p
            .next_stdout_line(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("python peer ended early: {:?}", p.transcript));
        if line.trim() == end {
            return out;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            out.push(v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_relay_clients_on_two_nodes() {
    let redis = Redis::start().await;
    let n1 = start(node_config(config(), &redis, "n1")).await;
    let n2 = start(node_config(config(), &redis, "n2")).await;
    for n in [&n1, &n2] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while metric(n, "bistream_relay_cluster_up{").await != Some(1.0) {
            assert!(tokio::time::Instant::now() < deadline, "backplane not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut echo = python(
        &n2.url(),
        &["--mode", "echo", "--count", "1", "--name", "answerer"],
    );
    let ready = echo.wait_for_line("READY ", Duration::from_secs(60)).await;
    let echo_uuid = ready.trim().trim_start_matches("READY ").to_string();

    let offer = "v=0 offer é 🎉";
    let mut sender = python(
        &n1.url(),
        &[
            "--mode",
            "send",
            "--to",
            &echo_uuid,
            "--description",
            offer,
            "--wait",
            "5",
            "--name",
            "offerer",
        ],
    );
    let ready = sender
        .wait_for_line("READY ", Duration::from_secs(60))
        .await;
    let sender_uuid = ready.trim().trim_start_matches("READY ").to_string();
    let replies = json_lines_until(&mut sender, "SENT").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    let answer = &replies[0];
    assert_eq!(answer["source_uuid"], echo_uuid.as_str(), "{answer}");
    assert_eq!(answer["source_name"], "answerer", "{answer}");
    assert_eq!(answer["peer_uuid"], sender_uuid.as_str(), "{answer}");
    assert_eq!(answer["description_type"], "answer", "{answer}");
    assert_eq!(answer["description"], format!("echo:{offer}"), "{answer}");
    assert_eq!(answer["error"], Value::Null, "{answer}");
    // What the answerer saw on node 2: the offer from node 1, unchanged.
    let seen = echo.wait_for_line("offerer", Duration::from_secs(30)).await;
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["source_uuid"], sender_uuid.as_str());
    assert_eq!(seen["description"], offer);
    assert_eq!(seen["description_type"], "offer");

    // To a peer registered nowhere in the cluster: ProxyStore's text, to the real client.
    let ghost = uuid::Uuid::new_v4().to_string();
    let mut lost = python(
        &n1.url(),
        &["--mode", "send", "--to", &ghost, "--wait", "3"],
    );
    let bounces = json_lines_until(&mut lost, "SENT").await;
    assert_eq!(bounces.len(), 1, "{bounces:?}");
    assert_eq!(
        bounces[0]["error"],
        format!("Cannot forward peer connection message to peer {ghost} because this peer is not registered this relay server.")
    );
    n1.shutdown().await;
    n2.shutdown().await;
}
