//! Compact little-endian binary encoding shared by `Message` and `Record`.
//!
//! Owns: the primitive writers/readers and `DecodeError`. Must not: checksum or frame (the
//! transport and the WAL do that). Invariants: every encoded item starts with `CODEC_VERSION`;
//! decoding never panics and never allocates more than the input can justify.

use super::types::{Ballot, Batch, Slot, Value};
use bytes::Bytes;

/// First byte of every encoded `Message` and `Record`.
pub const CODEC_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input ended early")]
    Truncated,
    #[error("unsupported codec version {0}")]
    Version(u8),
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

pub(crate) fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}
pub(crate) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_slot(buf: &mut Vec<u8>, s: Slot) {
    put_u64(buf, s.0);
}
pub(crate) fn put_ballot(buf: &mut Vec<u8>, b: Ballot) {
    put_u64(buf, b.0);
}
pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u32(buf, b.len() as u32);
    buf.extend_from_slice(b);
}
pub(crate) fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Noop => put_u8(buf, 0),
        Value::Batch(batch) => {
            put_u8(buf, 1);
            put_commands(buf, batch.commands());
        }
    }
}
pub(crate) fn put_commands(buf: &mut Vec<u8>, commands: &[Bytes]) {
    put_u32(buf, commands.len() as u32);
    for c in commands {
        put_bytes(buf, c);
    }
}

/// Cursor over an input slice.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version byte and positions after it.
    pub(crate) fn new(input: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { input };
        let v = r.u8()?;
        if v != CODEC_VERSION {
            return Err(DecodeError::Version(v));
        }
        Ok(r)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn slot(&mut self) -> Result<Slot, DecodeError> {
        Ok(Slot(self.u64()?))
    }
    pub(crate) fn ballot(&mut self) -> Result<Ballot, DecodeError> {
        Ok(Ballot(self.u64()?))
    }
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::UnknownTag(t)),
        }
    }
    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
    /// A element count, rejected when the remaining input cannot hold `count * min_size` bytes.
    pub(crate) fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_size) > self.input.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(count)
    }
    pub(crate) fn value(&mut self) -> Result<Value, DecodeError> {
        match self.u8()? {
            0 => Ok(Value::Noop),
            1 => Ok(Value::Batch(Batch::new(self.commands()?))),
            t => Err(DecodeError::UnknownTag(t)),
        }
    }
    pub(crate) fn commands(&mut self) -> Result<Vec<Bytes>, DecodeError> {
        let count = self.count(4)?;
        let mut commands = Vec::with_capacity(count);
        for _ in 0..count {
            commands.push(self.bytes()?);
        }
        Ok(commands)
    }
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.input.len()))
        }
    }
}
