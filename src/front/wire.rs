//! Decoding a Thrift call into a typed `Call` and encoding replies, with the generated structs
//! over in-memory protocols (the `thrift` crate's blocking server is not used).
//!
//! Every method takes one argument, field 1 `request`; the reply is a struct whose field 0 holds
//! the response. Unknown methods and undecodable arguments become a Thrift application exception
//! in the reply (the connection stays usable, since the message's bounds were already known).

use thrift::protocol::{
    TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType,
    TOutputProtocol, TSerializable, TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use super::generated::*;

macro_rules! calls {
    ($($method:literal => $variant:ident($req:ty) -> $resp:ty,)*) => {
        /// One decoded request.
        #[derive(Debug)]
        pub enum Call {
            $($variant($req),)*
        }

        /// One response, ready to encode.
        #[derive(Debug)]
        pub enum Response {
            $($variant($resp),)*
        }

        /// The methods this server serves, in IDL order.
        pub const METHODS: &[&str] = &[$($method,)*];

        #[cfg(feature = "server")]
        impl Call {
            /// The response to this call reporting `e`, without running it.
            pub fn refused(&self, e: &crate::service::ServiceError) -> Response {
                match self {
                    $(Call::$variant(_) => Response::$variant(super::reply::failure(e)),)*
                }
            }
        }

        $(impl Rpc for $req {
            const METHOD: &'static str = $method;
            type Response = $resp;
        })*

        fn decode_args(name: &str, p: &mut dyn TInputProtocol) -> Result<Option<Call>, thrift::Error> {
            Ok(Some(match name {
                $($method => Call::$variant(read_args::<$req>(p)?),)*
                _ => return Ok(None),
            }))
        }

        impl Call {
            pub fn method(&self) -> &'static str {
                match self {
                    $(Call::$variant(_) => $method,)*
                }
            }

            /// Whether the reply carries a range of pairs (up to thrift.max_range_reply_bytes),
            /// not a reply of about the request's own size.
            pub fn returns_range(&self) -> bool {
                matches!(self, Call::GetRange(_) | Call::SnapshotGetRange(_))
            }
        }

        impl Response {
            fn write(&self, p: &mut dyn TOutputProtocol) -> thrift::Result<()> {
                match self {
                    $(Response::$variant(r) => r.write_to_out_protocol(p),)*
                }
            }
        }
    };
}

calls! {
    "getReadVersion" => GetReadVersion(GetReadVersionRequest) -> GetReadVersionResponse,
    "snapshotRead" => SnapshotRead(SnapshotReadRequest) -> SnapshotReadResponse,
    "atomicCommit" => AtomicCommit(AtomicCommitRequest) -> AtomicCommitResponse,
    "get" => Get(GetRequest) -> GetResponse,
    "setKey" => SetKey(SetKeyRequest) -> SetKeyResponse,
    "deleteKey" => DeleteKey(DeleteKeyRequest) -> DeleteKeyResponse,
    "getRange" => GetRange(GetRangeRequest) -> GetRangeResponse,
    "snapshotGet" => SnapshotGet(SnapshotGetRequest) -> SnapshotGetResponse,
    "snapshotGetRange" => SnapshotGetRange(SnapshotGetRangeRequest) -> SnapshotGetRangeResponse,
    "addReadConflict" => AddReadConflict(AddReadConflictRequest) -> AddReadConflictResponse,
    "addReadConflictRange" => AddReadConflictRange(AddReadConflictRangeRequest) -> AddReadConflictRangeResponse,
    "setReadVersion" => SetReadVersion(SetReadVersionRequest) -> SetReadVersionResponse,
    "getCommittedVersion" => GetCommittedVersion(GetCommittedVersionRequest) -> GetCommittedVersionResponse,
    "setVersionstampedKey" => SetVersionstampedKey(SetVersionstampedKeyRequest) -> SetVersionstampedKeyResponse,
    "setVersionstampedValue" => SetVersionstampedValue(SetVersionstampedValueRequest) -> SetVersionstampedValueResponse,
    "setFaultInjection" => SetFaultInjection(FaultInjectionRequest) -> FaultInjectionResponse,
    "ping" => Ping(PingRequest) -> PingResponse,
    "getClusterHealth" => GetClusterHealth(GetClusterHealthRequest) -> GetClusterHealthResponse,
    "getDatabaseStats" => GetDatabaseStats(GetDatabaseStatsRequest) -> GetDatabaseStatsResponse,
    "getNodeInfo" => GetNodeInfo(GetNodeInfoRequest) -> GetNodeInfoResponse,
    "beginTransaction" => BeginTransaction(BeginTransactionRequest) -> BeginTransactionResponse,
    "commitTransaction" => CommitTransaction(CommitTransactionRequest) -> AtomicCommitResponse,
    "abortTransaction" => AbortTransaction(AbortTransactionRequest) -> AbortTransactionResponse,
}

