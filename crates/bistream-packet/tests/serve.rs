//! The `serve` accept loop over real TCP: bad clients (garbage, truncated packets, huge length
//! prefixes, vanishing mid-request) end only their own connection; the connection limit holds
//! further clients back; shutdown closes idle connections gracefully.

use std::time::Duration;

use bistream_packet::{
    demo_service, serve, Builder, CloseReason, Decoder, Listener, Packet, ServeOptions,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("timed out")
}

async fn start(
    opts: ServeOptions,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = Listener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr_string().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        Builder::new()
            .handler(demo_service())
            .configure(|c| c.with_max_packet(1 << 20)),
        opts,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

/// Reads packets until the server closes the stream; returns them.
async fn read_all(s: &mut TcpStream) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    let dec = Decoder::default();
    let mut out = Vec::new();
    loop {
        while let Some(p) = dec.decode(&mut buf).unwrap() {
            out.push(p);
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn bad_clients_do_not_disturb_others() {
    let (addr, stop, task) = start(ServeOptions::default()).await;
    within(async {
        let good = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        let slow = good.submit(3, 1, &b"slow"[..], 0).await.unwrap();
        let bad_inputs: Vec<&[u8]> = vec![
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", // varint too long
            b"\x8f\xff\xff\xff\x7f",                         // length above max_packet
            b"\x05\x02\x16\x01h",                            // truncated, then EOF
            b"\x00",                                         // empty body
            b"\x04\x09\x02\x00zz",                           // malformed EOF
            b"\x03\x02\x02\x04\x03\x03\x02\x04",             // slow request, then vanish
        ];
        for bad in bad_inputs {
            let mut s = TcpStream::connect(addr.as_str()).await.unwrap();
            s.write_all(bad).await.unwrap();
            s.shutdown().await.unwrap();
            let got = read_all(&mut s).await;
            // the server ends with its EOF packet (or just closes when it cannot write)
            if let Some(last) = got.last() {
                assert!(last.is_eof(), "after {bad:02x?}: {got:?}");
            }
        }
        // the good connection is unaffected
        assert_eq!(
            good.call(1, 0, &b"abc"[..], 0).await.unwrap(),
            (3, Bytes::from_static(b"cba"))
        );
        assert_eq!(slow.await.unwrap().payload, Bytes::from_static(b"slow"));
        assert_eq!(good.close().await, CloseReason::PeerEof);
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn connection_limit_and_graceful_shutdown_of_idle_connections() {
    let (addr, stop, task) = start(ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    })
    .await;
    within(async {
        let first = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        first.call(0, 0, Bytes::new(), 0).await.unwrap();
        // the second connects (kernel backlog) but is only served once the first ends
        let second = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
        let waiting = second.submit(0, 2, &b"2nd"[..], 0).await.unwrap();
        first.call(0, 1, Bytes::new(), 0).await.unwrap();
        assert_eq!(first.close().await, CloseReason::PeerEof);
        assert_eq!(waiting.await.unwrap().flags, 2);
        // shutdown with `second` idle: the server sends ERQ + EOF, our side answers with EOF
        let _ = stop.send(());
        assert_eq!(second.closed().await, CloseReason::PeerEof);
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_connections() {
    let (addr, stop, task) = start(ServeOptions::default()).await;
    within(async {
        let mut clients = Vec::new();
        for k in 0..24u64 {
            let addr = addr.clone();
            clients.push(tokio::spawn(async move {
                let c = Builder::new().connect_tcp(addr.as_str()).await.unwrap();
                let mut futs = Vec::new();
                for i in 0..40u64 {
                    let p = Bytes::from(format!("{k}:{i}"));
                    futs.push((p.clone(), c.submit(0, k * 1000 + i, p, 0).await.unwrap()));
                }
                for (i, (p, f)) in futs.into_iter().enumerate() {
                    let r = f.await.unwrap();
                    assert_eq!((r.ok, r.flags, r.payload), (true, k * 1000 + i as u64, p));
                }
                assert_eq!(c.close().await, CloseReason::PeerEof);
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    })
    .await;
}
