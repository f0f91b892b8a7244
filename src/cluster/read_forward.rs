//! A linearizable read taken by a replica that is not the primary travels to the primary for
//! its read index (one ReadIndex round there) and back: these are the two messages, with their
//! codecs (`FrameKind::ReadIndexRequest` / `ReadIndexResponse`).

use bytes::Bytes;

use crate::util::codec::{put_u64, put_u8, DecodeError, Reader};

/// "Confirm a read for me": the forwarding replica's read id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndexRequest {
    pub id: u64,
}

/// The primary's answer to a `ReadIndexRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndexResponse {
    pub id: u64,
    /// `Some(slot)`: serve the read once applied through `slot`. `None`: the replica asked is
    /// not (or no longer) the primary.
    pub read_index: Option<u64>,
}

impl ReadIndexRequest {
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(8);
        put_u64(&mut b, self.id);
        Bytes::from(b)
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let id = r.u64()?;
        r.finish()?;
        Ok(ReadIndexRequest { id })
    }
}

impl ReadIndexResponse {
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(17);
        put_u64(&mut b, self.id);
        put_u8(&mut b, u8::from(self.read_index.is_some()));
        put_u64(&mut b, self.read_index.unwrap_or(0));
        Bytes::from(b)
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let id = r.u64()?;
        let confirmed = r.bool()?;
        let slot = r.u64()?;
        r.finish()?;
        Ok(ReadIndexResponse {
            id,
            read_index: confirmed.then_some(slot),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_lengths() {
        let q = ReadIndexRequest { id: 7 };
        assert_eq!(ReadIndexRequest::decode(&q.encode()), Ok(q));
        for read_index in [None, Some(42)] {
            let a = ReadIndexResponse { id: 9, read_index };
            assert_eq!(ReadIndexResponse::decode(&a.encode()), Ok(a));
        }
        assert!(ReadIndexRequest::decode(&[0; 7]).is_err());
        assert!(ReadIndexRequest::decode(&[0; 9]).is_err());
        assert!(ReadIndexResponse::decode(&[0; 16]).is_err());
    }
}
