//! The Paxos core: a deterministic, IO-free Multi-Paxos replica (see `Replica`).
//!
//! Owns: the protocol. Must not: import anything that does IO, reads a clock or draws random
//! numbers (a lint test enforces it). Everything else in paxoskv wraps this.
//!
//! # Contract with the shell
//! 1. Recovery: fold every WAL record, in order, into a `DurableState` with
//!    `DurableState::apply`, set `snapshot_upto` to the slot the state machine has durably
//!    applied, then `Replica::new(config, state)`.
//! 2. Drive: `replica.step(input, &mut outputs)` for every event (`Input`), then carry out
//!    `outputs` and `clear()` them. Feed `Input::Tick { now_ms, random }` periodically (every
//!    ~10 ms; `random` from any RNG; it seeds election timeouts).
//! 3. Durability handshake: each `outputs.persist` entry is `(Lsn, Record)`, LSNs strictly
//!    increasing from 1 in each incarnation. Write them in order (group commit is fine); when
//!    everything through LSN `L` is durable, step `Input::Durable { upto_lsn: L }`. Replies
//!    that promise durable state (Promise, Accepted) are held inside the core and appear in
//!    `sends` of that later step; the shell never has to order sends against fsyncs itself.
//! 4. Apply: `outputs.committed` is `(Slot, Value)` in slot order, each slot once (after a
//!    restart, from `snapshot_upto + 1`). Apply `Value::Noop` as "advance the sequence".
//!    Report progress with `Input::Applied { upto }`.
//! 5. Client commands: `Input::Propose(bytes)` / `ProposeBatch`. A replica that does not
//!    lead forwards them to the primary it knows (`forward.rs`); a command nobody can take
//!    comes back in `proposals_rejected` at the replica its client waits at, with a
//!    `Rejection`. A proposal that was accepted for batching may still be lost if the primary
//!    changes: the shell matches request ids inside committed commands and times out the
//!    rest (outcome unknown).
//! 6. Reads: `Input::ReadIndex { id }` → `read_ready (id, slot)`: serve once applied >= slot;
//!    or `read_rejected`. A replica that does not lead asks the primary for the index.
//! 7. Roles: `outputs.events` has `BecamePrimary { view }`, `PrimaryChanged { primary }` and
//!    `NeedSnapshot { from }` (install a state-machine snapshot from that replica, then step
//!    `Input::SnapshotInstalled { upto }`).
//! 8. Truncation: `Input::Compact { upto }` drops in-memory log entries; the core clamps it to
//!    the local applied slot and (by default) to `Replica::safe_compact_upto()`, the slot every
//!    replica has reported applied. The shell deletes WAL segments below the same point and
//!    calls `DurableState::compact` semantics on recovery via `snapshot_upto`.
//! 9. Leadership transfer: `Input::TransferLeadership { to }`.
//! 10. Lost state: a replica whose WAL is gone (replaced disk) starts with
//!     `DurableState::amnesiac` set and does not vote until rebuilt (`amnesia.rs`); the shell
//!     keeps that flag durable until the core emits `Event::Rebuilt`. The truncation point of
//!     item 8 also moves past a replica that lags by more than `log_retain_bytes`; it then
//!     gets `NeedSnapshot`.
//!
//! Messages and records encode with `encode(&mut Vec<u8>)` / `decode(&[u8])` (version byte
//! first, little-endian; framing and CRC belong to the transport and the WAL).

mod amnesia;
mod catchup;
mod codec;
mod config;
mod election;
mod forward;
mod io;
mod log;
mod message;
mod message_codec;
mod read_index;
mod record;
mod replica;
mod replication;
mod state;
mod types;

pub use codec::{DecodeError, CODEC_VERSION};
pub use config::{ConfigError, Faults, PaxosConfig, REPLICA_COUNT_MAX};
pub use io::{Event, Input, Outputs, Rejection};
pub use message::{Message, PromiseEntry, BALLOT_LIMIT, SLOT_LIMIT};
pub use record::{AcceptedValue, DurableState, Record};
pub use replica::Replica;
pub use types::{Ballot, Batch, Lsn, ReadId, ReplicaId, Slot, Value, View};

#[cfg(test)]
mod phase1_tests;
#[cfg(test)]
mod scenario_tests;
