//! Sans-IO WebSocket framing (RFC 6455 §5) for the rpc transport after the opening handshake:
//! a [`Decoder`] that finds frames in a read buffer (unmasking a client's frames in place),
//! reassembles fragmented messages and refuses every malformed input with the close code the
//! RFC names ([`WsError::code`]), and [`encode`] for the frames we write (masked when we are
//! the client). No extensions are negotiated, so any reserved bit is an error.
//!
//! The decoder never copies a message that arrived in one frame: it reports where the payload
//! lies in the caller's buffer ([`Frame`]); the caller cuts it out. A single-frame text
//! message's UTF-8 is checked by the caller when it builds its text value (one check, 1007 on
//! failure: [`INVALID_PAYLOAD`]); reassembled texts and close reasons are checked here.
//!
//! ```
//! use bistream_rpc_proto::ws::{encode, Decoder, Kind, Opcode, Role, Step};
//!
//! // A server's unmasked text frame, read by a client.
//! let mut wire = Vec::new();
//! encode(&mut wire, Opcode::Text, b"{\"a\":1}", None);
//! let mut d = Decoder::new(Role::Client, 1 << 20);
//! match d.decode(&mut wire).unwrap() {
//!     Step::Frame(f) => {
//!         assert_eq!(f.kind, Kind::Text);
//!         assert_eq!(&wire[f.start..f.end], b"{\"a\":1}");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

/// Our side of the connection: a client reads unmasked frames and masks what it writes; a
/// server the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We opened the connection.
    Client,
    /// We accepted it.
    Server,
}

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A further fragment of a message.
    Continuation = 0,
    /// A text message (UTF-8).
    Text = 1,
    /// A binary message.
    Binary = 2,
    /// Close.
    Close = 8,
    /// Ping.
    Ping = 9,
    /// Pong.
    Pong = 10,
}

/// 1002: the peer broke the framing rules.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1007: a text message (or close reason) is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1009: a message over the size limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;

/// Why the input cannot be decoded: the connection must be closed with [`WsError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("websocket {code}: {reason}")]
pub struct WsError {
    /// The close code to send (1002, 1007 or 1009).
    pub code: u16,
    /// What was wrong.
    pub reason: &'static str,
}

fn err<T>(code: u16, reason: &'static str) -> Result<T, WsError> {
    Err(WsError { code, reason })
}

/// What a complete frame or message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text message (single frame: UTF-8 still to be checked by the caller).
    Text,
    /// A binary message.
    Binary,
    /// A ping: answer a pong with the same payload.
    Ping,
    /// A pong.
    Pong,
}

/// A message or control frame whose payload lies in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// The payload is `buf[start..end]` (already unmasked).
    pub start: usize,
    /// End of the payload; the caller consumes `buf[..end]`.
    pub end: usize,
}

/// One decoding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The buffer does not hold a whole frame yet: read more.
    NeedMore,
    /// A whole message or control frame in the buffer.
    Frame(Frame),
    /// A fragment was taken into the decoder's reassembly buffer: consume `buf[..end]` and
    /// go on.
    Fragment {
        /// Bytes to consume.
        end: usize,
    },
    /// The last fragment completed a message, returned whole (texts already checked).
    Assembled {
        /// Text or binary.
        text: bool,
        /// The message.
        data: Vec<u8>,
        /// Bytes to consume.
        end: usize,
    },
    /// The peer's close frame (code and reason checked).
    Close {
        /// Its status code, if it sent one.
        code: Option<u16>,
        /// Its reason.
        reason: String,
        /// Bytes to consume.
        end: usize,
    },
}

/// Finds frames in a read buffer; holds the state of a fragmented message.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    /// A fragmented message in progress: (text, bytes so far).
    partial: Option<(bool, Vec<u8>)>,
}

impl Decoder {
    /// A decoder for `role` refusing messages over `max_message` bytes (1009).
    pub fn new(role: Role, max_message: usize) -> Self {
        Self {
            role,
            max_message,
            partial: None,
        }
    }

