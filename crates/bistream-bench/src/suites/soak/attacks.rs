//! The soak suite's attacks on a relay process, each with a normal pair forwarding meanwhile:
//!
//! * **Slow consumer:** a registered client that never reads while four senders push 64 KiB
//!   messages at it. Reported: the relay's peak RSS over its baseline, the count of clients
//!   closed for not reading (`relay_send_queue_drops_total`), the close code the victim finally
//!   reads, and a normal pair's one-hop latency before and during the attack.
//! * **Slowloris:** raw sockets that send an HTTP upgrade request one byte a second, and
//!   WebSocket clients (registered or not) that send a frame one byte a second; each must be
//!   closed by the handshake timeout, the keepalive (ping) timeout or the registration timeout.
//! * **Bad frames:** oversized, truncated, binary, invalid UTF-8, undecodable and random
//!   frames, each on its own connection, each expecting its specific close code.
//!
//! The raw-socket clients speak just enough WebSocket by hand (handshake, masked frames, close
//! frame parsing) to send what no WebSocket library would.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::{message, mib, receive, row, start_relay, Relay, Rng};
use crate::hist::Histogram;
use crate::report::{Row, Target};
use crate::suites::relay::{client, Side, Ws};
use crate::Ctx;

/// A normal pair bouncing one message back and forth until `stop`: (forwards, lost, latency).
async fn pair_traffic(
    addr: String,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(u64, u64, Histogram)> {
    let (ua, ub) = (Uuid::new_v4(), Uuid::new_v4());
    let mut a = client(Side::Ours, &addr, "normal-a", ua, 4096).await?;
    let mut b = client(Side::Ours, &addr, "normal-b", ub, 4096).await?;
    let (mut ok, mut lost, mut h) = (0u64, 0u64, Histogram::default());
    let mut seq = 0u64;
    while !*stop.borrow() {
        for a_to_b in [true, false] {
            let (x, ux, y, uy) = if a_to_b {
                (&mut a, ua, &mut b, ub)
            } else {
                (&mut b, ub, &mut a, ua)
            };
            x.send(message(ux, uy, seq)).await?;
            let (got, lat) = receive(y, ux, seq, 1).await;
            seq += 1;
            if got.len() == 1 {
                ok += 1;
                lat.iter().for_each(|l| h.record(*l));
            } else {
                lost += 1;
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    Ok((ok, lost, h))
}

fn p99_us(h: &Histogram) -> anyhow::Result<f64> {
    h.quantile(0.99)
        .map(|n| n as f64 / 1000.0)
        .ok_or_else(|| anyhow!("no samples"))
}

/// The slow-consumer attack.
pub(super) async fn slow_consumer(ctx: &Ctx, notes: &mut Vec<String>) -> Vec<Row> {
    match slow_consumer_run(ctx, notes).await {
        Ok(rows) => rows,
        Err(e) => vec![row("slow consumer", "", Err(e))],
    }
}

async fn slow_consumer_run(ctx: &Ctx, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    // Keepalive off: the send queue alone must catch the victim.
    let mut relay = start_relay(ctx, &["--ping-interval", "0"]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = relay.server.rss_kib()?;
    let calm = Duration::from_millis(if ctx.cfg.quick { 500 } else { 3000 });
    let (stop_tx, stop_rx) = watch::channel(false);
    let before = tokio::spawn(pair_traffic(relay.addr.clone(), stop_rx));
    tokio::time::sleep(calm).await;
    let _ = stop_tx.send(true);
    let (_, lost_before, h_before) = before.await??;

    let uv = Uuid::new_v4();
    let mut victim = client(Side::Ours, &relay.addr, "victim", uv, 4096).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let during = tokio::spawn(pair_traffic(relay.addr.clone(), stop_rx.clone()));
    let mut senders = Vec::new();
    for i in 0..4 {
        let (addr, mut stop) = (relay.addr.clone(), stop_rx.clone());
        senders.push(tokio::spawn(async move {
            let us = Uuid::new_v4();
            let ws: Ws = client(Side::Ours, &addr, &format!("sender-{i}"), us, 4096).await?;
            let (mut tx, mut rx) = ws.split();
            let body = bistream_relay_proto::RelayMessage::PeerConnection(
                bistream_relay_proto::PeerConnectionRequest {
                    source_uuid: us,
                    source_name: "sender".into(),
                    peer_uuid: uv,
                    description_type: bistream_relay_proto::DescriptionType::Offer,
                    description: "x".repeat(64 * 1024),
                    error: None,
                },
            )
            .encode();
            let mut sent = 0u64;
            while !*stop.borrow() {
                tokio::select! {
                    r = tx.send(Message::text(body.clone())) => { r?; sent += body.len() as u64; }
                    _ = rx.next() => {} // bounces once the victim is gone
                    _ = stop.changed() => {}
                }
            }
            anyhow::Ok(sent)
        }));
    }
    let t0 = Instant::now();
    let limit = Duration::from_secs(if ctx.cfg.quick { 30 } else { 120 });
    let mut peak = base;
    let mut drops = 0.0;
    while t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(relay.server.rss_kib()?);
        drops = relay.metric("relay_send_queue_drops_total").await?;
        if drops >= 1.0 {
            break;
        }
    }
    let closed_after = t0.elapsed();
    // Let the others run a little past the close, then stop everyone.
    tokio::time::sleep(calm).await;
    peak = peak.max(relay.server.rss_kib()?);
    let _ = stop_tx.send(true);
    let mut sent = 0u64;
    for s in senders {
        sent += s.await??;
    }
    let (_, lost_during, h_during) = during.await??;
    // The victim now reads what its socket holds, then the close frame.
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = victim.next().await {
            if let Ok(Message::Close(f)) = m {
                return f.map(|f| u16::from(f.code));
            }
            if m.is_err() {
                return None;
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    relay.check_healthy()?;
    relay.server.stop().await;
    notes.push(format!(
        "slow consumer: 4 senders push 64 KiB messages at a registered client that never reads \
         (relay defaults: send queue 256 messages / 8 MiB; --ping-interval 0 so that only the queue \
         bound acts). Closed {:.2} s after the attack began; the victim read close code {}; {:.1} MiB \
         sent at it. A normal pair forwarded meanwhile (lost before {lost_before}, during {lost_during}).",
        closed_after.as_secs_f64(),
        code.map_or("none".to_string(), |c| c.to_string()),
        sent as f64 / (1 << 20) as f64,
    ));
    Ok(vec![
        row(
            "slow consumer: relay RSS peak over baseline",
            "MiB",
            Ok(mib(peak.saturating_sub(base))),
        )
        .target(Target::AtMost { x: 64.0 }),
        row(
            "slow consumer: clients closed for not reading (1008, counted)",
            "count",
            Ok(drops),
        )
        .target(Target::AtLeast { x: 1.0 }),
        row(
            "slow consumer: victim's close code",
            "code",
            code.map(f64::from).ok_or_else(|| anyhow!("no close frame")),
        ),
        row(
            "slow consumer: others' one-hop latency p99, before",
            "µs",
            p99_us(&h_before),
        ),
        row(
            "slow consumer: others' one-hop latency p99, during",
            "µs",
            p99_us(&h_during),
        ),
        row(
            "slow consumer: others' forwards lost",
            "count",
            Ok((lost_before + lost_during) as f64),
        )
        .target(Target::AtMost { x: 0.0 }),
    ])
}

/// A WebSocket opened by hand on a raw socket.
async fn raw_ws(addr: &str) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(20), async {
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await? == 0 {
                bail!("closed during the handshake");
            }
            head.push(byte[0]);
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow!("handshake timed out"))??;
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("handshake refused: {}", String::from_utf8_lossy(&head));
    }
    Ok(s)
}

/// A client frame (FIN set, masked with a zero key so the payload goes as is).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_claiming(opcode, payload, payload.len())
}

/// A frame header announcing `len` bytes, followed by `payload` (shorter when truncated).
fn frame_claiming(opcode: u8, payload: &[u8], len: usize) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Reads server frames until a close frame (its code, 1005 when it has none) or the end of the
/// connection (`None`), bounded by `limit`.
async fn read_close(s: &mut TcpStream, limit: Duration) -> anyhow::Result<Option<u16>> {
    tokio::time::timeout(limit, async {
        loop {
            let mut h = [0u8; 2];
            if s.read_exact(&mut h).await.is_err() {
                return Ok(None);
            }
            let len = match h[1] & 0x7f {
                126 => u64::from(s.read_u16().await?),
                127 => s.read_u64().await?,
                n => u64::from(n),
            };
            let mut body = vec![0u8; len.min(1 << 20) as usize];
            s.read_exact(&mut body).await?;
            if h[0] & 0x0f == 8 {
                return Ok(Some(
                    body.get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                ));
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the connection stayed open for {limit:?}"))?
}

/// Sends `bytes` one a second until the server closes the socket; the seconds it took.
async fn trickle(mut s: TcpStream, bytes: Vec<u8>, limit: Duration) -> Option<f64> {
    let t0 = Instant::now();
    let (mut rd, mut wr) = s.split();
    let mut sink = [0u8; 4096];
    let ended = tokio::time::timeout(limit, async {
        let mut i = 0;
        loop {
            tokio::select! {
                r = rd.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let b = bytes[i % bytes.len()];
                    i += 1;
                    if wr.write_all(&[b]).await.is_err() { return }
                }
            }
        }
    })
    .await;
    ended.ok().map(|_| t0.elapsed().as_secs_f64())
}

/// The slowloris attack.
pub(super) async fn slowloris(ctx: &Ctx, notes: &mut Vec<String>) -> Vec<Row> {
    match slowloris_run(ctx, notes).await {
        Ok(rows) => rows,
        Err(e) => vec![row("slowloris", "", Err(e))],
    }
}

async fn slowloris_run(ctx: &Ctx, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let (k, t) = if ctx.cfg.quick { (10, "2") } else { (200, "5") };
    let mut relay = start_relay(
        ctx,
        &[
            "--handshake-timeout",
            t,
            "--ping-interval",
            t,
            "--ping-timeout",
            t,
            "--register-timeout",
            t,
        ],
    )
    .await?;
    let secs: f64 = t.parse().unwrap_or(5.0);
    let limit = Duration::from_secs_f64(secs * 3.0 + 15.0);
    let (stop_tx, stop_rx) = watch::channel(false);
    let normal = tokio::spawn(pair_traffic(relay.addr.clone(), stop_rx));
    let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
    let mut tasks = Vec::new();
    for kind in 0..3usize {
        for _ in 0..k {
            let (addr, request) = (relay.addr.clone(), request.clone());
            let reg = (kind == 1).then(|| {
                let uuid = Uuid::new_v4();
                bistream_relay_proto::RelayMessage::Registration(
                    bistream_relay_proto::RelayRegistrationRequest {
                        name: "slow".into(),
                        uuid,
                    },
                )
                .encode()
            });
            tasks.push(tokio::spawn(async move {
                let r: anyhow::Result<Option<f64>> = async {
                    if kind == 0 {
                        let s = TcpStream::connect(&addr).await?;
                        return Ok(trickle(s, request, limit).await);
                    }
                    let mut s = raw_ws(&addr).await?;
                    if let Some(reg) = reg {
                        s.write_all(&frame(1, reg.as_bytes())).await?;
                    }
                    // A 200-byte text frame, one byte a second, never finished.
                    let mut bytes = frame_claiming(1, &[b'x'; 200], 200);
                    bytes.truncate(bytes.len() - 1);
                    Ok(trickle(s, bytes, limit).await)
                }
                .await;
                (kind, r)
            }));
        }
    }
    let mut closed = [0usize; 3];
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok((kind, Ok(Some(secs)))) => {
                closed[kind] += 1;
                times[kind].push(secs);
            }
            Ok((_, Ok(None))) => {}
            Ok((_, Err(e))) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let _ = stop_tx.send(true);
    let (forwards, lost, _) = normal.await??;
    relay.check_healthy()?;
    let hs = relay.metric("relay_handshake_failures_total").await?;
    let ka = relay.metric("relay_keepalive_timeouts_total").await?;
    let rt = relay.metric("relay_registration_timeouts_total").await?;
    relay.server.stop().await;
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    notes.push(format!(
        "slowloris: {k} of each kind against a relay started with handshake, ping and registration timeouts of \
         {t} s. Median seconds to the server's close: unfinished handshake {:.1}, registered client's \
         byte-a-second frame {:.1}, unregistered client's {:.1}. Relay counters: {hs} handshake failures, \
         {ka} keepalive timeouts, {rt} registration timeouts. A normal pair made {forwards} forwards meanwhile. {}",
        med(&mut times[0]),
        med(&mut times[1]),
        med(&mut times[2]),
        failures.first().map(|f| format!("First client error: {f}")).unwrap_or_default(),
    ));
    let n = k as f64;
    Ok(vec![
        row(
            "slowloris: unfinished handshakes closed by the relay",
            "count",
            Ok(closed[0] as f64),
        )
        .target(Target::AtLeast { x: n }),
        row(
            "slowloris: registered byte-a-second frames closed",
            "count",
            Ok(closed[1] as f64),
        )
        .target(Target::AtLeast { x: n }),
        row(
            "slowloris: unregistered byte-a-second frames closed",
            "count",
            Ok(closed[2] as f64),
        )
        .target(Target::AtLeast { x: n }),
        row(
            "slowloris: a normal pair's forwards meanwhile",
            "count",
            Ok(forwards as f64),
        ),
        row(
            "slowloris: a normal pair's forwards lost",
            "count",
            Ok(lost as f64),
        )
        .target(Target::AtMost { x: 0.0 }),
    ])
}

/// The bad-frame cases: name, bytes after the handshake (None: register first), expected code.
fn bad_cases() -> Vec<(&'static str, Vec<u8>, Option<u16>)> {
    let big = vec![b'a'; (1 << 20) + 100];
    vec![
        ("text frame over 1 MiB", frame(1, &big), Some(1009)),
        ("binary frame", frame(2, &[1, 2, 3, 255]), Some(4000)),
        (
            "invalid UTF-8 text",
            frame(1, &[0xff, 0xfe, b'{']),
            Some(1007),
        ),
        (
            "undecodable JSON",
            frame(1, b"{\"message_type\": \"relay_registration\", \"uuid\": 5"),
            Some(4000),
        ),
        (
            "forward before registering",
            frame(
                1,
                message(Uuid::new_v4(), Uuid::new_v4(), 0)
                    .to_text()
                    .unwrap_or("")
                    .as_bytes(),
            ),
            Some(4002),
        ),
        ("reserved opcode 3", frame(3, b"x"), Some(1002)),
        ("unmasked client frame", vec![0x81, 0x01, b'x'], Some(1002)),
        // Truncated: 100 bytes announced, 10 sent, then FIN. A client loss: no close code.
        (
            "truncated frame then EOF",
            frame_claiming(1, &[b'x'; 10], 100),
            None,
        ),
    ]
}

/// The bad-frame attack.
pub(super) async fn bad_frames(ctx: &Ctx, notes: &mut Vec<String>) -> Vec<Row> {
    match bad_frames_run(ctx, notes).await {
        Ok(rows) => rows,
        Err(e) => vec![row("bad frames", "", Err(e))],
    }
}

async fn bad_frames_run(ctx: &Ctx, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let mut relay: Relay = start_relay(ctx, &[]).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let normal = tokio::spawn(pair_traffic(relay.addr.clone(), stop_rx));
    let cases = bad_cases();
    let mut right = 0;
    let mut report = Vec::new();
    for (name, bytes, want) in &cases {
        let mut s = raw_ws(&relay.addr).await?;
        s.write_all(bytes).await?;
        if want.is_none() {
            s.shutdown().await?;
        }
        let got = read_close(&mut s, Duration::from_secs(20)).await;
        let ok = matches!(&got, Ok(c) if c == want);
        right += usize::from(ok);
        report.push(format!(
            "{name} → {}",
            match got {
                Ok(Some(c)) => c.to_string(),
                Ok(None) => "end of connection".into(),
                Err(e) => e.to_string(),
            }
        ));
    }
    // Random byte streams after the handshake.
    let streams = if ctx.cfg.quick { 20 } else { 200 };
    let mut rng = Rng(0x5eed);
    let mut random_closed = 0;
    for _ in 0..streams {
        let mut s = raw_ws(&relay.addr).await?;
        let junk: Vec<u8> = (0..256).map(|_| rng.next() as u8).collect();
        let _ = s.write_all(&junk).await;
        // The relay answers a close code or waits for more bytes of an announced length: FIN
        // then makes it a client loss. Either way the connection must end.
        let _ = s.shutdown().await;
        if read_close(&mut s, Duration::from_secs(20)).await.is_ok() {
            random_closed += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let (forwards, lost, _) = normal.await??;
    relay.check_healthy()?;
    relay.server.stop().await;
    notes.push(format!(
        "bad frames (relay, each on its own connection, a normal pair forwarding meanwhile): {}. \
         {streams} connections sent 256 random bytes then FIN. The packet and rpc protocols' bad \
         inputs are covered by tests (bistream-packet tests/serve.rs bad_clients_do_not_disturb_others, \
         tests/codec_props.rs; bistream-rpc tests/wire.rs invalid_frames_*, oversized_frame_closes_1009).",
        report.join("; ")
    ));
    Ok(vec![
        row(
            "bad frames: relay cases closed with the expected code",
            "count",
            Ok(right as f64),
        )
        .target(Target::AtLeast {
            x: cases.len() as f64,
        }),
        row(
            "bad frames: random byte streams whose connection ended",
            "count",
            Ok(random_closed as f64),
        )
        .target(Target::AtLeast { x: streams as f64 }),
        row(
            "bad frames: a normal pair's forwards meanwhile",
            "count",
            Ok(forwards as f64),
        )
        .target(Target::AtLeast { x: 1.0 }),
        row(
            "bad frames: a normal pair's forwards lost",
            "count",
            Ok(lost as f64),
        )
        .target(Target::AtMost { x: 0.0 }),
    ])
}
