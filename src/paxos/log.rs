//! The replica's in-memory view of the replicated log: accepted entries, what is known
//! chosen, the commit index, and what has been handed to the shell.
//!
//! Owns: `Log`. Must not: send messages or persist (callers do). Invariants:
//! `log_start - 1 <= applied_upto <= emitted_upto <= commit_upto`; every slot in
//! `log_start..=commit_upto` has an entry marked chosen; entries below `log_start` are gone
//! (they are covered by the state machine); `emitted_upto` only grows, so every slot is
//! emitted once.

use super::message::PromiseEntry;
use super::record::DurableState;
use super::types::{Ballot, Slot, Value};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub ballot: Ballot,
    pub value: Value,
    /// Known chosen (by a quorum we counted, a primary's commit index, or a catch-up).
    pub chosen: bool,
}

#[derive(Debug)]
pub(crate) struct Log {
    entries: BTreeMap<Slot, Entry>,
    /// Command bytes of every entry held (kept in step with `entries`).
    bytes: u64,
    log_start: Slot,
    commit_upto: Slot,
    emitted_upto: Slot,
    applied_upto: Slot,
    /// Check the log's invariants (off only under the simulator's deliberate faults, which
    /// break them on purpose for the checkers to find).
    strict: bool,
}

impl Log {
    /// The log a replica recovers from `durable`; `strict` checks its invariants.
    pub fn recover(durable: &DurableState, strict: bool) -> Log {
        let base = durable.snapshot_upto;
        let entries = durable
            .accepted
            .range(base.next()..)
            .map(|(slot, a)| {
                let entry = Entry {
                    ballot: a.ballot,
                    value: a.value.clone(),
                    chosen: false,
                };
                (*slot, entry)
            })
            .collect();
        let bytes = total_bytes(&entries);
        Log {
            entries,
            bytes,
            log_start: base.next(),
            commit_upto: base,
            emitted_upto: base,
            applied_upto: base,
            strict,
        }
    }

    pub fn log_start(&self) -> Slot {
        self.log_start
    }
    pub fn commit_upto(&self) -> Slot {
        self.commit_upto
    }
    pub fn applied_upto(&self) -> Slot {
        self.applied_upto
    }
    /// Command bytes held in memory.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The lowest slot through which the log must be cut so that the entries above it hold at
    /// most `budget` command bytes (`log_start - 1` when everything fits). Walks only the
    /// entries that would go.
    pub fn cut_to_fit(&self, budget: u64) -> Slot {
        let mut kept = self.bytes;
        if kept <= budget {
            return self.log_start.prev();
        }
        for (slot, e) in &self.entries {
            kept -= e.value.size_bytes() as u64;
            if kept <= budget {
                return *slot;
            }
        }
        self.entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.log_start.prev())
    }

    /// Drops every entry through `upto`, keeping the byte count in step; their values go to
    /// `released` (the caller decides when to free them).
    fn drop_through(&mut self, upto: Slot, released: &mut Vec<Value>) {
        let kept = self.entries.split_off(&upto.next());
        let dropped = std::mem::replace(&mut self.entries, kept);
        released.reserve(dropped.len());
        for e in dropped.into_values() {
            self.bytes -= e.value.size_bytes() as u64;
            released.push(e.value);
        }
    }

    /// Records an acceptance; a chosen entry keeps its value (any later proposal for a
    /// chosen slot carries the same value).
    pub fn accept(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        if slot < self.log_start {
            return;
        }
        let strict = self.strict;
        match self.entries.get_mut(&slot) {
            Some(e) if e.chosen => {
                debug_assert!(
                    !strict || e.value == value,
                    "slot {slot:?} is chosen, yet ballot {ballot:?} proposes another value"
                );
                e.ballot = e.ballot.max(ballot)
            }
            Some(e) => {
                self.bytes = self.bytes - e.value.size_bytes() as u64 + value.size_bytes() as u64;
                e.ballot = ballot;
                e.value = value;
            }
            None => {
                self.bytes += value.size_bytes() as u64;
                self.entries.insert(
                    slot,
                    Entry {
                        ballot,
                        value,
                        chosen: false,
                    },
                );
            }
        }
    }

    /// Learns that `value` is chosen at `slot`.
    pub fn mark_chosen(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        if slot < self.log_start {
            return;
        }
        let bytes = &mut self.bytes;
        let e = self.entries.entry(slot).or_insert_with(|| {
            *bytes += value.size_bytes() as u64;
            Entry {
                ballot,
                value: value.clone(),
                chosen: true,
            }
        });
        debug_assert!(
            !self.strict || !e.chosen || e.value == value,
            "slot {slot:?} learned chosen twice with different values"
        );
        if !e.chosen {
            *bytes = *bytes - e.value.size_bytes() as u64 + value.size_bytes() as u64;
            e.value = value;
            e.ballot = e.ballot.max(ballot);
            e.chosen = true;
        }
    }

    /// The primary of `ballot` says everything through `hint` is chosen: every entry we
    /// accepted in `ballot` holds the primary's value, so those (contiguous) are chosen.
    /// Returns true when the local commit index reached `hint`.
    pub fn learn_commit(
        &mut self,
        ballot: Ballot,
        hint: Slot,
        committed: &mut Vec<(Slot, Value)>,
    ) -> bool {
        let mut s = self.commit_upto.next();
        while s <= hint {
            match self.entries.get_mut(&s) {
                Some(e) if e.chosen || e.ballot == ballot => e.chosen = true,
                _ => break,
            }
            s = s.next();
        }
        self.advance_commit(committed);
        self.commit_upto >= hint
    }

    /// Moves the commit index over contiguous chosen entries and emits the newly committed.
    pub fn advance_commit(&mut self, committed: &mut Vec<(Slot, Value)>) {
        let mut next = self.commit_upto.next();
        while self.entries.get(&next).is_some_and(|e| e.chosen) {
            self.commit_upto = next;
            next = next.next();
        }
        let from = self.emitted_upto.next();
        if from <= self.commit_upto {
            for (slot, e) in self.entries.range(from..=self.commit_upto) {
                // Commits go out once each, in slot order, without gaps.
                debug_assert_eq!(*slot, self.emitted_upto.next(), "commit out of slot order");
                committed.push((*slot, e.value.clone()));
                self.emitted_upto = *slot;
            }
            debug_assert_eq!(self.emitted_upto, self.commit_upto);
        }
    }

    pub fn set_applied(&mut self, upto: Slot) {
        self.applied_upto = self.applied_upto.max(upto.min(self.emitted_upto));
    }

    /// Drops entries through `upto` (callers clamp it to what is safely applied); their values
    /// go to `released`.
    pub fn compact(&mut self, upto: Slot, released: &mut Vec<Value>) {
        let upto = upto.min(self.applied_upto);
        if upto < self.log_start {
            return;
        }
        self.drop_through(upto, released);
        self.log_start = upto.next();
    }

    /// The state machine now covers every slot through `upto`; the dropped values go to
    /// `released`.
    pub fn install_snapshot(
        &mut self,
        upto: Slot,
        committed: &mut Vec<(Slot, Value)>,
        released: &mut Vec<Value>,
    ) {
        if upto <= self.commit_upto {
            return;
        }
        self.drop_through(upto, released);
        self.log_start = upto.next();
        self.commit_upto = upto;
        self.emitted_upto = upto;
        self.applied_upto = upto;
        self.advance_commit(committed);
    }

    /// What a Promise reports: the entries from `from`, flagged when known chosen, up to
    /// `bytes_max` command bytes (the first entry goes even when larger); true when more
    /// entries follow (the candidate asks again from after the last one).
    pub fn promise_entries(&self, from: Slot, bytes_max: usize) -> (Vec<PromiseEntry>, bool) {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (slot, e) in self.entries.range(from.max(self.log_start)..) {
            bytes += e.value.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                return (out, true);
            }
            out.push(PromiseEntry {
                slot: *slot,
                ballot: e.ballot,
                value: e.value.clone(),
                committed: e.chosen || *slot <= self.commit_upto,
            });
        }
        (out, false)
    }

    /// Up to `max` committed slots from `from` (contiguous), and no more than `bytes_max`
    /// command bytes (the first slot goes even when it alone is larger).
    pub fn committed_range(&self, from: Slot, max: usize, bytes_max: usize) -> Vec<(Slot, Value)> {
        if from > self.commit_upto {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (s, e) in self.entries.range(from..=self.commit_upto).take(max) {
            bytes += e.value.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push((*s, e.value.clone()));
        }
        out
    }
}

