//! Engine tests: two engines wired back to back in memory.

use super::*;
use crate::frame::ErrorCode;
use crate::types::Target;

fn ops(op: &str) -> Option<Model> {
    match op {
        "echo" => Some(Model::RequestResponse),
        "count" => Some(Model::RequestStream),
        "upper" => Some(Model::StreamStream),
        "log" => Some(Model::FireAndForget),
        _ => None,
    }
}

fn pair(client_ext: bool, server_ext: bool) -> (Engine, Engine) {
    let mut c = EngineConfig::new(Side::Initiator, "C");
    c.extensions = client_ext;
    let mut s = EngineConfig::new(Side::Acceptor, "S");
    s.extensions = server_ext;
    (Engine::new(c), Engine::new(s))
}

/// Moves every frame from `a` to `b`; returns them.
fn ship(a: &mut Engine, b: &mut Engine) -> Vec<String> {
    let frames = a.take_output();
    for f in &frames {
        b.on_frame(f, &ops);
    }
    frames
}

fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.next_event()).collect()
}

fn json(f: &str) -> serde_json::Value {
    serde_json::from_str(f).unwrap()
}

#[test]
fn negotiation_both_sides() {
    let (mut c, mut s) = pair(true, true);
    let sent = ship(&mut c, &mut s);
    assert_eq!(json(&sent[0])["type"], "hello");
    let back = ship(&mut s, &mut c);
    assert_eq!(json(&back[0])["type"], "hello");
    assert!(matches!(
        c.negotiated(),
        Negotiated::Extended {
            request_n: true,
            ..
        }
    ));
    assert!(matches!(
        s.negotiated(),
        Negotiated::Extended { cancel: true, .. }
    ));
    assert!(c.credit_in_force() && s.credit_in_force());
}

