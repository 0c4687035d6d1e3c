//! RSocket's standard ERROR codes (spec "Error Codes"), one home for their numbers and names.

/// An ERROR frame's code. Codes outside the table are kept as [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0x001: the SETUP frame is invalid (stream 0).
    InvalidSetup,
    /// 0x002: a SETUP parameter is not supported, e.g. LEASE (stream 0).
    UnsupportedSetup,
    /// 0x003: the server rejected the SETUP (stream 0).
    RejectedSetup,
    /// 0x004: the server rejected the RESUME (stream 0).
    RejectedResume,
    /// 0x101: the connection is being terminated (stream 0).
    ConnectionError,
    /// 0x102: the connection is being closed cleanly (stream 0).
    ConnectionClose,
    /// 0x201: application-level failure (stream).
    ApplicationError,
    /// 0x202: the responder rejected the request before processing it (stream).
    Rejected,
    /// 0x203: the responder cancelled the request (stream).
    Canceled,
    /// 0x204: the request is invalid (stream).
    Invalid,
    /// Any other value (reserved or extension codes).
    Other(u32),
}

impl ErrorCode {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            Self::InvalidSetup => 0x001,
            Self::UnsupportedSetup => 0x002,
            Self::RejectedSetup => 0x003,
            Self::RejectedResume => 0x004,
            Self::ConnectionError => 0x101,
            Self::ConnectionClose => 0x102,
            Self::ApplicationError => 0x201,
            Self::Rejected => 0x202,
            Self::Canceled => 0x203,
            Self::Invalid => 0x204,
            Self::Other(c) => c,
        }
    }

    /// From the wire value.
    pub fn from_code(c: u32) -> Self {
        match c {
            0x001 => Self::InvalidSetup,
            0x002 => Self::UnsupportedSetup,
            0x003 => Self::RejectedSetup,
            0x004 => Self::RejectedResume,
            0x101 => Self::ConnectionError,
            0x102 => Self::ConnectionClose,
            0x201 => Self::ApplicationError,
            0x202 => Self::Rejected,
            0x203 => Self::Canceled,
            0x204 => Self::Invalid,
            c => Self::Other(c),
        }
    }

    /// The spec's name (`APPLICATION_ERROR`, ...), or `0x…` for others.
    pub fn name(self) -> String {
        match self {
            Self::InvalidSetup => "INVALID_SETUP".into(),
            Self::UnsupportedSetup => "UNSUPPORTED_SETUP".into(),
            Self::RejectedSetup => "REJECTED_SETUP".into(),
            Self::RejectedResume => "REJECTED_RESUME".into(),
            Self::ConnectionError => "CONNECTION_ERROR".into(),
            Self::ConnectionClose => "CONNECTION_CLOSE".into(),
            Self::ApplicationError => "APPLICATION_ERROR".into(),
            Self::Rejected => "REJECTED".into(),
            Self::Canceled => "CANCELED".into(),
            Self::Invalid => "INVALID".into(),
            Self::Other(c) => format!("0x{c:08X}"),
        }
    }

    /// True for codes that belong on stream 0 (setup and connection errors).
    pub fn is_connection_level(self) -> bool {
        self.code() < 0x200
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_round_trip() {
        for c in [
            1,
            2,
            3,
            4,
            0x101,
            0x102,
            0x201,
            0x202,
            0x203,
            0x204,
            0x301,
            0xFFFF_FFFF,
        ] {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
        assert_eq!(ErrorCode::from_code(0x201), ErrorCode::ApplicationError);
        assert_eq!(ErrorCode::UnsupportedSetup.name(), "UNSUPPORTED_SETUP");
        assert!(ErrorCode::ConnectionError.is_connection_level());
        assert!(!ErrorCode::Invalid.is_connection_level());
    }
}
