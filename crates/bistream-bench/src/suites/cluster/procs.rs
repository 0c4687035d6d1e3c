//! The `cluster` suite's processes: a private redis-server, two clustered nodes (each with its
//! share of the cores), one node without `--cluster` and, optionally, a baseline build's node;
//! started, checked to be connected (a message crosses the backplane), and stopped.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use bistream_relay_proto::{DescriptionType, PeerConnectionRequest, RelayMessage};

use super::super::relay::{client, Side, Ws};
use super::super::{free_port, spawn_ours, READY_TIMEOUT};
use super::BASELINE_ENV;
use crate::proc::Server;
use crate::Ctx;

pub(super) struct Setup {
    pub(super) redis: Server,
    pub(super) single: (Server, String),
    pub(super) baseline: Option<(Server, String)>,
    pub(super) n1: (Server, String),
    pub(super) n2: (Server, String),
}

impl Setup {
    pub(super) async fn stop(self) {
        let base = self.baseline.map(|b| b.0);
        for s in [self.single.0, self.n1.0, self.n2.0, self.redis]
            .into_iter()
            .chain(base)
        {
            s.stop().await;
        }
    }
}

async fn start_redis() -> anyhow::Result<(Server, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--loglevel", "warning"]);
    let mut s = Server::spawn("redis-server", cmd)
        .context("redis-server not available (run scripts/setup-test-env)")?;
    s.wait_port(&format!("127.0.0.1:{port}"), READY_TIMEOUT)
        .await?;
    Ok((s, port))
}

/// Relay nodes the load is spread over in the cross-node layout.
const NODES: usize = 2;

/// The runtime threads of each relay process: the machine's cores shared among the relay
/// processes that carry the load together (the documented setting for co-located nodes,
/// docs/cluster.md). The one node has the machine to itself: all cores, the default.
pub(super) fn node_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / NODES).max(1)
}

/// Optional: another `bistream` build to run the two clustered nodes with (the rest of the
/// suite unchanged), to compare two builds' cluster code under the same load generator.
const NODE_EXE_ENV: &str = "BISTREAM_BENCH_CLUSTER_NODE_EXE";

async fn node(ctx: &Ctx, port: u16, id: &str) -> anyhow::Result<(Server, String)> {
    let url = format!("redis://127.0.0.1:{port}");
    let exe =
        std::env::var_os(NODE_EXE_ENV).unwrap_or_else(|| ctx.cfg.exe.clone().into_os_string());
    let mut cmd = Command::new(exe);
    cmd.args([
        "relay",
        "serve",
        "--port",
        "0",
        "--cluster",
        &url,
        "--node-id",
        id,
    ])
    .args(["--log-level", "warn"]);
    cmd.arg("--worker-threads").arg(node_workers().to_string());
    let name = format!("bistream relay serve --cluster ({id})");
    let mut s = Server::spawn(&name, cmd)?;
    let addr = s
        .wait_line(READY_TIMEOUT, crate::proc::parse_addr)
        .await
        .with_context(|| format!("{name} did not print its address"))?;
    Ok((s, addr))
}

pub(super) async fn setup(ctx: &Ctx) -> anyhow::Result<Setup> {
    let (redis, port) = start_redis().await?;
    let single = spawn_ours(
        ctx,
        "bistream relay serve",
        &["relay", "serve", "--port", "0"],
    )
    .await?;
    let n1 = node(ctx, port, "bench-1").await?;
    let n2 = node(ctx, port, "bench-2").await?;
    let baseline = match std::env::var_os(BASELINE_ENV) {
        Some(exe) => {
            let mut cmd = Command::new(exe);
            cmd.args(["relay", "serve", "--port", "0", "--log-level", "warn"]);
            let mut s = Server::spawn("baseline bistream relay serve", cmd)?;
            let addr = s
                .wait_line(READY_TIMEOUT, crate::proc::parse_addr)
                .await
                .context("the baseline build did not print its address")?;
            Some((s, addr))
        }
        None => None,
    };
    let s = Setup {
        redis,
        single,
        baseline,
        n1,
        n2,
    };
    // The nodes connect to Redis in the background: wait until a message crosses.
    if let Err(e) = crossing(&s.n1.1, &s.n2.1).await {
        s.stop().await;
        return Err(e);
    }
    Ok(s)
}

/// Waits (20 s at most) until a message from node `a` reaches a client of node `b`.
async fn crossing(a: &str, b: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let (ua, ub) = (Uuid::new_v4(), Uuid::new_v4());
    let mut wa = client(Side::Ours, a, "probe-a", ua, 4096).await?;
    let mut wb = client(Side::Ours, b, "probe-b", ub, 4096).await?;
    let probe = RelayMessage::PeerConnection(PeerConnectionRequest {
        source_uuid: ua,
        source_name: "probe-a".into(),
        peer_uuid: ub,
        description_type: DescriptionType::Offer,
        description: "probe".into(),
        error: None,
    })
    .encode();
    loop {
        wa.send(Message::text(probe.clone())).await?;
        let got = tokio::select! {
            m = next_text(&mut wb) => Some(m?),
            m = next_text(&mut wa) => { m?; None }, // bounced: not connected yet
            _ = tokio::time::sleep(Duration::from_secs(1)) => None,
        };
        if got.is_some() {
            let _ = wa.close(None).await;
            let _ = wb.close(None).await;
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster nodes did not connect through Redis within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            return Ok(t.to_string());
        }
    }
    Err(anyhow!("connection closed"))
}
