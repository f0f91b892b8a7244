//! Where a slot's time goes, for `/metrics`: on the primary, from proposing a slot (its Accept
//! leaving) to the slot being chosen; on an acceptor, from an Accept arriving to its Accepted
//! leaving (the WAL write and the executor's waits around it). The difference between the two,
//! less the WAL, is the time the messages spend between the executors.
//!
//! Owns: the start times of slots still open, at most `OPEN_MAX` of each kind (the oldest go
//! first; slots are proposed and accepted in increasing order, so a slot that never finishes,
//! re-proposed or abandoned in a view change, is dropped once a later one finishes).

use std::collections::VecDeque;
use std::time::Instant;

use crate::paxos::Slot;

/// Open slots remembered per kind at most.
const OPEN_MAX: usize = 1024;

#[derive(Default)]
pub struct SlotTiming {
    proposed: VecDeque<(Slot, Instant)>,
    accepting: VecDeque<(Slot, Instant)>,
}

impl SlotTiming {
    /// This primary sent the Accept of `slot` (the first time counts).
    pub fn proposed(&mut self, slot: Slot, now: Instant) {
        push(&mut self.proposed, slot, now);
    }

    /// `slot` was chosen: how long since this replica proposed it, if it did.
    pub fn chosen(&mut self, slot: Slot, now: Instant) -> Option<std::time::Duration> {
        finish(&mut self.proposed, slot, now)
    }

    /// An Accept of `slot` arrived.
    pub fn accept_arrived(&mut self, slot: Slot, now: Instant) {
        push(&mut self.accepting, slot, now);
    }

    /// This replica's Accepted of `slot` leaves: how long since the Accept arrived.
    pub fn accepted_sent(&mut self, slot: Slot, now: Instant) -> Option<std::time::Duration> {
        finish(&mut self.accepting, slot, now)
    }
}

fn push(open: &mut VecDeque<(Slot, Instant)>, slot: Slot, now: Instant) {
    if open.back().is_some_and(|(s, _)| *s >= slot) {
        return;
    }
    if open.len() == OPEN_MAX {
        open.pop_front();
    }
    open.push_back((slot, now));
}

fn finish(
    open: &mut VecDeque<(Slot, Instant)>,
    slot: Slot,
    now: Instant,
) -> Option<std::time::Duration> {
    while let Some(&(s, t)) = open.front() {
        if s > slot {
            return None;
        }
        open.pop_front();
        if s == slot {
            return Some(now.saturating_duration_since(t));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slot_is_timed_from_its_first_start_and_older_open_slots_are_dropped() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = SlotTiming::default();
        t.proposed(Slot(1), ms(0));
        t.proposed(Slot(2), ms(1));
        t.proposed(Slot(2), ms(5)); // a resend: the first one counts
        t.proposed(Slot(3), ms(2));
        assert_eq!(t.chosen(Slot(2), ms(10)), Some(Duration::from_millis(9)));
        assert_eq!(
            t.chosen(Slot(1), ms(11)),
            None,
            "dropped when slot 2 was chosen"
        );
        assert_eq!(t.chosen(Slot(3), ms(12)), Some(Duration::from_millis(10)));
        assert_eq!(t.chosen(Slot(3), ms(13)), None, "counted once");
        assert_eq!(t.chosen(Slot(4), ms(13)), None, "never proposed here");

        t.accept_arrived(Slot(7), ms(20));
        assert_eq!(t.accepted_sent(Slot(6), ms(21)), None);
        assert_eq!(
            t.accepted_sent(Slot(7), ms(23)),
            Some(Duration::from_millis(3))
        );
    }

    #[test]
    fn open_slots_are_bounded() {
        let t0 = Instant::now();
        let mut t = SlotTiming::default();
        for s in 0..(OPEN_MAX as u64 + 10) {
            t.proposed(Slot(s), t0);
        }
        assert_eq!(t.proposed.len(), OPEN_MAX);
        assert_eq!(t.chosen(Slot(5), t0), None, "among the oldest, dropped");
        assert!(t.chosen(Slot(OPEN_MAX as u64), t0).is_some());
    }
}
