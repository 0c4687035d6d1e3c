//! A small load generator for measuring a relay (ours or ProxyStore's) by hand; the formal
//! figures come from `bistream bench`.
//!
//! ```text
//! relay_load idle URL N                # register N clients, print READY, hold until stdin closes
//! relay_load throughput URL PAIRS SECS # PAIRS sender→receiver pairs, each with a window of
//!                                      # 32 in-flight messages; prints forwarded messages/s
//! relay_load latency URL N             # one pair, N sequential round trips a→b→a; prints p50/p99 µs
//! relay_load echo-server               # a raw tokio-tungstenite echo server; prints its URL
//! relay_load echo URL N                # N sequential echo round trips; prints p50/p99 µs
//! relay_load large URL PAIRS BYTES PID # 2×PAIRS clients; each sends one BYTES message to its
//!                                      # partner and stays connected; prints the relay's
//!                                      # (process PID) RSS idle, then 3 s after the messages
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn client(url: &str, name: &str) -> (Ws, Uuid) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let u = Uuid::new_v4();
    ws.send(Message::text(
        json!({"name": name, "uuid": u.to_string(), "message_type": "relay_registration"})
            .to_string(),
    ))
    .await
    .expect("register");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                assert!(t.contains("true"), "registration failed: {t}");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("registration: {other:?}"),
        }
    }
    (ws, u)
}

fn msg(src: Uuid, peer: Uuid, desc: &str) -> Message {
    Message::text(
        json!({"source_uuid": src.to_string(), "source_name": "x", "peer_uuid": peer.to_string(),
               "description_type": "offer", "description": desc, "error": null, "message_type": "peer_connection"})
        .to_string(),
    )
}

async fn next_text(ws: &mut Ws) -> bool {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(_))) => return true,
            Some(Ok(_)) => continue,
            _ => return false,
        }
    }
}

