//! Interop with the real Python `cs.packetstream` 20240630 (from `.venv/packet`, see
//! `scripts/setup-test-env`), both ways: our client against a Python server (TCP and a child
//! process's stdin/stdout), and a Python client against our server. Python peers run with
//! packet_grace 0 and a watchdog; every wait here has a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bistream_packet::{
    demo_service, serve, Builder, CloseReason, Listener, PacketConnection, ServeOptions,
};
use bistream_testkit::{packet_python, python_scripts_dir, Peer};
use bytes::Bytes;
use tokio::process::Command;

const T: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("timed out")
}

fn python(script: &str) -> Command {
    let mut c = Command::new(packet_python());
    c.arg(python_scripts_dir().join(script));
    c
}

async fn python_tcp_server() -> (Peer, String) {
    python_tcp_server_with_grace("0").await
}

async fn python_tcp_server_with_grace(grace: &str) -> (Peer, String) {
    let mut cmd = python("packet_server.py");
    cmd.arg("tcp").arg(grace);
    let mut peer = Peer::spawn(cmd).expect("spawn the Python server");
    let line = peer.wait_for_line("PORT ", T).await;
    let port = line.trim().trim_start_matches("PORT ").to_string();
    (peer, format!("127.0.0.1:{port}"))
}

/// The checks our client runs against the Python service (same rq_types as the demo, plus
/// 4 str, 5 int, 10/11 the gate).
async fn client_checks(c: &PacketConnection) {
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
    assert_eq!(
        c.call(4, 0, Bytes::new(), 0).await.unwrap().1,
        Bytes::from("text é")
    );
    assert_eq!(
        c.call(5, 0, Bytes::new(), 0).await.unwrap(),
        (42, Bytes::new())
    );
    let e = c.call(2, 0, &b"x"[..], 0).await.unwrap_err();
    assert_eq!(
        e.failure_reason().as_deref(),
        Some("exception during handler")
    );
    let e = c.call(77, 0, Bytes::new(), 0).await.unwrap_err();
    assert_eq!(
        e.failure_reason().as_deref(),
        Some("exception during handler")
    );
    // a stock Python peer only knows channel 0
    let e = c.call(0, 0, &b"hi"[..], 1).await.unwrap_err();
    assert_eq!(e.failure_reason().as_deref(), Some("unknown channel %d"));
    // 1 MiB each way, and several in flight
    let big: Bytes = (0..(1u32 << 20))
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    assert_eq!(c.call(0, 0, big.clone(), 0).await.unwrap().1, big);
    let mut futs = Vec::new();
    for k in 0..4u64 {
        futs.push(c.submit(0, k, big.clone(), 0).await.unwrap());
    }
    for (k, f) in futs.into_iter().enumerate() {
        let r = f.await.unwrap();
        assert_eq!((r.ok, r.flags), (true, k as u64));
        assert_eq!(r.payload, big);
    }
    // 500 pipelined small requests, all matched
    let mut futs = Vec::new();
    for i in 0..500u64 {
        futs.push(
            c.submit(0, i, Bytes::from(format!("p{i}")), 0)
                .await
                .unwrap(),
        );
    }
    for (i, f) in futs.into_iter().enumerate() {
        let r = f.await.unwrap();
        assert_eq!(
            (r.ok, r.flags, r.payload),
            (true, i as u64, Bytes::from(format!("p{i}")))
        );
    }
    // deterministic out-of-order completion: rq 10 waits for a gate that only rq 11 opens
    let gated = c.submit(10, 0, Bytes::new(), 0).await.unwrap();
    assert_eq!(
        c.call(0, 1, &b"fast"[..], 0).await.unwrap().1,
        Bytes::from_static(b"fast")
    );
    assert_eq!(c.pending(), 1, "the gated request is still pending");
    c.call(11, 0, Bytes::new(), 0).await.unwrap();
    assert_eq!(gated.await.unwrap().payload, Bytes::from_static(b"gated"));
}

#[tokio::test]
async fn rust_client_against_python_tcp_server() {
    let (mut peer, addr) = python_tcp_server().await;
    within(async {
        let c = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        client_checks(&c).await;
        // clean shutdown: ERQ + EOF from us, the server answers with its own EOF
        assert_eq!(c.close().await, CloseReason::PeerEof);
        peer.wait_for_line("CONN DONE 1", T).await;
        // a second connection works and runs concurrently with a third
        let c2 = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        let c3 = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        let (a, b) = tokio::join!(c2.call(1, 0, &b"xy"[..], 0), c3.call(0, 3, &b"z"[..], 0));
        assert_eq!(a.unwrap().1, Bytes::from_static(b"yx"));
        assert_eq!(b.unwrap().0, 3);
        assert_eq!(c2.close().await, CloseReason::PeerEof);
        assert_eq!(c3.close().await, CloseReason::PeerEof);
    })
    .await;
}