/// A request struct as a client sends it: its method's name and the response it gets back.
pub trait Rpc: TSerializable {
    const METHOD: &'static str;
    type Response: TSerializable + ErrorText;
}

/// Where a response keeps its error text ("CODE: message").
pub trait ErrorText {
    fn error_text(&self) -> Option<&str>;
}

macro_rules! error_field {
    ($($t:ty),* $(,)?) => {
        $(impl ErrorText for $t {
            fn error_text(&self) -> Option<&str> {
                self.error.as_deref()
            }
        })*
    };
}

error_field!(
    GetReadVersionResponse,
    SnapshotReadResponse,
    AtomicCommitResponse,
    GetResponse,
    SetKeyResponse,
    DeleteKeyResponse,
    GetRangeResponse,
    SnapshotGetResponse,
    SnapshotGetRangeResponse,
    AddReadConflictResponse,
    AddReadConflictRangeResponse,
    SetReadVersionResponse,
    GetCommittedVersionResponse,
    SetVersionstampedKeyResponse,
    SetVersionstampedValueResponse,
    FaultInjectionResponse,
    GetClusterHealthResponse,
    GetDatabaseStatsResponse,
    GetNodeInfoResponse,
    BeginTransactionResponse,
    AbortTransactionResponse,
);

impl ErrorText for PingResponse {
    fn error_text(&self) -> Option<&str> {
        None
    }
}

/// A message read off the wire: its header, and the call or why it cannot be served.
pub struct Incoming {
    pub name: String,
    pub sequence: i32,
    pub call: Result<Call, ApplicationError>,
}

/// Decodes one complete binary-protocol message (already bounds-checked by `codec`).
/// `Err` means even the header is unreadable: the connection must close.
pub fn decode(msg: &[u8]) -> Result<Incoming, thrift::Error> {
    // Never the crate's reader: it allocates whatever a length claims (see `bounded_input`).
    let mut p = super::bounded_input::BoundedInput::new(msg);
    let header = p.read_message_begin()?;
    let name = header.name.clone();
    let call = if !matches!(
        header.message_type,
        TMessageType::Call | TMessageType::OneWay
    ) {
        Err(ApplicationError::new(
            ApplicationErrorKind::InvalidMessageType,
            format!("expected a call, got {:?}", header.message_type),
        ))
    } else {
        match decode_args(&name, &mut p) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(ApplicationError::new(
                ApplicationErrorKind::UnknownMethod,
                format!("unknown method {name}"),
            )),
            Err(e) => Err(ApplicationError::new(
                ApplicationErrorKind::ProtocolError,
                format!("cannot decode {name} arguments: {e}"),
            )),
        }
    };
    Ok(Incoming {
        name,
        sequence: header.sequence_number,
        call,
    })
}

