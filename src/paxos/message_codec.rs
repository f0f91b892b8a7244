//! The binary encoding of `Message`: a version byte, a tag, then the fields little-endian
//! (`codec.rs` has the primitives). Decoding never panics and never allocates more than the
//! input can justify; a message naming an absurd ballot or slot decodes, and the core drops it
//! (`Message::is_sane`).

use super::codec::{
    put_ballot, put_commands, put_slot, put_u32, put_u64, put_u8, put_value, DecodeError, Reader,
    CODEC_VERSION,
};
use super::message::{Message, PromiseEntry};
use super::types::{Ballot, ReadId, Slot};

const TAG_PREVOTE: u8 = 1;
const TAG_PREVOTE_REPLY: u8 = 2;
const TAG_PREPARE: u8 = 3;
const TAG_PROMISE: u8 = 4;
const TAG_ACCEPT: u8 = 5;
const TAG_ACCEPTED: u8 = 6;
const TAG_NACK: u8 = 7;
const TAG_COMMIT: u8 = 8;
const TAG_HEARTBEAT: u8 = 9;
const TAG_HEARTBEAT_ACK: u8 = 10;
const TAG_CATCHUP_REQUEST: u8 = 11;
const TAG_CATCHUP: u8 = 12;
const TAG_CATCHUP_TRUNCATED: u8 = 13;
const TAG_TIMEOUT_NOW: u8 = 14;
const TAG_FORWARD: u8 = 15;
const TAG_FORWARD_REFUSED: u8 = 16;
const TAG_READ_INDEX_REQUEST: u8 = 17;
const TAG_READ_INDEX_REPLY: u8 = 18;
const TAG_REBUILD_BARRIER: u8 = 19;