#[tokio::test]
async fn python_calls_back_into_a_rust_handler_on_the_same_connection() {
    let (_peer, addr) = python_tcp_server().await;
    within(async {
        // our side serves too: 0 echoes with flags + 1, anything else fails
        let h = bistream_packet::handler_fn(|rq_type, flags, payload: Bytes| async move {
            match rq_type {
                0 => Ok((flags + 1, payload)),
                _ => Err("nope"),
            }
        });
        let c = Builder::new()
            .handler(h)
            .connect_tcp(addr.as_str())
            .await
            .unwrap();
        // Python's handler for rq 6 calls us back with (rq_type = our flags, payload, flags 9)
        assert_eq!(
            c.call(6, 0, &b"ping"[..], 0).await.unwrap(),
            (1, Bytes::from_static(b"ping"))
        );
        assert_eq!(
            c.call(6, 3, &b"x"[..], 0).await.unwrap(),
            (0, Bytes::from_static(b"exception during handler"))
        );
        // both directions at once, with overlapping tag numbers (tag spaces are per direction)
        let mut futs = Vec::new();
        for i in 0..20u64 {
            futs.push(
                c.submit(6, 0, Bytes::from(format!("cb{i}")), 0)
                    .await
                    .unwrap(),
            );
            futs.push(
                c.submit(0, i, Bytes::from(format!("e{i}")), 0)
                    .await
                    .unwrap(),
            );
        }
        for f in futs {
            assert!(f.await.unwrap().ok);
        }
        assert!(
            c.stats()
                .requests_received
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 22
        );
        assert_eq!(c.close().await, CloseReason::PeerEof);
        // without a handler, Python gets our "no request handler"
        let c = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        assert_eq!(
            c.call(6, 0, &b"ping"[..], 0).await.unwrap(),
            (0, Bytes::from_static(b"no request handler"))
        );
        assert_eq!(c.close().await, CloseReason::PeerEof);
    })
    .await;
}

#[tokio::test]
async fn python_server_with_its_default_packet_grace() {
    // Python's default 10 ms grace batches packets into fewer, later flushes.
    let (_peer, addr) = python_tcp_server_with_grace("0.01").await;
    within(async {
        let c = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        assert_eq!(
            c.call(1, 0, &b"abc"[..], 0).await.unwrap(),
            (3, Bytes::from_static(b"cba"))
        );
        let mut futs = Vec::new();
        for i in 0..100u64 {
            futs.push(
                c.submit(0, i, Bytes::from(format!("g{i}")), 0)
                    .await
                    .unwrap(),
            );
        }
        for (i, f) in futs.into_iter().enumerate() {
            let r = f.await.unwrap();
            assert_eq!(
                (r.ok, r.flags, r.payload),
                (true, i as u64, Bytes::from(format!("g{i}")))
            );
        }
        assert_eq!(c.close().await, CloseReason::PeerEof);
    })
    .await;
}

#[tokio::test]
async fn rust_client_drives_python_over_child_stdio() {
    let mut cmd = python("packet_server.py");
    cmd.arg("stdio")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn the Python stdio server");
    let c = Builder::new().child(&mut child).unwrap();
    within(async {
        client_checks(&c).await;
        assert_eq!(c.close().await, CloseReason::PeerEof);
        let st = child.wait().await.unwrap();
        assert!(st.success(), "python exited with {st}");
    })
    .await;
}

#[tokio::test]
async fn python_client_against_rust_server() {
    for unix in [false, true] {
        let dir = std::env::temp_dir().join(format!("bistream-packet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = if unix {
            Listener::bind(&format!("unix:{}", sock.display()))
                .await
                .unwrap()
        } else {
            Listener::bind("127.0.0.1:0").await.unwrap()
        };
        let addr = listener.local_addr_string().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Builder::new().handler(demo_service()),
            ServeOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut cmd = python("packet_client.py");
        cmd.arg(&addr);
        let mut peer = Peer::spawn(cmd).expect("spawn the Python client");
        let mut oks = Vec::new();
        within(async {
            loop {
                let line = peer.next_stdout_line(T).await.unwrap_or_else(|| {
                    panic!("python ended early:\n{}", peer.transcript.join("\n"))
                });
                assert!(
                    !line.starts_with("FAIL"),
                    "{line}\n{}",
                    peer.transcript.join("\n")
                );
                if let Some(name) = line.strip_prefix("OK ") {
                    oks.push(name.to_string());
                }
                if line == "ALL DONE" {
                    break;
                }
            }
            let st = peer.child.wait().await.unwrap();
            assert!(st.success());
        })
        .await;
        for want in [
            "echo",
            "reverse",
            "fail",
            "unknown_rq_type",
            "empty",
            "large_flags",
            "mib_echo",
            "mib_reverse",
            "pipelined",
            "threads",
            "fast_result",
            "slow_result",
            "mib_in_flight",
        ] {
            assert!(
                oks.iter().any(|o| o == want),
                "missing check {want}: {oks:?}"
            );
        }
        let _ = stop.send(());
        within(server).await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
