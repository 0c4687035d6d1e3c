//! Forwarding `peer_connection` messages: delivery, the sender gets nothing back, bounces for
//! unknown peers, source fields set from the sender's registration (no spoofing), UTF-8
//! forwarded raw, message to self, and ordering under load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use uuid::Uuid;

#[tokio::test]
async fn forwards_between_clients_and_sets_source_from_registration() {
    let relay = start(config()).await;
    let (mut a, au) = registered(&relay, "client-a").await;
    let (mut b, bu) = registered(&relay, "client-b").await;
    // Spoofed source fields are replaced by the sender's registration.
    let spoof = Uuid::new_v4();
    send(
        &mut a,
        peer_message(
            spoof,
            "mallory",
            bu,
            "{\"sdp\": \"v=0\", \"type\": \"offer\"}",
        ),
    )
    .await;
    let got = recv_json(&mut b).await;
    assert_eq!(got["source_uuid"], au.to_string());
    assert_eq!(got["source_name"], "client-a");
    assert_eq!(got["peer_uuid"], bu.to_string());
    assert_eq!(got["description_type"], "offer");
    assert_eq!(
        got["description"],
        "{\"sdp\": \"v=0\", \"type\": \"offer\"}"
    );
    assert_eq!(got["error"], serde_json::Value::Null);
    assert_eq!(got["message_type"], "peer_connection");
    assert_silent(&mut a).await;
    assert_eq!(relay.metrics().snapshot().messages_forwarded, 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn unknown_peer_bounces_with_proxystore_text_and_connection_stays_open() {
    let relay = start(config()).await;
    let (mut a, au) = registered(&relay, "a").await;
    let nobody = Uuid::new_v4();
    send(&mut a, peer_message(au, "a", nobody, "d")).await;
    let got = recv_json(&mut a).await;
    assert_eq!(
        got["error"],
        format!("Cannot forward peer connection message to peer {nobody} because this peer is not registered this relay server.")
    );
    assert_eq!(got["description"], "d");
    assert_eq!(got["peer_uuid"], nobody.to_string());
    // Still usable.
    send(&mut a, peer_message(au, "a", au, "self")).await;
    assert_eq!(recv_json(&mut a).await["description"], "self");
    relay.shutdown().await;
}

#[tokio::test]
async fn non_ascii_is_forwarded_as_raw_utf8() {
    let relay = start(config()).await;
    let (mut a, _) = registered(&relay, "ñame😀").await;
    let (mut b, bu) = registered(&relay, "b").await;
    let desc = "é".repeat(1000);
    send(&mut a, peer_message(Uuid::new_v4(), "x", bu, &desc)).await;
    let raw = loop {
        match tokio::time::timeout(T, futures_util::StreamExt::next(&mut b))
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => break t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert!(raw.contains(&desc), "forwarded as raw UTF-8");
    assert!(!raw.contains("\\u00e9"));
    assert!(
        raw.len() < 2 * 1000 + 400,
        "not inflated: {} bytes",
        raw.len()
    );
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["source_name"], "ñame😀");
    relay.shutdown().await;
}

#[tokio::test]
async fn many_messages_arrive_in_order() {
    let relay = start(config()).await;
    let (mut a, _) = registered(&relay, "a").await;
    let (mut b, bu) = registered(&relay, "b").await;
    let n = 200;
    let sender = async {
        for i in 0..n {
            send(
                &mut a,
                peer_message(Uuid::new_v4(), "a", bu, &i.to_string()),
            )
            .await;
        }
        a
    };
    let receiver = async {
        for i in 0..n {
            assert_eq!(recv_json(&mut b).await["description"], i.to_string());
        }
    };
    let (_a, ()) = tokio::join!(sender, receiver);
    assert_eq!(relay.metrics().snapshot().messages_forwarded, n as u64);
    relay.shutdown().await;
}