impl Message {
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u8(buf, CODEC_VERSION);
        match self {
            Message::PreVote { ballot } => {
                put_u8(buf, TAG_PREVOTE);
                put_ballot(buf, *ballot);
            }
            Message::PreVoteReply { ballot, granted } => {
                put_u8(buf, TAG_PREVOTE_REPLY);
                put_ballot(buf, *ballot);
                put_u8(buf, u8::from(*granted));
            }
            Message::Prepare {
                ballot,
                from_slot,
                released,
            } => {
                put_u8(buf, TAG_PREPARE);
                put_ballot(buf, *ballot);
                put_slot(buf, *from_slot);
                put_u8(buf, u8::from(released.is_some()));
                put_ballot(buf, released.unwrap_or(Ballot(0)));
            }
            Message::Promise {
                ballot,
                log_start,
                commit_upto,
                entries,
                amnesiac,
                more,
            } => {
                put_u8(buf, TAG_PROMISE);
                put_u8(buf, u8::from(*more));
                put_ballot(buf, *ballot);
                put_slot(buf, *log_start);
                put_slot(buf, *commit_upto);
                put_u8(buf, u8::from(*amnesiac));
                put_u32(buf, entries.len() as u32);
                for e in entries {
                    put_slot(buf, e.slot);
                    put_ballot(buf, e.ballot);
                    put_u8(buf, u8::from(e.committed));
                    put_value(buf, &e.value);
                }
            }
            Message::Accept {
                ballot,
                slot,
                value,
                commit_upto,
            } => {
                put_u8(buf, TAG_ACCEPT);
                put_ballot(buf, *ballot);
                put_slot(buf, *slot);
                put_slot(buf, *commit_upto);
                put_value(buf, value);
            }
            Message::Accepted { ballot, slot } => {
                put_u8(buf, TAG_ACCEPTED);
                put_ballot(buf, *ballot);
                put_slot(buf, *slot);
            }
            Message::Nack { promised } => {
                put_u8(buf, TAG_NACK);
                put_ballot(buf, *promised);
            }
            Message::Commit {
                ballot,
                commit_upto,
            } => {
                put_u8(buf, TAG_COMMIT);
                put_ballot(buf, *ballot);
                put_slot(buf, *commit_upto);
            }
            Message::Heartbeat {
                ballot,
                commit_upto,
                read_seq,
                compact_upto,
                log_end,
                bootstrap,
            } => {
                put_u8(buf, TAG_HEARTBEAT);
                put_ballot(buf, *ballot);
                put_slot(buf, *commit_upto);
                put_u64(buf, *read_seq);
                put_slot(buf, *compact_upto);
                put_slot(buf, *log_end);
                put_u8(buf, u8::from(*bootstrap));
            }
            Message::HeartbeatAck {
                ballot,
                read_seq,
                commit_upto,
                applied_upto,
            } => {
                put_u8(buf, TAG_HEARTBEAT_ACK);
                put_ballot(buf, *ballot);
                put_u64(buf, *read_seq);
                put_slot(buf, *commit_upto);
                put_slot(buf, *applied_upto);
            }
            Message::CatchupRequest { from_slot } => {
                put_u8(buf, TAG_CATCHUP_REQUEST);
                put_slot(buf, *from_slot);
            }
            Message::Catchup {
                entries,
                commit_upto,
            } => {
                put_u8(buf, TAG_CATCHUP);
                put_slot(buf, *commit_upto);
                put_u32(buf, entries.len() as u32);
                for (slot, value) in entries {
                    put_slot(buf, *slot);
                    put_value(buf, value);
                }
            }
            Message::CatchupTruncated { log_start } => {
                put_u8(buf, TAG_CATCHUP_TRUNCATED);
                put_slot(buf, *log_start);
            }
            Message::TimeoutNow { ballot } => {
                put_u8(buf, TAG_TIMEOUT_NOW);
                put_ballot(buf, *ballot);
            }
            Message::Forward { commands } => {
                put_u8(buf, TAG_FORWARD);
                put_commands(buf, commands);
            }
            Message::ForwardRefused {
                commands,
                overloaded,
            } => {
                put_u8(buf, TAG_FORWARD_REFUSED);
                put_u8(buf, u8::from(*overloaded));
                put_commands(buf, commands);
            }
            Message::ReadIndexRequest { id } => {
                put_u8(buf, TAG_READ_INDEX_REQUEST);
                put_u64(buf, id.0);
            }
            Message::ReadIndexReply { id, read_index } => {
                put_u8(buf, TAG_READ_INDEX_REPLY);
                put_u64(buf, id.0);
                put_u8(buf, u8::from(read_index.is_some()));
                put_slot(buf, read_index.unwrap_or(Slot(0)));
            }
            Message::RebuildBarrier { ballot } => {
                put_u8(buf, TAG_REBUILD_BARRIER);
                put_ballot(buf, *ballot);
            }
        }
    }

    pub fn decode(input: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(input)?;
        let msg = match r.u8()? {
            TAG_PREVOTE => Message::PreVote {
                ballot: r.ballot()?,
            },
            TAG_PREVOTE_REPLY => Message::PreVoteReply {
                ballot: r.ballot()?,
                granted: r.bool()?,
            },
            TAG_PREPARE => {
                let ballot = r.ballot()?;
                let from_slot = r.slot()?;
                let has_released = r.bool()?;
                let released = r.ballot()?;
                Message::Prepare {
                    ballot,
                    from_slot,
                    released: has_released.then_some(released),
                }
            }
            TAG_PROMISE => {
                let more = r.u8()? != 0;
                let ballot = r.ballot()?;
                let log_start = r.slot()?;
                let commit_upto = r.slot()?;
                let amnesiac = r.u8()? != 0;
                let count = r.count(18)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push(PromiseEntry {
                        slot: r.slot()?,
                        ballot: r.ballot()?,
                        committed: r.bool()?,
                        value: r.value()?,
                    });
                }
                Message::Promise {
                    ballot,
                    log_start,
                    commit_upto,
                    entries,
                    amnesiac,
                    more,
                }
            }
            TAG_ACCEPT => Message::Accept {
                ballot: r.ballot()?,
                slot: r.slot()?,
                commit_upto: r.slot()?,
                value: r.value()?,
            },
            TAG_ACCEPTED => Message::Accepted {
                ballot: r.ballot()?,
                slot: r.slot()?,
            },
            TAG_NACK => Message::Nack {
                promised: r.ballot()?,
            },
            TAG_COMMIT => Message::Commit {
                ballot: r.ballot()?,
                commit_upto: r.slot()?,
            },
            TAG_HEARTBEAT => Message::Heartbeat {
                ballot: r.ballot()?,
                commit_upto: r.slot()?,
                read_seq: r.u64()?,
                compact_upto: r.slot()?,
                log_end: r.slot()?,
                bootstrap: r.u8()? != 0,
            },
            TAG_HEARTBEAT_ACK => Message::HeartbeatAck {
                ballot: r.ballot()?,
                read_seq: r.u64()?,
                commit_upto: r.slot()?,
                applied_upto: r.slot()?,
            },
            TAG_CATCHUP_REQUEST => Message::CatchupRequest {
                from_slot: r.slot()?,
            },
            TAG_CATCHUP => {
                let commit_upto = r.slot()?;
                let count = r.count(9)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push((r.slot()?, r.value()?));
                }
                Message::Catchup {
                    entries,
                    commit_upto,
                }
            }
            TAG_CATCHUP_TRUNCATED => Message::CatchupTruncated {
                log_start: r.slot()?,
            },
            TAG_TIMEOUT_NOW => Message::TimeoutNow {
                ballot: r.ballot()?,
            },
            TAG_FORWARD => Message::Forward {
                commands: r.commands()?,
            },
            TAG_FORWARD_REFUSED => {
                let overloaded = r.bool()?;
                Message::ForwardRefused {
                    commands: r.commands()?,
                    overloaded,
                }
            }
            TAG_READ_INDEX_REQUEST => Message::ReadIndexRequest {
                id: ReadId(r.u64()?),
            },
            TAG_READ_INDEX_REPLY => {
                let id = ReadId(r.u64()?);
                let known = r.bool()?;
                let slot = r.slot()?;
                Message::ReadIndexReply {
                    id,
                    read_index: known.then_some(slot),
                }
            }
            TAG_REBUILD_BARRIER => Message::RebuildBarrier {
                ballot: r.ballot()?,
            },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::{Batch, Value};
    use bytes::Bytes;

    /// Tiny deterministic generator so the property test needs no dev-dependency.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn value(&mut self) -> Value {
            if self.next().is_multiple_of(3) {
                return Value::Noop;
            }
            Value::Batch(Batch::new(self.commands()))
        }
        fn commands(&mut self) -> Vec<Bytes> {
            let n = (self.next() % 4) as usize;
            (0..n)
                .map(|_| {
                    let len = (self.next() % 20) as usize;
                    Bytes::from((0..len).map(|_| self.next() as u8).collect::<Vec<u8>>())
                })
                .collect()
        }
        fn message(&mut self) -> Message {
            let b = Ballot(self.next());
            let s = Slot(self.next());
            match self.next() % 19 {
                0 => Message::PreVote { ballot: b },
                1 => Message::PreVoteReply {
                    ballot: b,
                    granted: self.next().is_multiple_of(2),
                },
                2 => Message::Prepare {
                    ballot: b,
                    from_slot: s,
                    released: self.next().is_multiple_of(2).then_some(Ballot(self.next())),
                },
                3 => Message::Promise {
                    ballot: b,
                    log_start: s,
                    commit_upto: Slot(self.next()),
                    entries: (0..self.next() % 4)
                        .map(|_| PromiseEntry {
                            slot: Slot(self.next()),
                            ballot: Ballot(self.next()),
                            value: self.value(),
                            committed: self.next().is_multiple_of(2),
                        })
                        .collect(),
                    amnesiac: self.next().is_multiple_of(2),
                    more: self.next().is_multiple_of(2),
                },
                4 => Message::Accept {
                    ballot: b,
                    slot: s,
                    value: self.value(),
                    commit_upto: Slot(self.next()),
                },
                5 => Message::Accepted { ballot: b, slot: s },
                6 => Message::Nack { promised: b },
                7 => Message::Commit {
                    ballot: b,
                    commit_upto: s,
                },
                8 => Message::Heartbeat {
                    ballot: b,
                    commit_upto: s,
                    read_seq: self.next(),
                    compact_upto: Slot(self.next()),
                    log_end: Slot(self.next()),
                    bootstrap: self.next().is_multiple_of(2),
                },
                9 => Message::HeartbeatAck {
                    ballot: b,
                    read_seq: self.next(),
                    commit_upto: s,
                    applied_upto: Slot(self.next()),
                },
                10 => Message::CatchupRequest { from_slot: s },
                11 => Message::Catchup {
                    entries: (0..self.next() % 4)
                        .map(|_| (Slot(self.next()), self.value()))
                        .collect(),
                    commit_upto: s,
                },
                12 => Message::CatchupTruncated { log_start: s },
                13 => Message::TimeoutNow { ballot: b },
                14 => Message::Forward {
                    commands: self.commands(),
                },
                15 => Message::ForwardRefused {
                    commands: self.commands(),
                    overloaded: self.next().is_multiple_of(2),
                },
                16 => Message::ReadIndexRequest {
                    id: ReadId(self.next()),
                },
                17 => Message::RebuildBarrier { ballot: b },
                _ => Message::ReadIndexReply {
                    id: ReadId(self.next()),
                    read_index: self.next().is_multiple_of(2).then_some(s),
                },
            }
        }
    }

    #[test]
    fn round_trip_random_messages() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5_000 {
            let m = g.message();
            let mut buf = Vec::new();
            m.encode(&mut buf);
            assert_eq!(Message::decode(&buf), Ok(m));
        }
    }

    #[test]
    fn truncated_and_corrupt_inputs_are_errors_not_panics() {
        let mut g = Gen(42);
        for _ in 0..2_000 {
            let m = g.message();
            let mut buf = Vec::new();
            m.encode(&mut buf);
            for cut in 0..buf.len() {
                assert!(Message::decode(&buf[..cut]).is_err());
            }
            let i = (g.next() as usize) % buf.len();
            buf[i] ^= 0xFF;
            let _ = Message::decode(&buf);
        }
        let mut buf = Vec::new();
        Message::Nack {
            promised: Ballot(1),
        }
        .encode(&mut buf);
        buf.push(0);
        assert_eq!(Message::decode(&buf), Err(DecodeError::Trailing(1)));
        buf[0] = 9;
        assert_eq!(Message::decode(&buf), Err(DecodeError::Version(9)));
    }
}
