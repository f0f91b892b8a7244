//! Phase 1 scenarios: who may stand, which promises count, promises that come in parts, and
//! how a long Phase 1 is protected from being deposed.

use super::scenario_tests::{
    amnesiac, batch, campaign, catch_up_and_rebuild, deliver, eager, heartbeat_of_ballot_3,
    primary_with_pipeline, started_amnesiac, step,
};
use super::*;
use bytes::Bytes;

#[test]
fn a_candidate_needs_a_quorum_that_remembers_unless_everyone_is_new() {
    // Replica 0 remembers (it holds a promise); replica 1 lost its disk.
    let mut c = Replica::new(
        eager(0),
        DurableState {
            promised: Ballot(1),
            ..DurableState::default()
        },
    );
    let ballot = campaign(&mut c);
    let promise = |amnesiac| Message::Promise {
        ballot,
        log_start: Slot(1),
        commit_upto: Slot(0),
        entries: Vec::new(),
        amnesiac,
        more: false,
    };
    deliver(&mut c, ReplicaId(1), promise(true));
    assert!(!c.is_primary(), "an amnesiac promise completed a quorum");
    deliver(&mut c, ReplicaId(2), promise(false));
    assert!(c.is_primary());

    // Three new replicas (a first start) elect among themselves.
    let mut n = amnesiac(0);
    n.cfg.faults.skip_prevote = true;
    campaign(&mut n);
    deliver(&mut n, ReplicaId(1), promise(true));
    assert!(n.is_primary());
    assert!(!n.is_amnesiac());
}

#[test]
fn a_promise_larger_than_its_byte_limit_comes_in_parts_that_cover_every_entry() {
    let mut accepted = std::collections::BTreeMap::new();
    for s in 1..=10u64 {
        let value = Value::Batch(Batch::new(vec![Bytes::from(vec![b'x'; 100])]));
        accepted.insert(
            Slot(s),
            AcceptedValue {
                ballot: Ballot(2),
                value,
            },
        );
    }
    let cfg = PaxosConfig {
        replica_id: ReplicaId(1),
        promise_bytes_max: 250,
        ..PaxosConfig::default()
    };
    let state = DurableState {
        promised: Ballot(2),
        accepted,
        ..DurableState::default()
    };
    let mut r = Replica::new(cfg, state);
    step(
        &mut r,
        Input::Tick {
            now_ms: 0,
            random: 1,
        },
    );
    let mut from_slot = Slot(1);
    let mut seen = Vec::new();
    for round in 0.. {
        assert!(round < 10, "parts never ended");
        let prepare = Message::Prepare {
            ballot: Ballot(3),
            from_slot,
            released: None,
        };
        let mut out = deliver(&mut r, ReplicaId(0), prepare);
        if out.sends.is_empty() {
            out = step(&mut r, Input::Durable { upto_lsn: Lsn(1) });
        }
        let Some((_, Message::Promise { entries, more, .. })) = out.sends.pop() else {
            panic!("no promise: {out:?}");
        };
        let bytes: usize = entries.iter().map(|e| e.value.size_bytes()).sum();
        assert!(bytes <= 250, "a part of {bytes} bytes");
        seen.extend(entries.iter().map(|e| e.slot.0));
        if !more {
            break;
        }
        from_slot = Slot(seen[seen.len() - 1] + 1);
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

/// Replica 1's promise comes in two parts: the first reports slot 1 as accepted in ballot 2
/// (not chosen); before the second, replica 1 learns that slot 1 was chosen (with the value
/// the candidate itself accepted in ballot 4) and reports the higher commit index. The merged
/// promise must not pass the first part's stale entry off as the chosen value.
#[test]
fn a_commit_index_in_a_later_promise_part_does_not_make_an_earlier_entry_chosen() {
    let mine = batch(b"chosen in ballot 4");
    let mut accepted = std::collections::BTreeMap::new();
    accepted.insert(
        Slot(1),
        AcceptedValue {
            ballot: Ballot(4),
            value: mine.clone(),
        },
    );
    let cfg = eager(0);
    let state = DurableState {
        promised: Ballot(4),
        accepted,
        ..DurableState::default()
    };
    let mut c = Replica::new(cfg, state);
    let ballot = campaign(&mut c);
    let part = |commit_upto, entries, more| Input::Message {
        from: ReplicaId(1),
        message: Message::Promise {
            ballot,
            log_start: Slot(1),
            commit_upto: Slot(commit_upto),
            entries,
            amnesiac: false,
            more,
        },
    };
    let stale = PromiseEntry {
        slot: Slot(1),
        ballot: Ballot(2),
        value: batch(b"accepted in ballot 2"),
        committed: false,
    };
    step(&mut c, part(0, vec![stale], true));
    assert!(!c.is_primary(), "a partial promise completed the quorum");
    let out = step(&mut c, part(1, Vec::new(), false));
    assert!(c.is_primary());
    let proposed = out.sends.iter().find_map(|(_, m)| match m {
        Message::Accept { slot, value, .. } if *slot == Slot(1) => Some(value.clone()),
        _ => None,
    });
    assert_eq!(proposed, Some(mine));
}

/// Replica 0, standing for election at once (PreVote skipped), waiting for its peers' promises.
fn candidate() -> (Replica, Ballot) {
    let mut c = Replica::new(eager(0), DurableState::default());
    let ballot = campaign(&mut c);
    (c, ballot)
}

/// A part of a promise for `ballot` that reports slot `slot` (accepted in ballot 1) and says
/// more follow.
fn first_part(ballot: Ballot, slot: u64) -> Message {
    Message::Promise {
        ballot,
        log_start: Slot(1),
        commit_upto: Slot(0),
        entries: vec![PromiseEntry {
            slot: Slot(slot),
            ballot: Ballot(1),
            value: batch(b"a"),
            committed: false,
        }],
        amnesiac: false,
        more: true,
    }
}

/// A candidate gathering a promise in parts refuses PreVotes while the parts keep coming, so
/// a peer that timed out meanwhile cannot depose it; once its Phase 1 stalls it grants them.
#[test]
fn a_candidate_whose_phase_1_progresses_refuses_prevotes() {
    let (mut c, ballot) = candidate();
    let at = |c: &mut Replica, now_ms: u64, from: u32, message: Message| {
        c.observe_clock(now_ms);
        let from = ReplicaId(from);
        deliver(c, from, message)
    };
    at(&mut c, 10_150, 1, first_part(ballot, 1));
    let rival = ballot.next_owned_by(ReplicaId(2), 3);
    let prevote = Message::PreVote { ballot: rival };
    let granted = |out: Outputs| {
        out.sends.iter().find_map(|(_, m)| match m {
            Message::PreVoteReply { granted, .. } => Some(*granted),
            _ => None,
        })
    };
    let out = at(&mut c, 10_200, 2, prevote.clone());
    assert_eq!(
        granted(out),
        Some(false),
        "a progressing candidate granted a PreVote"
    );
    // The default minimum election timeout is 300 ms: the last part came 350 ms ago.
    let out = at(&mut c, 10_500, 2, prevote);
    assert_eq!(
        granted(out),
        Some(true),
        "a stalled candidate still refuses PreVotes"
    );
}

/// A promise part asks for the next one once: a copy of it (or a late part) asks nothing, so
/// duplicated parts do not multiply into a storm of requests and replies.
#[test]
fn a_repeated_promise_part_asks_for_nothing_more() {
    let (mut c, ballot) = candidate();
    let part = |slot: u64| Input::Message {
        from: ReplicaId(1),
        message: first_part(ballot, slot),
    };
    let asks = |out: Outputs| -> Vec<Slot> {
        out.sends
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Prepare { from_slot, .. } => Some(*from_slot),
                _ => None,
            })
            .collect()
    };
    assert_eq!(asks(step(&mut c, part(1))), vec![Slot(2)]);
    assert_eq!(
        asks(step(&mut c, part(1))),
        Vec::<Slot>::new(),
        "a copy asked again"
    );
    assert_eq!(asks(step(&mut c, part(2))), vec![Slot(3)]);
    assert_eq!(
        asks(step(&mut c, part(1))),
        Vec::<Slot>::new(),
        "a late part asked again"
    );
}

