//! paxoskv: a Paxos-replicated, transactional key-value server.
//!
//! The modules follow the request's path (see ARCHITECTURE.md): `front` (Thrift) → `service`
//! (what the front needs) → `cluster` (replicas in this process) or `local` (one store, no
//! replication) → `paxos` (agreement, pure) → `wal` (durability) and `transport` (peers) →
//! `storage` (the deterministic MVCC state machine over RocksDB), with `txn` (commands and
//! transactions), `config`, `types` and `util` beside them. `linearizability` is the history
//! checker the tests use. `client` is the Rust client library (tokio), built without the server
//! with `default-features = false, features = ["client"]`.

// The Thrift wire (codec, calls, generated structs) is shared by both halves; its server parts
// (commands, listener) are behind the `server` feature inside `front`.
pub mod error_code;
pub mod front;

#[cfg(feature = "client")]
pub mod client;

/// README's Rust example is compiled as a doctest, so it stays true.
#[cfg(all(doctest, feature = "client"))]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod linearizability;
#[cfg(feature = "server")]
pub mod local;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod paxos;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod transport;
#[cfg(feature = "server")]
pub mod txn;
#[cfg(feature = "server")]
pub mod types;
#[cfg(feature = "server")]
pub mod util;
#[cfg(feature = "server")]
pub mod wal;
