//! A quick local throughput check (the formal measurement is `bistream bench`): a demo server
//! and a client on loopback TCP in one process. `cargo run --release -p bistream-packet
//! --example perf`.

use std::time::{Duration, Instant};

use bistream_packet::bytes::Bytes;
use bistream_packet::{demo_service, serve, Builder, Listener, ServeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // PERF_RT=current_thread runs everything on one thread (to separate scheduling costs).
    let rt = match std::env::var("PERF_RT").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    rt.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // `perf raw-server`: a raw 16-byte TCP echo server (prints its address)
        Some("raw-server") => return raw_server().await,
        // `perf remote PACKET_ADDR RAW_ADDR`: latency against servers in other processes
        Some("remote") if args.len() == 3 => return remote(&args[1], &args[2]).await,
        // `perf big ADDR [IN_FLIGHT] [SECS]`: 1 MiB echo throughput against a server in another
        // process (`bistream packet serve --demo`), the bench's bulk workload
        Some("big") if args.len() >= 2 => {
            let in_flight = args.get(2).map_or(Ok(8), |a| a.parse())?;
            let secs = args.get(3).map_or(Ok(5.0), |a| a.parse())?;
            return big(&args[1], in_flight, Duration::from_secs_f64(secs)).await;
        }
        Some("--help" | "-h") => {
            println!(
                "perf                        in-process latency and throughput figures\n\
                 perf raw-server             a raw 16 B TCP echo server (prints its address)\n\
                 perf remote PACKET RAW      16 B latency against servers in other processes\n\
                 perf big ADDR [N] [SECS]    1 MiB echo, N in flight (8), for SECS (5)"
            );
            return Ok(());
        }
        _ => {}
    }
    let listener = Listener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr_string()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Builder::new()
            .handler(demo_service())
            .configure(|c| c.with_direct_writes(std::env::var_os("PERF_NO_DIRECT").is_none())),
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let c = Builder::new()
        .configure(|c| c.with_direct_writes(std::env::var_os("PERF_NO_DIRECT").is_none()))
        .connect_tcp(addr.as_str())
        .await?;
    let small = Bytes::from_static(b"0123456789abcdef");

    // baseline: raw TCP ping-pong of 16 bytes, one task per side
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let a = l.local_addr()?;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 16];
                while s.read_exact(&mut b).await.is_ok() {
                    if s.write_all(&b).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut s = tokio::net::TcpStream::connect(a).await?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 16];
        let mut lat = Vec::new();
        for _ in 0..20_000 {
            let t = Instant::now();
            s.write_all(&b).await?;
            s.read_exact(&mut b).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "raw TCP ping-pong 16 B: p50 {:?} p99 {:?}",
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );
    }

    // sequential small
    let mut lat = Vec::new();
    for _ in 0..20_000 {
        let t = Instant::now();
        c.call(0, 0, small.clone(), 0).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "sequential 16 B: p50 {:?} p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );

    // pipelined small: a window of 256 in flight
    let n = 500_000u64;
    let t = Instant::now();
    let mut window = std::collections::VecDeque::new();
    for i in 0..n {
        window.push_back(c.submit(0, i, small.clone(), 0).await?);
        if window.len() >= 256 {
            if let Some(f) = window.pop_front() {
                f.await?;
            }
        }
    }
    for f in window {
        f.await?;
    }
    let el = t.elapsed();
    println!("pipelined 16 B: {:.0} req/s", n as f64 / el.as_secs_f64());

    // 1 MiB echo, 4 in flight
    let big = Bytes::from(vec![7u8; 1 << 20]);
    let n = 2000u64;
    let t = Instant::now();
    let mut window = std::collections::VecDeque::new();
    for _ in 0..n {
        window.push_back(c.submit(0, 0, big.clone(), 0).await?);
        if window.len() >= 4 {
            if let Some(f) = window.pop_front() {
                f.await?;
            }
        }
    }
    for f in window {
        f.await?;
    }
    let el = t.elapsed();
    println!(
        "1 MiB echo: {:.0} req/s = {:.2} GB/s each way",
        n as f64 / el.as_secs_f64(),
        (n as f64 * (1 << 20) as f64) / el.as_secs_f64() / 1e9
    );

    // 1 MiB sequential
    let n = 500u64;
    let t = Instant::now();
    for _ in 0..n {
        c.call(0, 0, big.clone(), 0).await?;
    }
    let el = t.elapsed();
    println!(
        "1 MiB sequential: {:.2} GB/s each way",
        (n as f64 * (1 << 20) as f64) / el.as_secs_f64() / 1e9
    );

    c.close().await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}

async fn raw_server() -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", l.local_addr()?);
    loop {
        let (mut s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut b = [0u8; 16];
            while s.read_exact(&mut b).await.is_ok() {
                if s.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn remote(packet_addr: &str, raw_addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = 20_000;
    let mut s = tokio::net::TcpStream::connect(raw_addr).await?;
    s.set_nodelay(true)?;
    let mut b = [0u8; 16];
    let mut lat = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&b).await?;
        s.read_exact(&mut b).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!("raw TCP ping-pong 16 B: p50 {:?}", lat[n / 2]);
    let c = Builder::new().connect_tcp(packet_addr).await?;
    let small = Bytes::from_static(b"0123456789abcdef");
    let mut lat = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        c.call(0, 0, small.clone(), 0).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!("packet echo 16 B: p50 {:?}", lat[n / 2]);
    c.close().await;
    Ok(())
}

async fn big(
    addr: &str,
    in_flight: usize,
    dur: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let c = Builder::new().connect_tcp(addr).await?;
    let big = Bytes::from(vec![7u8; 1 << 20]);
    let mut window = std::collections::VecDeque::new();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < dur {
        while window.len() < in_flight {
            window.push_back(c.submit(0, 0, big.clone(), 0).await?);
        }
        if let Some(f) = window.pop_front() {
            let r = f.await?;
            if r.payload.len() != big.len() {
                return Err("bad echo".into());
            }
            n += 1;
        }
    }
    let el = t.elapsed();
    for f in window {
        f.await?;
    }
    println!(
        "1 MiB echo, {in_flight} in flight: {:.0} MB/s each way",
        (n as f64 * (1 << 20) as f64) / el.as_secs_f64() / 1e6
    );
    c.close().await;
    Ok(())
}