/// A replica that missed a cluster's first election rebuilds only once a slot proposed after
/// it heard the primary commits. With no client writing, it asks the idle primary for one, so
/// it can vote before the primary might fail (else the two left could never elect).
#[test]
fn a_rebuilding_replica_asks_an_idle_primary_for_a_slot_and_gets_one() {
    let mut r = started_amnesiac(1);
    let primary = ReplicaId(0);
    let heartbeat = heartbeat_of_ballot_3;
    let barriers = |out: &Outputs| {
        out.sends
            .iter()
            .filter(|(to, m)| *to == primary && matches!(m, Message::RebuildBarrier { .. }))
            .count()
    };
    // Slot 5 still in flight: it may not reach the target (6), but the primary is not idle.
    let out = deliver(&mut r, primary, heartbeat(4, 5));
    assert_eq!(
        barriers(&out),
        0,
        "asked while a slot was under way: {out:?}"
    );
    let out = deliver(&mut r, primary, heartbeat(5, 5));
    assert_eq!(barriers(&out), 1, "an idle primary was not asked: {out:?}");
    assert!(out.sends.iter().any(|(_, m)| matches!(
        m,
        Message::RebuildBarrier { ballot } if *ballot == Ballot(3)
    )));
    // The barrier slot (6) commits: rebuilt, and nothing more is asked.
    catch_up_and_rebuild(&mut r, primary, 6);
    let out = deliver(&mut r, primary, heartbeat(6, 6));
    assert_eq!(barriers(&out), 0, "a rebuilt replica asked: {out:?}");

    // The primary's side: an idle primary proposes one no-op slot; not another while it runs,
    // and nothing for a request in another ballot.
    let (mut p, ballot) = primary_with_pipeline(4);
    let accepts = |out: &Outputs| -> Vec<(Slot, Value)> {
        out.sends
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Accept { slot, value, .. } => Some((*slot, value.clone())),
                _ => None,
            })
            .collect()
    };
    let other = Ballot(ballot.0 + 1);
    let out = deliver(
        &mut p,
        ReplicaId(2),
        Message::RebuildBarrier { ballot: other },
    );
    assert!(accepts(&out).is_empty(), "{out:?}");
    let out = deliver(&mut p, ReplicaId(2), Message::RebuildBarrier { ballot });
    let proposed = accepts(&out);
    assert!(!proposed.is_empty(), "{out:?}");
    assert!(proposed
        .iter()
        .all(|(s, v)| *s == Slot(1) && *v == Value::Noop));
    let out = deliver(&mut p, ReplicaId(2), Message::RebuildBarrier { ballot });
    assert!(
        accepts(&out).is_empty(),
        "a second no-op while one runs: {out:?}"
    );
}
