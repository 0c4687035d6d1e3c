//! In-memory tests of `PacketConnection` over `tokio::io::duplex`: two connections talking to
//! each other, or one connection against a raw peer that reads and writes packets by hand.
//!
//! Over 600 lines on purpose: an integration-test file, not library code; each test is a
//! self-contained scenario over the shared duplex helpers at the top, so splitting it would
//! only move those helpers into a support module without making any test easier to read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_packet::{
    handler_fn, BaseRequest, Builder, CloseReason, Config, Decoder, Fulfil, HandlerError, Packet,
    PacketConnection, PacketError, Reply, RequestTypes,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const T: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("timed out")
}

/// The demo-like service: 0 echo, 1 reverse, 2 fail, 10 waits for the gate, 11 opens it,
/// 12 panics.
fn service(gate: Arc<tokio::sync::Notify>) -> impl bistream_packet::RequestHandler {
    handler_fn(move |rq_type, flags, payload: Bytes| {
        let gate = gate.clone();
        async move {
            match rq_type {
                0 => Ok(Reply::FlagsPayload(flags, payload)),
                1 => {
                    let mut v = payload.to_vec();
                    v.reverse();
                    Ok(Reply::FlagsPayload(payload.len() as u64, v.into()))
                }
                10 => {
                    gate.notified().await;
                    Ok(Reply::from("gated"))
                }
                11 => {
                    gate.notify_one();
                    Ok(Reply::Empty)
                }
                12 => panic!("handler panic (expected by the test)"),
                _ => Err("no such rq_type".to_string()),
            }
        }
    })
}

fn pair(server: Builder, client: Builder) -> (PacketConnection, PacketConnection) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (client.start(ar, aw), server.start(br, bw))
}

fn served(gate: Arc<tokio::sync::Notify>) -> (PacketConnection, PacketConnection) {
    pair(Builder::new().handler(service(gate)), Builder::new())
}

struct Raw {
    io: DuplexStream,
    buf: BytesMut,
    dec: Decoder,
}

impl Raw {
    async fn send(&mut self, p: &Packet) {
        self.io.write_all(&p.to_bytes().unwrap()).await.unwrap();
    }
    async fn send_bytes(&mut self, b: &[u8]) {
        self.io.write_all(b).await.unwrap();
    }
    /// Next packet, or None at transport EOF.
    async fn recv(&mut self) -> Option<Packet> {
        within(async {
            loop {
                if let Some(p) = self.dec.decode(&mut self.buf).unwrap() {
                    return Some(p);
                }
                if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        })
        .await
    }
}

fn raw(builder: Builder) -> (PacketConnection, Raw) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (ar, aw) = tokio::io::split(a);
    (
        builder.start(ar, aw),
        Raw {
            io: b,
            buf: BytesMut::new(),
            dec: Decoder::default(),
        },
    )
}

fn rq(channel: u64, tag: u64, rq_type: u64, flags: u64, payload: &'static [u8]) -> Packet {
    Packet::request(channel, tag, rq_type, flags, Bytes::from_static(payload)).unwrap()
}

