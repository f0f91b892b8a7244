//! The crate's newtypes, in one place: commit versions and applied sequences (defined here), and
//! the Paxos core's replica ids, slots, ballots and LSNs (defined in `paxos/types.rs`, which
//! must not import from outside `paxos/`, and re-exported here).
//!
//! A `Version` is a commit version: every command applied from the replicated log consumes exactly
//! one, in log order, so versions are strictly increasing and identical on every replica.
//! A `Sequence` numbers the batches of the committed log (one per Paxos slot: the store's view
//! of a `Slot`). A `wal::Lsn` numbers the WAL's records across restarts; a `paxos::Lsn` numbers
//! one incarnation's records as the core sees them.

use std::fmt;

pub use crate::paxos::{Ballot, Lsn, ReplicaId, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sequence(pub u64);

impl Version {
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl Sequence {
    pub fn next(self) -> Sequence {
        Sequence(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