#[test]
fn base_server_never_answers_hello_and_client_falls_back() {
    let (mut c, mut s) = pair(true, false);
    c.start_call(0, Model::RequestResponse, r#"{"operation":"echo"}"#)
        .unwrap();
    ship(&mut c, &mut s);
    // The base server counted the hello as invalid and served the request.
    assert_eq!(s.stats().invalid, 1);
    let key = events(&mut s)
        .into_iter()
        .find_map(|e| match e {
            Event::Serve { key, .. } => Some(key),
            _ => None,
        })
        .unwrap();
    s.respond(&key, "1").unwrap();
    let back = ship(&mut s, &mut c);
    assert!(back.iter().all(|f| json(f)["type"] != "hello"));
    assert_eq!(c.negotiated(), &Negotiated::Base);
    // No extension frame is produced toward a base peer.
    c.start_call(1, Model::RequestStream, r#"{"operation":"count"}"#)
        .unwrap();
    c.take_output();
    c.grant(&Target::Call(1), 10);
    c.cancel_call(1);
    assert!(!c.keepalive());
    assert!(c.take_output().is_empty());
}

#[test]
fn base_client_gets_no_hello() {
    let (mut c, mut s) = pair(false, true);
    c.start_call(0, Model::RequestResponse, r#"{"operation":"echo"}"#)
        .unwrap();
    ship(&mut c, &mut s);
    assert_eq!(s.negotiated(), &Negotiated::Base);
    let out = s.take_output();
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn errors_for_unknown_wrong_model_duplicate_and_overload() {
    let (mut c, _) = pair(false, false);
    let mut cfg = EngineConfig::new(Side::Acceptor, "S");
    cfg.limits.max_in_flight = 2;
    let mut s = Engine::new(cfg);
    for (id, model, op) in [
        (0, Model::RequestResponse, "nope"),
        (1, Model::RequestResponse, "count"),
        (2, Model::RequestResponse, "echo"),
        (3, Model::RequestStream, "count"),
        (4, Model::RequestResponse, "echo"),
    ] {
        c.start_call(id, model, &format!(r#"{{"operation":"{op}"}}"#))
            .unwrap();
    }
    ship(&mut c, &mut s);
    let frames = s.take_output();
    let out: Vec<_> = frames.iter().map(|f| json(f)).collect();
    let codes: Vec<_> = out.iter().map(|f| f["data"]["code"].clone()).collect();
    assert_eq!(
        codes,
        [
            serde_json::json!("unknown_operation"),
            serde_json::json!("invalid_request"),
            serde_json::json!("overloaded")
        ]
    );
    assert!(out[0]["data"]["message"].as_str().unwrap().contains("nope"));
    assert_eq!(out[2]["requestId"], serde_json::json!(["C", 4]));
    for f in &frames {
        c.on_frame(f, &ops);
    }
    let failed: Vec<_> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Failed { call, .. } => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [0, 1, 4]);
    // duplicate id while in flight
    s.on_frame(
        r#"{"type":"request","peerID":"C","requestId":["C",2],"data":{"operation":"echo"}}"#,
        &ops,
    );
    let out = s.take_output();
    assert_eq!(
        json(&out[0])["data"]["code"],
        ErrorCode::InvalidRequest.as_str()
    );
}

#[test]
fn bi_stream_both_sides_end() {
    let (mut c, mut s) = pair(true, true);
    ship(&mut c, &mut s);
    ship(&mut s, &mut c);
    events(&mut c);
    c.start_call(7, Model::StreamStream, r#"{"operation":"upper"}"#)
        .unwrap();
    c.send_item(&Target::Call(7), "\"a\"").unwrap();
    c.end(&Target::Call(7)).unwrap();
    assert!(c.send_item(&Target::Call(7), "\"b\"").is_err());
    ship(&mut c, &mut s);
    let ev = events(&mut s);
    let key = match &ev[..] {
        [Event::Negotiated(_), Event::Serve { key, .. }, Event::ServeItems { items, .. }, Event::ServeEnd { .. }]
        | [Event::Serve { key, .. }, Event::ServeItems { items, .. }, Event::ServeEnd { .. }] => {
            assert_eq!(items.iter().collect::<Vec<_>>(), ["\"a\""]);
            key.clone()
        }
        other => panic!("{other:?}"),
    };
    s.send_item(&Target::Serve(key.clone()), "\"A\"").unwrap();
    s.end(&Target::Serve(key)).unwrap();
    ship(&mut s, &mut c);
    let ev = events(&mut c);
    assert!(
        matches!(
            &ev[..],
            [Event::Items { call: 7, .. }, Event::End { call: 7 }]
        ),
        "{ev:?}"
    );
    assert_eq!(c.pending_calls(), 0);
    assert_eq!(s.served(), 0);
}

#[test]
fn refused_fire_and_forget_is_counted_and_reported() {
    let (_, mut s) = pair(false, false);
    for op in ["nope", "echo"] {
        s.on_frame(
            &format!(r#"{{"type":"fire_and_forget","peerID":"x","data":{{"operation":"{op}"}}}}"#),
            &ops,
        );
    }
    let ev = events(&mut s);
    let dropped: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        [
            "fire_and_forget nope: unknown operation",
            "fire_and_forget echo: not a fire-and-forget operation"
        ]
    );
    assert_eq!(s.stats().ff_refused, 2);
}

#[test]
fn hundred_invalid_in_a_row_close_and_valid_resets() {
    let (_, mut s) = pair(false, false);
    for _ in 0..99 {
        s.on_frame("nope", &ops);
    }
    s.on_frame(
        r#"{"type":"fire_and_forget","peerID":"x","data":{"operation":"log"}}"#,
        &ops,
    );
    for _ in 0..99 {
        s.on_frame("{}", &ops);
    }
    assert!(!events(&mut s)
        .iter()
        .any(|e| matches!(e, Event::Close { .. })));
    s.on_frame("[]", &ops);
    let ev = events(&mut s);
    assert!(
        matches!(ev.last(), Some(Event::Close { code: 1008, .. })),
        "{ev:?}"
    );
    assert_eq!(s.stats().invalid, 199);
}

#[test]
fn cancel_and_credit_reach_the_callee() {
    let (mut c, mut s) = pair(true, true);
    ship(&mut c, &mut s);
    ship(&mut s, &mut c);
    events(&mut c);
    events(&mut s);
    c.start_call(1, Model::RequestStream, r#"{"operation":"count"}"#)
        .unwrap();
    ship(&mut c, &mut s);
    c.grant(&Target::Call(1), 5);
    c.cancel_call(1);
    let frames = ship(&mut c, &mut s);
    assert_eq!(json(&frames[0])["type"], "request_n");
    assert_eq!(json(&frames[1])["type"], "cancel");
    let ev = events(&mut s);
    assert!(
        matches!(
            &ev[..],
            [
                Event::Serve { .. },
                Event::Credit { n: 5, .. },
                Event::ServeCancelled { .. }
            ]
        ),
        "{ev:?}"
    );
    assert_eq!(s.served(), 0);
    // A late item for the cancelled call is dropped and counted, not an error.
    c.on_frame(
        r#"{"type":"stream_data","peerID":"S","requestId":["C",1],"data":1}"#,
        &ops,
    );
    assert_eq!(c.stats().unmatched, 1);
    assert!(c.take_output().is_empty());
}

#[test]
fn broken_reply_fails_only_that_call() {
    let (mut c, _) = pair(false, false);
    c.start_call(3, Model::RequestResponse, r#"{"operation":"echo"}"#)
        .unwrap();
    c.take_output();
    c.on_frame(
        r#"{"type":"stream_data","peerID":"S","requestId":["C",3],"data":1}"#,
        &ops,
    );
    let ev = events(&mut c);
    assert!(
        matches!(
            &ev[..],
            [Event::Failed {
                call: 3,
                failure: CallFailure::Protocol(_)
            }]
        ),
        "{ev:?}"
    );
    // An invalid frame carrying our own id is never answered (no error ping-pong).
    c.on_frame(r#"{"type":"bogus","requestId":["C",9]}"#, &ops);
    assert!(c.take_output().is_empty());
}

#[test]
fn cut_stalled_fails_a_served_stream_with_timeout_and_cancels_a_call() {
    // Served bi-stream: an `error` with code `timeout`, final.
    let (mut c, mut s) = pair(false, false);
    c.start_call(3, Model::StreamStream, r#"{"operation":"upper"}"#)
        .unwrap();
    c.start_call(4, Model::RequestStream, r#"{"operation":"count"}"#)
        .unwrap();
    ship(&mut c, &mut s);
    let key = match &events(&mut s)[..] {
        [Event::Serve { key, .. }, Event::Serve { .. }] => key.clone(),
        other => panic!("{other:?}"),
    };
    assert!(s.cut_stalled(&Target::Serve(key.clone()), "stalled"));
    let frames = ship(&mut s, &mut c);
    let f = json(&frames[0]);
    assert_eq!(f["type"], "error");
    assert_eq!(f["requestId"], serde_json::json!(["C", 3]));
    assert_eq!(f["data"]["code"], ErrorCode::Timeout.as_str());
    assert_eq!(s.served(), 1);
    assert!(s.send_item(&Target::Serve(key.clone()), "1").is_err());
    assert!(!s.cut_stalled(&Target::Serve(key), "again"));
    assert_eq!(s.stats().stalled, 1);
    // Our call toward a base peer: forgotten, nothing sent (a caller has no error frame).
    assert!(c.cut_stalled(&Target::Call(4), "stalled"));
    assert!(c.take_output().is_empty());
    assert_eq!(c.pending_calls(), 0);
    assert_eq!(c.stats().stalled, 1);

    // With extensions: the call is cancelled on the wire.
    let (mut c, mut s) = pair(true, true);
    ship(&mut c, &mut s);
    ship(&mut s, &mut c);
    c.start_call(1, Model::RequestStream, r#"{"operation":"count"}"#)
        .unwrap();
    ship(&mut c, &mut s);
    assert!(c.cut_stalled(&Target::Call(1), "stalled"));
    let frames = ship(&mut c, &mut s);
    assert_eq!(json(&frames[0])["type"], "cancel");
    assert_eq!(s.served(), 0);
}

/// Items of one call received in a row travel as one batch, split at the queue's bounds
/// (window items, stream_queue_bytes bytes) and wherever another event comes between them;
/// order within and across batches is the wire order, and an end comes after its items.
#[test]
fn items_batch_per_call_within_the_queue_bounds() {
    let mut cc = EngineConfig::new(Side::Initiator, "C");
    cc.limits.window = 3;
    cc.limits.stream_queue_bytes = 12;
    let mut c = Engine::new(cc);
    let mut s = Engine::new(EngineConfig::new(Side::Acceptor, "S"));
    ship(&mut c, &mut s);
    ship(&mut s, &mut c);
    events(&mut c);
    c.start_call(1, Model::RequestStream, r#"{"operation":"count"}"#)
        .unwrap();
    c.start_call(2, Model::RequestStream, r#"{"operation":"count"}"#)
        .unwrap();
    ship(&mut c, &mut s);
    let keys: Vec<ServeKey> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Serve { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    let (k1, k2) = (
        Target::Serve(keys[0].clone()),
        Target::Serve(keys[1].clone()),
    );
    s.send_items(&k1, &["1", "2"]).unwrap();
    s.send_item(&k2, "3").unwrap();
    // Four items: the window of 3 splits them.
    s.send_items(&k1, &["4", "5", "6", "7"]).unwrap();
    // 10 bytes: over the 12-byte bound together with "7", alone it passes; 20 bytes: one
    // item over the bound still travels (alone).
    s.send_items(&k1, &["\"abcdefgh\"", "\"abcdefghijklmnopqr\"", "8"])
        .unwrap();
    s.end(&k1).unwrap();
    s.send_item(&k2, "9").unwrap();
    ship(&mut s, &mut c);
    let got: Vec<(u64, Vec<String>)> = events(&mut c)
        .into_iter()
        .map(|e| match e {
            Event::Items { call, items } => {
                assert!(items.len() <= 3, "{items:?}");
                assert!(items.len() == 1 || items.bytes() <= 12, "{items:?}");
                (call, items.iter().map(String::from).collect())
            }
            Event::End { call } => (call, vec!["end".to_string()]),
            other => panic!("{other:?}"),
        })
        .collect();
    let v = |c: u64, s: &[&str]| (c, s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    assert_eq!(
        got,
        [
            v(1, &["1", "2"]),
            v(2, &["3"]),
            v(1, &["4", "5", "6"]),
            v(1, &["7", "\"abcdefgh\""]),
            v(1, &["\"abcdefghijklmnopqr\""]),
            v(1, &["8"]),
            v(1, &["end"]),
            v(2, &["9"]),
        ]
    );
}

/// A served bi-stream's items batch the same way.
#[test]
fn serve_items_batch_per_request() {
    let (mut c, mut s) = pair(true, true);
    ship(&mut c, &mut s);
    ship(&mut s, &mut c);
    events(&mut c);
    events(&mut s);
    c.start_call(3, Model::StreamStream, r#"{"operation":"upper"}"#)
        .unwrap();
    c.send_items(&Target::Call(3), &["\"a\"", "\"b\"", "{\"c\":[1,2]}"])
        .unwrap();
    c.end(&Target::Call(3)).unwrap();
    ship(&mut c, &mut s);
    let ev = events(&mut s);
    match &ev[..] {
        [Event::Serve { .. }, Event::ServeItems { items, .. }, Event::ServeEnd { .. }] => {
            assert_eq!(
                items.iter().collect::<Vec<_>>(),
                ["\"a\"", "\"b\"", "{\"c\":[1,2]}"]
            );
            assert_eq!(items.get(2), Some("{\"c\":[1,2]}"));
            assert_eq!(items.get(3), None);
        }
        other => panic!("{other:?}"),
    }
}

/// Stream items go through the fast path ([`crate::fast::decode_item`]) once a head is known:
/// two streams interleaved switch heads and each item reaches its own call in order; items of
/// a bi-stream we serve reach the served request; a message that is not UTF-8 (after a head
/// is known, inside an item's value) is refused with `NotUtf8` and changes nothing.
#[test]
fn items_by_known_head_reach_their_call_and_bad_utf8_is_refused() {
    let (mut c, mut s) = pair(false, false);
    for id in [1, 2] {
        c.start_call(id, Model::RequestStream, r#"{"operation":"count"}"#)
            .unwrap();
    }
    ship(&mut c, &mut s);
    let keys: Vec<RequestId> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Serve { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2);
    for i in 0..3 {
        for (k, key) in keys.iter().enumerate() {
            let item = format!("{{\"k\":{k},\"i\":{i}}}");
            s.send_items(&Target::Serve(key.clone()), &[item]).unwrap();
            s.send_items(&Target::Serve(key.clone()), &[i.to_string()])
                .unwrap();
        }
    }
    ship(&mut s, &mut c);
    let mut got: HashMap<u64, Vec<String>> = HashMap::new();
    for e in events(&mut c) {
        match e {
            Event::Items { call, items } => got
                .entry(call)
                .or_default()
                .extend(items.iter().map(String::from)),
            other => panic!("{other:?}"),
        }
    }
    let call_of = |k: usize| if keys[k].n == 1 { 1 } else { 2 };
    for k in 0..2 {
        let want: Vec<String> = (0..3)
            .flat_map(|i| [format!("{{\"k\":{k},\"i\":{i}}}"), i.to_string()])
            .collect();
        assert_eq!(got[&call_of(k)], want);
    }
    // A warm head, then the same head with a value that is not UTF-8.
    let mut frame = String::new();
    crate::frame::encode(
        &mut frame,
        FrameType::StreamData,
        "S",
        Some(("C", 1)),
        Some("\"éé\""),
    );
    let mut bad = frame.clone().into_bytes();
    let at = bad.len() - 3;
    bad[at] = 0xff;
    let before = c.stats().frames_in;
    assert_eq!(c.on_text(&bad, &ops), Err(NotUtf8));
    assert_eq!(c.stats().frames_in, before);
    assert!(c.next_event().is_none());
    assert_eq!(c.on_text(frame.as_bytes(), &ops), Ok(()));
    assert!(matches!(c.next_event(), Some(Event::Items { call: 1, .. })));

    // Items of a bi-stream we serve (the head's caller is the peer).
    c.start_call(3, Model::StreamStream, r#"{"operation":"upper"}"#)
        .unwrap();
    c.send_items(&Target::Call(3), &["\"a\"", "\"b\""]).unwrap();
    ship(&mut c, &mut s);
    let ev = events(&mut s);
    let items: Vec<(u64, String)> = ev
        .iter()
        .flat_map(|e| match e {
            Event::ServeItems { key, items } => {
                items.iter().map(|i| (key.n as u64, i.to_owned())).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(items, [(3, "\"a\"".into()), (3, "\"b\"".into())], "{ev:?}");
}
