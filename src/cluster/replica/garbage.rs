//! Log values the core let go of, freed a little at a time.
//!
//! A compaction drops everything the store made durable since the last one: at the default
//! flush interval, about a second of the log, tens of thousands of commands. Freeing them in
//! the turn that compacted held the executor for ~3 ms (the replica's replies and peer messages
//! waited behind it). The core hands the values over (`Outputs::released`) and the shell frees
//! at most `FREE_PER_TURN` commands at the end of each loop turn. Under load the loop turns
//! thousands of times a second, so the backlog drains well ahead of any write rate. A quiet
//! loop (fewer than `QUIET_TURNS` turns since the last heartbeat tick) frees up to
//! `FREE_PER_TICK` on the tick instead, so an idle replica still frees ~160k commands a second
//! (a cut of a whole `log_retain_bytes`, ~1.8M commands of 150 B, in about ten seconds). It
//! never holds more than the log held.

use std::collections::VecDeque;

use crate::paxos::Value;

/// Commands freed per loop turn (a value is freed whole, so a turn may free one batch more).
pub(super) const FREE_PER_TURN: usize = 2048;
/// Commands freed on a heartbeat tick of a quiet loop (~1 ms of work, when nobody waits).
const FREE_PER_TICK: usize = 16 * 1024;
/// Fewer loop turns than this between two ticks: the loop is quiet.
const QUIET_TURNS: u32 = 16;

#[derive(Default)]
pub(super) struct Garbage {
    values: VecDeque<Value>,
    /// Loop turns since the last tick.
    turns: u32,
}

impl Garbage {
    /// Takes what a step released.
    pub(super) fn take(&mut self, released: &mut Vec<Value>) {
        self.values.extend(released.drain(..));
    }

    /// The end of a loop turn: frees up to `FREE_PER_TURN` commands.
    pub(super) fn turn(&mut self) {
        self.turns = self.turns.saturating_add(1);
        self.free_some(FREE_PER_TURN);
    }

    /// A heartbeat tick: a quiet loop frees up to `FREE_PER_TICK` commands.
    pub(super) fn tick(&mut self) {
        if self.turns < QUIET_TURNS {
            self.free_some(FREE_PER_TICK);
        }
        self.turns = 0;
    }

    /// Frees values until `commands` commands went or none is left.
    fn free_some(&mut self, commands: usize) {
        let mut freed = 0;
        while freed < commands {
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

    fn batches(n: usize) -> Vec<Value> {
        (0..n).map(|_| batch(1000)).collect()
    }

    #[test]
    fn a_turn_frees_a_bounded_amount_until_empty() {
        let mut g = Garbage::default();
        // 10 batches of 1,000 commands: 2,048 per turn, a batch freed whole.
        let mut released = batches(10);
        released.push(Value::Noop);
        g.take(&mut released);
        assert!(released.is_empty());
        assert_eq!(g.len(), 11);
        g.turn();
        assert_eq!(g.len(), 8, "3 batches (3,000 commands) reach the budget");
        let mut turns = 1;
        while g.len() > 0 {
            g.turn();
            turns += 1;
        }
        assert_eq!(turns, 4);
        g.turn();
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn a_tick_frees_more_only_when_the_loop_is_quiet() {
        let mut g = Garbage::default();
        g.take(&mut batches(40));
        // A quiet loop: the tick frees 17 batches (17,000 commands reach 16,384).
        g.tick();
        assert_eq!(g.len(), 23);
        // A busy loop: its turns free the backlog; the tick adds nothing.
        for _ in 0..QUIET_TURNS {
            g.take(&mut batches(3));
            g.turn();
        }
        let before = g.len();
        g.tick();
        assert_eq!(g.len(), before);
        // The next tick with no turns in between is quiet again.
        g.tick();
        assert_eq!(g.len(), before.saturating_sub(17));
    }
}
