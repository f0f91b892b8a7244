//! The client's one error type: the server's stable error codes, one variant each, plus what can
//! go wrong between the client and the server.

use crate::error_code::ErrorCode;

/// What a call can fail with. Server errors keep the server's message; `code()` gives the wire
/// code (`"CONFLICT"`, `"NOT_PRIMARY"`, ...) for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The transaction read something a later commit wrote; nothing was applied. `transact`
    /// retries it.
    #[error("CONFLICT: {0}")]
    Conflict(String),
    /// The read version has left the server's MVCC window; nothing was applied. `transact`
    /// retries with a new read version.
    #[error("TOO_OLD: {0}")]
    TooOld(String),
    /// No primary could take the request; nothing was applied. Retried by the client.
    #[error("NOT_PRIMARY: {0}")]
    NotPrimary(String),
    /// The server refused the request before acting on it (overloaded, stopping); nothing was
    /// applied. Retried by the client.
    #[error("UNAVAILABLE: {0}")]
    Unavailable(String),
    /// The server gave up waiting. For a read: nothing happened (retried). For a write: the
    /// outcome is unknown, it may still apply.
    #[error("TIMEOUT: {0}")]
    Timeout(String),
    /// The request or one of its keys or values is over a server limit.
    #[error("TOO_LARGE: {0}")]
    TooLarge(String),
    /// The request is malformed (an empty key, a short versionstamp buffer, a bad range, ...).
    #[error("INVALID_ARGUMENT: {0}")]
    InvalidArgument(String),
    /// A diagnostic method that is disabled, or called without the admin token.
    #[error("UNAUTHORIZED: {0}")]
    Unauthorized(String),
    /// The server failed on its side.
    #[error("INTERNAL: {0}")]
    Internal(String),
    /// A server error code this client does not know.
    #[error("{code}: {message}")]
    Other {
        /// The code as the server sent it (`ERROR` when the text had none).
        code: String,
        /// The rest of the server's text.
        message: String,
    },
    /// A write was sent but no answer came back (the connection broke, or the client's request
    /// timeout passed): it may or may not have been applied. Never retried by the client.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// No endpoint could be reached within the call's retry budget.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The server sent what this client cannot read, or a Thrift application exception.
    #[error("protocol: {0}")]
    Protocol(String),
    /// `transact` gave up (its retry limit or deadline); `last` is the error of the last try.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Runs of the closure.
        attempts: u32,
        /// What the last run failed with.
        last: Box<Error>,
    },
}

/// The client's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error from a response's error text ("CODE: message") and, where the response has
    /// one, its `error_code` field.
    pub(crate) fn from_wire(text: &str, code: Option<&str>) -> Error {
        let (parsed, message) = split_code(text);
        let code = code.filter(|c| !c.is_empty()).or(parsed).unwrap_or("");
        let m = message.to_string();
        match ErrorCode::parse(code) {
            Some(ErrorCode::Conflict) => Error::Conflict(m),
            Some(ErrorCode::TooOld) => Error::TooOld(m),
            Some(ErrorCode::NotPrimary) => Error::NotPrimary(m),
            Some(ErrorCode::Unavailable) => Error::Unavailable(m),
            Some(ErrorCode::Timeout) => Error::Timeout(m),
            Some(ErrorCode::TooLarge) => Error::TooLarge(m),
            Some(ErrorCode::InvalidArgument) => Error::InvalidArgument(m),
            Some(ErrorCode::Unauthorized) => Error::Unauthorized(m),
            Some(ErrorCode::Internal) => Error::Internal(m),
            None if code.is_empty() => Error::Other {
                code: "ERROR".to_string(),
                message: text.to_string(),
            },
            None => Error::Other {
                code: code.to_string(),
                message: m,
            },
        }
    }

    /// The wire code of a server error.
    pub fn wire_code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::TooOld(_) => ErrorCode::TooOld,
            Error::NotPrimary(_) => ErrorCode::NotPrimary,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::TooLarge(_) => ErrorCode::TooLarge,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Internal(_) => ErrorCode::Internal,
            Error::GaveUp { last, .. } => return last.wire_code(),
            _ => return None,
        })
    }

    /// The wire code of a server error, or a name for a client-side one.
    pub fn code(&self) -> &str {
        if let Some(c) = self.wire_code() {
            return c.as_str();
        }
        match self {
            Error::Other { code, .. } => code,
            Error::OutcomeUnknown(_) => "OUTCOME_UNKNOWN",
            Error::Unreachable(_) => "UNREACHABLE",
            Error::Protocol(_) => "PROTOCOL",
            Error::GaveUp { last, .. } => last.code(),
            // Server codes were answered by `wire_code` above.
            _ => "ERROR",
        }
    }

    /// True when the server certainly did not apply the request, so any call may be sent again.
    pub fn not_applied(&self) -> bool {
        matches!(
            self,
            Error::NotPrimary(_) | Error::Unavailable(_) | Error::Unreachable(_)
        )
    }

    /// True when a write may or may not have been applied.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::OutcomeUnknown(_) | Error::Timeout(_) => true,
            Error::GaveUp { last, .. } => last.outcome_unknown(),
            _ => false,
        }
    }

    /// True for errors `transact` answers by running the closure again on a new read version.
    pub fn retry_transaction(&self) -> bool {
        matches!(self, Error::Conflict(_) | Error::TooOld(_)) || self.not_applied()
    }
}

/// "CODE: message" → (Some("CODE"), "message"); a text without a code prefix stays whole.
fn split_code(text: &str) -> (Option<&str>, &str) {
    if let Some((code, rest)) = text.split_once(": ") {
        if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return (Some(code), rest);
        }
    }
    // "TOO_OLD" may also appear inside a snapshot read's message.
    if text.contains(ErrorCode::TooOld.as_str()) {
        return (Some(ErrorCode::TooOld.as_str()), text);
    }
    (None, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_texts_map_to_their_variants() {
        assert_eq!(
            Error::from_wire("CONFLICT: key k changed", None),
            Error::Conflict("key k changed".into())
        );
        assert_eq!(
            Error::from_wire("something", Some("NOT_PRIMARY")),
            Error::NotPrimary("something".into())
        );
        assert_eq!(
            Error::from_wire("TOO_OLD: version 3 left the window", None).code(),
            "TOO_OLD"
        );
        let odd = Error::from_wire("NEW_CODE: later", None);
        assert_eq!(odd.code(), "NEW_CODE");
        assert_eq!(Error::from_wire("no code here", None).code(), "ERROR");
    }

    #[test]
    fn retry_classes() {
        assert!(Error::NotPrimary(String::new()).not_applied());
        assert!(!Error::Timeout(String::new()).not_applied());
        assert!(Error::Timeout(String::new()).outcome_unknown());
        assert!(Error::Conflict(String::new()).retry_transaction());
        assert!(!Error::OutcomeUnknown(String::new()).retry_transaction());
        assert!(!Error::InvalidArgument(String::new()).retry_transaction());
    }
}
