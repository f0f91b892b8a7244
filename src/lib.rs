//! paxoskv: a Paxos-replicated, transactional key-value server.
//!
//! The modules follow the request's path (see ARCHITECTURE.md): `front` (Thrift) → `service`
//! (what the front needs) → `cluster`/`local` (who executes) → `paxos` (agreement, pure) →
//! `wal` (durability) → `storage` (the deterministic MVCC state machine over RocksDB), with
//! `txn` (commands and transactions), `config`, `types` and `util` beside them.

pub mod config;
pub mod front;
pub mod local;
pub mod service;
pub mod storage;
pub mod txn;
pub mod types;
pub mod util;
