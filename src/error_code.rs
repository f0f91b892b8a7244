//! The stable error codes of the wire contract ("CODE: message" in a response's `error`, and
//! its `error_code` where the response has one). One list for the server (`service` re-exports
//! it), its metrics, and the client library.

/// Stable error codes clients switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Conflict,
    Timeout,
    NotPrimary,
    TooLarge,
    InvalidArgument,
    Unavailable,
    Internal,
    TooOld,
    /// A diagnostic or test method that is disabled, or called without the admin token.
    Unauthorized,
}

impl ErrorCode {
    /// Every code, in a fixed order (the metrics' result labels follow it).
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::Conflict,
        ErrorCode::Timeout,
        ErrorCode::NotPrimary,
        ErrorCode::TooLarge,
        ErrorCode::InvalidArgument,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::TooOld,
        ErrorCode::Unauthorized,
    ];

    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The code a wire text names, if it is one of these.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::NotPrimary => "NOT_PRIMARY",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::TooOld => "TOO_OLD",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
        }
    }
}
