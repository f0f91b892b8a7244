//! The unit of the replicated log: a `Command` (one transaction's writes plus what it read), its
//! binary encoding, and its `Outcome` once applied.
//!
//! Invariants: encoding is deterministic and versioned (first byte); decoding never panics.
//! A command with `read_version = None` is a blind write (setKey, deleteKey, versionstamped sets
//! outside a transaction) and never conflicts.

use bytes::Bytes;

use crate::service::{ErrorCode, ServiceError};
use crate::types::Version;
use crate::util::codec::{put_bytes, put_str, put_u32, put_u64, put_u8, DecodeError, Reader};

/// The name of the default column family on the wire (absent `column_family`).
pub const DEFAULT_CF: &str = "";

const ENCODING_V1: u8 = 1;
/// Bytes a versionstamp occupies at the end of a key prefix or value prefix.
pub const VERSIONSTAMP_LEN: usize = 10;

/// A half-open key range `[begin, end)` of one column family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub cf: String,
    pub begin: Bytes,
    pub end: Bytes,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Set {
        cf: String,
        key: Bytes,
        value: Bytes,
    },
    Delete {
        cf: String,
        key: Bytes,
    },
    /// The last 10 bytes of `key_prefix` are replaced by the versionstamp.
    SetVersionstampedKey {
        cf: String,
        key_prefix: Bytes,
        value: Bytes,
    },
    /// The last 10 bytes of `value_prefix` are replaced by the versionstamp.
    SetVersionstampedValue {
        cf: String,
        key: Bytes,
        value_prefix: Bytes,
    },
}

impl WriteOp {
    pub fn cf(&self) -> &str {
        match self {
            WriteOp::Set { cf, .. }
            | WriteOp::Delete { cf, .. }
            | WriteOp::SetVersionstampedKey { cf, .. }
            | WriteOp::SetVersionstampedValue { cf, .. } => cf,
        }
    }

    /// Bytes of key and value this write carries (for size limits and batching).
    pub fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Set { key, value, .. } => key.len() + value.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::SetVersionstampedKey {
                key_prefix, value, ..
            } => key_prefix.len() + value.len(),
            WriteOp::SetVersionstampedValue {
                key, value_prefix, ..
            } => key.len() + value_prefix.len(),
        }
    }
}

/// One transaction (or one blind write) as agreed by the log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    /// The snapshot the transaction read at; `None` for a blind write.
    pub read_version: Option<Version>,
    pub writes: Vec<WriteOp>,
    /// Keys read (each as a one-key range) and ranges read; checked against later writes.
    pub read_conflicts: Vec<KeyRange>,
}

/// What applying a command did. Identical on every replica for the same log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed {
        version: Version,
        /// One entry per versionstamped write, in order: the generated key or value.
        generated: Vec<Bytes>,
    },
    /// A read key or range was written after the read version.
    Conflict { key: Bytes },
    /// The read version is older than the MVCC window keeps.
    TooOld {
        read_version: Version,
        oldest: Version,
    },
    /// The command is malformed (checked again at apply so a bad command can never apply).
    Invalid(String),
}

impl Command {
    pub fn blind(writes: Vec<WriteOp>) -> Self {
        Command {
            read_version: None,
            writes,
            read_conflicts: Vec::new(),
        }
    }

    /// Total key/value bytes, for size limits and batch accounting.
    pub fn payload_bytes(&self) -> usize {
        self.writes
            .iter()
            .map(WriteOp::payload_bytes)
            .sum::<usize>()
            + self
                .read_conflicts
                .iter()
                .map(|r| r.begin.len() + r.end.len())
                .sum::<usize>()
    }

