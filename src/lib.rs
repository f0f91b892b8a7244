//! paxoskv: a Paxos-replicated, transactional key-value server.
//!
//! The modules follow the request's path (see ARCHITECTURE.md): `front` (Thrift) → `service`
//! (what the front needs) → `cluster` (replicas in this process) or `local` (one store, no
//! replication) → `paxos` (agreement, pure) → `wal` (durability) and `transport` (peers) →
//! `storage` (the deterministic MVCC state machine over RocksDB), with `txn` (commands and
//! transactions), `config`, `types` and `util` beside them. `linearizability` is the history
//! checker the tests use.

pub mod cluster;
pub mod config;
pub mod front;
pub mod linearizability;
pub mod local;
pub mod metrics;
pub mod paxos;
pub mod service;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod txn;
pub mod types;
pub mod util;
pub mod wal;
