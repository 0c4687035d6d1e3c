//! Registration and forwarding: lazy connect, state and events, messages both ways with real
//! Python `RelayClient`s, the relay's bounce for unknown peers, backpressure without loss,
//! concurrent senders on one client, and a dropped client's clean close.

use std::time::Duration;

use bistream_relay_client::{ConnectionEvent, ConnectionState, DescriptionType, RelayMessage};
use bistream_relay_proto::unknown_peer_error;
use uuid::Uuid;

use crate::support::*;

on_both_relays! {
    registers => registers;
    forwards_between_rust_and_python_clients => forwards_with_python;
    unknown_peer_is_bounced_with_the_relays_error => unknown_peer_bounces;
    full_incoming_queue_pauses_without_dropping => backpressure_keeps_every_message;
    concurrent_senders_share_one_client => concurrent_senders_share_one_client;
    dropping_the_client_closes_its_connection => drop_closes_the_connection;
}

/// Lazy connect, registration, state and events.
pub async fn registers(kind: Kind) {
    let relay = Relay::start(kind).await;
    let relay = &relay;
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
pub async fn forwards_with_python(kind: Kind) {
    let relay = Relay::start(kind).await;
    let relay = &relay;
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
pub async fn unknown_peer_bounces(kind: Kind) {
    let relay = Relay::start(kind).await;
    let relay = &relay;
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
pub async fn backpressure_keeps_every_message(kind: Kind) {
    let relay = Relay::start(kind).await;
    let relay = &relay;
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

/// Eight tasks share one client and send 50 messages each to it through the relay while
/// the main task receives: every message arrives exactly once, over one registration.
pub async fn concurrent_senders_share_one_client(kind: Kind) {
    let relay = Relay::start(kind).await;
    let relay = &relay;
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
pub async fn drop_closes_the_connection(kind: Kind) {
    let relay = Relay::start(kind).await;
    let relay = &relay;
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
