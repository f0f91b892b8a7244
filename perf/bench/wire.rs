//! What travels on a benchmark connection: requests encoded with the generated Thrift structs
//! over in-memory binary protocols (unframed or framed), or etcd v3 HTTP/JSON gateway calls, and
//! replies cut off the byte stream and classified (ok, a read version, a conflict, an error code).
//!
//! Must not: block or touch sockets; a malformed reply is an `Err` the caller reports, never a
//! panic.

use paxoskv::front::codec::binary_message_len;
use paxoskv::front::generated::{
    AtomicCommitRequest, AtomicCommitResponse, GetRangeRequest, GetRangeResponse,
    GetReadVersionRequest, GetReadVersionResponse, GetRequest, GetResponse, KeyRange, Operation,
    PingRequest, PingResponse, SetKeyRequest, SetKeyResponse, SnapshotReadRequest,
    SnapshotReadResponse,
};
use paxoskv::front::wire::{decode_reply, encode_call, reply_sequence};
use thrift::protocol::TSerializable;

/// One request on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Ping,
    Get {
        key: &'a [u8],
    },
    Set {
        key: &'a [u8],
        value: &'a [u8],
    },
    Range {
        begin_key: &'a [u8],
        limit: i32,
    },
    ReadVersion,
    SnapshotRead {
        key: &'a [u8],
        read_version: i64,
    },
    Commit {
        key: &'a [u8],
        value: &'a [u8],
        read_version: i64,
    },
}

/// Which reply a pending request expects (replies come back in request order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Ping,
    Get,
    Set,
    Range,
    ReadVersion,
    SnapshotRead,
    Commit,
}

impl Request<'_> {
    pub fn method(&self) -> Method {
        match self {
            Request::Ping => Method::Ping,
            Request::Get { .. } => Method::Get,
            Request::Set { .. } => Method::Set,
            Request::Range { .. } => Method::Range,
            Request::ReadVersion => Method::ReadVersion,
            Request::SnapshotRead { .. } => Method::SnapshotRead,
            Request::Commit { .. } => Method::Commit,
        }
    }
}

/// A reply, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    ReadVersion(i64),
    /// atomicCommit refused with `CONFLICT`.
    Conflict,
    /// Any other failure, by stable code (`NOT_PRIMARY`, `TIMEOUT`, `HTTP_503`, ...).
    Failed(String),
}

/// The client protocol of a run.
#[derive(Debug, Clone)]
pub enum Wire {
    Thrift {
        framed: bool,
    },
    /// etcd's v3 HTTP/JSON gateway (`/v3/kv/put`, `/v3/kv/range`), HTTP/1.1 keep-alive.
    EtcdHttp {
        host: String,
    },
}

/// Error codes a server puts in responses; a failure's text is searched for them when the response
/// struct has no `error_code` field.
const CODES: &[&str] = &[
    "CONFLICT",
    "NOT_PRIMARY",
    "TIMEOUT",
    "TOO_LARGE",
    "TOO_OLD",
    "INVALID_ARGUMENT",
    "UNAVAILABLE",
    "INTERNAL",
];

fn code_of(code: Option<&str>, text: Option<&str>) -> String {
    if let Some(c) = code.filter(|c| !c.is_empty()) {
        return c.to_string();
    }
    let text = text.unwrap_or("");
    CODES
        .iter()
        .find(|c| text.contains(**c))
        .map_or_else(|| "ERROR".to_string(), |c| c.to_string())
}