#[tokio::test]
async fn echo_reverse_and_failures() {
    let (c, s) = served(Arc::new(tokio::sync::Notify::new()));
    within(async {
        assert_eq!(
            c.call(0, 5, &b"hi"[..], 0).await.unwrap(),
            (5, Bytes::from_static(b"hi"))
        );
        assert_eq!(
            c.call(1, 0, &b"abc"[..], 0).await.unwrap(),
            (3, Bytes::from_static(b"cba"))
        );
        assert_eq!(
            c.call(0, 0, Bytes::new(), 0).await.unwrap(),
            (0, Bytes::new())
        );
        let r = c.submit(2, 0, &b"x"[..], 0).await.unwrap().await.unwrap();
        assert!(!r.ok);
        assert_eq!(&r.payload[..], b"exception during handler");
        let e = c.call(12, 0, Bytes::new(), 0).await.unwrap_err();
        assert_eq!(
            e.failure_reason().as_deref(),
            Some("exception during handler")
        );
        // the connection still works after a handler panic
        assert_eq!(c.call(0, 1, &b"ok"[..], 0).await.unwrap().0, 1);
        // decode_response
        let n: usize = c
            .call_decode(0, 0, &b"12345"[..], 0, |_, p| Ok(p.len()))
            .await
            .unwrap();
        assert_eq!(n, 5);
        let e = c
            .call_decode(0, 0, &b"x"[..], 0, |_, _| -> Result<(), HandlerError> {
                Err("bad".into())
            })
            .await
            .unwrap_err();
        assert!(matches!(e, PacketError::DecodeResponse(_)));
        // sequential calls on an idle connection skip the writer task on both sides
        assert!(c.stats().direct_writes.load(Ordering::Relaxed) >= 5);
        assert!(s.stats().direct_writes.load(Ordering::Relaxed) >= 5);
        assert_eq!(c.close().await, CloseReason::PeerEof);
        assert_eq!(s.closed().await, CloseReason::PeerEof);
        assert_eq!(s.stats().handler_errors.load(Ordering::Relaxed), 2);
    })
    .await;
}

#[tokio::test]
async fn out_of_order_completion_is_deterministic() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let (c, _s) = served(gate);
    within(async {
        let slow = c.submit(10, 0, Bytes::new(), 0).await.unwrap();
        // The gated request cannot finish until rq 11 opens the gate, so this echo completes
        // first although it was submitted second.
        assert_eq!(
            c.call(0, 0, &b"fast"[..], 0).await.unwrap().1,
            Bytes::from_static(b"fast")
        );
        assert_eq!(c.pending(), 1);
        c.call(11, 0, Bytes::new(), 0).await.unwrap();
        let r = slow.await.unwrap();
        assert!(r.ok);
        assert_eq!(&r.payload[..], b"gated");
        c.close().await;
    })
    .await;
}

#[tokio::test]
async fn many_in_flight_on_several_channels() {
    let (c, s) = pair(
        Builder::new()
            .handler(service(Arc::new(tokio::sync::Notify::new())))
            .configure(|c| c.with_max_handlers(8)),
        Builder::new().configure(|c| c.with_max_in_flight(64).with_send_queue(16)),
    );
    within(async {
        let mut futs = Vec::new();
        for i in 0..2000u64 {
            let payload = Bytes::from(i.to_be_bytes().to_vec());
            futs.push((i, c.submit(0, i, payload, i % 3).await.unwrap()));
        }
        for (i, f) in futs {
            let r = f.await.unwrap();
            assert!(r.ok);
            assert_eq!(r.flags, i);
            assert_eq!(&r.payload[..], &i.to_be_bytes());
        }
        c.close().await;
        assert_eq!(s.stats().requests_received.load(Ordering::Relaxed), 2000);
    })
    .await;
}

#[tokio::test]
async fn one_mib_payloads_both_ways() {
    let (c, _s) = served(Arc::new(tokio::sync::Notify::new()));
    within(async {
        let big: Bytes = (0..(1u32 << 20))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let mut futs = Vec::new();
        for _ in 0..4 {
            futs.push(c.submit(0, 0, big.clone(), 0).await.unwrap());
        }
        for f in futs {
            assert_eq!(f.await.unwrap().payload, big);
        }
        let (f, rev) = c.call(1, 0, big.clone(), 0).await.unwrap();
        assert_eq!(f, 1 << 20);
        assert_eq!(rev.iter().rev().copied().collect::<Vec<_>>(), &big[..]);
        c.close().await;
    })
    .await;
}

