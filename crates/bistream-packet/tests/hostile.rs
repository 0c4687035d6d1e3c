//! Hostile peers against one `PacketConnection` (issue 14, packet items 1–2), in memory over
//! `tokio::io::duplex` and on tokio's paused clock: a peer that sends requests and never
//! reads the responses is held back by backpressure and closed when the writes stall; a
//! packet that starts and stalls is closed at the packet deadline; an idle peer is not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bistream_packet::{handler_fn, Builder, CloseReason, Packet, PacketConnection, Reply};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

const MIB: usize = 1 << 20;

fn echo_server(
    cfg: impl FnOnce(bistream_packet::Config) -> bistream_packet::Config,
) -> (PacketConnection, DuplexStream) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(server);
    let echo = handler_fn(|_rq, flags, payload: Bytes| async move {
        Ok::<_, String>(Reply::FlagsPayload(flags, payload))
    });
    let conn = Builder::new().handler(echo).configure(cfg).start(r, w);
    (conn, client)
}

fn request_bytes(tag: u64, payload: Bytes) -> Bytes {
    let mut out = BytesMut::new();
    Packet::request(0, tag, 0, 0, payload)
        .unwrap()
        .encode(&mut out, usize::MAX)
        .unwrap();
    out.freeze()
}

/// Waits (on the paused clock) until the server has read nothing new for 5 s.
async fn until_reading_stops(conn: &PacketConnection) -> u64 {
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = conn
            .stats()
            .bytes_received
            .load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Issue 14 item 1. Before the fix the server read all 200 MiB of requests (its send queue
/// was bounded by packet count only: ~1,030 responses) and never closed the connection.
#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_is_held_back_then_closed_when_writes_stall() {
    let (server, client) = echo_server(|c| c);
    let (_client_rd, mut client_wr) = tokio::io::split(client);
    // The attacker: 200 requests of 1 MiB, never reading a response.
    let payload = Bytes::from(vec![7u8; MIB]);
    let attacker = tokio::spawn(async move {
        for tag in 0..200u64 {
            if client_wr
                .write_all(&request_bytes(tag, payload.clone()))
                .await
                .is_err()
            {
                return tag;
            }
        }
        200
    });
    let read = until_reading_stops(&server).await;
    let cfg = server.config().clone();
    let bound = (cfg.send_buffer + cfg.max_queued_request_bytes + 4 * MIB) as u64;
    assert!(
        read <= bound,
        "the server read {read} bytes from a peer that does not read (bound {bound})"
    );
    assert!(server.queued_send_bytes() <= cfg.send_buffer + MIB);
    let st = server.stats();
    assert!(st.send_waits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // No write progress: closed at the stall deadline (60 s by default), not before.
    let stalled_at = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(600), server.closed())
        .await
        .expect("a stalled connection is closed");
    assert_eq!(reason, CloseReason::WriteStalled(cfg.write_stall_timeout));
    assert!(stalled_at.elapsed() <= cfg.write_stall_timeout + Duration::from_secs(1));
    assert_eq!(server.queued_send_bytes(), 0);
    // The attacker's writes fail once the server dropped the transport.
    let sent = tokio::time::timeout(Duration::from_secs(600), attacker)
        .await
        .unwrap()
        .unwrap();
    assert!(sent < 200, "{sent}");
}

/// A peer that reads slowly but steadily is not closed: the stall timer restarts at every
/// partial write.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_served_completely() {
    let (server, client) = echo_server(|c| c.with_write_stall_timeout(Duration::from_secs(2)));
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let payload = Bytes::from(vec![1u8; 4 * MIB]);
    let n = 8u64;
    let writer = tokio::spawn(async move {
        for tag in 0..n {
            client_wr
                .write_all(&request_bytes(tag, payload.clone()))
                .await
                .unwrap();
        }
        client_wr
    });
    // Read 64 KiB per second: each 4 MiB response takes ~64 s, far beyond the 2 s stall
    // timeout, yet every write makes progress.
    let mut got = 0usize;
    let want = n as usize * (4 * MIB);
    let mut buf = vec![0u8; 64 * 1024];
    while got < want {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let k = tokio::io::AsyncReadExt::read(&mut client_rd, &mut buf)
            .await
            .unwrap();
        assert!(k > 0, "the server closed a slow but steady reader");
        got += k;
    }
    assert!(server.is_open());
    let _wr = writer.await.unwrap();
}

/// Issue 14 item 2: a packet that starts and stalls is closed at the packet deadline, for a
/// large announced body and for a small one; an idle connection is not closed.
#[tokio::test(start_paused = true)]
async fn a_stalled_partial_packet_is_closed_at_the_deadline_and_idle_is_fine() {
    for (announced, sent) in [
        (16 * MIB - 64, 1024usize),
        (100, 10),
        (300 * 1024, 200 * 1024),
    ] {
        let (server, client) = echo_server(|c| c);
        let (_rd, mut wr) = tokio::io::split(client);
        // Idle for ten minutes first: legitimate, nothing happens.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(server.is_open());
        let full = request_bytes(2, Bytes::from(vec![0u8; announced]));
        let start = Instant::now();
        wr.write_all(&full[..sent]).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(600), server.closed())
            .await
            .expect("the stalled packet is closed");
        let limit = server.config().packet_timeout;
        assert_eq!(reason, CloseReason::PacketTimeout(limit), "{announced}");
        let took = start.elapsed();
        assert!(
            took >= limit && took <= limit + Duration::from_secs(1),
            "{took:?}"
        );
    }
}

/// A body that arrives in pieces within the deadline is fine, however long the whole
/// exchange takes.
#[tokio::test(start_paused = true)]
async fn packets_completed_within_the_deadline_are_served() {
    let (server, client) = echo_server(|c| c.with_packet_timeout(Duration::from_secs(10)));
    let (mut rd, mut wr) = tokio::io::split(client);
    for tag in 0..5u64 {
        let full = request_bytes(tag, Bytes::from(vec![tag as u8; 200 * 1024]));
        for piece in full.chunks(full.len() / 4 + 1) {
            wr.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let mut dec = bistream_packet::Decoder::new(usize::MAX);
        let mut buf = BytesMut::new();
        let p = loop {
            if let Some(p) = dec.decode(&mut buf).unwrap() {
                break p;
            }
            let k = tokio::io::AsyncReadExt::read_buf(&mut rd, &mut buf)
                .await
                .unwrap();
            assert!(k > 0);
        };
        assert_eq!((p.tag, p.payload.len()), (tag, 200 * 1024));
        dec = bistream_packet::Decoder::new(usize::MAX);
        let _ = dec;
    }
    assert!(server.is_open());
}