impl Wire {
    /// Appends one request to `out`. `sequence` numbers Thrift calls; replies must echo it.
    pub fn encode(&self, req: &Request, sequence: i32, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Wire::Thrift { framed } => {
                encode_thrift(req, sequence, *framed, out);
                Ok(())
            }
            Wire::EtcdHttp { host } => encode_etcd(req, host, out),
        }
    }

    /// Cuts the first complete reply off `buf`: `Ok(None)` until it has fully arrived, else the
    /// bytes it took and what it said.
    pub fn parse(
        &self,
        buf: &[u8],
        method: Method,
        sequence: i32,
    ) -> Result<Option<(usize, Reply)>, String> {
        match self {
            Wire::Thrift { framed } => parse_thrift(buf, *framed, method, sequence),
            Wire::EtcdHttp { .. } => parse_http(buf, method),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Thrift

fn encode_thrift(req: &Request, sequence: i32, framed: bool, out: &mut Vec<u8>) {
    let no_cf = None::<String>;
    match *req {
        Request::Ping => encode_call(
            out,
            sequence,
            &PingRequest::new(None::<Vec<u8>>, None::<i64>),
            framed,
        ),
        Request::Get { key } => {
            encode_call(out, sequence, &GetRequest::new(key.to_vec(), no_cf), framed)
        }
        Request::Set { key, value } => encode_call(
            out,
            sequence,
            &SetKeyRequest::new(key.to_vec(), value.to_vec(), no_cf),
            framed,
        ),
        Request::Range { begin_key, limit } => encode_call(
            out,
            sequence,
            &GetRangeRequest::new(
                begin_key.to_vec(),
                None::<Vec<u8>>,
                None::<i32>,
                None::<bool>,
                None::<i32>,
                None::<bool>,
                limit,
                no_cf,
            ),
            framed,
        ),
        Request::ReadVersion => encode_call(out, sequence, &GetReadVersionRequest::new(), framed),
        Request::SnapshotRead { key, read_version } => encode_call(
            out,
            sequence,
            &SnapshotReadRequest::new(key.to_vec(), read_version, no_cf),
            framed,
        ),
        Request::Commit {
            key,
            value,
            read_version,
        } => encode_call(
            out,
            sequence,
            &AtomicCommitRequest::new(
                read_version,
                vec![Operation::new(
                    "set".to_string(),
                    key.to_vec(),
                    value.to_vec(),
                    None::<String>,
                )],
                vec![key.to_vec()],
                None::<i64>,
                None::<Vec<KeyRange>>,
            ),
            framed,
        ),
    }
}

fn parse_thrift(
    buf: &[u8],
    framed: bool,
    method: Method,
    sequence: i32,
) -> Result<Option<(usize, Reply)>, String> {
    let (header, body) = if framed {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if buf.len() < 4 + len {
            return Ok(None);
        }
        (4, len)
    } else {
        match binary_message_len(buf).map_err(|e| e.to_string())? {
            Some(n) => (0, n),
            None => return Ok(None),
        }
    };
    let msg = &buf[header..header + body];
    let got = reply_sequence(msg).map_err(|e| e.to_string())?;
    if got != sequence {
        return Err(format!(
            "reply sequence {got} where {sequence} was expected"
        ));
    }
    let reply = classify(msg, method).map_err(|e| e.to_string())?;
    Ok(Some((header + body, reply)))
}

/// Decodes `msg` as `T` (the shared client codec), or the application exception it carries.
fn reply_as<T: TSerializable>(msg: &[u8]) -> thrift::Result<Result<T, Reply>> {
    Ok(decode_reply::<T>(msg)?
        .map_err(|e| Reply::Failed(format!("APP_EXCEPTION_{:?}", e.kind).to_uppercase())))
}

fn classify(msg: &[u8], method: Method) -> thrift::Result<Reply> {
    let failed = |code: Option<&str>, text: Option<&str>| Reply::Failed(code_of(code, text));
    let ok_or = |ok: bool, code: Option<&str>, text: Option<&str>| {
        if ok {
            Reply::Ok
        } else {
            failed(code, text)
        }
    };
    Ok(match method {
        Method::Ping => match reply_as::<PingResponse>(msg)? {
            Ok(_) => Reply::Ok,
            Err(e) => e,
        },
        Method::Get => match reply_as::<GetResponse>(msg)? {
            Ok(r) => ok_or(r.error.is_none(), None, r.error.as_deref()),
            Err(e) => e,
        },
        Method::SnapshotRead => match reply_as::<SnapshotReadResponse>(msg)? {
            Ok(r) => ok_or(r.error.is_none(), None, r.error.as_deref()),
            Err(e) => e,
        },
        Method::Set => match reply_as::<SetKeyResponse>(msg)? {
            Ok(r) => ok_or(r.success, r.error_code.as_deref(), r.error.as_deref()),
            Err(e) => e,
        },
        Method::Range => match reply_as::<GetRangeResponse>(msg)? {
            Ok(r) => ok_or(r.success, None, r.error.as_deref()),
            Err(e) => e,
        },
        Method::ReadVersion => match reply_as::<GetReadVersionResponse>(msg)? {
            Ok(r) if r.success => Reply::ReadVersion(r.read_version),
            Ok(r) => failed(None, r.error.as_deref()),
            Err(e) => e,
        },
        Method::Commit => match reply_as::<AtomicCommitResponse>(msg)? {
            Ok(r) if r.success => Reply::Ok,
            Ok(r) => match code_of(r.error_code.as_deref(), r.error.as_deref()) {
                c if c == "CONFLICT" => Reply::Conflict,
                c => Reply::Failed(c),
            },
            Err(e) => e,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// etcd v3 HTTP/JSON gateway

fn encode_etcd(req: &Request, host: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut body = Vec::with_capacity(256);
    let path = match *req {
        Request::Set { key, value } => {
            body.extend_from_slice(b"{\"key\":\"");
            base64_into(key, &mut body);
            body.extend_from_slice(b"\",\"value\":\"");
            base64_into(value, &mut body);
            body.extend_from_slice(b"\"}");
            "/v3/kv/put"
        }
        Request::Get { key } => {
            body.extend_from_slice(b"{\"key\":\"");
            base64_into(key, &mut body);
            body.extend_from_slice(b"\"}");
            "/v3/kv/range"
        }
        other => {
            return Err(format!(
                "the etcd driver has no {:?} request",
                other.method()
            ))
        }
    };
    use std::io::Write;
    write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    out.extend_from_slice(&body);
    Ok(())
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what the gateway expects for `bytes` fields).
pub fn base64_into(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(BASE64[(n >> 18) as usize & 63]);
        out.push(BASE64[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            BASE64[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            BASE64[n as usize & 63]
        } else {
            b'='
        });
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one HTTP/1.1 response (Content-Length or chunked body).
fn parse_http(buf: &[u8], _method: Method) -> Result<Option<(usize, Reply)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("HTTP response head over 64 KiB".into());
        }
        return Ok(None);
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| "HTTP head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line `{status_line}`"))?;
    let mut content_len = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            content_len = Some(
                v.parse::<usize>()
                    .map_err(|_| format!("bad Content-Length `{v}`"))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body_start = head_end + 4;
    let (end, body): (usize, Vec<u8>) = if chunked {
        let mut pos = body_start;
        let mut body = Vec::new();
        loop {
            let Some(le) = find(&buf[pos..], b"\r\n") else {
                return Ok(None);
            };
            let size_text = std::str::from_utf8(&buf[pos..pos + le])
                .map_err(|_| "bad chunk size".to_string())?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size `{size_text}`"))?;
            let data = pos + le + 2;
            if buf.len() < data + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[data..data + size]);
            pos = data + size + 2;
            if size == 0 {
                break (pos, body);
            }
        }
    } else {
        let n = content_len.unwrap_or(0);
        if buf.len() < body_start + n {
            return Ok(None);
        }
        (body_start + n, buf[body_start..body_start + n].to_vec())
    };
    let reply = if status == 200 && find(&body, b"\"error\"").is_none() {
        Reply::Ok
    } else {
        Reply::Failed(format!("HTTP_{status}"))
    };
    Ok(Some((end, reply)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxoskv::front::wire::{decode, encode_reply, Call, Response};

    #[test]
    fn thrift_set_round_trips_through_the_server_codec() {
        for framed in [false, true] {
            let wire = Wire::Thrift { framed };
            let mut out = Vec::new();
            wire.encode(
                &Request::Set {
                    key: b"k1",
                    value: b"v1",
                },
                5,
                &mut out,
            )
            .unwrap();
            let msg = if framed { &out[4..] } else { &out[..] };
            let inc = decode(msg).unwrap();
            assert_eq!(inc.sequence, 5);
            assert!(
                matches!(inc.call, Ok(Call::SetKey(ref r)) if r.key == b"k1" && r.value == b"v1")
            );
            let mut reply = Vec::new();
            let resp = Response::SetKey(SetKeyResponse::new(
                false,
                "busy".to_string(),
                "NOT_PRIMARY".to_string(),
            ));
            encode_reply(&mut reply, "setKey", 5, &resp, framed);
            assert_eq!(
                wire.parse(&reply[..reply.len() - 1], Method::Set, 5)
                    .unwrap(),
                None
            );
            let (n, r) = wire.parse(&reply, Method::Set, 5).unwrap().unwrap();
            assert_eq!(n, reply.len());
            assert_eq!(r, Reply::Failed("NOT_PRIMARY".into()));
            assert!(wire.parse(&reply, Method::Set, 6).is_err());
        }
    }

    #[test]
    fn commit_conflict_is_classified() {
        let wire = Wire::Thrift { framed: false };
        let mut reply = Vec::new();
        let resp = Response::AtomicCommit(AtomicCommitResponse::new(
            false,
            "conflict on k".to_string(),
            "CONFLICT".to_string(),
            None::<i64>,
        ));
        encode_reply(&mut reply, "atomicCommit", 1, &resp, false);
        assert_eq!(
            wire.parse(&reply, Method::Commit, 1).unwrap().unwrap().1,
            Reply::Conflict
        );
    }

    #[test]
    fn http_bodies_by_length_and_chunks() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP";
        assert_eq!(
            parse_http(r, Method::Set).unwrap(),
            Some((r.len() - 4, Reply::Ok))
        );
        let c = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(
            parse_http(c, Method::Set).unwrap(),
            Some((c.len(), Reply::Failed("HTTP_503".into())))
        );
        assert_eq!(parse_http(&c[..c.len() - 2], Method::Set).unwrap(), None);
        let mut b = Vec::new();
        base64_into(b"hello", &mut b);
        assert_eq!(b, b"aGVsbG8=");
    }
}