fn total_bytes(entries: &BTreeMap<Slot, Entry>) -> u64 {
    entries.values().map(|e| e.value.size_bytes() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::Batch;
    use bytes::Bytes;

    fn value(n: usize) -> Value {
        Value::Batch(Batch::new(vec![Bytes::from(vec![7u8; n])]))
    }

    #[test]
    fn byte_count_follows_accepts_overwrites_and_cuts() {
        let mut log = Log::recover(&DurableState::default(), true);
        for s in 1..=10 {
            log.accept(Slot(s), Ballot(1), value(100));
        }
        assert_eq!(log.bytes(), 1000);
        // A later ballot replaces the value of an unchosen slot.
        log.accept(Slot(10), Ballot(2), value(40));
        assert_eq!(log.bytes(), 940);
        // Keeping at most 250 bytes means cutting through slot 7 (slots 8..=10 hold 240).
        assert_eq!(log.cut_to_fit(250), Slot(7));
        assert_eq!(log.cut_to_fit(10_000), Slot(0));
        let mut committed = Vec::new();
        for s in 1..=10 {
            log.mark_chosen(Slot(s), Ballot(2), value(100));
        }
        log.advance_commit(&mut committed);
        log.set_applied(Slot(10));
        // Learning the chosen value replaces slot 10's 40 bytes with 100.
        assert_eq!(log.bytes(), 1000);
        let mut released = Vec::new();
        log.compact(Slot(7), &mut released);
        assert_eq!(log.entries.len(), 3);
        assert_eq!(log.bytes(), 300);
        // The seven dropped values are handed back, not freed here.
        assert_eq!(released.len(), 7);
        assert!(released.iter().all(|v| v.size_bytes() == 100));
        // Catch-up replies stop at the byte limit, but always carry one slot.
        assert_eq!(log.committed_range(Slot(8), 100, 150).len(), 1);
        assert_eq!(log.committed_range(Slot(8), 100, 10).len(), 1);
        assert_eq!(log.committed_range(Slot(8), 100, 1_000).len(), 3);
        released.clear();
        log.install_snapshot(Slot(20), &mut committed, &mut released);
        assert_eq!(log.bytes(), 0);
        assert_eq!(released.len(), 3);
    }
}
