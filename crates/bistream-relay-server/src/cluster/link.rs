//! A raw Redis connection driven by the task that uses it (the publisher's, the subscriber's):
//! connect with a timeout, authenticate and select the database, then read replies into a
//! bounded buffer and hand them out one at a time, or (the subscriber) all complete ones at once
//! as one shared chunk of the buffer, so that payloads are passed on without a copy. See
//! [`super::resp`] for the codec.

use std::io;
use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::resp::{self, ProtocolError, Reply};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// One raw connection to Redis.
pub(super) struct Link {
    read: OwnedReadHalf,
    pub(super) write: OwnedWriteHalf,
    /// Bytes read and not parsed yet (parsed replies are cut off its front).
    buf: BytesMut,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what}: no reply in time"))
}

pub(super) fn protocol(e: ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Link {
    /// Connects to the Redis of `info`, authenticates and selects its database.
    pub(super) async fn open(info: &ConnectionInfo, timeout: Duration) -> io::Result<Link> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(io::Error::other("only redis:// (plain TCP) is supported"));
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), *port)))
            .await
            .map_err(|_| timed_out("connect"))??;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut link = Link {
            read,
            write,
            buf: BytesMut::with_capacity(READ_CHUNK),
        };
        let settings = info.redis_settings();
        let mut out = Vec::new();
        let mut expected = 0;
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => {
                    resp::command(&mut out, 3);
                    resp::arg(&mut out, b"AUTH");
                    resp::arg(&mut out, user.as_bytes());
                }
                None => {
                    resp::command(&mut out, 2);
                    resp::arg(&mut out, b"AUTH");
                }
            }
            resp::arg(&mut out, password.as_bytes());
            expected += 1;
        }
        if settings.db() != 0 {
            resp::command(&mut out, 2);
            resp::arg(&mut out, b"SELECT");
            resp::arg(&mut out, settings.db().to_string().as_bytes());
            expected += 1;
        }
        if expected > 0 {
            link.write.write_all(&out).await?;
            for _ in 0..expected {
                link.expect_ok(timeout).await?;
            }
        }
        Ok(link)
    }

    /// Reads one reply, which must be a status (`+OK`, ...), within `timeout`.
    pub(super) async fn expect_ok(&mut self, timeout: Duration) -> io::Result<()> {
        tokio::time::timeout(timeout, async {
            loop {
                let status = self.with_next(|r| match r {
                    Reply::Simple(_) => Ok(()),
                    Reply::Error(e) => {
                        Err(io::Error::other(String::from_utf8_lossy(e).into_owned()))
                    }
                    _ => Err(io::Error::other("unexpected reply from Redis")),
                })?;
                if let Some(status) = status {
                    return status;
                }
                self.fill().await?;
            }
        })
        .await
        .map_err(|_| timed_out("setup"))?
    }

    /// Subscribes this connection to `channel` (it then only receives pushes).
    pub(super) async fn subscribe(&mut self, channel: &str, timeout: Duration) -> io::Result<()> {
        let mut out = Vec::new();
        resp::command(&mut out, 2);
        resp::arg(&mut out, b"SUBSCRIBE");
        resp::arg(&mut out, channel.as_bytes());
        self.write.write_all(&out).await?;
        tokio::time::timeout(timeout, async {
            loop {
                let confirmed = self.with_next(|r| match r {
                    Reply::Array(Some(items)) => match items.first() {
                        Some(Reply::Bulk(Some(b"subscribe"))) => Ok(()),
                        _ => Err(io::Error::other("unexpected reply to SUBSCRIBE")),
                    },
                    Reply::Error(e) => {
                        Err(io::Error::other(String::from_utf8_lossy(e).into_owned()))
                    }
                    _ => Err(io::Error::other("unexpected reply to SUBSCRIBE")),
                })?;
                if let Some(confirmed) = confirmed {
                    return confirmed;
                }
                self.fill().await?;
            }
        })
        .await
        .map_err(|_| timed_out("SUBSCRIBE"))?
    }

    /// Reads more bytes from the socket (cancel-safe); an error at EOF.
    pub(super) async fn fill(&mut self) -> io::Result<()> {
        if self.buf.is_empty() && self.buf.capacity() > 16 * READ_CHUNK {
            // A huge message went through: do not keep its buffer.
            self.buf = BytesMut::with_capacity(READ_CHUNK);
        }
        if self.buf.len() > resp::MAX_BULK + READ_CHUNK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply over the size limit",
            ));
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            // Reuses the allocation when no chunk handed out still holds it.
            self.buf.reserve(READ_CHUNK);
        }
        match self.read.read_buf(&mut self.buf).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by Redis",
            )),
            _ => Ok(()),
        }
    }

    /// Takes every complete reply read so far on a subscribed connection: their bytes are cut
    /// off the buffer as one shared chunk, and the payload of each pub/sub message among them
    /// comes back in `payloads` as a range of that chunk, to be sliced from it without a copy
    /// (other replies are skipped). `Ok(None)`: no complete reply yet.
    pub(super) fn take_messages(
        &mut self,
        payloads: &mut Vec<Range<usize>>,
    ) -> io::Result<Option<Bytes>> {
        let used = resp::message_payloads(&self.buf, payloads).map_err(protocol)?;
        Ok((used > 0).then(|| self.buf.split_to(used).freeze()))
    }

    /// Calls `f` with the next complete reply already read, if there is one.
    pub(super) fn with_next<T>(&mut self, f: impl FnOnce(Reply<'_>) -> T) -> io::Result<Option<T>> {
        match resp::parse(&self.buf).map_err(protocol)? {
            None => Ok(None),
            Some((r, n)) => {
                let out = f(r);
                self.buf.advance(n);
                Ok(Some(out))
            }
        }
    }
}