#[tokio::test]
async fn wire_bytes_tags_channels_and_shutdown_sequence() {
    let (c, mut peer) = raw(Builder::new());
    within(async {
        let f1 = c.submit(0, 5, &b"hi"[..], 0).await.unwrap();
        let f2 = c.submit(1, 0, &b"abc"[..], 0).await.unwrap();
        let f3 = c.submit(0, 0, &b"hi"[..], 1).await.unwrap();
        let p1 = peer.recv().await.unwrap();
        assert_eq!(
            p1.to_bytes().unwrap().as_ref(),
            &[0x05, 0x02, 0x16, 0x01, 0x68, 0x69]
        );
        let p2 = peer.recv().await.unwrap();
        assert_eq!((p2.channel, p2.tag, p2.rq_type), (0, 3, 2));
        let p3 = peer.recv().await.unwrap();
        assert_eq!(
            p3.to_bytes().unwrap().as_ref(),
            &[0x06, 0x00, 0x03, 0x01, 0x01, 0x68, 0x69]
        );
        // answer out of order; success on channel 1 is `03 00 05 01`
        peer.send_bytes(&[0x03, 0x00, 0x05, 0x01]).await;
        peer.send(&Packet::failure(0, 3, "exception during handler"))
            .await;
        peer.send_bytes(&[0x04, 0x02, 0x2c, 0x68, 0x69]).await;
        assert_eq!(
            f3.await.unwrap(),
            bistream_packet::Response {
                ok: true,
                flags: 0,
                payload: Bytes::new()
            }
        );
        assert!(!f2.await.unwrap().ok);
        let r1 = f1.await.unwrap();
        assert_eq!((r1.ok, r1.flags, &r1.payload[..]), (true, 5, &b"hi"[..]));
        // a request to a side without a handler
        peer.send(&rq(0, 2, 0, 0, b"")).await;
        let rej = peer.recv().await.unwrap();
        assert_eq!(
            rej.to_bytes().unwrap().as_ref(),
            &b"\x14\x02\x00no request handler"[..]
        );
        // close: ERQ then EOF, and the connection waits for our EOF
        let closer = tokio::spawn({
            let c = c.clone();
            async move { c.close().await }
        });
        assert!(peer.recv().await.unwrap().is_erq());
        assert!(peer.recv().await.unwrap().is_eof());
        assert!(!closer.is_finished(), "close must wait for the peer's EOF");
        peer.send(&Packet::eof()).await;
        assert_eq!(closer.await.unwrap(), CloseReason::PeerEof);
        // our writer shut the stream down after EOF
        assert!(peer.recv().await.is_none());
        // tags on a fresh channel start at 0, on channel 0 at 2, never reused: checked above;
        // after close, submits fail
        assert!(matches!(
            c.submit(0, 0, Bytes::new(), 0).await,
            Err(PacketError::Closed(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn large_bodies_arrive_intact_in_any_pieces_and_back_to_back() {
    // Bodies from 64 KiB up are read straight into pooled buffers of their exact length; mix
    // them with small packets in one byte stream cut at awkward places, and check each
    // request's fields and payload through the echo handler.
    let (_c, peer) = raw(Builder::new().handler(service(Arc::new(tokio::sync::Notify::new()))));
    let sizes = [
        64 * 1024 - 8,
        64 * 1024,
        200_000,
        3,
        1 << 20,
        0,
        70_000,
        65_536 + 1,
    ];
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Bytes = (0..n).map(|k| (k * 7 + i) as u8).collect::<Vec<_>>().into();
        let (channel, tag, flags) = (i as u64 % 3, 100 + i as u64, 1000 + i as u64);
        let p = Packet::request(channel, tag, 0, flags, payload.clone()).unwrap();
        stream.extend_from_slice(&p.to_bytes().unwrap());
        want.push((channel, tag, flags, payload));
    }
    within(async {
        let (mut rd, mut wr) = tokio::io::split(peer.io);
        let n = sizes.len();
        let reader = async move {
            let (dec, mut buf, mut got) = (Decoder::default(), BytesMut::new(), Vec::new());
            while got.len() < n {
                match dec.decode(&mut buf).unwrap() {
                    Some(r) => {
                        assert!(!r.is_request && r.ok(), "{r:?}");
                        got.push((r.channel, r.tag, r.response_flags(), r.payload));
                    }
                    None => assert_ne!(rd.read_buf(&mut buf).await.unwrap(), 0, "early EOF"),
                }
            }
            got
        };
        // the stream in pieces of 1, 5, 4093, 65537, 17 and 300001 bytes, in turn
        let writer = async move {
            let mut cuts = [1usize, 5, 4093, 65_537, 17, 300_001].into_iter().cycle();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let k = cuts.next().unwrap_or(1).min(rest.len());
                wr.write_all(&rest[..k]).await.unwrap();
                wr.flush().await.unwrap();
                rest = &rest[k..];
            }
        };
        let (got, ()) = tokio::join!(reader, writer);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2));
            assert!(g.3 == w.3, "payload of tag {} differs", w.1);
        }
    })
    .await;
}

#[tokio::test]
async fn a_malformed_large_body_is_a_protocol_error() {
    // L = 100000 whose tag varint never ends: found once the whole body is in.
    let (c, mut peer) = raw(Builder::new().configure(|c| c.with_close_timeout(T)));
    within(async {
        let f = c.submit(0, 0, &b"x"[..], 0).await.unwrap();
        peer.recv().await.unwrap();
        let mut bad = vec![0x86, 0x8d, 0x20];
        bad.resize(3 + 100_000, 0x80);
        peer.send_bytes(&bad).await;
        match f.await {
            Err(PacketError::Closed(CloseReason::Protocol(m))) => {
                assert!(m.contains("varint"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn pending_requests_fail_promptly_on_every_receive_side_end() {
    // (what the peer does after reading our request, expected close reason)
    let cases: Vec<(&[u8], CloseReason)> = vec![
        (b"", CloseReason::TransportEof),
        (b"\x05\x02\x2c", CloseReason::TruncatedPacket),
        // a large body (L = 100000, read into a pooled buffer) cut short, and its length cut
        (b"\x86\x8d\x20\x02\x2c", CloseReason::TruncatedPacket),
        (b"\x86\x8d", CloseReason::TruncatedPacket),
        (b"\x03\x00\x02\x00", CloseReason::PeerEof),
        (
            b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",
            CloseReason::Protocol(String::new()),
        ),
        (b"\x04\x07\x02\x00x", CloseReason::Protocol(String::new())), // malformed EOF
        (b"\x01\x81", CloseReason::Protocol(String::new())),          // body ends in the tag
    ];
    for (bytes, want) in cases {
        let (c, mut peer) = raw(Builder::new().configure(|c| c.with_close_timeout(T)));
        within(async {
            let f = c.submit(0, 0, &b"x"[..], 0).await.unwrap();
            let g = c.submit(0, 0, &b"y"[..], 7).await.unwrap();
            peer.recv().await.unwrap();
            peer.recv().await.unwrap();
            peer.send_bytes(bytes).await;
            peer.io.shutdown().await.unwrap();
            for fut in [f, g] {
                match fut.await {
                    Err(PacketError::Closed(r)) => match (&r, &want) {
                        (CloseReason::Protocol(_), CloseReason::Protocol(_)) => {}
                        _ => assert_eq!(r, want, "after {bytes:02x?}"),
                    },
                    other => panic!("after {bytes:02x?}: {other:?}"),
                }
            }
            // and the connection winds down by itself: ERQ, EOF
            let mut seen = Vec::new();
            while let Some(p) = peer.recv().await {
                seen.push(p);
            }
            assert!(seen.last().is_some_and(|p| p.is_eof()), "{seen:?}");
            let end = c.closed().await;
            if !matches!(want, CloseReason::Protocol(_)) {
                assert_eq!(end, want);
            }
        })
        .await;
    }
}

#[tokio::test]
async fn oversized_packets_are_rejected_both_ways() {
    let (c, mut peer) = raw(Builder::new().configure(|c| c.with_max_packet(1000)));
    within(async {
        let e = c.submit(0, 0, Bytes::from(vec![0; 1000]), 0).await.unwrap_err();
        assert!(matches!(e, PacketError::Encode(_)), "{e}");
        let f = c.submit(0, 0, Bytes::from(vec![0; 900]), 0).await.unwrap();
        peer.recv().await.unwrap();
        // a response claiming 2000 body bytes: protocol error before any allocation of it
        peer.send_bytes(&[0x8f, 0x50, 0x02, 0x04]).await;
        assert!(matches!(f.await, Err(PacketError::Closed(CloseReason::Protocol(m))) if m.contains("exceeds")));
    })
    .await;
}

#[tokio::test]
async fn duplicate_and_reused_tags_get_one_failure_each_and_no_hang() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let (_s, mut peer) = raw(Builder::new().handler(service(gate)));
    within(async {
        // tag 5 runs (gated), a duplicate tag 5 arrives while it runs
        peer.send(&rq(0, 5, 10, 0, b"")).await;
        peer.send(&rq(0, 5, 0, 0, b"dup")).await;
        let p = peer.recv().await.unwrap();
        assert_eq!((p.tag, p.ok()), (5, false));
        assert_eq!(&p.payload[..], b"channel 0: tag already in use: 5");
        // open the gate with tag 6: its response comes, the original tag 5 response is suppressed
        peer.send(&rq(0, 6, 11, 0, b"")).await;
        let p = peer.recv().await.unwrap();
        assert_eq!((p.tag, p.ok()), (6, true));
        // reuse of the completed tag 6 on the same channel: failure, not silence
        peer.send(&rq(0, 6, 0, 0, b"again")).await;
        let p = peer.recv().await.unwrap();
        assert_eq!(&p.payload[..], b"channel 0: tag already in use: 6");
        // the same tag on another channel is fine; tags 0 and 1 on channel 0 are ordinary
        peer.send(&rq(3, 6, 0, 9, b"x")).await;
        let p = peer.recv().await.unwrap();
        assert_eq!(
            (p.channel, p.tag, p.ok(), p.response_flags()),
            (3, 6, true, 9)
        );
        peer.send(&rq(0, 0, 0, 0, b"zero")).await;
        let p = peer.recv().await.unwrap();
        assert_eq!((p.tag, p.ok(), &p.payload[..]), (0, true, &b"zero"[..]));
        // responses to unknown tags are dropped; the connection carries on
        peer.send(&Packet::response(0, 99, true, 0, Bytes::new()).unwrap())
            .await;
        // ERQ (twice is fine), then requests are refused
        peer.send(&Packet::erq()).await;
        peer.send(&Packet::erq()).await;
        peer.send(&rq(0, 7, 0, 0, b"")).await;
        let p = peer.recv().await.unwrap();
        assert_eq!(&p.payload[..], b"requests no longer allowed");
        peer.send(&Packet::eof()).await;
        // server side: ERQ then EOF, then the stream ends
        assert!(peer.recv().await.unwrap().is_erq());
        assert!(peer.recv().await.unwrap().is_eof());
        assert!(peer.recv().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn shutdown_answers_running_handlers_and_waits_for_pending() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let (c, s) = served(gate.clone());
    within(async {
        let slow = c.submit(10, 0, Bytes::new(), 0).await.unwrap();
        // The client closes while its request is pending: close waits for the response.
        let closer = tokio::spawn({
            let c = c.clone();
            async move { c.close().await }
        });
        tokio::task::yield_now().await;
        assert!(matches!(
            c.submit(0, 0, Bytes::new(), 0).await,
            Err(PacketError::Closed(CloseReason::Local))
        ));
        gate.notify_one();
        assert!(slow.await.unwrap().ok);
        assert_eq!(closer.await.unwrap(), CloseReason::PeerEof);
        assert_eq!(s.closed().await, CloseReason::PeerEof);
    })
    .await;
}

#[tokio::test]
async fn server_close_answers_in_flight_requests_after_erq() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let (s, mut peer) = raw(Builder::new().handler(service(gate.clone())));
    within(async {
        peer.send(&rq(0, 2, 10, 0, b"")).await;
        tokio::task::yield_now().await;
        let closer = tokio::spawn({
            let s = s.clone();
            async move { s.close().await }
        });
        // Python's order: ERQ, the in-flight response, EOF
        assert!(peer.recv().await.unwrap().is_erq());
        // new requests are refused while shutting down
        peer.send(&rq(0, 3, 0, 0, b"")).await;
        let p = peer.recv().await.unwrap();
        assert_eq!(
            (p.tag, &p.payload[..]),
            (3, &b"rejecting request: runstate.cancelled"[..])
        );
        gate.notify_one();
        let p = peer.recv().await.unwrap();
        assert_eq!((p.tag, p.ok(), &p.payload[..]), (2, true, &b"gated"[..]));
        assert!(peer.recv().await.unwrap().is_eof());
        peer.send(&Packet::eof()).await;
        assert_eq!(closer.await.unwrap(), CloseReason::PeerEof);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_handle_shuts_down_gracefully() {
    let (c, mut peer) = raw(Builder::new());
    within(async {
        drop(c);
        assert!(peer.recv().await.unwrap().is_erq());
        assert!(peer.recv().await.unwrap().is_eof());
        peer.send(&Packet::eof()).await;
        assert!(peer.recv().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn packet_grace_still_delivers() {
    let (c, _s) = pair(
        Builder::new()
            .handler(service(Arc::new(tokio::sync::Notify::new())))
            .configure(|c| c.with_packet_grace(Duration::from_millis(2))),
        Builder::new().config(Config::default().with_packet_grace(Duration::from_millis(2))),
    );
    within(async {
        for i in 0..20u64 {
            assert_eq!(c.call(0, i, Bytes::new(), 0).await.unwrap().0, i);
        }
        c.close().await;
    })
    .await;
}

// ---- the typed layer ----

struct Counter {
    total: std::sync::Mutex<u64>,
}

/// Adds a big-endian u64 to the counter; responds with the new total.
struct Add(u64);

impl BaseRequest for Add {
    const RQ_TYPE: u64 = 4;
    type Response = u64;
    fn to_payload(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_be_bytes())
    }
    fn from_request(_flags: u64, payload: Bytes) -> Result<Self, HandlerError> {
        let arr: [u8; 8] = payload[..]
            .try_into()
            .map_err(|_| "payload is not 8 bytes")?;
        Ok(Add(u64::from_be_bytes(arr)))
    }
    fn decode_response(flags: u64, _payload: Bytes) -> Result<u64, HandlerError> {
        Ok(flags)
    }
}

impl Fulfil<Counter> for Add {
    async fn fulfil(self, ctx: Arc<Counter>) -> Result<Reply, HandlerError> {
        let mut t = ctx.total.lock().unwrap();
        *t += self.0;
        Ok(Reply::Flags(*t))
    }
}

#[tokio::test]
async fn typed_requests() {
    let ctx = Arc::new(Counter { total: 0.into() });
    let types = RequestTypes::new(ctx.clone()).register::<Add>();
    let (c, _s) = pair(Builder::new().handler(types), Builder::new());
    within(async {
        assert_eq!(c.do_remote(&Add(5)).await.unwrap(), 5);
        assert_eq!(c.do_remote(&Add(7)).await.unwrap(), 12);
        // a malformed payload and an unregistered rq_type both fail like Python's
        let e = c.call(4, 0, &b"short"[..], 0).await.unwrap_err();
        assert_eq!(
            e.failure_reason().as_deref(),
            Some("exception during handler")
        );
        let e = c.call(5, 0, Bytes::new(), 0).await.unwrap_err();
        assert_eq!(
            e.failure_reason().as_deref(),
            Some("exception during handler")
        );
        assert_eq!(*ctx.total.lock().unwrap(), 12);
        c.close().await;
    })
    .await;
}

#[tokio::test]
async fn on_demand_opens_on_first_use_and_reopens() {
    let opened = Arc::new(AtomicUsize::new(0));
    let server = Builder::new().handler(service(Arc::new(tokio::sync::Notify::new())));
    let od = Builder::new().on_demand({
        let opened = opened.clone();
        move || {
            opened.fetch_add(1, Ordering::SeqCst);
            let server = server.clone();
            async move {
                let (a, b) = tokio::io::duplex(1 << 16);
                let (br, bw) = tokio::io::split(b);
                // keep the server side alive until it ends (dropping it would close it)
                let s = server.start(br, bw);
                tokio::spawn(async move { s.closed().await });
                Ok(tokio::io::split(a))
            }
        }
    });
    within(async {
        assert!(!od.is_connected().await);
        assert_eq!(opened.load(Ordering::SeqCst), 0);
        assert_eq!(od.call(0, 3, &b"a"[..], 0).await.unwrap().0, 3);
        assert_eq!(od.call(0, 4, &b"b"[..], 0).await.unwrap().0, 4);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(od.close().await, Some(CloseReason::PeerEof));
        assert_eq!(od.close().await, None);
        assert_eq!(od.call(0, 5, &b"c"[..], 0).await.unwrap().0, 5);
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        od.close().await;
    })
    .await;
}

#[tokio::test]
async fn abort_fails_pending_and_stops_at_once() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let (c, s) = served(gate);
    within(async {
        let gated = c.submit(10, 0, Bytes::new(), 0).await.unwrap();
        c.call(0, 0, Bytes::new(), 0).await.unwrap();
        // the server is stuck in a handler; a graceful close could not finish, abort does
        s.abort();
        assert_eq!(s.closed().await, CloseReason::Local);
        // the client sees the transport end and its pending request fails promptly
        assert!(matches!(gated.await, Err(PacketError::Closed(_))));
        c.closed().await;
        assert!(!c.is_open());
    })
    .await;
}

/// A handler that panics before returning its future (not inside it).
struct PanicsEagerly;

impl bistream_packet::RequestHandler for PanicsEagerly {
    fn handle(
        &self,
        rq: bistream_packet::IncomingRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<Reply, HandlerError>> {
        if rq.rq_type == 1 {
            panic!("eager handler panic (expected by the test)");
        }
        Box::pin(async move { Ok(Reply::Payload(rq.payload)) })
    }
}

#[tokio::test]
async fn a_handler_panicking_outside_its_future_still_gets_a_failure_response() {
    let (c, _s) = pair(Builder::new().handler(PanicsEagerly), Builder::new());
    within(async {
        let e = c.call(1, 0, Bytes::new(), 0).await.unwrap_err();
        assert_eq!(
            e.failure_reason().as_deref(),
            Some("exception during handler")
        );
        assert_eq!(
            c.call(0, 0, &b"still here"[..], 0).await.unwrap().1,
            Bytes::from_static(b"still here")
        );
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_transport_buffers_with_mixed_sequential_and_concurrent_calls() {
    // 61-byte pipes force partial writes and Pending on both the direct-write path and the
    // writer task; every response must still arrive intact.
    let (a, b) = tokio::io::duplex(61);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let c = Builder::new().start(ar, aw);
    let _s = Builder::new()
        .handler(service(Arc::new(tokio::sync::Notify::new())))
        .start(br, bw);
    within(async {
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..150u64 {
                    let len = ((i * 37 + t) % 300) as usize;
                    let payload: Bytes = (0..len)
                        .map(|k| (k as u64 + i + t) as u8)
                        .collect::<Vec<_>>()
                        .into();
                    if i % 3 == 0 {
                        // a burst of pipelined requests
                        let f1 = c.submit(0, i, payload.clone(), t).await.unwrap();
                        let f2 = c.submit(1, 0, payload.clone(), 0).await.unwrap();
                        assert_eq!(f1.await.unwrap().payload, payload);
                        let r = f2.await.unwrap();
                        assert_eq!(r.flags, len as u64);
                        assert_eq!(
                            r.payload.iter().rev().copied().collect::<Vec<_>>(),
                            &payload[..]
                        );
                    } else {
                        assert_eq!(
                            c.call(0, i, payload.clone(), t).await.unwrap(),
                            (i, payload)
                        );
                    }
                }
            }));
            if t == 0 {
                // one task alone for a while: exercises the direct path
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(c.close().await, CloseReason::PeerEof);
    })
    .await;
}
