//! The simulated KV workload: command encoding, the replicated state machine every simulated
//! shell applies committed slots to, and client bookkeeping.
//!
//! Owns: `Command`, `StateMachine`. Must not: know about the network or the core's internals.
//! Invariants: every written value is unique (derived from the op id), so the linearizability
//! check can tell writes apart; applying the same log yields the same state everywhere.

use bytes::{BufMut, Bytes, BytesMut};
use paxoskv::linearizability::{KvOp, KvResult};
use paxoskv::paxos::{Slot, Value};
use std::collections::BTreeMap;

pub const KEY_COUNT: u8 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub op_id: u64,
    pub key: u8,
    pub op: KvOp,
}

fn put_opt(buf: &mut BytesMut, v: &Option<Bytes>) {
    match v {
        None => buf.put_u8(0),
        Some(b) => {
            buf.put_u8(1);
            buf.put_u8(b.len() as u8);
            buf.put_slice(b);
        }
    }
}

fn get_opt(b: &[u8], at: &mut usize) -> Option<Option<Bytes>> {
    let tag = *b.get(*at)?;
    *at += 1;
    if tag == 0 {
        return Some(None);
    }
    let len = *b.get(*at)? as usize;
    *at += 1;
    let v = b.get(*at..*at + len)?;
    *at += len;
    Some(Some(Bytes::copy_from_slice(v)))
}

impl Command {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(32);
        buf.put_u64_le(self.op_id);
        buf.put_u8(self.key);
        match &self.op {
            KvOp::Get => buf.put_u8(0),
            KvOp::Put(v) => {
                buf.put_u8(1);
                put_opt(&mut buf, &Some(v.clone()));
            }
            KvOp::Delete => buf.put_u8(2),
            KvOp::CompareAndSet { expected, new } => {
                buf.put_u8(3);
                put_opt(&mut buf, expected);
                put_opt(&mut buf, new);
            }
        }
        buf.freeze()
    }

    pub fn decode(b: &[u8]) -> Option<Command> {
        let op_id = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let key = *b.get(8)?;
        let mut at = 10;
        let op = match *b.get(9)? {
            0 => KvOp::Get,
            1 => KvOp::Put(get_opt(b, &mut at)??),
            2 => KvOp::Delete,
            3 => {
                let expected = get_opt(b, &mut at)?;
                let new = get_opt(b, &mut at)?;
                KvOp::CompareAndSet { expected, new }
            }
            _ => return None,
        };
        Some(Command { op_id, key, op })
    }
}

/// The replicated KV state machine of one simulated replica (durable: applied atomically).
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    pub applied: Slot,
    pub kv: BTreeMap<u8, Bytes>,
}

impl StateMachine {
    /// Applies a committed slot; returns (op id, result) for every command in it.
    pub fn apply(&mut self, slot: Slot, value: &Value) -> Vec<(u64, KvResult)> {
        self.applied = slot;
        let mut results = Vec::new();
        for raw in value.commands() {
            let Some(cmd) = Command::decode(raw) else {
                continue;
            };
            let r = match cmd.op {
                KvOp::Get => KvResult::Value(self.kv.get(&cmd.key).cloned()),
                KvOp::Put(v) => {
                    self.kv.insert(cmd.key, v);
                    KvResult::Done
                }
                KvOp::Delete => {
                    self.kv.remove(&cmd.key);
                    KvResult::Done
                }
                KvOp::CompareAndSet { expected, new } => {
                    let matched = self.kv.get(&cmd.key) == expected.as_ref();
                    if matched {
                        match new {
                            Some(v) => self.kv.insert(cmd.key, v),
                            None => self.kv.remove(&cmd.key),
                        };
                    }
                    KvResult::Cas(matched)
                }
            };
            results.push((cmd.op_id, r));
        }
        results
    }
}
