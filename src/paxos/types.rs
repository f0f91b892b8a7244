//! Newtypes for the identities and positions the Paxos core deals in.
//!
//! Owns: `ReplicaId`, `View`, `Ballot`, `Slot`, `Lsn`, `ReadId` and the slot value (`Value`,
//! `Batch`). Must not: carry behaviour beyond ordering and the `view mod n` primary rule.
//! Invariants: a ballot *is* a view number (`Ballot(v)` is led by replica `v mod n`), so two
//! different replicas can never propose in the same ballot; `Slot(0)` means "no slot" and real
//! slots start at 1; an `Lsn` is only meaningful within one incarnation of a replica.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Index of a replica in the cluster, `0..n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplicaId(pub u32);

/// A view number; view `v` is led by replica `v mod n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct View(pub u64);

/// A Paxos ballot. Ballots are totally ordered and equal to view numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot(pub u64);

/// A position in the replicated log. `Slot(0)` is "before the first slot".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Slot(pub u64);

/// Persist sequence number: the core numbers every record it asks the shell to persist.
/// Restarts at 1 in every incarnation of a `Replica`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Shell-chosen identifier of a linearizable read request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReadId(pub u64);

impl Ballot {
    /// The view this ballot belongs to (identity mapping, kept explicit for readers).
    pub fn view(self) -> View {
        View(self.0)
    }

    /// The primary that owns this ballot in a cluster of `replica_count` replicas.
    pub fn primary(self, replica_count: u32) -> ReplicaId {
        ReplicaId((self.0 % u64::from(replica_count.max(1))) as u32)
    }

    /// The smallest ballot greater than `self` that `me` owns.
    pub fn next_owned_by(self, me: ReplicaId, replica_count: u32) -> Ballot {
        let n = u64::from(replica_count.max(1));
        let base = (self.0 / n) * n + u64::from(me.0);
        if base > self.0 {
            Ballot(base)
        } else {
            Ballot(base + n)
        }
    }
}

impl Slot {
    pub fn next(self) -> Slot {
        Slot(self.0 + 1)
    }
    pub fn prev(self) -> Slot {
        Slot(self.0.saturating_sub(1))
    }
}

/// A batch of opaque client commands agreed in one slot. Cloning is O(1) (shared). Its
/// command bytes are counted once, when it is built: the log adds and subtracts them on every
/// accept and cut, and walking every command each time made a cut of a second's log take
/// milliseconds.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    commands: Arc<[Bytes]>,
    bytes: usize,
}

impl Batch {
    pub fn new(commands: Vec<Bytes>) -> Batch {
        let bytes = commands.iter().map(|c| c.len()).sum();
        Batch {
            commands: commands.into(),
            bytes,
        }
    }
    pub fn commands(&self) -> &[Bytes] {
        &self.commands
    }
    pub fn len(&self) -> usize {
        self.commands.len()
    }
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({} cmds, {} B)", self.len(), self.size_bytes())
    }
}

/// What a slot holds once chosen: a batch of commands, or a no-op that fills a gap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Noop,
    Batch(Batch),
}

impl Value {
    /// Commands in the value (empty for `Noop`).
    pub fn commands(&self) -> &[Bytes] {
        match self {
            Value::Noop => &[],
            Value::Batch(b) => b.commands(),
        }
    }

    /// Command bytes the value holds (what it costs in memory and on the wire, roughly).
    pub fn size_bytes(&self) -> usize {
        match self {
            Value::Noop => 0,
            Value::Batch(b) => b.size_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_owned_ballot_is_greater_and_owned() {
        for n in [1u32, 3, 5] {
            for b in 0..40u64 {
                for me in 0..n {
                    let nb = Ballot(b).next_owned_by(ReplicaId(me), n);
                    assert!(nb > Ballot(b));
                    assert_eq!(nb.primary(n), ReplicaId(me));
                    assert!(nb.0 - b <= u64::from(n));
                }
            }
        }
    }

    #[test]
    fn a_batch_counts_its_command_bytes() {
        let b = Batch::new(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from(vec![7u8; 1000]),
        ]);
        assert_eq!(b.size_bytes(), 1003);
        assert_eq!(b.len(), 3);
        assert_eq!(Value::Batch(b.clone()).size_bytes(), 1003);
        assert_eq!(Value::Noop.size_bytes(), 0);
        assert_eq!(Batch::new(Vec::new()).size_bytes(), 0);
    }
}