/// VmRSS of a process, in KiB (Linux).
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn connect_many(url: &str, n: usize) -> Vec<(Ws, Uuid)> {
    let mut held = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = url.to_string();
        set.spawn(async move { (i, client(&url, &format!("c-{i}")).await) });
        if set.len() >= 200 {
            held.push(set.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(r) = set.join_next().await {
        held.push(r.unwrap());
    }
    held.sort_by_key(|(i, _)| *i);
    held.into_iter().map(|(_, c)| c).collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let url = args.get(2).cloned().unwrap_or_default();
    match mode {
        "idle" => {
            let n: usize = args[3].parse().unwrap();
            let mut held = Vec::with_capacity(n);
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let url = url.clone();
                set.spawn(async move { client(&url, &format!("idle-{i}")).await });
                if set.len() >= 200 {
                    held.push(set.join_next().await.unwrap().unwrap());
                }
            }
            while let Some(r) = set.join_next().await {
                held.push(r.unwrap());
            }
            println!("READY {}", held.len());
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(held);
        }
        "large" => {
            let pairs: usize = args[3].parse().unwrap();
            let bytes: usize = args[4].parse().unwrap();
            let pid = args[5].clone();
            let clients = connect_many(&url, 2 * pairs).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let idle = rss_kib(&pid);
            let desc = "x".repeat(bytes.saturating_sub(300));
            let mut set = tokio::task::JoinSet::new();
            // Every pair is kept here until the end: the figure is for clients that stay
            // connected (dropping a finished pair would close it and free its buffers).
            let mut held = Vec::with_capacity(pairs);
            let mut it = clients.into_iter();
            while let (Some((mut a, ua)), Some((mut b, ub))) = (it.next(), it.next()) {
                let desc = desc.clone();
                set.spawn(async move {
                    a.send(msg(ua, ub, &desc)).await.expect("send");
                    b.send(msg(ub, ua, &desc)).await.expect("send");
                    assert!(next_text(&mut a).await && next_text(&mut b).await, "message lost");
                    (a, b)
                });
                if set.len() >= 50 {
                    // Bounded concurrency: at most 50 pairs' messages in flight.
                    if let Some(r) = set.join_next().await {
                        held.push(r.unwrap());
                    }
                }
            }
            while let Some(r) = set.join_next().await {
                held.push(r.unwrap());
            }
            // Before the rebuild (1 s after the last large frame), then well after it.
            let early = rss_kib(&pid);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = rss_kib(&pid);
            let mib = |k: u64| k as f64 / 1024.0;
            println!(
                "clients {} message {} B: relay RSS idle {:.1} MiB; right after the messages {:.1} MiB (+{:.1}); 3 s later {:.1} MiB (+{:.1})",
                2 * pairs,
                bytes,
                mib(idle),
                mib(early),
                mib(early) - mib(idle),
                mib(after),
                mib(after) - mib(idle)
            );
            assert_eq!(held.len(), pairs, "every pair is still held");
            assert_eq!(held.len(), pairs, "every pair is still held");
            drop(held);
        }
        "throughput" => {
            let pairs: usize = args[3].parse().unwrap();
            let secs: u64 = args[4].parse().unwrap();
            let desc = "v=0 ".repeat(300); // ~1.2 KB, an SDP-sized message
            let mut clients = Vec::with_capacity(pairs);
            for _ in 0..pairs {
                let a = client(&url, "a").await;
                let b = client(&url, "b").await;
                clients.push((a, b));
            }
            // The clock starts once every pair is registered.
            let start = Instant::now();
            let deadline = start + Duration::from_secs(secs);
            let mut set = tokio::task::JoinSet::new();
            for ((mut a, au), (b, bu)) in clients {
                let desc = desc.clone();
                set.spawn(async move {
                    let (_bsink, mut bstream) = b.split();
                    let window = 32usize;
                    let mut got = 0u64;
                    for _ in 0..window {
                        a.feed(msg(au, bu, &desc)).await.unwrap();
                    }
                    a.flush().await.unwrap();
                    while Instant::now() < deadline {
                        match bstream.next().await {
                            Some(Ok(Message::Text(_))) => {
                                got += 1;
                                a.send(msg(au, bu, &desc)).await.unwrap();
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        }
                    }
                    got
                });
            }
            let mut total = 0u64;
            while let Some(r) = set.join_next().await {
                total += r.unwrap();
            }
            let el = start.elapsed().as_secs_f64();
            println!(
                "forwarded {total} messages in {el:.2}s = {:.0} msg/s ({pairs} pairs)",
                total as f64 / el
            );
        }
        "latency" => {
            let n: usize = args[3].parse().unwrap();
            let (mut a, au) = client(&url, "a").await;
            let (mut b, bu) = client(&url, "b").await;
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                a.send(msg(au, bu, "ping")).await.unwrap();
                assert!(next_text(&mut b).await);
                b.send(msg(bu, au, "pong")).await.unwrap();
                assert!(next_text(&mut a).await);
                lat.push(t.elapsed().as_micros() as u64 / 2);
            }
            lat.sort_unstable();
            println!(
                "one-hop forward latency over {n}: p50 {} us, p99 {} us",
                lat[n / 2],
                lat[n * 99 / 100]
            );
        }
        "echo-server" => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("ws://{}", l.local_addr().unwrap());
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() && ws.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        "echo" => {
            let n: usize = args[3].parse().unwrap();
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
            let body = msg(Uuid::new_v4(), Uuid::new_v4(), "ping");
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                ws.send(body.clone()).await.unwrap();
                assert!(next_text(&mut ws).await);
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat.sort_unstable();
            println!("raw echo round trip over {n}: p50 {} us, p99 {} us", lat[n / 2], lat[n * 99 / 100]);
        }
        _ => eprintln!("usage: relay_load idle URL N | throughput URL PAIRS SECS | latency URL N | echo-server | echo URL N"),
    }
}
