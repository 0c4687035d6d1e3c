//! The ops endpoint: /health, /healthz and Prometheus /metrics with real figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bistream_relay_server::RelayConfig;
use bistream_testkit::http_get;
use common::*;
use uuid::Uuid;

#[tokio::test]
async fn health_and_metrics() {
    let relay = start(RelayConfig {
        metrics_addr: Some("127.0.0.1:0".into()),
        ..config()
    })
    .await;
    let maddr = relay.metrics_addr().expect("metrics bound");
    for path in ["/health", "/healthz"] {
        let (status, body) = http_get(maddr, path).await;
        assert_eq!(status, 200, "{path}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok");
    }
    let (mut a, au) = registered(&relay, "a").await;
    let (mut b, bu) = registered(&relay, "b").await;
    send(&mut a, peer_message(au, "a", bu, "x")).await;
    recv_json(&mut b).await;
    send(&mut a, peer_message(au, "a", Uuid::new_v4(), "x")).await;
    recv_json(&mut a).await;
    send(&mut b, "garbage").await;
    expect_close(&mut b).await;
    eventually("close counted", || relay.metrics().closes_with(4000) == 1).await;
    eventually("connection gone", || {
        relay.metrics().snapshot().connections_open == 1
    })
    .await;

    let (status, text) = http_get(maddr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "relay_connections_open 1",
        "relay_registered_clients 1",
        "relay_connections_total 2",
        "relay_registrations_total 2",
        "relay_messages_forwarded_total 1",
        "relay_bounced_total{reason=\"unknown_peer\"} 1",
        "relay_closes_total{code=\"4000\"} 1",
        "relay_decode_errors_total 1",
        "relay_send_queue_drops_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("# TYPE relay_bytes_forwarded_total counter"));
    let (status, _) = http_get(maddr, "/nope").await;
    assert_eq!(status, 404);
    relay.shutdown().await;
}
