//! WAL records the core asks the shell to persist, and the state a restart recovers from them.
//!
//! Owns: `Record`, its codec, and `DurableState` (the fold of records in WAL order).
//! Must not: do IO. Invariants: replaying the records of a WAL in order through
//! `DurableState::apply` yields exactly the promises the replica may have revealed; an
//! `Accept` record also implies a promise of its ballot.

use super::codec::{put_ballot, put_slot, put_u8, put_value, DecodeError, Reader, CODEC_VERSION};
use super::types::{Ballot, Slot, Value};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The acceptor promised `ballot` (Phase 1).
    Promise { ballot: Ballot },
    /// The acceptor accepted `value` at `slot` in `ballot` (Phase 2).
    Accept {
        slot: Slot,
        ballot: Ballot,
        value: Value,
    },
}

const TAG_PROMISE: u8 = 1;
const TAG_ACCEPT: u8 = 2;

impl Record {
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u8(buf, CODEC_VERSION);
        match self {
            Record::Promise { ballot } => {
                put_u8(buf, TAG_PROMISE);
                put_ballot(buf, *ballot);
            }
            Record::Accept {
                slot,
                ballot,
                value,
            } => {
                put_u8(buf, TAG_ACCEPT);
                put_slot(buf, *slot);
                put_ballot(buf, *ballot);
                put_value(buf, value);
            }
        }
    }

    pub fn decode(input: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader::new(input)?;
        let rec = match r.u8()? {
            TAG_PROMISE => Record::Promise {
                ballot: r.ballot()?,
            },
            TAG_ACCEPT => Record::Accept {
                slot: r.slot()?,
                ballot: r.ballot()?,
                value: r.value()?,
            },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.finish()?;
        Ok(rec)
    }
}

/// An accepted (ballot, value) pair as recovered from the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedValue {
    pub ballot: Ballot,
    pub value: Value,
}

/// What a restart recovers: fold every WAL record into it with `apply`, then set
/// `snapshot_upto` to the slot the state machine has durably applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// Highest ballot promised (explicitly, or implicitly by accepting in it).
    pub promised: Ballot,
    /// Accepted entries by slot; later records for a slot replace earlier ones.
    pub accepted: BTreeMap<Slot, AcceptedValue>,
    /// Every slot up to here is applied durably by the state machine (snapshot base).
    pub snapshot_upto: Slot,
    /// The replica lost its durable state (it starts on an empty WAL, or a rebuild it started
    /// so has not finished): it may have forgotten promises and votes, so it votes only once
    /// rebuilt (see `Replica`'s amnesia rules). Set by the shell, not by records.
    pub amnesiac: bool,
}

impl DurableState {
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Promise { ballot } => self.promised = self.promised.max(*ballot),
            Record::Accept {
                slot,
                ballot,
                value,
            } => {
                self.promised = self.promised.max(*ballot);
                if *slot > self.snapshot_upto {
                    self.accepted.insert(
                        *slot,
                        AcceptedValue {
                            ballot: *ballot,
                            value: value.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Drops entries the state machine already covers (WAL retention).
    pub fn compact(&mut self, upto: Slot) {
        self.snapshot_upto = self.snapshot_upto.max(upto);
        self.accepted = self.accepted.split_off(&self.snapshot_upto.next());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::Batch;
    use bytes::Bytes;

    #[test]
    fn records_round_trip_and_fold() {
        let recs = vec![
            Record::Promise { ballot: Ballot(3) },
            Record::Accept {
                slot: Slot(1),
                ballot: Ballot(3),
                value: Value::Batch(Batch::new(vec![Bytes::from_static(b"x")])),
            },
            Record::Accept {
                slot: Slot(2),
                ballot: Ballot(7),
                value: Value::Noop,
            },
        ];
        let mut st = DurableState::default();
        for r in &recs {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            let back = Record::decode(&buf).unwrap();
            assert_eq!(&back, r);
            for cut in 0..buf.len() {
                assert!(Record::decode(&buf[..cut]).is_err());
            }
            st.apply(&back);
        }
        assert_eq!(st.promised, Ballot(7));
        assert_eq!(st.accepted.len(), 2);
        st.compact(Slot(1));
        assert_eq!(
            st.accepted.keys().copied().collect::<Vec<_>>(),
            vec![Slot(2)]
        );
    }
}
