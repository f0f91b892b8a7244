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
    log_start: Slot,
    commit_upto: Slot,
    emitted_upto: Slot,
    applied_upto: Slot,
}

impl Log {
    pub fn recover(durable: &DurableState) -> Log {
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
        Log {
            entries,
            log_start: base.next(),
            commit_upto: base,
            emitted_upto: base,
            applied_upto: base,
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
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records an acceptance; a chosen entry keeps its value (any later proposal for a
    /// chosen slot carries the same value).
    pub fn accept(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        if slot < self.log_start {
            return;
        }
        match self.entries.get_mut(&slot) {
            Some(e) if e.chosen => e.ballot = e.ballot.max(ballot),
            Some(e) => {
                e.ballot = ballot;
                e.value = value;
            }
            None => {
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
        let e = self.entries.entry(slot).or_insert(Entry {
            ballot,
            value: value.clone(),
            chosen: true,
        });
        if !e.chosen {
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
                committed.push((*slot, e.value.clone()));
            }
            self.emitted_upto = self.commit_upto;
        }
    }

    pub fn set_applied(&mut self, upto: Slot) {
        self.applied_upto = self.applied_upto.max(upto.min(self.emitted_upto));
    }

    /// Drops entries through `upto` (callers clamp it to what is safely applied).
    pub fn compact(&mut self, upto: Slot) {
        let upto = upto.min(self.applied_upto);
        if upto < self.log_start {
            return;
        }
        self.entries = self.entries.split_off(&upto.next());
        self.log_start = upto.next();
    }

    /// The state machine now covers every slot through `upto`.
    pub fn install_snapshot(&mut self, upto: Slot, committed: &mut Vec<(Slot, Value)>) {
        if upto <= self.commit_upto {
            return;
        }
        self.entries = self.entries.split_off(&upto.next());
        self.log_start = upto.next();
        self.commit_upto = upto;
        self.emitted_upto = upto;
        self.applied_upto = upto;
        self.advance_commit(committed);
    }

    /// What a Promise reports: every entry from `from`, flagged when known chosen.
    pub fn promise_entries(&self, from: Slot) -> Vec<PromiseEntry> {
        self.entries
            .range(from.max(self.log_start)..)
            .map(|(slot, e)| PromiseEntry {
                slot: *slot,
                ballot: e.ballot,
                value: e.value.clone(),
                committed: e.chosen || *slot <= self.commit_upto,
            })
            .collect()
    }

    /// Up to `max` committed slots from `from` (contiguous).
    pub fn committed_range(&self, from: Slot, max: usize) -> Vec<(Slot, Value)> {
        if from > self.commit_upto {
            return Vec::new();
        }
        self.entries
            .range(from..=self.commit_upto)
            .take(max)
            .map(|(s, e)| (*s, e.value.clone()))
            .collect()
    }
}
