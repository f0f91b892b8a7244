//! A Wing-Gong / Lowe (Porcupine-style) linearizability checker for a key-value register.
//!
//! Owns: `History` (recorded client operations) and `check`. Must not: know anything about
//! Paxos or the server; it only sees invocations and results. Invariants: a history is
//! checked per key (operations on different keys commute, single-key compare-and-set
//! included); an operation whose outcome is unknown may take effect at any point after its
//! invocation, or never; a failed operation (`fail`) is known not to have taken effect.
//!
//! Record honestly: call `invoke` *before* the request leaves and `complete` *after* the reply
//! arrives. Times are the order of these calls, so recorded intervals contain the real ones
//! and the check can only be more permissive, never wrongly strict.

use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// An operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Get,
    Put(Bytes),
    Delete,
    /// Transactional single-key write: set `new` (`None` deletes) iff the current value is
    /// `expected` (`None` = absent).
    CompareAndSet {
        expected: Option<Bytes>,
        new: Option<Bytes>,
    },
}

/// What the client observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// Result of `Get`.
    Value(Option<Bytes>),
    /// `Put` / `Delete` done.
    Done,
    /// Whether a `CompareAndSet` matched and wrote.
    Cas(bool),
}

/// Handle of one recorded operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(usize);

#[derive(Clone, Debug)]
struct Op {
    client: u64,
    key: Bytes,
    op: KvOp,
    call: u64,
    ret: Option<(u64, KvResult)>,
    failed: bool,
}

/// A history could not be linearized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Bytes,
    /// Operations recorded on that key (completed or pending).
    pub ops_on_key: usize,
    pub history: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history of key {:?} ({} ops) is not linearizable:\n{}",
            self.key, self.ops_on_key, self.history
        )
    }
}

#[derive(Debug, Default, Clone)]
pub struct History {
    ops: Vec<Op>,
    clock: u64,
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Records that `client` invoked `op` on `key` now.
    pub fn invoke(&mut self, client: u64, key: impl Into<Bytes>, op: KvOp) -> OpId {
        let call = self.tick();
        self.ops.push(Op {
            client,
            key: key.into(),
            op,
            call,
            ret: None,
            failed: false,
        });
        OpId(self.ops.len() - 1)
    }

    /// Records the operation's result, observed now.
    pub fn complete(&mut self, id: OpId, result: KvResult) {
        let t = self.tick();
        if let Some(op) = self.ops.get_mut(id.0) {
            op.ret = Some((t, result));
        }
    }

