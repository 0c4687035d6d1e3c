//! `bistream rpc serve|call --protocol rsocket`: the demo operations over RSocket 1.0 (TCP with
//! the 3-byte length prefix, or WebSocket at `/`), and calls toward any RSocket server
//! (routing metadata = OP, JSON data).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bistream_rpc::{Raw, Router};
use bistream_rsocket::{RSocket, RsConfig, RsError};
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;

use super::rpc::{
    announce, print_line, shutdown_signal, CallArgs, LimitArgs, ServeArgs, TransportKind,
};

fn config(l: &LimitArgs) -> anyhow::Result<RsConfig> {
    if l.max_frame_bytes < 1024 {
        bail!("--max-frame-bytes must be at least 1024");
    }
    if l.max_streams == 0 || l.window.is_some_and(|w| w < 2) || l.stream_queue_bytes == 0 {
        bail!("--max-streams and --stream-queue-bytes must be at least 1 and --window at least 2");
    }
    let mut c = RsConfig {
        max_frame_bytes: l
            .max_frame_bytes
            .min(bistream_rsocket::proto::MAX_FRAME_LEN),
        max_streams: l.max_streams.max(l.max_in_flight.min(l.max_streams)),
        window: l.window.unwrap_or(RsConfig::default().window),
        stream_queue_bytes: l.stream_queue_bytes,
        ..RsConfig::default()
    };
    if l.keepalive != 0.0 {
        let d = bistream_core::validate_timeout_max(l.keepalive, 3600.0).context("--keepalive")?;
        c.keepalive = d;
        c.max_lifetime = d * 3;
    }
    Ok(c)
}

/// Serves `router` over RSocket until a signal.
pub(crate) async fn serve(a: ServeArgs, router: Router) -> anyhow::Result<ExitCode> {
    let cfg = config(&a.limits)?;
    let addr = a.addr.unwrap_or_else(|| "127.0.0.1:8701".into());
    if !matches!(a.transport, TransportKind::Tcp | TransportKind::Ws) {
        bail!("--protocol rsocket serves --transport tcp or ws");
    }
    let l = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = l.local_addr()?;
    let server = async move {
        if a.transport == TransportKind::Ws {
            announce(&format!("rpc listening on ws://{local}/ (rsocket)"));
            bistream_rsocket::serve_ws(l, router, cfg).await
        } else {
            announce(&format!("rpc listening on tcp://{local} (rsocket)"));
            bistream_rsocket::serve_tcp(l, router, cfg).await
        }
    };
    tokio::select! {
        r = server => r?,
        _ = shutdown_signal() => tracing::info!("shutdown requested"),
    }
    Ok(ExitCode::SUCCESS)
}

fn exit_for(e: &RsError) -> ExitCode {
    let code = match e {
        RsError::Connect(_) => 4,
        RsError::Remote { .. } => 5,
        RsError::Timeout(_) => 6,
        RsError::Closed(_) | RsError::Lost(_) => 7,
        _ => 1,
    };
    ExitCode::from(code)
}

fn report(e: &RsError) -> ExitCode {
    match e {
        RsError::Remote { code, message } => eprintln!("error {code}: {message}"),
        other => eprintln!("bistream rpc call: {other}"),
    }
    exit_for(e)
}

/// One call toward an RSocket server.
pub(crate) async fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    let timeout: Duration =
        bistream_core::validate_timeout_max(a.timeout, 86_400.0).context("--timeout")?;
    let mut cfg = config(&a.limits)?;
    cfg.timeout = timeout;
    let data: Raw = match &a.json {
        Some(j) => serde_json::from_str(j).context("JSON argument is not valid JSON")?,
        None => serde_json::from_str("{}")?,
    };
    let url = a.url.as_str();
    let conn = if let Some(hp) = url.strip_prefix("tcp://") {
        bistream_rsocket::connect_tcp(hp.trim_end_matches('/'), Router::new(), cfg).await
    } else {
        // ws(s):// checked and normalised, http(s):// converted, by core's one URL rule.
        match bistream_core::http_to_websocket_url(url) {
            Ok(ws) => bistream_rsocket::connect_ws(&ws, Router::new(), cfg).await,
            Err(e) => Err(RsError::Connect(format!(
                "unsupported url for rsocket: {e} (or tcp://HOST:PORT)"
            ))),
        }
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => return Ok(report(&e)),
    };
    let r = if a.stream {
        call_stream(&conn, &a.op, &data).await
    } else if a.bistream {
        call_channel(&conn, &a.op, &data).await
    } else if a.fire_and_forget {
        conn.fire_and_forget(&a.op, &data).await
    } else {
        match conn.request_response::<_, Raw>(&a.op, &data).await {
            Ok(v) => print_line(&v).map_err(|e| RsError::Data(e.to_string())),
            Err(e) => Err(e),
        }
    };
    // Give queued frames (a fire-and-forget) a moment to leave before closing.
    conn.close().await;
    Ok(match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    })
}

async fn call_stream(conn: &RSocket, op: &str, data: &Raw) -> Result<(), RsError> {
    let mut s = conn.request_stream::<_, Raw>(op, data).await?;
    while let Some(item) = s.next().await {
        print_line(&item?).map_err(|e| RsError::Data(e.to_string()))?;
    }
    Ok(())
}

/// Channel: the JSON argument is the first item, then each stdin line.
async fn call_channel(conn: &RSocket, op: &str, first: &Raw) -> Result<(), RsError> {
    let (mut tx, mut rx) = conn.request_channel::<Raw, Raw>(op, first).await?;
    let feeder = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut n = 0u64;
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| RsError::Data(format!("reading stdin: {e}")))?
        {
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let item: Raw = serde_json::from_str(&line)
                .map_err(|e| RsError::Data(format!("stdin line {n} is not JSON: {e}")))?;
            tx.send(&item).await?;
        }
        tx.end().await
    });
    let mut r = Ok(());
    while let Some(item) = rx.next().await {
        match item {
            Ok(v) => print_line(&v).map_err(|e| RsError::Data(e.to_string()))?,
            Err(e) => {
                r = Err(e);
                break;
            }
        }
    }
    feeder.abort();
    r
}
