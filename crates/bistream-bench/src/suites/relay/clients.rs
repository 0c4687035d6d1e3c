//! The relay suite's load clients: connect (and register) raw WebSocket clients, and bounce
//! timestamped `peer_connection` messages between the two sides of a pair. The cluster suite
//! drives the same clients.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use bistream_relay_proto::{
    DescriptionType, PeerConnectionRequest, RelayMessage, RelayRegistrationRequest,
};

use super::{Side, Ws, CONNECT_CONCURRENCY, PAD};
use crate::load::{self, now_ns, Phase, WorkerOut};

/// Opens a WebSocket to `addr` with TCP_NODELAY and the given read buffer size.
async fn ws_connect(addr: &str, read_buf: usize) -> anyhow::Result<Ws> {
    let tcp = load::connect(addr).await?;
    // Writes are batched until flush (idle clients use small buffers: 10,000 of them).
    let cfg = WebSocketConfig::default()
        .read_buffer_size(read_buf)
        .write_buffer_size(read_buf)
        .max_write_buffer_size(16 << 20);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}/"), tcp, Some(cfg)),
    )
    .await
    .map_err(|_| anyhow!("WebSocket handshake with {addr} timed out"))?
    .with_context(|| format!("WebSocket handshake with {addr}"))?;
    Ok(ws)
}

/// Registers `uuid` and waits for the success reply.
async fn register(ws: &mut Ws, name: &str, uuid: Uuid) -> anyhow::Result<()> {
    let reg = RelayMessage::Registration(RelayRegistrationRequest {
        name: name.to_string(),
        uuid,
    });
    ws.send(Message::text(reg.encode())).await?;
    let reply = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = ws.next().await {
            match m? {
                Message::Text(t) => return Ok(t),
                Message::Close(f) => bail!("closed during registration: {f:?}"),
                _ => {}
            }
        }
        bail!("connection ended during registration")
    })
    .await
    .map_err(|_| anyhow!("no registration reply within 20 s"))??;
    match RelayMessage::decode(&reply) {
        Ok(RelayMessage::Response(r)) if r.success => Ok(()),
        _ => bail!("registration refused: {reply}"),
    }
}

/// Connects one [`client`] per `(uuid, relay address)`, named after its UUID, at most
/// [`CONNECT_CONCURRENCY`] at a time; returns them in the order given.
pub(in crate::suites) async fn connect_all(
    side: Side,
    targets: Vec<(Uuid, String)>,
) -> anyhow::Result<Vec<Ws>> {
    futures_util::stream::iter(targets.into_iter().map(|(u, addr)| async move {
        let name = format!("bench-{}", &u.to_string()[..8]);
        client(side, &addr, &name, u, 128 * 1024).await
    }))
    .buffered(CONNECT_CONCURRENCY)
    .collect::<Vec<anyhow::Result<Ws>>>()
    .await
    .into_iter()
    .collect()
}

/// A connected client: registered with the relay, or plain for the echo floor.
pub(in crate::suites) async fn client(
    side: Side,
    addr: &str,
    name: &str,
    uuid: Uuid,
    read_buf: usize,
) -> anyhow::Result<Ws> {
    let mut ws = ws_connect(addr, read_buf).await?;
    if side != Side::Floor {
        register(&mut ws, name, uuid).await?;
    }
    Ok(ws)
}

/// A `peer_connection` message from `me` to `to`, encoded once by the protocol crate with a
/// placeholder timestamp; each send only writes the current time into a copy (the load
/// generator must cost as little CPU as possible: it shares the machine with the server).
struct Template {
    head: String,
    tail: String,
}

const STAMP_MARK: &str = "00000000000000000000";

impl Template {
    fn new(me: Uuid, to: Uuid) -> Template {
        let m = RelayMessage::PeerConnection(PeerConnectionRequest {
            source_uuid: me,
            source_name: format!("bench-{}", &me.to_string()[..8]),
            peer_uuid: to,
            description_type: DescriptionType::Offer,
            description: format!("{STAMP_MARK}{}", "x".repeat(PAD)),
            error: None,
        })
        .encode();
        let at = m.find(STAMP_MARK).unwrap_or(m.len());
        Template {
            head: m[..at].to_string(),
            tail: m[at..].get(STAMP_MARK.len()..).unwrap_or("").to_string(),
        }
    }

