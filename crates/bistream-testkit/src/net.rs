//! Ports and addresses: a free loopback port, the address in a "listening on" line, and a
//! minimal HTTP GET for ops endpoints, and a WebSocket opened by hand for raw-frame tests.

use std::time::Duration;

/// A loopback TCP port that was free a moment ago. Only for peers that cannot bind port 0
/// and report the port back (the Python relay server); there is a small race by nature.
pub fn try_free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// [`try_free_port`] for tests (panics when no port can be bound).
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
}

/// Parses the address out of a "... listening on ws://HOST:PORT" or a bare "HOST:PORT" line.
///
/// ```
/// assert_eq!(
///     bistream_testkit::parse_addr("relay listening on ws://127.0.0.1:4567").as_deref(),
///     Some("127.0.0.1:4567")
/// );
/// ```
pub fn parse_addr(line: &str) -> Option<String> {
    let word = line.split_whitespace().last()?;
    let word = ["ws://", "wss://", "http://", "https://", "tcp://"]
        .iter()
        .find_map(|p| word.strip_prefix(p))
        .unwrap_or(word)
        .trim_end_matches('/');
    word.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.to_string())
}

/// GET `path` over plain HTTP/1.1 (`Connection: close`) with a 10 s timeout on each step;
/// returns (status, body). Enough for ops endpoints such as `/health` and `/metrics`. Panics
/// (failing the test) on timeouts and I/O errors.
pub async fn http_get<A: tokio::net::ToSocketAddrs>(addr: A, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const T: Duration = Duration::from_secs(10);
    let mut s = tokio::time::timeout(T, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("http_get: connect timed out"))
        .unwrap_or_else(|e| panic!("http_get: connect: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("http_get: write: {e}"));
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("http_get: read timed out"))
        .unwrap_or_else(|e| panic!("http_get: read: {e}"));
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Opens a WebSocket by hand (no client library) at `addr`, path `/`, and returns the socket
/// right after the server's `101` (read byte by byte, so no frame byte is consumed), with
/// `step` as the timeout of the connect and of each read. For tests that then write raw
/// frames. Panics (failing the test) on timeouts, I/O errors, EOF or any answer other than
/// `101`, quoting the answer.
pub async fn open_websocket_raw(addr: &str, step: Duration) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(step, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("open_websocket_raw: connect timed out"))
        .unwrap_or_else(|e| panic!("open_websocket_raw: connect: {e}"));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("open_websocket_raw: write: {e}"));
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(step, s.read(&mut b))
            .await
            .unwrap_or_else(|_| panic!("open_websocket_raw: handshake timed out"))
            .unwrap_or_else(|e| panic!("open_websocket_raw: read: {e}"));
        assert_eq!(
            n,
            1,
            "EOF during the handshake: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(b[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_ready_lines() {
        assert_eq!(
            parse_addr("relay listening on ws://127.0.0.1:4567").as_deref(),
            Some("127.0.0.1:4567")
        );
        assert_eq!(
            parse_addr("relay listening on wss://127.0.0.1:1/").as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(parse_addr("127.0.0.1:80").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(
            parse_addr("listening on 127.0.0.1:9/").as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(parse_addr("starting up"), None);
        assert_eq!(parse_addr(""), None);
    }

    #[test]
    fn free_ports_are_bindable() {
        let p = free_port();
        assert!(p > 0);
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    }
}
