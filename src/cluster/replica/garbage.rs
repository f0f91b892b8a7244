//! Log values the core let go of, freed a little at a time.
//!
//! A compaction drops everything the store made durable since the last one: at the default
//! flush interval, about a second of the log, tens of thousands of commands. Freeing them in
//! the turn that compacted held the executor for ~3 ms (the replica's replies and peer messages
//! waited behind it). The core hands the values over (`Outputs::released`) and the shell frees
//! at most `FREE_PER_TURN` commands at the end of each loop turn. The loop turns on every
//! batch of events and at least every heartbeat tick, so the backlog drains well ahead of any
//! write rate, and it never holds more than the log held.

use std::collections::VecDeque;

use crate::paxos::Value;

/// Commands freed per loop turn (a value is freed whole, so a turn may free one batch more).
const FREE_PER_TURN: usize = 2048;

#[derive(Default)]
pub(super) struct Garbage {
    values: VecDeque<Value>,
}

impl Garbage {
    /// Takes what a step released.
    pub(super) fn take(&mut self, released: &mut Vec<Value>) {
        self.values.extend(released.drain(..));
    }

    /// Frees values until `FREE_PER_TURN` commands went or none is left.
    pub(super) fn free_some(&mut self) {
        let mut freed = 0;
        while freed < FREE_PER_TURN {
            let Some(v) = self.values.pop_front() else {
                return;
            };
            freed += v.commands().len().max(1);
        }
    }

    /// Values waiting to be freed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::Batch;
    use bytes::Bytes;

    fn batch(commands: usize) -> Value {
        Value::Batch(Batch::new(vec![Bytes::from_static(b"c"); commands]))
    }

    #[test]
    fn frees_a_bounded_amount_per_turn_until_empty() {
        let mut g = Garbage::default();
        // 10 batches of 1,000 commands: 10,000 commands, 2,048 per turn, a batch freed whole.
        let mut released: Vec<Value> = (0..10).map(|_| batch(1000)).collect();
        released.push(Value::Noop);
        g.take(&mut released);
        assert!(released.is_empty());
        assert_eq!(g.len(), 11);
        g.free_some();
        assert_eq!(
            g.len(),
            8,
            "3 batches (3,000 commands) reach the 2,048 budget"
        );
        let mut turns = 1;
        while g.len() > 0 {
            g.free_some();
            turns += 1;
        }
        assert_eq!(turns, 4);
    }

    #[test]
    fn an_empty_backlog_is_a_no_op() {
        let mut g = Garbage::default();
        g.free_some();
        assert_eq!(g.len(), 0);
    }
}
