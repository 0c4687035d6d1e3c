//! The bridge to `bistream-rpc` for channels: a connection's first REQUEST_CHANNEL starts an
//! in-process rpc connection (two engines joined by channels) whose acceptor end serves the
//! `Router`; channels are forwarded to its initiator end, because a stream/stream handler's
//! receiver and sender belong to an rpc connection. (Request/response, request/stream and
//! fire-and-forget call the `Router` directly, without this extra JSON round.)

use bistream_rpc::transport::{FrameReader, FrameWriter, Inbound, Transport};
use bistream_rpc::{Connection, Router, RpcConfig, Side};
use tokio::sync::mpsc;

/// One end of an in-memory rpc transport.
pub(crate) struct Chan {
    tx: mpsc::Sender<String>,
    rx: mpsc::Receiver<String>,
}

pub(crate) struct ChanReader(mpsc::Receiver<String>);
pub(crate) struct ChanWriter(Option<mpsc::Sender<String>>);

impl Transport for Chan {
    type Reader = ChanReader;
    type Writer = ChanWriter;
    fn split(self) -> (ChanReader, ChanWriter) {
        (ChanReader(self.rx), ChanWriter(Some(self.tx)))
    }
}

impl FrameReader for ChanReader {
    async fn next(&mut self) -> Inbound {
        match self.0.recv().await {
            Some(t) => Inbound::Text(t),
            None => Inbound::Closed {
                code: Some(bistream_rpc::close::NORMAL),
                reason: String::new(),
            },
        }
    }
}

impl FrameWriter for ChanWriter {
    async fn feed(&mut self, frame: &str) -> std::io::Result<()> {
        match &self.0 {
            Some(tx) => tx
                .send(frame.to_owned())
                .await
                .map_err(|_| std::io::Error::other("bridge closed")),
            None => Err(std::io::Error::other("bridge closed")),
        }
    }
    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    async fn close(&mut self, _code: u16, _reason: &str) {
        self.0 = None;
    }
}

/// Starts the in-process rpc pair serving `router`; returns (caller end, serving end). Both
/// handles must be kept: dropping the last handle of an end closes it.
pub(crate) fn start(router: Router, mut cfg: RpcConfig) -> (Connection, Connection) {
    let (a_tx, b_rx) = mpsc::channel(1024);
    let (b_tx, a_rx) = mpsc::channel(1024);
    // The RSocket layer applies the per-connection limits; the bridge must not refuse first.
    cfg.limits.max_in_flight = usize::MAX / 2;
    cfg.limits.max_streams = usize::MAX / 2;
    cfg.limits.max_pending_calls = usize::MAX / 2;
    cfg.limits.max_frame_bytes = usize::MAX / 2;
    cfg.keepalive = None;
    cfg.extensions = true;
    let server = bistream_rpc::start(
        Chan { tx: b_tx, rx: b_rx },
        Side::Acceptor,
        router,
        cfg.clone(),
    );
    let caller = bistream_rpc::start(
        Chan { tx: a_tx, rx: a_rx },
        Side::Initiator,
        Router::new(),
        cfg,
    );
    (caller, server)
}
