//! Replica-to-replica transport: persistent io_uring TCP connections between replicas, a
//! handshake, length-prefixed frames, reconnect with exponential backoff, and fault-injection
//! hooks for tests.
//!
//! Owns: sockets and frames. Must not: interpret Paxos messages (payloads are opaque bytes with
//! a one-byte kind). Each replica dials every peer for its outbound traffic and accepts its peers'
//! dials for inbound traffic, so every ordered pair has its own connection and ordering per
//! direction is TCP's. A frame that cannot be sent (peer down, queue full, injected fault) is
//! dropped: the protocol above tolerates loss.

pub mod faults;
pub mod frame;
mod link;

pub use faults::TransportFaults;
pub use frame::{FrameKind, HandshakeError};
pub use link::{run_listener, Outbound, TransportConfig};

/// Why a connection to or from a peer ended (logged; the protocol above tolerates the loss).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no address for peer {0}")]
    NoAddress(u32),
    #[error("peer address {addr}: {message}")]
    Address { addr: String, message: String },
    #[error("TLS handshake: {0}")]
    Tls(String),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("bad frame: {0}")]
    Frame(String),
}

/// A frame received from a peer.
#[derive(Debug)]
pub struct Inbound {
    pub from: u32,
    pub kind: FrameKind,
    pub payload: bytes::Bytes,
}
