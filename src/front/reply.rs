//! The one error path from a handler to the wire: every handler returns
//! `Result<R::Ok, ServiceError>`, and `to_reply` turns it into the response struct `R`. The
//! client-visible error text "CODE: message" is written here and nowhere else; each response
//! type only says where the text (and, where it has one, the code) go.

use bytes::Bytes;

use super::generated::*;
use crate::service::ServiceError;
use crate::types::Version;

/// A response struct built from a handler's success value or from a failure.
pub trait Reply: Sized {
    /// What the handler returns on success.
    type Ok;
    fn ok(v: Self::Ok) -> Self;
    /// `text` is "CODE: message"; `code` is CODE.
    fn failed(text: String, code: &'static str) -> Self;
}

/// The response for a handler's result.
pub fn to_reply<R: Reply>(r: Result<R::Ok, ServiceError>) -> R {
    match r {
        Ok(v) => R::ok(v),
        Err(e) => failure(&e),
    }
}

/// The response reporting `e`: the only place an error becomes wire text.
pub fn failure<R: Reply>(e: &ServiceError) -> R {
    R::failed(e.to_string(), e.code.as_str())
}

/// A page of a range read.
pub struct RangePage {
    pub key_values: Vec<KeyValue>,
    pub has_more: bool,
}

/// Responses whose success carries nothing but `success = true`.
macro_rules! unit_reply {
    ($($t:ident),* $(,)?) => {$(
        impl Reply for $t {
            type Ok = ();
            fn ok(_: ()) -> Self {
                $t { success: true, error: None }
            }
            fn failed(text: String, _code: &'static str) -> Self {
                $t { success: false, error: Some(text) }
            }
        }
    )*};
}

unit_reply!(
    SetReadVersionResponse,
    AddReadConflictResponse,
    AddReadConflictRangeResponse,
    FaultInjectionResponse,
    AbortTransactionResponse,
);

/// Blind writes: they also carry the code in `error_code`.
macro_rules! write_reply {
    ($($t:ident),* $(,)?) => {$(
        impl Reply for $t {
            type Ok = ();
            fn ok(_: ()) -> Self {
                $t { success: true, error: None, error_code: None }
            }
            fn failed(text: String, code: &'static str) -> Self {
                $t { success: false, error: Some(text), error_code: Some(code.to_string()) }
            }
        }
    )*};
}

write_reply!(SetKeyResponse, DeleteKeyResponse);

/// Point reads: the value, or `found = false`.
macro_rules! value_reply {
    ($($t:ident),* $(,)?) => {$(
        impl Reply for $t {
            type Ok = Option<Bytes>;
            fn ok(v: Option<Bytes>) -> Self {
                $t {
                    found: v.is_some(),
                    value: v.map(|b| b.to_vec()).unwrap_or_default(),
                    error: None,
                }
            }
            fn failed(text: String, _code: &'static str) -> Self {
                $t { value: Vec::new(), found: false, error: Some(text) }
            }
        }
    )*};
}

value_reply!(GetResponse, SnapshotGetResponse, SnapshotReadResponse);

macro_rules! range_reply {
    ($($t:ident),* $(,)?) => {$(
        impl Reply for $t {
            type Ok = RangePage;
            fn ok(p: RangePage) -> Self {
                $t { key_values: p.key_values, success: true, error: None, has_more: p.has_more }
            }
            fn failed(text: String, _code: &'static str) -> Self {
                $t { key_values: Vec::new(), success: false, error: Some(text), has_more: false }
            }
        }
    )*};
}

range_reply!(GetRangeResponse, SnapshotGetRangeResponse);

/// Responses with one field beside `success` and `error`: `$conv` fills it on success, its
/// default on failure.
macro_rules! one_field_reply {
    ($($t:ident . $field:ident : $ok:ty => $conv:expr),* $(,)?) => {$(
        impl Reply for $t {
            type Ok = $ok;
            fn ok(v: $ok) -> Self {
                $t { $field: $conv(v), success: true, error: None }
            }
            fn failed(text: String, _code: &'static str) -> Self {
                $t { $field: Default::default(), success: false, error: Some(text) }
            }
        }
    )*};
}

fn wire_version(v: Version) -> i64 {
    v.0 as i64
}

one_field_reply!(
    SetVersionstampedKeyResponse.generated_key: Vec<u8> => std::convert::identity,
    SetVersionstampedValueResponse.generated_value: Vec<u8> => std::convert::identity,
    GetReadVersionResponse.read_version: Version => wire_version,
    GetCommittedVersionResponse.version: Version => wire_version,
    GetClusterHealthResponse.cluster_health: ClusterHealth => Some,
    GetDatabaseStatsResponse.database_stats: DatabaseStats => Some,
    GetNodeInfoResponse.node_info: NodeStatus => Some,
);

impl Reply for AtomicCommitResponse {
    type Ok = Version;
    fn ok(v: Version) -> Self {
        AtomicCommitResponse {
            success: true,
            error: None,
            error_code: None,
            committed_version: Some(wire_version(v)),
        }
    }
    fn failed(text: String, code: &'static str) -> Self {
        AtomicCommitResponse {
            success: false,
            error: Some(text),
            error_code: Some(code.to_string()),
            committed_version: None,
        }
    }
}

impl Reply for BeginTransactionResponse {
    type Ok = (String, Version);
    fn ok((transaction_id, v): (String, Version)) -> Self {
        BeginTransactionResponse {
            transaction_id,
            read_version: wire_version(v),
            success: true,
            error: None,
        }
    }
    fn failed(text: String, _code: &'static str) -> Self {
        BeginTransactionResponse {
            transaction_id: String::new(),
            read_version: 0,
            success: false,
            error: Some(text),
        }
    }
}

/// ping cannot fail; a failure (none exists) would echo nothing.
impl Reply for PingResponse {
    type Ok = PingResponse;
    fn ok(p: PingResponse) -> Self {
        p
    }
    fn failed(_text: String, _code: &'static str) -> Self {
        PingResponse {
            message: Vec::new(),
            timestamp: 0,
            server_timestamp: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ErrorCode;

    #[test]
    fn failures_carry_code_and_text_where_the_response_has_them() {
        let e = ServiceError::new(ErrorCode::Conflict, "k changed");
        let c: AtomicCommitResponse = failure(&e);
        assert_eq!(c.error.as_deref(), Some("CONFLICT: k changed"));
        assert_eq!(c.error_code.as_deref(), Some("CONFLICT"));
        assert!(!c.success);
        let g: GetResponse = failure(&e);
        assert_eq!(g.error.as_deref(), Some("CONFLICT: k changed"));
        let ok: SetKeyResponse = to_reply(Ok(()));
        assert!(ok.success && ok.error.is_none() && ok.error_code.is_none());
    }
}
