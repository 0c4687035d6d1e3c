//! Shared helpers: demo routers and connected pairs over each transport.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bistream_rpc::ws::{ClientOptions, ServerConfig};
use bistream_rpc::{stream_io, Connection, Router, RpcConfig, Side};

pub const T: Duration = Duration::from_secs(20);

/// Demo router plus the log lines it printed.
pub fn demo() -> (Router, Arc<Mutex<Vec<String>>>) {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let l = logs.clone();
    (
        bistream_rpc::demo::router(Arc::new(move |s: &str| {
            l.lock().unwrap().push(s.to_string())
        })),
        logs,
    )
}

/// (client, server) over an in-memory duplex.
pub fn duplex_pair(server: Router, client: Router, cfg: RpcConfig) -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let s = stream_io::over(b, Side::Acceptor, server, cfg.clone());
    let c = stream_io::over(a, Side::Initiator, client, cfg);
    (c, s)
}

/// A standalone WebSocket server on 127.0.0.1:0; returns its ws:// URL.
pub async fn ws_server(cfg: ServerConfig) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(bistream_rpc::ws::serve(l, cfg));
    format!("ws://{addr}/rpc")
}

pub async fn ws_client(url: &str) -> Connection {
    bistream_rpc::ws::connect(url, ClientOptions::default())
        .await
        .unwrap()
}

/// A seeded xorshift generator for property tests that must replay a failing seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
