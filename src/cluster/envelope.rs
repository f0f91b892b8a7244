//! The bytes a client command travels in through the replicated log: which replica took it from
//! a client (`origin`), that replica's request number, and the encoded `txn::Command`.
//!
//! Every replica applies every command; only the origin replica has a client waiting, and it
//! recognises its own commands by (origin, request) when they commit. Request ids are unique
//! across the origin's restarts (`incarnation.rs`). Forwarding a command to
//! the primary therefore needs no reply message: the origin answers when it applies.

use bytes::{BufMut, Bytes, BytesMut};

use crate::util::codec::DecodeError;

pub const ENVELOPE_HEADER_BYTES: usize = 12;

pub fn encode(origin: u32, request: u64, command: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(ENVELOPE_HEADER_BYTES + command.len());
    b.put_u32_le(origin);
    b.put_u64_le(request);
    b.put_slice(command);
    b.freeze()
}

/// Splits an envelope into (origin, request, command bytes); the command shares the buffer.
pub fn decode(b: &Bytes) -> Result<(u32, u64, Bytes), DecodeError> {
    if b.len() < ENVELOPE_HEADER_BYTES {
        return Err(DecodeError::Truncated {
            needed: ENVELOPE_HEADER_BYTES - b.len(),
        });
    }
    let origin = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut r = [0u8; 8];
    r.copy_from_slice(&b[4..12]);
    Ok((
        origin,
        u64::from_le_bytes(r),
        b.slice(ENVELOPE_HEADER_BYTES..),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let e = super::encode(2, 77, b"cmd");
        let (o, r, c) = super::decode(&e).unwrap();
        assert_eq!((o, r, &c[..]), (2, 77, &b"cmd"[..]));
        assert!(super::decode(&e.slice(..5)).is_err());
    }
}