/// Reads the argument struct, whose field 1 is the request.
fn read_args<T: TSerializable>(p: &mut dyn TInputProtocol) -> thrift::Result<T> {
    p.read_struct_begin()?;
    let mut request = None;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        if f.id == Some(1) && f.field_type == TType::Struct {
            request = Some(T::read_from_in_protocol(p)?);
        } else {
            p.skip(f.field_type)?;
        }
        p.read_field_end()?;
    }
    p.read_struct_end()?;
    p.read_message_end()?;
    request.ok_or_else(|| {
        thrift::new_protocol_error(
            thrift::ProtocolErrorKind::InvalidData,
            "missing field 1 (request)",
        )
    })
}

/// Appends a framed or unframed reply message to `out`.
pub fn encode_reply(out: &mut Vec<u8>, name: &str, sequence: i32, resp: &Response, framed: bool) {
    encode_with(out, framed, |p| {
        p.write_message_begin(&TMessageIdentifier::new(
            name,
            TMessageType::Reply,
            sequence,
        ))?;
        p.write_struct_begin(&TStructIdentifier::new("result"))?;
        p.write_field_begin(&TFieldIdentifier::new("success", TType::Struct, 0))?;
        resp.write(p)?;
        p.write_field_end()?;
        p.write_field_stop()?;
        p.write_struct_end()?;
        p.write_message_end()
    });
}

/// Appends a framed or unframed call of `R`'s method to `out` (the client's half).
pub fn encode_call<R: Rpc>(out: &mut Vec<u8>, sequence: i32, req: &R, framed: bool) {
    encode_with(out, framed, |p| {
        p.write_message_begin(&TMessageIdentifier::new(
            R::METHOD,
            TMessageType::Call,
            sequence,
        ))?;
        p.write_struct_begin(&TStructIdentifier::new("args"))?;
        p.write_field_begin(&TFieldIdentifier::new("request", TType::Struct, 1))?;
        req.write_to_out_protocol(p)?;
        p.write_field_end()?;
        p.write_field_stop()?;
        p.write_struct_end()?;
        p.write_message_end()
    });
}

/// The sequence number of a complete reply message (the client matches replies by it).
pub fn reply_sequence(msg: &[u8]) -> thrift::Result<i32> {
    let mut p = super::bounded_input::BoundedInput::new(msg);
    Ok(p.read_message_begin()?.sequence_number)
}

/// Decodes a complete reply message to `T` (field 0 of the result struct), or the application
/// exception the server sent instead. Bounded like `decode`: a length field cannot make it
/// allocate more than the message holds.
pub fn decode_reply<T: TSerializable>(msg: &[u8]) -> thrift::Result<Result<T, ApplicationError>> {
    let mut p = super::bounded_input::BoundedInput::new(msg);
    let header = p.read_message_begin()?;
    match header.message_type {
        TMessageType::Reply => {}
        TMessageType::Exception => {
            return Ok(Err(thrift::Error::read_application_error_from_in_protocol(
                &mut p,
            )?));
        }
        other => {
            return Err(thrift::new_protocol_error(
                thrift::ProtocolErrorKind::InvalidData,
                format!("expected a reply, got {other:?}"),
            ))
        }
    }
    p.read_struct_begin()?;
    let mut reply = None;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        if f.id == Some(0) && f.field_type == TType::Struct {
            reply = Some(T::read_from_in_protocol(&mut p)?);
        } else {
            p.skip(f.field_type)?;
        }
        p.read_field_end()?;
    }
    p.read_struct_end()?;
    reply.map(Ok).ok_or_else(|| {
        thrift::new_protocol_error(
            thrift::ProtocolErrorKind::InvalidData,
            "reply without field 0 (success)",
        )
    })
}

/// Appends an application-exception reply to `out`.
pub fn encode_exception(
    out: &mut Vec<u8>,
    name: &str,
    sequence: i32,
    e: &ApplicationError,
    framed: bool,
) {
    encode_with(out, framed, |p| {
        p.write_message_begin(&TMessageIdentifier::new(
            name,
            TMessageType::Exception,
            sequence,
        ))?;
        thrift::Error::write_application_error_to_out_protocol(e, p)?;
        p.write_message_end()
    });
}

