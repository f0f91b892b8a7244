//! The replica protocol's wire format: a handshake, then frames.
//!
//! Handshake, a challenge-response over the shared secret that never puts the secret on the
//! wire: the dialer sends `HelloHeader` (zerocopy), the cluster id and a fresh 32-byte nonce;
//! the listener checks cluster and replica id and answers `HelloAck`, its own fresh nonce and
//! a proof HMAC-SHA256(secret, "server" | cluster | dialer id | listener id | both nonces);
//! the dialer checks that proof (so it knows it reached a replica that holds the secret, and
//! the one it meant) and answers with the matching "client" proof, which the listener checks.
//! Both compares are constant-time; a recorded handshake cannot be replayed because the other
//! side's nonce is new every time. A peer with the wrong magic, version, cluster id, replica
//! id or secret is refused and disconnected. Frames: `FrameHeader` (length of the payload,
//! kind) then the payload.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const MAGIC: [u8; 4] = *b"PXKV";
pub const PROTOCOL_VERSION: u16 = 3;
/// Bytes of each side's handshake nonce, and of each proof.
pub const NONCE_BYTES: usize = 32;
pub const PROOF_BYTES: usize = 32;
pub const FRAME_HEADER_BYTES: usize = std::mem::size_of::<FrameHeader>();
pub const HELLO_BYTES: usize = std::mem::size_of::<HelloHeader>();
pub const ACK_BYTES: usize = std::mem::size_of::<HelloAck>();
const CLUSTER_ID_BYTES_MAX: usize = 64;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FrameHeader {
    pub len: U32,
    pub kind: u8,
    pub reserved: [u8; 3],
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct HelloHeader {
    pub magic: [u8; 4],
    pub version: U16,
    pub replica_id: U16,
    pub cluster_id_len: U16,
    pub nonce_len: U16,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct HelloAck {
    pub magic: [u8; 4],
    pub version: U16,
    /// 0 = accepted; anything else = refused (the connection closes).
    pub status: U16,
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A Paxos message between replica cores.
    Paxos,
    /// A replica that lags behind every peer's log asks for the next chunk of a state-machine
    /// snapshot, and the answer (see `cluster::replica::snapshot`).
    SnapshotRequest,
    SnapshotChunk,
}

impl FrameKind {
    pub fn to_u8(self) -> u8 {
        match self {
            FrameKind::Paxos => 1,
            FrameKind::SnapshotRequest => 5,
            FrameKind::SnapshotChunk => 6,
        }
    }
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => FrameKind::Paxos,
            5 => FrameKind::SnapshotRequest,
            6 => FrameKind::SnapshotChunk,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a paxoskv replica (bad magic)")]
    Magic,
    #[error("protocol version {0} is not supported (this replica speaks {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("peer belongs to cluster {0:?}")]
    Cluster(String),
    #[error("replica id {0} is not a member")]
    Replica(u16),
    #[error("wrong shared secret (the handshake proof does not match)")]
    Secret,
    #[error("handshake field too long")]
    TooLong,
    #[error("peer refused the handshake (status {0})")]
    Refused(u16),
    #[error("{0}")]
    Certificate(String),
}

pub fn encode_frame(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    let h = FrameHeader {
        len: U32::new(payload.len() as u32),
        kind: kind.to_u8(),
        reserved: [0; 3],
    };
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(payload);
}

pub fn encode_hello(replica_id: u16, cluster_id: &str, nonce: &[u8; NONCE_BYTES]) -> Vec<u8> {
    let h = HelloHeader {
        magic: MAGIC,
        version: U16::new(PROTOCOL_VERSION),
        replica_id: U16::new(replica_id),
        cluster_id_len: U16::new(cluster_id.len() as u16),
        nonce_len: U16::new(NONCE_BYTES as u16),
    };
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(cluster_id.as_bytes());
    out.extend_from_slice(nonce);
    out
}

/// Which side a proof speaks for (they differ, so one side's proof is no use to the other).
#[derive(Clone, Copy)]
pub enum Role {
    Listener,
    Dialer,
}

/// HMAC-SHA256 over everything both sides agreed on in this handshake.
pub fn proof(
    secret: &[u8],
    role: Role,
    cluster_id: &str,
    dialer: u32,
    listener: u32,
    dialer_nonce: &[u8; NONCE_BYTES],
    listener_nonce: &[u8; NONCE_BYTES],
) -> [u8; PROOF_BYTES] {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this arm is unreachable.
        return [0; PROOF_BYTES];
    };
    mac.update(match role {
        Role::Listener => b"paxoskv-listener",
        Role::Dialer => b"paxoskv-dialer\0\0",
    });
    mac.update(&(cluster_id.len() as u32).to_le_bytes());
    mac.update(cluster_id.as_bytes());
    mac.update(&dialer.to_le_bytes());
    mac.update(&listener.to_le_bytes());
    mac.update(dialer_nonce);
    mac.update(listener_nonce);
    mac.finalize().into_bytes().into()
}

/// A fresh random nonce (from the OS-seeded generator).
pub fn nonce() -> [u8; NONCE_BYTES] {
    use rand::RngCore;
    let mut n = [0u8; NONCE_BYTES];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

/// Compares a received proof with the expected one in constant time.
pub fn check_proof(got: &[u8], want: &[u8; PROOF_BYTES]) -> Result<(), HandshakeError> {
    if constant_time_eq(got, want) {
        Ok(())
    } else {
        Err(HandshakeError::Secret)
    }
}

pub fn parse_hello(h: &[u8; HELLO_BYTES]) -> Result<HelloHeader, HandshakeError> {
    let h = HelloHeader::read_from_bytes(h).map_err(|_| HandshakeError::Magic)?;
    if h.magic != MAGIC {
        return Err(HandshakeError::Magic);
    }
    if h.version.get() != PROTOCOL_VERSION {
        return Err(HandshakeError::Version(h.version.get()));
    }
    if h.cluster_id_len.get() as usize > CLUSTER_ID_BYTES_MAX
        || h.nonce_len.get() as usize != NONCE_BYTES
    {
        return Err(HandshakeError::TooLong);
    }
    Ok(h)
}

/// Checks the variable part of a hello against this cluster; returns the dialer's claimed id
/// and its nonce (the claim is proven only by its proof, later).
pub fn check_hello(
    h: &HelloHeader,
    rest: &[u8],
    cluster_id: &str,
    replica_count: u32,
) -> Result<(u32, [u8; NONCE_BYTES]), HandshakeError> {
    let n = h.cluster_id_len.get() as usize;
    let (cid, nonce) = rest.split_at(n.min(rest.len()));
    if cid != cluster_id.as_bytes() {
        return Err(HandshakeError::Cluster(
            String::from_utf8_lossy(cid).into_owned(),
        ));
    }
    let id = h.replica_id.get();
    if id as u32 >= replica_count {
        return Err(HandshakeError::Replica(id));
    }
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| HandshakeError::TooLong)?;
    Ok((id as u32, nonce))
}

pub fn encode_ack(status: u16) -> Vec<u8> {
    HelloAck {
        magic: MAGIC,
        version: U16::new(PROTOCOL_VERSION),
        status: U16::new(status),
    }
    .as_bytes()
    .to_vec()
}

pub fn parse_ack(b: &[u8; ACK_BYTES]) -> Result<(), HandshakeError> {
    let a = HelloAck::read_from_bytes(b).map_err(|_| HandshakeError::Magic)?;
    if a.magic != MAGIC {
        return Err(HandshakeError::Magic);
    }
    match a.status.get() {
        0 => Ok(()),
        s => Err(HandshakeError::Refused(s)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_refusals() {
        let n = nonce();
        let b = encode_hello(2, "c1", &n);
        assert!(
            !b.windows(6).any(|w| w == b"s3cret"),
            "no secret on the wire"
        );
        let mut h = [0u8; HELLO_BYTES];
        h.copy_from_slice(&b[..HELLO_BYTES]);
        let hh = parse_hello(&h).unwrap();
        let rest = &b[HELLO_BYTES..];
        assert_eq!(check_hello(&hh, rest, "c1", 3), Ok((2, n)));
        assert!(matches!(
            check_hello(&hh, rest, "c2", 3),
            Err(HandshakeError::Cluster(_))
        ));
        assert_eq!(
            check_hello(&hh, rest, "c1", 2),
            Err(HandshakeError::Replica(2))
        );
        let mut bad = h;
        bad[0] = b'X';
        assert!(parse_hello(&bad).is_err());
        let mut ack = [0u8; ACK_BYTES];
        ack.copy_from_slice(&encode_ack(0));
        parse_ack(&ack).unwrap();
        ack.copy_from_slice(&encode_ack(3));
        assert_eq!(parse_ack(&ack), Err(HandshakeError::Refused(3)));
    }

    #[test]
    fn proofs_bind_the_secret_the_ids_the_role_and_both_nonces() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b, "nonces are fresh");
        let p = |secret: &[u8], role, dialer, listener, x: &[u8; 32], y: &[u8; 32]| {
            proof(secret, role, "c1", dialer, listener, x, y)
        };
        let good = p(b"s3cret", Role::Dialer, 1, 0, &a, &b);
        assert!(check_proof(&good, &p(b"s3cret", Role::Dialer, 1, 0, &a, &b)).is_ok());
        // A wrong secret, another claimed id, the other role, or a replay against a new
        // listener nonce all fail.
        for other in [
            p(b"other!", Role::Dialer, 1, 0, &a, &b),
            p(b"s3cret", Role::Dialer, 2, 0, &a, &b),
            p(b"s3cret", Role::Listener, 1, 0, &a, &b),
            p(b"s3cret", Role::Dialer, 1, 0, &a, &nonce()),
        ] {
            assert_eq!(check_proof(&good, &other), Err(HandshakeError::Secret));
        }
        assert!(check_proof(&good[..31], &good).is_err());
    }

    #[test]
    fn frame_header_layout() {
        let mut out = Vec::new();
        encode_frame(&mut out, FrameKind::SnapshotChunk, b"abc");
        assert_eq!(out.len(), FRAME_HEADER_BYTES + 3);
        let h = FrameHeader::read_from_bytes(&out[..FRAME_HEADER_BYTES]).unwrap();
        assert_eq!(h.len.get(), 3);
        assert_eq!(FrameKind::from_u8(h.kind), Some(FrameKind::SnapshotChunk));
        assert_eq!(FrameKind::from_u8(0), None);
    }
}