    /// Decodes the frame at the start of `buf` (unmasking it in place). After an error the
    /// connection must close: the decoder's state is undefined.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Step, WsError> {
        let [b0, b1, ..] = *buf else {
            return Ok(Step::NeedMore);
        };
        if b0 & 0x70 != 0 {
            return err(
                PROTOCOL_ERROR,
                "reserved bits set (no extension was negotiated)",
            );
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        match opcode {
            0..=2 | 8..=10 => {}
            _ => return err(PROTOCOL_ERROR, "unknown opcode"),
        }
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return if masked {
                err(PROTOCOL_ERROR, "a server's frame must not be masked")
            } else {
                err(PROTOCOL_ERROR, "a client's frame must be masked")
            };
        }
        let control = opcode & 0x08 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(Step::NeedMore),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    let n = u64::from_be_bytes(a);
                    if n >> 63 != 0 {
                        return err(PROTOCOL_ERROR, "64-bit length with the top bit set");
                    }
                    (n, 10)
                }
                None => return Ok(Step::NeedMore),
            },
            n => (u64::from(n), 2),
        };
        if control {
            if !fin {
                return err(PROTOCOL_ERROR, "fragmented control frame");
            }
            if len > 125 {
                return err(PROTOCOL_ERROR, "control frame over 125 bytes");
            }
        } else {
            let so_far = self.partial.as_ref().map_or(0, |(_, d)| d.len());
            if len.saturating_add(so_far as u64) > self.max_message as u64 {
                return err(MESSAGE_TOO_BIG, "message over the size limit");
            }
        }
        // Within max_message (a usize) or 125: fits.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut key = [0u8; 4];
        if masked {
            match buf.get(at..at + 4) {
                Some(k) => key.copy_from_slice(k),
                None => return Ok(Step::NeedMore),
            }
            at += 4;
        }
        let end = match at.checked_add(len) {
            Some(end) if end <= buf.len() => end,
            _ => return Ok(Step::NeedMore),
        };
        if masked {
            apply_mask(&mut buf[at..end], key);
        }
        let payload = &buf[at..end];
        match opcode {
            8 => close_step(payload, end),
            9 => Ok(Step::Frame(Frame {
                kind: Kind::Ping,
                start: at,
                end,
            })),
            10 => Ok(Step::Frame(Frame {
                kind: Kind::Pong,
                start: at,
                end,
            })),
            0 => {
                let Some((text, mut data)) = self.partial.take() else {
                    return err(PROTOCOL_ERROR, "continuation frame without a message");
                };
                data.extend_from_slice(payload);
                if !fin {
                    self.partial = Some((text, data));
                    return Ok(Step::Fragment { end });
                }
                if text && std::str::from_utf8(&data).is_err() {
                    return err(INVALID_PAYLOAD, "text message is not UTF-8");
                }
                Ok(Step::Assembled { text, data, end })
            }
            _ => {
                if self.partial.is_some() {
                    return err(PROTOCOL_ERROR, "new message inside a fragmented one");
                }
                let text = opcode == 1;
                if !fin {
                    self.partial = Some((text, payload.to_vec()));
                    return Ok(Step::Fragment { end });
                }
                let kind = if text { Kind::Text } else { Kind::Binary };
                Ok(Step::Frame(Frame {
                    kind,
                    start: at,
                    end,
                }))
            }
        }
    }
}

fn close_step(payload: &[u8], end: usize) -> Result<Step, WsError> {
    match payload {
        [] => Ok(Step::Close {
            code: None,
            reason: String::new(),
            end,
        }),
        [_] => err(PROTOCOL_ERROR, "close frame with a 1-byte payload"),
        [a, b, rest @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code_valid(code) {
                return err(PROTOCOL_ERROR, "invalid close code");
            }
            match std::str::from_utf8(rest) {
                Ok(r) => Ok(Step::Close {
                    code: Some(code),
                    reason: r.to_owned(),
                    end,
                }),
                Err(_) => err(INVALID_PAYLOAD, "close reason is not UTF-8"),
            }
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4).
pub fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `data` with the 4-byte `key` (masking and unmasking are the same).
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let k = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ k;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// Appends one whole (FIN) frame of `opcode` carrying `payload` to `dst`, masked with `mask`
/// when we are the client (a fresh random key per frame).
pub fn encode(dst: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    let m = if mask.is_some() { 0x80 } else { 0 };
    dst.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        dst.push(m | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        dst.push(m | 126);
        dst.extend_from_slice(&l.to_be_bytes());
    } else {
        dst.push(m | 127);
        dst.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            dst.extend_from_slice(&key);
            let start = dst.len();
            dst.extend_from_slice(payload);
            apply_mask(&mut dst[start..], key);
        }
        None => dst.extend_from_slice(payload),
    }
}

/// A close frame's payload: `code` and `reason`, the reason cut to fit 125 bytes at a
/// character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = Vec::with_capacity(2 + cut);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}

#[cfg(test)]
mod tests;
