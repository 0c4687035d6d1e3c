//! WebSocket close codes and reasons used by the relay, with the exact texts of ProxyStore 1.1.0.

/// Close codes the relay server sends. 4000–4004 are ProxyStore's own; the others are standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal = 1000,
    /// 1001: the server is going away (shutdown).
    GoingAway = 1001,
    /// 1002: the peer broke the WebSocket protocol (bad frame, bad masking, ...).
    ProtocolError = 1002,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload = 1007,
    /// 1008: a policy was broken (e.g. the per-client send queue overflowed).
    Policy = 1008,
    /// 1009: a frame or message exceeded the transport size limit.
    TooBig = 1009,
    /// 1011: internal error, or keepalive ping timeout.
    InternalError = 1011,
    /// 1013: the server is at its connection cap; try again later.
    TryAgainLater = 1013,
    /// 4000: the message could not be decoded (bad JSON, unknown type, wrong fields, binary frame).
    UnknownMessage = 4000,
    /// 4001: authentication missing or malformed.
    Unauthorized = 4001,
    /// 4002: authenticated but not allowed (bad token, UUID owned by someone else, forward before registering).
    Forbidden = 4002,
    /// 4003: message longer than `max_message_bytes`.
    MessageTooLarge = 4003,
    /// 4004: sent to the old socket when the same user registers the same UUID on a new socket.
    DuplicateRegistration = 4004,
}

impl CloseCode {
    /// The numeric code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Whether a client must not reconnect after this code (see [`is_fatal_close_code`]).
    pub fn is_fatal(self) -> bool {
        is_fatal_close_code(self.code())
    }

    /// The code for a number, if it is one the relay uses.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        use CloseCode::*;
        Some(match code {
            1000 => Normal,
            1001 => GoingAway,
            1002 => ProtocolError,
            1007 => InvalidPayload,
            1008 => Policy,
            1009 => TooBig,
            1011 => InternalError,
            1013 => TryAgainLater,
            4000 => UnknownMessage,
            4001 => Unauthorized,
            4002 => Forbidden,
            4003 => MessageTooLarge,
            4004 => DuplicateRegistration,
            _ => return None,
        })
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// Close codes after which a client must not reconnect (ProxyStore's `RelayClient` treats
/// these as fatal): 4001, 4002, 4004.
pub fn is_fatal_close_code(code: u16) -> bool {
    use CloseCode::*;
    [Unauthorized, Forbidden, DuplicateRegistration]
        .iter()
        .any(|c| c.code() == code)
}

/// Close reason for 4000.
pub const UNKNOWN_MESSAGE_REASON: &str = "Unknown message type.";
/// Close reason for 4003.
pub const MESSAGE_TOO_LARGE_REASON: &str = "Message length exceeds limit.";
/// Close reason for 4004 (sent to the old socket).
pub const DUPLICATE_REGISTRATION_REASON: &str = "Relay received a registration with the same ID. \
This might mean that the endpoint is running in multiple locations.";
/// Close reason (with 1011) of a keepalive timeout, as Python's `websockets` words it.
pub const KEEPALIVE_TIMEOUT_REASON: &str = "keepalive ping timeout";
/// Close reason for 4002 when a client forwards before registering.
pub const FORWARD_BEFORE_REGISTRATION: &str =
    "ForbiddenError: Client has not registered and authenticated with the relay server.";
/// Close reason (1013) when the server is at its connection cap.
pub const AT_CAPACITY_REASON: &str = "Relay server is at its connection limit; try again later.";
/// Close reason (1008) for a client whose send queue overflowed.
pub const SEND_QUEUE_FULL_REASON: &str = "Send queue full: the client is not reading its messages.";
/// Close reason (1008) for a connection that did not register within the deadline.
pub const REGISTRATION_TIMEOUT_REASON: &str = "Client did not register in time.";
/// Close reason (1013) for a connection whose unfinished large message would pass the
/// relay's process-wide budget for such messages.
pub const LARGE_MESSAGE_BUDGET_REASON: &str =
    "Relay server holds too many unfinished large messages; try again later.";
/// Close reason (1007) for a text frame that is not valid UTF-8.
pub const INVALID_UTF8_REASON: &str = "invalid UTF-8 in a text frame";

/// Close reason (4002) when a UUID is already registered by another user (ProxyStore's text).
pub fn uuid_owned_by_other_user_reason(uuid: &uuid::Uuid) -> String {
    format!("ForbiddenError: The client UUID {uuid} is already registered to another user.")
}

/// Close reason (1009) for a frame or message over the transport limit.
pub fn frame_too_big_reason(max_bytes: usize) -> String {
    format!("frame exceeds limit of {max_bytes} bytes")
}

/// Longest close reason RFC 6455 allows (a control frame carries at most 125 bytes, two of
/// them the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON_BYTES`] on a character boundary.
///
/// ```
/// let long = "é".repeat(100);
/// let r = bistream_relay_proto::close_reason_fit(&long);
/// assert!(r.len() <= 123 && r.chars().all(|c| c == 'é'));
/// ```
pub fn close_reason_fit(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in [
            1000u16, 1001, 1002, 1007, 1008, 1009, 1011, 1013, 4000, 4001, 4002, 4003, 4004,
        ] {
            assert_eq!(CloseCode::from_code(c).unwrap().code(), c);
        }
        assert_eq!(CloseCode::from_code(4005), None);
    }

    #[test]
    fn fatal_codes_are_exactly_proxystores() {
        let fatal: Vec<u16> = (1000..5000).filter(|c| is_fatal_close_code(*c)).collect();
        assert_eq!(fatal, vec![4001, 4002, 4004]);
    }
}
