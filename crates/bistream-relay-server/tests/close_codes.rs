//! Close codes for bad input: 4000 for anything undecodable (including the cases where
//! ProxyStore crashes with 1011), 4002 for forwarding before registering, 1007 for invalid
//! UTF-8; and a client closed with 4000 is unregistered (ProxyStore leaves it registered).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const U: &str = "11111111-2222-4333-8444-555555555555";

async fn expect_4000_after(relay: &bistream_relay_server::RunningRelay, text: &str) {
    let mut ws = connect(relay).await;
    send(&mut ws, text).await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4000, "Unknown message type.".to_string()),
        "input {text:?}"
    );
}

#[tokio::test]
async fn undecodable_messages_close_4000() {
    let relay = start(config()).await;
    let mut n = 0;
    for text in [
        "hello".to_string(),
        "".to_string(),
        "{}".to_string(),
        r#"{"message_type": "bogus"}"#.to_string(),
        format!(r#"{{"name": "a", "uuid": "{U}", "message_type": "RelayRegistrationRequest"}}"#),
        r#"{"name": "a", "uuid": "not-a-uuid", "message_type": "relay_registration"}"#.to_string(),
        format!(
            r#"{{"name": "a", "uuid": "{U}", "extra": 1, "message_type": "relay_registration"}}"#
        ),
        r#"{"name": "a", "message_type": "relay_registration"}"#.to_string(),
        // Wrong field types (ProxyStore accepts and forwards these).
        format!(r#"{{"name": 123, "uuid": "{U}", "message_type": "relay_registration"}}"#),
        format!(
            r#"{{"source_uuid": "{U}", "source_name": "a", "peer_uuid": "{U}", "description_type": "weird", "description": "d", "message_type": "peer_connection"}}"#
        ),
        // ProxyStore crashes on these (1011): non-object JSON and a client-sent relay_response.
        "[]".to_string(),
        "1".to_string(),
        "null".to_string(),
        "\"x\"".to_string(),
        r#"{"message_type": ["x"]}"#.to_string(),
        r#"{"success": true, "message": null, "error": false, "message_type": "relay_response"}"#
            .to_string(),
    ] {
        expect_4000_after(&relay, &text).await;
        n += 1;
    }
    assert_eq!(relay.metrics().closes_with(4000), n);
    relay.shutdown().await;
}

#[tokio::test]
async fn binary_frame_closes_4000() {
    let relay = start(config()).await;
    let mut ws = connect(&relay).await;
    ws.send(Message::binary(
        registration("a", Uuid::new_v4()).into_bytes(),
    ))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 4000);
    relay.shutdown().await;
}

#[tokio::test]
async fn registered_client_closed_4000_is_unregistered() {
    let relay = start(config()).await;
    let (mut a, au) = registered(&relay, "a").await;
    let (mut b, bu) = registered(&relay, "b").await;
    send(&mut a, "garbage").await;
    assert_eq!(expect_close(&mut a).await.0, 4000);
    eventually("unregistration", || relay.registered_clients() == 1).await;
    send(&mut b, peer_message(bu, "b", au, "x")).await;
    assert!(recv_json(&mut b).await["error"]
        .as_str()
        .unwrap()
        .contains("not registered"));
    assert_eq!(relay.metrics().closes_with(4000), 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn forward_before_registration_closes_4002() {
    let relay = start(config()).await;
    let mut ws = connect(&relay).await;
    send(
        &mut ws,
        peer_message(Uuid::new_v4(), "a", Uuid::new_v4(), "d"),
    )
    .await;
    assert_eq!(
        expect_close(&mut ws).await,
        (
            4002,
            "ForbiddenError: Client has not registered and authenticated with the relay server."
                .to_string()
        )
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_1007() {
    use tokio::io::AsyncWriteExt;
    let relay = start(config()).await;
    let mut ws = connect(&relay).await;
    // A masked text frame with payload 0xff 0xfe, written below tungstenite (which would
    // refuse to send invalid UTF-8 as text).
    let frame = [0x81u8, 0x82, 0, 0, 0, 0, 0xff, 0xfe];
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.write_all(&frame).await.unwrap(),
        _ => unreachable!(),
    }
    assert_eq!(expect_close(&mut ws).await.0, 1007);
    relay.shutdown().await;
}

#[tokio::test]
async fn overlong_client_name_closes_4000() {
    let relay = start(config()).await;
    let mut ok = connect(&relay).await;
    register(
        &mut ok,
        &"n".repeat(bistream_relay_server::MAX_NAME_BYTES),
        Uuid::new_v4(),
    )
    .await;
    let mut ws = connect(&relay).await;
    send(
        &mut ws,
        registration(
            &"n".repeat(bistream_relay_server::MAX_NAME_BYTES + 1),
            Uuid::new_v4(),
        ),
    )
    .await;
    assert_eq!(expect_close(&mut ws).await.0, 4000);
    assert_eq!(relay.registered_clients(), 1);
    relay.shutdown().await;
}