fn encode_with<F>(out: &mut Vec<u8>, framed: bool, f: F)
where
    F: FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>,
{
    let start = out.len();
    if framed {
        out.extend_from_slice(&[0; 4]);
    }
    let body = out.len();
    {
        let mut p = TBinaryOutputProtocol::new(&mut *out, true);
        // Writing to a Vec cannot fail; an encoding bug would show as a short reply, which the
        // truncate below keeps from being sent half-written.
        if f(&mut p).is_err() {
            out.truncate(start);
            return;
        }
    }
    if framed {
        let len = (out.len() - body) as u32;
        out[start..body].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_bytes(name: &str, req: &impl TSerializable) -> Vec<u8> {
        let mut out = Vec::new();
        let mut p = TBinaryOutputProtocol::new(&mut out, true);
        p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, 9))
            .unwrap();
        p.write_struct_begin(&TStructIdentifier::new("args"))
            .unwrap();
        p.write_field_begin(&TFieldIdentifier::new("request", TType::Struct, 1))
            .unwrap();
        req.write_to_out_protocol(&mut p).unwrap();
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
        p.write_message_end().unwrap();
        out
    }

    #[test]
    fn a_client_call_and_its_reply_round_trip() {
        let req = SetKeyRequest::new(b"k".to_vec(), b"v".to_vec(), "cf".to_string());
        for framed in [false, true] {
            let mut out = Vec::new();
            encode_call(&mut out, 41, &req, framed);
            let msg = if framed { &out[4..] } else { &out[..] };
            let inc = decode(msg).unwrap();
            assert_eq!((inc.name.as_str(), inc.sequence), ("setKey", 41));
            assert!(matches!(inc.call, Ok(Call::SetKey(r)) if r == req));
            let resp = Response::SetKey(SetKeyResponse::new(
                false,
                "conflict on x".to_string(),
                "CONFLICT".to_string(),
            ));
            let mut reply = Vec::new();
            encode_reply(&mut reply, "setKey", 41, &resp, false);
            assert_eq!(reply_sequence(&reply).unwrap(), 41);
            let back = decode_reply::<SetKeyResponse>(&reply).unwrap().unwrap();
            assert_eq!(back.error.as_deref(), Some("conflict on x"));
        }
        // An application exception comes back as such, not as a response.
        let mut ex = Vec::new();
        let e = ApplicationError::new(ApplicationErrorKind::UnknownMethod, "nope");
        encode_exception(&mut ex, "zap", 3, &e, false);
        let got = decode_reply::<SetKeyResponse>(&ex).unwrap();
        assert!(matches!(got, Err(a) if a.kind == ApplicationErrorKind::UnknownMethod));
    }

    #[test]
    fn decodes_a_call_and_rejects_unknown_methods() {
        let req = SetKeyRequest::new(b"k".to_vec(), b"v".to_vec(), None::<String>);
        let bytes = call_bytes("setKey", &req);
        assert_eq!(
            super::super::codec::binary_message_len(&bytes).unwrap(),
            Some(bytes.len())
        );
        let inc = decode(&bytes).unwrap();
        assert_eq!(inc.sequence, 9);
        match inc.call {
            Ok(Call::SetKey(r)) => assert_eq!(r, req),
            other => panic!("{other:?}"),
        }
        let inc = decode(&call_bytes("noSuchMethod", &req)).unwrap();
        assert_eq!(
            inc.call.unwrap_err().kind,
            ApplicationErrorKind::UnknownMethod
        );
        assert_eq!(METHODS.len(), 23);
    }

    #[test]
    fn framed_reply_carries_its_length() {
        let mut out = Vec::new();
        let resp = Response::Ping(PingResponse::new(b"x".to_vec(), 1, 2));
        encode_reply(&mut out, "ping", 3, &resp, true);
        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(len + 4, out.len());
    }
}
