//! Three relay nodes in one process sharing a private redis-server: cross-node forwarding in
//! both directions with one node's replies and errors, exactly once and in order, UUID
//! takeover across nodes, user isolation across nodes, and Redis killed and restarted; the
//! same per-pair guarantee with the nodes on one runtime thread and many senders at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod cluster_support;
mod common;

use bistream_relay_server::{AuthConfig, RelayConfig, RunningRelay};
use cluster_support::*;
use common::*;
use serde_json::Value;
use uuid::Uuid;

async fn wait_up(node: &RunningRelay, up: bool) {
    let want = if up { 1.0 } else { 0.0 };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if metric(node, "bistream_relay_cluster_up{").await == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never reported cluster_up = {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn nodes(redis: &Redis, base: RelayConfig) -> Vec<RunningRelay> {
    let mut out = Vec::new();
    for i in 1..=3 {
        let n = start(node_config(base.clone(), redis, &format!("n{i}"))).await;
        wait_up(&n, true).await;
        out.push(n);
    }
    out
}

fn assert_forwarded(m: &Value, from: Uuid, from_name: &str, to: Uuid, description: &str) {
    assert_eq!(m["message_type"], "peer_connection", "{m}");
    assert_eq!(m["source_uuid"], from.to_string(), "{m}");
    assert_eq!(m["source_name"], from_name, "{m}");
    assert_eq!(m["peer_uuid"], to.to_string(), "{m}");
    assert_eq!(m["description"], description, "{m}");
    assert_eq!(m["error"], Value::Null, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_forwarding_both_ways_exactly_once_in_order() {
    let redis = Redis::start().await;
    let n = nodes(&redis, config()).await;
    let (mut a, ua) = registered(&n[0], "alice-on-1").await;
    let (mut b, ub) = registered(&n[1], "bob-on-2").await;
    let (mut c, uc) = registered(&n[2], "carol-on-3").await;

    // 1 → 2, with content that JSON escaping could alter.
    let desc = "v=0\r\no=- \"quoted\" é 🎉 \\ back\\slash";
    send(&mut a, peer_message(ua, "spoofed", ub, desc)).await;
    let m = recv_json(&mut b).await;
    assert_forwarded(&m, ua, "alice-on-1", ub, desc);
    // 2 → 1 and 3 → 1.
    send(&mut b, peer_message(ub, "bob-on-2", ua, "answer")).await;
    assert_forwarded(&recv_json(&mut a).await, ub, "bob-on-2", ua, "answer");
    send(&mut c, peer_message(uc, "carol-on-3", ua, "from 3")).await;
    assert_forwarded(&recv_json(&mut a).await, uc, "carol-on-3", ua, "from 3");

    // Exactly once, in order: 300 messages 1 → 3.
    for i in 0..300 {
        send(&mut a, peer_message(ua, "x", uc, &format!("m{i}"))).await;
    }
    for i in 0..300 {
        let m = recv_json(&mut c).await;
        assert_eq!(m["description"], format!("m{i}"), "{m}");
    }
    // No acknowledgement and no duplicate: the next thing each side sees is what follows.
    let ghost = Uuid::new_v4();
    send(&mut a, peer_message(ua, "x", ghost, "to nobody")).await;
    let bounce = recv_json(&mut a).await;
    assert_eq!(
        bounce["error"],
        format!("Cannot forward peer connection message to peer {ghost} because this peer is not registered this relay server.")
    );
    assert_eq!(bounce["description"], "to nobody");
    assert_eq!(bounce["source_uuid"], ua.to_string());
    send(&mut a, peer_message(ua, "x", uc, "last")).await;
    assert_eq!(recv_json(&mut c).await["description"], "last");

    // A forward before registering is still 4002 with ProxyStore's text.
    let mut d = connect(&n[1]).await;
    send(&mut d, peer_message(Uuid::new_v4(), "d", ua, "early")).await;
    let (code, _) = expect_close(&mut d).await;
    assert_eq!(code, 4002);

    assert!(metric(&n[0], "bistream_relay_cluster_forwards_sent_total{").await >= Some(302.0));
    assert!(metric(&n[2], "bistream_relay_cluster_forwards_received_total{").await >= Some(301.0));
    for node in n {
        node.shutdown().await;
    }
}

/// A Redis that wants a password, and a database other than 0: the nodes' connections
/// authenticate (`AUTH`) and select it, and forwarding works
/// both ways, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_database_from_the_url() {
    let redis = Redis::start_with(Some("s3cret-pass"), 3).await;
    let mut n = Vec::new();
    for i in 1..=2 {
        let node = start(node_config(config(), &redis, &format!("p{i}"))).await;
        wait_up(&node, true).await;
        n.push(node);
    }
    let (mut a, ua) = registered(&n[0], "alice").await;
    let (mut b, ub) = registered(&n[1], "bob").await;
    for i in 0..50 {
        send(&mut a, peer_message(ua, "alice", ub, &format!("m{i}"))).await;
    }
    for i in 0..50 {
        assert_forwarded(&recv_json(&mut b).await, ua, "alice", ub, &format!("m{i}"));
    }
    send(&mut b, peer_message(ub, "bob", ua, "back")).await;
    assert_forwarded(&recv_json(&mut a).await, ub, "bob", ua, "back");
    for node in n {
        node.shutdown().await;
    }
}

/// The nodes on one runtime thread (the setting for co-located nodes): many senders of one
/// node forward at once, so the publisher's batches take several clients' messages after its
/// yield; each pair still gets every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_runtime_thread_concurrent_senders_exactly_once_in_order_per_pair() {
    const PAIRS: usize = 6;
    const MESSAGES: usize = 200;
    let redis = Redis::start().await;
    let n = nodes(&redis, config()).await;
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for p in 0..PAIRS {
        let (a, ua) = registered(&n[0], &format!("sender-{p}")).await;
        let (b, ub) = registered(&n[1], &format!("receiver-{p}")).await;
        senders.push(tokio::spawn(async move {
            let mut a = a;
            for i in 0..MESSAGES {
                send(&mut a, peer_message(ua, "s", ub, &format!("{p}:{i}"))).await;
            }
            a
        }));
        receivers.push((b, ua));
    }
    let mut checks = Vec::new();
    for (p, (mut b, ua)) in receivers.into_iter().enumerate() {
        checks.push(tokio::spawn(async move {
            for i in 0..MESSAGES {
                let m = recv_json(&mut b).await;
                assert_eq!(m["source_uuid"], ua.to_string(), "{m}");
                assert_eq!(m["description"], format!("{p}:{i}"), "{m}");
            }
            assert_silent(&mut b).await;
        }));
    }
    let mut keep = Vec::new();
    for s in senders {
        keep.push(s.await.unwrap());
    }
    for c in checks {
        c.await.unwrap();
    }
    let sent = metric(&n[0], "bistream_relay_cluster_forwards_sent_total{").await;
    assert!(sent >= Some((PAIRS * MESSAGES) as f64), "{sent:?}");
    drop(keep);
    for node in n {
        node.shutdown().await;
    }
}

fn token_config(dir: &tempfile::TempDir) -> RelayConfig {
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        "[tokens]\n\"tok-alice\" = \"alice\"\n\"tok-bob\" = \"bob\"\n",
    )
    .unwrap();
    RelayConfig {
        auth: AuthConfig::Tokens { file: path },
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_isolation_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start().await;
    let n = nodes(&redis, token_config(&dir)).await;
    let mut alice = connect_with(&n[0], Some("Bearer tok-alice")).await;
    let ua = Uuid::new_v4();
    register(&mut alice, "alice", ua).await;
    let mut bob = connect_with(&n[1], Some("Bearer tok-bob")).await;
    let ub = Uuid::new_v4();
    register(&mut bob, "bob", ub).await;

    // Alice → Bob's client on another node: ProxyStore's other-user text, nothing delivered.
    send(&mut alice, peer_message(ua, "alice", ub, "psst")).await;
    let m = recv_json(&mut alice).await;
    assert_eq!(
        m["error"],
        format!("The requested peer {ub} is owned by a different user.")
    );
    // Bob takes Alice's UUID on a third node: refused 4002 cluster-wide.
    let mut thief = connect_with(&n[2], Some("Bearer tok-bob")).await;
    send(&mut thief, registration("thief", ua)).await;
    let (code, reason) = expect_close(&mut thief).await;
    assert_eq!(code, 4002);
    assert_eq!(
        reason,
        format!("ForbiddenError: The client UUID {ua} is already registered to another user.")
    );
    // Alice kept her registration: Bob's client hears nothing, Alice can still be reached.
    let mut alice2 = connect_with(&n[2], Some("Bearer tok-alice")).await;
    let ua2 = Uuid::new_v4();
    register(&mut alice2, "alice2", ua2).await;
    send(&mut alice2, peer_message(ua2, "alice2", ua, "still yours")).await;
    assert_eq!(recv_json(&mut alice).await["description"], "still yours");
    assert_silent(&mut bob).await;
    for node in n {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_across_nodes_closes_the_old_socket_4004() {
    let redis = Redis::start().await;
    let n = nodes(&redis, config()).await;
    let u = Uuid::new_v4();
    let mut old = connect(&n[0]).await;
    register(&mut old, "endpoint", u).await;
    let mut new = connect(&n[1]).await;
    register(&mut new, "endpoint", u).await;
    let (code, reason) = expect_close(&mut old).await;
    assert_eq!(code, 4004);
    assert_eq!(reason, bistream_relay_proto::DUPLICATE_REGISTRATION_REASON);
    // Forwards from any node now reach the new socket (also from the old socket's node).
    for (i, node) in [&n[0], &n[2]].into_iter().enumerate() {
        let (mut s, us) = registered(node, "sender").await;
        send(&mut s, peer_message(us, "sender", u, &format!("hi {i}"))).await;
        let m = recv_json(&mut new).await;
        assert_eq!(m["description"], format!("hi {i}"));
        assert_eq!(m["source_uuid"], us.to_string());
    }
    assert_eq!(
        metric(&n[0], "bistream_relay_cluster_evictions_total{").await,
        Some(1.0)
    );
    for node in n {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_same_node_forwarding_and_recovers_on_the_same_sockets() {
    let mut redis = Redis::start().await;
    let n = nodes(&redis, config()).await;
    let (mut a1, ua1) = registered(&n[0], "a1").await;
    let (mut a2, ua2) = registered(&n[0], "a2").await;
    let (mut b, ub) = registered(&n[1], "b").await;
    send(&mut a1, peer_message(ua1, "a1", ub, "before")).await;
    assert_eq!(recv_json(&mut b).await["description"], "before");

    redis.kill().await;
    wait_up(&n[0], false).await;
    wait_up(&n[1], false).await;
    // Same node: still forwarded.
    send(&mut a1, peer_message(ua1, "a1", ua2, "local")).await;
    assert_eq!(recv_json(&mut a2).await["description"], "local");
    // Cross node: bounced, naming the cause.
    send(&mut a1, peer_message(ua1, "a1", ub, "lost")).await;
    let m = recv_json(&mut a1).await;
    let err = m["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains(&ub.to_string())
            && err.contains("backplane is unavailable")
            && err.contains(&format!("127.0.0.1:{}", redis.port)),
        "{m}"
    );
    assert_eq!(m["description"], "lost");
    // A client may even register while Redis is down; it is published on recovery.
    let (mut late, ulate) = registered(&n[2], "late").await;

    redis.restart().await;
    for node in &n {
        wait_up(node, true).await;
    }
    // Within 15 s, cross-node works again on the same sockets (heartbeats re-publish).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut i = 0;
    loop {
        i += 1;
        send(
            &mut a1,
            peer_message(ua1, "a1", ulate, &format!("again {i}")),
        )
        .await;
        tokio::select! {
            m = recv_json(&mut late) => {
                assert!(m["description"].as_str().unwrap().starts_with("again"), "{m}");
                break;
            }
            // Bounced (not re-published yet): try again.
            bounce = recv_json(&mut a1) => assert!(bounce["error"].is_string(), "{bounce}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery within 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    send(&mut b, peer_message(ub, "b", ua1, "back")).await;
    loop {
        let m = recv_json(&mut a1).await;
        if m["error"].is_null() {
            assert_eq!(m["description"], "back");
            break;
        }
    }
    // Each transition counted once per node, not once per message.
    for node in &n {
        assert_eq!(
            metric(node, "bistream_relay_cluster_down_total{").await,
            Some(1.0)
        );
        assert_eq!(
            metric(node, "bistream_relay_cluster_connects_total{").await,
            Some(2.0)
        );
    }
    assert!(
        metric(
            &n[0],
            "bistream_relay_cluster_bounced_total{node=\"n1\",reason=\"backplane_down\"}"
        )
        .await
            >= Some(1.0)
    );
    for node in n {
        node.shutdown().await;
    }
}

/// A sender's node caches where a target is; when the target moves (takeover on another
/// node) or leaves, the stale route must still deliver exactly once, or bounce with the
/// unknown-peer text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cached_routes_deliver_once_or_bounce_unknown() {
    let redis = Redis::start().await;
    let n = nodes(&redis, config()).await;
    let (mut a, ua) = registered(&n[0], "a").await;
    let u = Uuid::new_v4();
    let mut b = connect(&n[1]).await;
    register(&mut b, "b", u).await;
    // Node 1 learns (and caches) that `u` is on node 2.
    send(&mut a, peer_message(ua, "a", u, "m0")).await;
    assert_eq!(recv_json(&mut b).await["description"], "m0");
    let learned = std::time::Instant::now();
    // `u` moves to node 3; node 1 may still route to node 2, which sends it on.
    let mut b3 = connect(&n[2]).await;
    register(&mut b3, "b", u).await;
    let (code, _) = expect_close(&mut b).await;
    assert_eq!(code, 4004);
    let fresh = learned.elapsed() < std::time::Duration::from_millis(500);
    for i in 1..=50 {
        send(&mut a, peer_message(ua, "a", u, &format!("m{i}"))).await;
    }
    for i in 1..=50 {
        let m = recv_json(&mut b3).await;
        assert_forwarded(&m, ua, "a", u, &format!("m{i}"));
    }
    assert_silent(&mut a).await;
    if fresh {
        // The route was still cached when the messages left: node 2 sent them on.
        assert!(metric(&n[1], "bistream_relay_cluster_rerouted_total{").await >= Some(1.0));
    }
    // `u` leaves: whatever node 1 still believes, the sender gets the unknown-peer text.
    let _ = b3.close(None).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while metric(&n[2], "bistream_relay_cluster_registrations{").await != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 kept the registration"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 0..3 {
        send(&mut a, peer_message(ua, "a", u, &format!("after {i}"))).await;
        let m = recv_json(&mut a).await;
        assert_eq!(m["description"], format!("after {i}"), "{m}");
        assert_eq!(
            m["error"],
            format!("Cannot forward peer connection message to peer {u} because this peer is not registered this relay server."),
            "{m}"
        );
    }
    for node in n {
        node.shutdown().await;
    }
}

/// Publishes `payload` on the channel of the process holding `uuid` (found in Redis).
async fn publish_to_holder(redis: &Redis, uuid: Uuid, payload: Vec<u8>) -> String {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let value: String = redis::cmd("GET")
        .arg(format!("bistream:relay:client:{uuid}"))
        .query_async(&mut c)
        .await
        .unwrap();
    let instance = value.split('|').next().unwrap().to_string();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("bistream:relay:0:instance:{instance}"))
        .arg(payload)
        .query_async(&mut c)
        .await
        .unwrap();
    value.rsplit('|').next().unwrap().to_string()
}

/// A framed forward record (`<len>|R|<target>|<origin>|<user len>|<user><text>`), as the forward
/// script sends it, with any bytes as the text.
fn framed_record(target: Uuid, user: &str, text: &[u8]) -> Vec<u8> {
    let mut rec = format!("R|{target}|0123456789abcdef|{}|{user}", user.len()).into_bytes();
    rec.extend_from_slice(text);
    let mut out = format!("{}|", rec.len()).into_bytes();
    out.extend_from_slice(&rec);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_texts_and_users_from_redis_are_dropped_and_counted_the_rest_delivered() {
    let redis = Redis::start().await;
    let node = start(node_config(config(), &redis, "n1")).await;
    wait_up(&node, true).await;
    let (mut b, ub) = registered(&node, "bob").await;
    // The registration's user, as the node wrote it.
    let user = publish_to_holder(&redis, ub, b"ignored".to_vec()).await;
    let ua = Uuid::new_v4();
    let good = |d: &str| peer_message(ua, "alice", ub, d).into_bytes();

    // One payload carrying bad records between two good ones: only the bad ones are lost.
    let mut batch = framed_record(ub, &user, &good("first"));
    batch.extend(framed_record(ub, &user, b"{\"x\":\"\xff\xfe\"}"));
    // A user that is not UTF-8 (after a run of good records of the real user).
    let mut bad_user = framed_record(ub, "\u{e9}", &good("bad user"));
    let at = bad_user.iter().position(|b| *b == 0xc3).unwrap();
    bad_user[at] = 0xff;
    batch.extend(bad_user);
    batch.extend(framed_record(ub, &user, &good("second")));
    publish_to_holder(&redis, ub, batch).await;
    for d in ["first", "second"] {
        let m = recv_json(&mut b).await;
        assert_eq!(m["description"], d, "{m}");
    }
    assert_silent(&mut b).await;
    // The undecodable "ignored" payload and the two bad records.
    assert_eq!(
        metric(&node, "bistream_relay_cluster_inbound_dropped_total").await,
        Some(3.0)
    );
    assert_eq!(
        metric(&node, "bistream_relay_cluster_forwards_received_total").await,
        Some(2.0)
    );
}
