//! Registration: the reply, takeover of a UUID by the same user (old socket closed 4004),
//! re-registration on the same socket, and unregistration when a socket ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use uuid::Uuid;

#[tokio::test]
async fn registration_gets_success_reply_on_any_path() {
    let relay = start(config()).await;
    let (_ws, _) = registered(&relay, "client-a").await;
    assert_eq!(relay.registered_clients(), 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn same_uuid_on_new_socket_closes_old_with_4004() {
    let relay = start(config()).await;
    let u = Uuid::new_v4();
    let mut old = connect(&relay).await;
    register(&mut old, "a", u).await;
    let mut new = connect(&relay).await;
    register(&mut new, "a", u).await;
    let (code, reason) = expect_close(&mut old).await;
    assert_eq!(code, 4004);
    assert_eq!(
        reason,
        "Relay received a registration with the same ID. This might mean that the endpoint is running in multiple locations."
    );
    // The new registration survives the old socket's end: messages reach the new socket.
    let (mut other, ou) = registered(&relay, "b").await;
    send(&mut other, peer_message(ou, "b", u, "hi")).await;
    assert_eq!(recv_json(&mut new).await["description"], "hi");
    assert_eq!(relay.registered_clients(), 2);
    assert_eq!(relay.metrics().closes_with(4004), 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn reregistering_same_socket_with_new_uuid_drops_the_old_uuid() {
    let relay = start(config()).await;
    let mut ws = connect(&relay).await;
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    register(&mut ws, "a", u1).await;
    register(&mut ws, "a", u1).await; // same uuid again: success again
    register(&mut ws, "a", u2).await;
    assert_eq!(relay.registered_clients(), 1);
    let (mut b, bu) = registered(&relay, "b").await;
    send(&mut b, peer_message(bu, "b", u1, "to-old")).await;
    let bounced = recv_json(&mut b).await;
    assert!(
        bounced["error"]
            .as_str()
            .unwrap()
            .contains("is not registered"),
        "{bounced}"
    );
    send(&mut b, peer_message(bu, "b", u2, "to-new")).await;
    assert_eq!(recv_json(&mut ws).await["description"], "to-new");
    relay.shutdown().await;
}

#[tokio::test]
async fn closed_socket_is_unregistered() {
    let relay = start(config()).await;
    let (mut a, au) = registered(&relay, "a").await;
    let (mut b, _) = registered(&relay, "b").await;
    a.close(None).await.unwrap();
    eventually("unregistration", || relay.registered_clients() == 1).await;
    send(&mut b, peer_message(Uuid::new_v4(), "b", au, "x")).await;
    let bounced = recv_json(&mut b).await;
    assert_eq!(
        bounced["error"],
        format!("Cannot forward peer connection message to peer {au} because this peer is not registered this relay server.")
    );
    // A dropped TCP connection (no close frame) is unregistered too.
    drop(b);
    eventually("unregistration after drop", || {
        relay.registered_clients() == 0
    })
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn non_canonical_uuid_spellings_register_as_the_same_client() {
    let relay = start(config()).await;
    let u = Uuid::new_v4();
    let mut ws = connect(&relay).await;
    let upper = format!("{{{}}}", u.to_string().to_uppercase());
    send(
        &mut ws,
        serde_json::json!({"name": "a", "uuid": upper, "message_type": "relay_registration"})
            .to_string(),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["success"], true);
    let (mut b, bu) = registered(&relay, "b").await;
    send(&mut b, peer_message(bu, "b", u, "x")).await;
    let got = recv_json(&mut ws).await;
    assert_eq!(got["peer_uuid"], u.to_string());
    relay.shutdown().await;
}
