//! Bounds-checked little-endian encoding helpers.
//!
//! Owns: `Writer`-style free functions over `Vec<u8>` and a `Reader` over a byte slice.
//! Invariant: a `Reader` never reads past its slice and never allocates more than the input can
//! describe (lengths are checked against the remaining bytes before any allocation).

use bytes::Bytes;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input ended early: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unknown tag {tag} for {what}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("unsupported encoding version {0}")]
    Version(u8),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("invalid utf-8 in {0}")]
    Utf8(&'static str),
    #[error("checksum mismatch in {0}")]
    Checksum(&'static str),
}

pub fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}
pub fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}
pub fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}
/// A length-prefixed (u32) byte string.
pub fn put_bytes(buf: &mut Vec<u8>, v: &[u8]) {
    put_u32(buf, v.len() as u32);
    buf.extend_from_slice(v);
}
pub fn put_str(buf: &mut Vec<u8>, v: &str) {
    put_bytes(buf, v.as_bytes());
}

/// Reads values written by the `put_*` functions.
pub struct Reader<'a> {
    buf: &'a [u8],
    /// When set, byte strings are returned as zero-copy slices of this buffer.
    owner: Option<&'a Bytes>,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            owner: None,
            pos: 0,
        }
    }
    /// A reader whose `bytes()` results share `owner`'s allocation instead of copying.
    pub fn over(owner: &'a Bytes) -> Self {
        Reader {
            buf: owner.as_ref(),
            owner: Some(owner),
            pos: 0,
        }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(a))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? != 0)
    }
    /// A length-prefixed byte string, zero-copy when the reader was made with `over`.
    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        let start = self.pos;
        let s = self.take(n)?;
        Ok(match self.owner {
            Some(o) => o.slice(start..start + n),
            None => Bytes::copy_from_slice(s),
        })
    }
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Utf8(what))
    }
    /// A count of items that each take at least `min_item_bytes`; refuses counts the remaining
    /// input cannot hold, so a corrupt count cannot cause a huge allocation.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        let need = n.saturating_mul(min_item_bytes.max(1));
        if need > self.remaining() {
            return Err(DecodeError::Truncated {
                needed: need - self.remaining(),
            });
        }
        Ok(n)
    }
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut b = Vec::new();
        put_u8(&mut b, 7);
        put_u64(&mut b, u64::MAX - 3);
        put_bytes(&mut b, b"hello");
        put_str(&mut b, "cf");
        let mut r = Reader::new(&b);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX - 3);
        assert_eq!(&r.bytes().unwrap()[..], b"hello");
        assert_eq!(r.string("cf").unwrap(), "cf");
        r.finish().unwrap();
        for cut in 0..b.len() {
            let mut r = Reader::new(&b[..cut]);
            let res = (|| {
                r.u8()?;
                r.u64()?;
                r.bytes()?;
                r.string("cf")
            })();
            assert!(res.is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn huge_count_is_refused_without_allocating() {
        let mut b = Vec::new();
        put_u32(&mut b, u32::MAX);
        assert!(Reader::new(&b).count(1).is_err());
    }
}