    /// Records that the operation certainly did not take effect.
    pub fn fail(&mut self, id: OpId) {
        if let Some(op) = self.ops.get_mut(id.0) {
            op.failed = true;
        }
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks every key; the first non-linearizable key is reported.
    pub fn check(&self) -> Result<(), Violation> {
        let mut by_key: BTreeMap<&Bytes, Vec<&Op>> = BTreeMap::new();
        for op in &self.ops {
            by_key.entry(&op.key).or_default().push(op);
        }
        for (key, ops) in by_key {
            let relevant: Vec<&Op> = ops
                .iter()
                .copied()
                .filter(|o| !o.failed)
                .filter(|o| o.ret.is_some() || o.op != KvOp::Get)
                .collect();
            if !check_key(&relevant) {
                return Err(Violation {
                    key: key.clone(),
                    ops_on_key: relevant.len(),
                    history: describe(&relevant),
                });
            }
        }
        Ok(())
    }
}

fn describe(ops: &[&Op]) -> String {
    let mut s = String::new();
    for o in ops {
        let ret = match &o.ret {
            Some((t, r)) => format!("{t} -> {r:?}"),
            None => "pending".to_string(),
        };
        s.push_str(&format!(
            "  client {} [{} .. {}] {:?}\n",
            o.client, o.call, ret, o.op
        ));
    }
    s
}

type State = Option<Bytes>;

/// The register model: the next state, or `None` when the observed result is impossible.
fn step(state: &State, op: &KvOp, result: Option<&KvResult>) -> Option<State> {
    match (op, result) {
        (KvOp::Get, Some(KvResult::Value(v))) => (v == state).then(|| state.clone()),
        (KvOp::Get, None) => Some(state.clone()),
        (KvOp::Put(v), None | Some(KvResult::Done)) => Some(Some(v.clone())),
        (KvOp::Delete, None | Some(KvResult::Done)) => Some(None),
        (KvOp::CompareAndSet { expected, new }, r) => {
            let matched = expected == state;
            match r {
                None => {}
                Some(KvResult::Cas(b)) if *b == matched => {}
                Some(_) => return None,
            }
            Some(if matched { new.clone() } else { state.clone() })
        }
        _ => None,
    }
}

/// Wing & Gong's search with Lowe's memoization of (linearized set, state).
fn check_key(ops: &[&Op]) -> bool {
    let m = ops.len();
    if m == 0 {
        return true;
    }
    // Events: 2*i is the call of op i, 2*i+1 its return. Nodes 2m (head) and 2m+1 (tail).
    let mut events: Vec<(u64, usize)> = Vec::with_capacity(2 * m);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call, 2 * i));
        let t = o.ret.as_ref().map_or(u64::MAX, |(t, _)| *t);
        events.push((t, 2 * i + 1));
    }
    events.sort_unstable();
    let head = 2 * m;
    let tail = 2 * m + 1;
    let mut next = vec![0usize; 2 * m + 2];
    let mut prev = vec![0usize; 2 * m + 2];
    let mut last = head;
    for &(_, node) in &events {
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    next[last] = tail;
    prev[tail] = last;

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, n) = (prev[x], next[x]);
        next[p] = n;
        prev[n] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, n) = (prev[x], next[x]);
        next[p] = x;
        prev[n] = x;
    };

    let words = m.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut entry = next[head];
    while next[head] != tail {
        if entry == tail {
            return false;
        }
        let op = entry / 2;
        if entry.is_multiple_of(2) {
            let o = ops[op];
            if let Some(new_state) = step(&state, &o.op, o.ret.as_ref().map(|(_, r)| r)) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), new_state.clone())) {
                    stack.push((op, std::mem::replace(&mut state, new_state)));
                    unlink(&mut next, &mut prev, 2 * op);
                    unlink(&mut next, &mut prev, 2 * op + 1);
                    entry = next[head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            let Some((op, s)) = stack.pop() else {
                return false;
            };
            linearized[op / 64] &= !(1 << (op % 64));
            state = s;
            relink(&mut next, &mut prev, 2 * op + 1);
            relink(&mut next, &mut prev, 2 * op);
            entry = next[2 * op];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let mut h = History::new();
        let a = h.invoke(1, "k", KvOp::Put(b("1")));
        h.complete(a, KvResult::Done);
        let g = h.invoke(1, "k", KvOp::Get);
        h.complete(g, KvResult::Value(Some(b("1"))));
        let c = h.invoke(
            2,
            "k",
            KvOp::CompareAndSet {
                expected: Some(b("1")),
                new: None,
            },
        );
        h.complete(c, KvResult::Cas(true));
        let g = h.invoke(1, "k", KvOp::Get);
        h.complete(g, KvResult::Value(None));
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn stale_read_is_caught() {
        let mut h = History::new();
        let a = h.invoke(1, "k", KvOp::Put(b("1")));
        h.complete(a, KvResult::Done);
        let a = h.invoke(1, "k", KvOp::Put(b("2")));
        h.complete(a, KvResult::Done);
        let g = h.invoke(2, "k", KvOp::Get);
        h.complete(g, KvResult::Value(Some(b("1"))));
        let err = h.check().unwrap_err();
        assert_eq!(err.key, b("k"));
    }

    #[test]
    fn concurrent_ops_may_reorder() {
        let mut h = History::new();
        let w = h.invoke(1, "k", KvOp::Put(b("1")));
        let g1 = h.invoke(2, "k", KvOp::Get);
        h.complete(g1, KvResult::Value(Some(b("1"))));
        let g2 = h.invoke(3, "k", KvOp::Get);
        h.complete(g2, KvResult::Value(Some(b("1"))));
        h.complete(w, KvResult::Done);
        assert_eq!(h.check(), Ok(()));
        // A later read may not go back in time.
        let g3 = h.invoke(3, "k", KvOp::Get);
        h.complete(g3, KvResult::Value(None));
        assert!(h.check().is_err());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_happen() {
        let mut h = History::new();
        let _lost = h.invoke(1, "k", KvOp::Put(b("x")));
        let g = h.invoke(2, "k", KvOp::Get);
        h.complete(g, KvResult::Value(None));
        let g = h.invoke(2, "k", KvOp::Get);
        h.complete(g, KvResult::Value(Some(b("x"))));
        assert_eq!(h.check(), Ok(()));
        // ...but it cannot un-happen.
        let g = h.invoke(2, "k", KvOp::Get);
        h.complete(g, KvResult::Value(None));
        assert!(h.check().is_err());
    }

    #[test]
    fn failed_ops_never_happen_and_keys_are_independent() {
        let mut h = History::new();
        let w = h.invoke(1, "a", KvOp::Put(b("x")));
        h.fail(w);
        let g = h.invoke(2, "b", KvOp::Get);
        h.complete(g, KvResult::Value(None));
        let g = h.invoke(2, "a", KvOp::Get);
        h.complete(g, KvResult::Value(Some(b("x"))));
        assert_eq!(h.check().unwrap_err().key, b("a"));
    }

    #[test]
    fn cas_result_must_match_state() {
        let mut h = History::new();
        let c = h.invoke(
            1,
            "k",
            KvOp::CompareAndSet {
                expected: None,
                new: Some(b("1")),
            },
        );
        h.complete(c, KvResult::Cas(false));
        assert!(h.check().is_err());
    }
}