    /// Checks rules that do not depend on the store (`INVALID_ARGUMENT` naming the problem).
    pub fn validate(&self) -> Result<(), ServiceError> {
        let invalid = |m: String| Err(ServiceError::new(ErrorCode::InvalidArgument, m));
        for (i, w) in self.writes.iter().enumerate() {
            match w {
                WriteOp::SetVersionstampedKey { key_prefix, .. }
                    if key_prefix.len() < VERSIONSTAMP_LEN =>
                {
                    return invalid(format!(
                        "operation {i}: versionstamped key prefix is {} bytes, needs at least {VERSIONSTAMP_LEN}",
                        key_prefix.len()
                    ));
                }
                WriteOp::SetVersionstampedValue { value_prefix, .. }
                    if value_prefix.len() < VERSIONSTAMP_LEN =>
                {
                    return invalid(format!(
                        "operation {i}: versionstamped value prefix is {} bytes, needs at least {VERSIONSTAMP_LEN}",
                        value_prefix.len()
                    ));
                }
                _ => {}
            }
        }
        if self.writes.len() > u16::MAX as usize {
            return invalid(format!(
                "{} operations in one commit; at most {} fit a versionstamp",
                self.writes.len(),
                u16::MAX
            ));
        }
        Ok(())
    }

    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u8(buf, ENCODING_V1);
        match self.read_version {
            Some(v) => {
                put_u8(buf, 1);
                put_u64(buf, v.0);
            }
            None => put_u8(buf, 0),
        }
        put_u32(buf, self.writes.len() as u32);
        for w in &self.writes {
            match w {
                WriteOp::Set { cf, key, value } => {
                    put_u8(buf, 1);
                    put_str(buf, cf);
                    put_bytes(buf, key);
                    put_bytes(buf, value);
                }
                WriteOp::Delete { cf, key } => {
                    put_u8(buf, 2);
                    put_str(buf, cf);
                    put_bytes(buf, key);
                }
                WriteOp::SetVersionstampedKey {
                    cf,
                    key_prefix,
                    value,
                } => {
                    put_u8(buf, 3);
                    put_str(buf, cf);
                    put_bytes(buf, key_prefix);
                    put_bytes(buf, value);
                }
                WriteOp::SetVersionstampedValue {
                    cf,
                    key,
                    value_prefix,
                } => {
                    put_u8(buf, 4);
                    put_str(buf, cf);
                    put_bytes(buf, key);
                    put_bytes(buf, value_prefix);
                }
            }
        }
        put_u32(buf, self.read_conflicts.len() as u32);
        for r in &self.read_conflicts {
            put_str(buf, &r.cf);
            put_bytes(buf, &r.begin);
            put_bytes(buf, &r.end);
        }
    }

    pub fn encode_to_bytes(&self) -> Bytes {
        let mut buf = Vec::with_capacity(32 + self.payload_bytes());
        self.encode(&mut buf);
        Bytes::from(buf)
    }

    /// Decodes a command; byte strings share `input`'s allocation.
    pub fn decode(input: &Bytes) -> Result<Command, DecodeError> {
        let mut r = Reader::over(input);
        let cmd = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(cmd)
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Command, DecodeError> {
        let v = r.u8()?;
        if v != ENCODING_V1 {
            return Err(DecodeError::Version(v));
        }
        let read_version = match r.u8()? {
            0 => None,
            1 => Some(Version(r.u64()?)),
            t => {
                return Err(DecodeError::UnknownTag {
                    what: "read version",
                    tag: t,
                })
            }
        };
        let n = r.count(13)?;
        let mut writes = Vec::with_capacity(n);
        for _ in 0..n {
            let tag = r.u8()?;
            let cf = r.string("column family")?;
            let w = match tag {
                1 => WriteOp::Set {
                    cf,
                    key: r.bytes()?,
                    value: r.bytes()?,
                },
                2 => WriteOp::Delete {
                    cf,
                    key: r.bytes()?,
                },
                3 => WriteOp::SetVersionstampedKey {
                    cf,
                    key_prefix: r.bytes()?,
                    value: r.bytes()?,
                },
                4 => WriteOp::SetVersionstampedValue {
                    cf,
                    key: r.bytes()?,
                    value_prefix: r.bytes()?,
                },
                t => {
                    return Err(DecodeError::UnknownTag {
                        what: "write op",
                        tag: t,
                    })
                }
            };
            writes.push(w);
        }
        let n = r.count(12)?;
        let mut read_conflicts = Vec::with_capacity(n);
        for _ in 0..n {
            read_conflicts.push(KeyRange {
                cf: r.string("column family")?,
                begin: r.bytes()?,
                end: r.bytes()?,
            });
        }
        Ok(Command {
            read_version,
            writes,
            read_conflicts,
        })
    }
}

impl KeyRange {
    /// Whether the range holds exactly one key (`single_key_range`'s shape).
    pub fn is_single_key(&self) -> bool {
        self.end.len() == self.begin.len() + 1
            && self.end.last() == Some(&0)
            && self.end.starts_with(&self.begin)
    }
}

/// The range holding exactly one key: `[key, key ++ 0x00)`.
pub fn single_key_range(cf: &str, key: &Bytes) -> KeyRange {
    let mut end = Vec::with_capacity(key.len() + 1);
    end.extend_from_slice(key);
    end.push(0);
    KeyRange {
        cf: cf.to_string(),
        begin: key.clone(),
        end: Bytes::from(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Command {
        Command {
            read_version: Some(Version(42)),
            writes: vec![
                WriteOp::Set {
                    cf: "".into(),
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                },
                WriteOp::Delete {
                    cf: "other".into(),
                    key: Bytes::from_static(b"\x00\xff"),
                },
                WriteOp::SetVersionstampedKey {
                    cf: "".into(),
                    key_prefix: Bytes::from_static(b"prefix0123456789"),
                    value: Bytes::new(),
                },
                WriteOp::SetVersionstampedValue {
                    cf: "".into(),
                    key: Bytes::from_static(b"vk"),
                    value_prefix: Bytes::from_static(b"0123456789"),
                },
            ],
            read_conflicts: vec![single_key_range("", &Bytes::from_static(b"r"))],
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        let b = c.encode_to_bytes();
        assert_eq!(Command::decode(&b).unwrap(), c);
        let blind = Command::blind(vec![]);
        assert_eq!(Command::decode(&blind.encode_to_bytes()).unwrap(), blind);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let b = sample().encode_to_bytes();
        for cut in 0..b.len() {
            assert!(Command::decode(&b.slice(..cut)).is_err(), "cut {cut}");
        }
        // Flip each byte: decoding may succeed or fail, but must never panic.
        for i in 0..b.len() {
            let mut v = b.to_vec();
            v[i] ^= 0xA5;
            let _ = Command::decode(&Bytes::from(v));
        }
    }

    #[test]
    fn short_versionstamp_is_invalid() {
        let c = Command::blind(vec![WriteOp::SetVersionstampedKey {
            cf: "".into(),
            key_prefix: Bytes::from_static(b"short"),
            value: Bytes::new(),
        }]);
        let e = c.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("at least 10"), "{e:?}");
        assert!(sample().validate().is_ok());
    }
}