    fn now(&self) -> Message {
        let mut s = String::with_capacity(self.head.len() + 20 + self.tail.len());
        s.push_str(&self.head);
        s.push_str(&format!("{:020}", now_ns()));
        s.push_str(&self.tail);
        Message::text(s)
    }
}

/// The send timestamp of a relayed message, checking it is an undamaged, un-bounced
/// `peer_connection` (a scan, not a full decode: either server's spacing is accepted).
fn stamp_of(t: &str) -> anyhow::Result<u64> {
    let field = |key: &str| -> Option<&str> {
        let i = t.find(key)? + key.len();
        Some(t[i..].trim_start().trim_start_matches(':').trim_start())
    };
    if !t.contains("\"peer_connection\"") {
        bail!("unexpected message from the server: {t}");
    }
    match field("\"error\"") {
        Some(rest) if rest.starts_with("null") => {}
        None => {}
        Some(_) => bail!("the relay bounced a message: {t}"),
    }
    field("\"description\"")
        .and_then(|r| r.strip_prefix('"'))
        .and_then(|r| r.get(..20))
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| anyhow!("description lost its timestamp: {t}"))
}

/// One client of a pair (or of the echo floor): sends `initial` messages, then answers each
/// received message with a new one to `to`, until the run stops.
pub(in crate::suites) async fn bouncer(
    mut ws: Ws,
    me: Uuid,
    to: Uuid,
    initial: usize,
    mut phase: Phase,
) -> anyhow::Result<WorkerOut> {
    let template = Template::new(me, to);
    let mut out = WorkerOut::default();
    for _ in 0..initial {
        ws.feed(template.now()).await?;
    }
    ws.flush().await?;
    loop {
        let m = tokio::select! {
            biased;
            _ = phase.until_stop() => break,
            m = ws.next() => m,
        };
        // After the stop, the peer of a pair may already be gone: the relay then bounces the
        // last messages back, which is the end of the run, not a failure.
        let checked = |out: &mut WorkerOut, m| match received(out, &phase, m) {
            Err(_) if phase.stopped() => None,
            r => Some(r),
        };
        let Some(first) = checked(&mut out, m) else {
            break;
        };
        let mut replies = usize::from(first?);
        // Answer everything already received with one flush (a batching client, as a
        // WebSocket client library would be), bounded so one connection cannot hog the task.
        while replies < 64 {
            match ws.next().now_or_never() {
                Some(m) => match checked(&mut out, m) {
                    Some(r) => replies += usize::from(r?),
                    None => return Ok(out),
                },
                None => break,
            }
        }
        for _ in 0..replies {
            ws.feed(template.now()).await?;
        }
        ws.flush().await?;
    }
    Ok(out)
}

/// Checks one received frame; true when it was a relayed message (to be answered).
fn received(
    out: &mut WorkerOut,
    phase: &Phase,
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> anyhow::Result<bool> {
    match m.ok_or_else(|| anyhow!("the server closed the connection"))?? {
        Message::Text(t) => {
            out.complete(phase, stamp_of(&t)?, 0);
            Ok(true)
        }
        Message::Close(f) => bail!("the server closed the connection: {f:?}"),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_either_servers_encoding() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let Message::Text(t) = Template::new(a, b).now() else {
            panic!("not text")
        };
        let ours = stamp_of(&t).unwrap();
        // Python re-encodes with ", " / ": " separators.
        let py = t.replace("\":\"", "\": \"").replace("\":null", "\": null");
        assert_eq!(stamp_of(&py).unwrap(), ours);
        let decoded = RelayMessage::decode(&t).unwrap();
        assert!(
            matches!(decoded, RelayMessage::PeerConnection(p) if p.peer_uuid == b && p.source_uuid == a)
        );
        let bounced = t.replace("\"error\":null", "\"error\":\"Cannot forward\"");
        assert!(stamp_of(&bounced)
            .unwrap_err()
            .to_string()
            .contains("bounced"));
        assert!(stamp_of("{\"message_type\":\"relay_response\"}").is_err());
        let cut = t.replace(&format!("{ours:020}"), "12");
        assert!(stamp_of(&cut).is_err());
    }
}
