//! Core scenario tests that assert the exact outputs of single steps.
//!
//! Owns: nothing but tests. Invariants exercised: replies wait for durability; a lower ballot
//! is refused; a non-primary routes proposals; a three-replica round commits once everywhere.

use super::state::{Role, Round};
use super::*;
use bytes::Bytes;

pub(super) fn replica(id: u32) -> Replica {
    let cfg = PaxosConfig {
        replica_id: ReplicaId(id),
        ..PaxosConfig::default()
    };
    Replica::new(cfg, DurableState::default())
}

pub(super) fn batch(cmd: &'static [u8]) -> Value {
    Value::Batch(Batch::new(vec![Bytes::from_static(cmd)]))
}

pub(super) fn step(r: &mut Replica, input: Input) -> Outputs {
    let mut out = Outputs::default();
    r.step(input, &mut out);
    out
}

/// `message` from `from` arrives at `r`.
pub(super) fn deliver(r: &mut Replica, from: ReplicaId, message: Message) -> Outputs {
    step(r, Input::Message { from, message })
}

/// The first tick (a replica boots on it).
pub(super) fn boot(r: &mut Replica) {
    step(
        r,
        Input::Tick {
            now_ms: 0,
            random: 1,
        },
    );
}

/// Primary 0 (ballot 3) proposes `a` in slot 1.
fn accept_a_from_primary_0() -> (ReplicaId, Message) {
    let accept = Message::Accept {
        ballot: Ballot(3),
        slot: Slot(1),
        value: batch(b"a"),
        commit_upto: Slot(0),
    };
    (ReplicaId(0), accept)
}

#[test]
fn accepted_is_sent_only_after_the_accept_is_durable() {
    let mut r = replica(1);
    boot(&mut r);
    let (from, accept) = accept_a_from_primary_0();
    let out = deliver(&mut r, from, accept);
    assert_eq!(
        out.persist,
        vec![(
            Lsn(1),
            Record::Accept {
                slot: Slot(1),
                ballot: Ballot(3),
                value: batch(b"a")
            }
        )]
    );
    assert!(out.sends.is_empty());
    assert_eq!(
        out.events,
        vec![Event::PrimaryChanged {
            primary: Some(from)
        }]
    );
    let out = step(&mut r, Input::Durable { upto_lsn: Lsn(1) });
    let accepted = Message::Accepted {
        ballot: Ballot(3),
        slot: Slot(1),
    };
    assert_eq!(out.sends, vec![(from, accepted)]);
    assert!(out.persist.is_empty() && out.committed.is_empty());

    // A non-primary forwards its clients' commands to the primary it knows.
    let out = step(&mut r, Input::Propose(Bytes::from_static(b"x")));
    let forward = Message::Forward {
        commands: vec![Bytes::from_static(b"x")],
    };
    assert_eq!(out.sends, vec![(from, forward)]);
    assert!(out.proposals_rejected.is_empty());
}

#[test]
fn promise_waits_for_durability_and_reports_accepted_values() {
    let mut r = replica(2);
    step(
        &mut r,
        Input::Tick {
            now_ms: 0,
            random: 1,
        },
    );
    let accept = Message::Accept {
        ballot: Ballot(3),
        slot: Slot(1),
        value: batch(b"a"),
        commit_upto: Slot(0),
    };
    deliver(&mut r, ReplicaId(0), accept);
    let prepare = Message::Prepare {
        ballot: Ballot(4),
        from_slot: Slot(1),
        released: None,
    };
    let out = deliver(&mut r, ReplicaId(1), prepare);
    assert_eq!(
        out.persist,
        vec![(Lsn(2), Record::Promise { ballot: Ballot(4) })]
    );
    assert!(out.sends.is_empty());
    // Lsn 1 durable is not enough: the promise is Lsn 2.
    let out = step(&mut r, Input::Durable { upto_lsn: Lsn(1) });
    assert_eq!(out.sends.len(), 1); // the Accepted for ballot 3 only
    let out = step(&mut r, Input::Durable { upto_lsn: Lsn(2) });
    let promise = Message::Promise {
        ballot: Ballot(4),
        log_start: Slot(1),
        commit_upto: Slot(0),
        entries: vec![PromiseEntry {
            slot: Slot(1),
            ballot: Ballot(3),
            value: batch(b"a"),
            committed: false,
        }],
        amnesiac: false,
        more: false,
    };
    assert_eq!(out.sends, vec![(ReplicaId(1), promise)]);
    // The old primary is now refused.
    let stale = Message::Accept {
        ballot: Ballot(3),
        slot: Slot(2),
        value: Value::Noop,
        commit_upto: Slot(0),
    };
    let out = deliver(&mut r, ReplicaId(0), stale);
    let nack = Message::Nack {
        promised: Ballot(4),
    };
    assert_eq!(out.sends, vec![(ReplicaId(0), nack)]);
    assert!(out.persist.is_empty());
}

/// Three replicas on a lossless, instant network with instant disks: 10 ms ticks for `rounds`
/// rounds, one command proposed as soon as a primary exists. With `apply`, every replica's state
/// machine applies what commits at once. Returns the replicas, what each committed, and
/// whether the command was proposed.
type Committed = Vec<Vec<(Slot, Value)>>;

fn run_three(rounds: usize, apply: bool) -> (Vec<Replica>, Committed, bool) {
    let mut rs: Vec<Replica> = (0..3).map(replica).collect();
    let mut committed: Committed = vec![Vec::new(); 3];
    let mut queue: std::collections::VecDeque<(usize, Input)> = Default::default();
    let mut now = 0;
    let mut proposed = false;
    for _ in 0..rounds {
        now += 10;
        for i in 0..3 {
            let random = i as u64 * 7919;
            queue.push_back((
                i,
                Input::Tick {
                    now_ms: now,
                    random,
                },
            ));
        }
        if !proposed {
            if let Some(p) = rs.iter().position(|r| r.is_primary()) {
                queue.push_back((p, Input::Propose(Bytes::from_static(b"cmd"))));
                proposed = true;
            }
        }
        while let Some((i, input)) = queue.pop_front() {
            let out = step(&mut rs[i], input);
            for (to, message) in out.sends {
                let from = ReplicaId(i as u32);
                queue.push_back((to.0 as usize, Input::Message { from, message }));
            }
            if let Some((lsn, _)) = out.persist.last() {
                queue.push_back((i, Input::Durable { upto_lsn: *lsn }));
            }
            if apply {
                if let Some((slot, _)) = out.committed.last() {
                    queue.push_back((i, Input::Applied { upto: *slot }));
                }
            }
            committed[i].extend(out.committed);
        }
    }
    (rs, committed, proposed)
}

#[test]
fn three_replicas_elect_and_commit_each_slot_once_everywhere() {
    let (_, committed, proposed) = run_three(200, false);
    assert!(proposed);
    let expected = vec![(Slot(1), batch(b"cmd"))];
    for c in &committed {
        assert_eq!(c, &expected);
    }
}

#[test]
fn compaction_point_advances_once_every_replica_applied() {
    let (rs, _, _) = run_three(300, true);
    let p = rs.iter().position(|r| r.is_primary()).expect("a primary");
    let applied = rs[p].applied_upto();
    assert!(applied >= Slot(1));
    // Every replica applied everything: the primary may compact through it, and so may the
    // followers once the primary's heartbeats tell them.
    for r in &rs {
        assert_eq!(r.applied_upto(), applied);
        assert_eq!(r.safe_compact_upto(), applied, "replica {:?}", r.id());
    }
}

#[test]
fn a_replica_that_leads_after_start_times_out_first() {
    let mut eager = Replica::new(
        PaxosConfig {
            replica_id: ReplicaId(0),
            lead_after_start: true,
            ..PaxosConfig::default()
        },
        DurableState::default(),
    );
    let mut others = [replica(1), replica(2)];
    let cfg = PaxosConfig::default();
    let min = cfg.election_timeout_min_ms + cfg.heartbeat_interval_ms;
    for r in others.iter_mut().chain(std::iter::once(&mut eager)) {
        step(
            r,
            Input::Tick {
                now_ms: 0,
                random: 7,
            },
        );
    }
    // A heartbeat after the minimum timeout (peers grant PreVotes from the minimum on) only
    // the eager replica stands; the others' first timeouts are later still.
    let before = step(
        &mut eager,
        Input::Tick {
            now_ms: min - 1,
            random: 7,
        },
    );
    assert!(before.sends.is_empty(), "{before:?}");
    let now_ms = min;
    let out = step(&mut eager, Input::Tick { now_ms, random: 7 });
    assert!(
        out.sends
            .iter()
            .any(|(_, m)| matches!(m, Message::PreVote { .. })),
        "{out:?}"
    );
    for r in &mut others {
        let out = step(r, Input::Tick { now_ms, random: 7 });
        assert!(out.sends.is_empty(), "{out:?}");
    }
}

pub(super) fn amnesiac(id: u32) -> Replica {
    let cfg = PaxosConfig {
        replica_id: ReplicaId(id),
        ..PaxosConfig::default()
    };
    let state = DurableState {
        amnesiac: true,
        ..DurableState::default()
    };
    Replica::new(cfg, state)
}

/// Amnesiac replica `id` with its clock started (a tick at 0).
pub(super) fn started_amnesiac(id: u32) -> Replica {
    let mut r = amnesiac(id);
    step(
        &mut r,
        Input::Tick {
            now_ms: 0,
            random: 1,
        },
    );
    r
}

/// Catch-up from `primary` brings slots 1..=`upto`, all committed; that rebuilds `r`.
pub(super) fn catch_up_and_rebuild(r: &mut Replica, primary: ReplicaId, upto: u64) {
    let entries = (1..=upto).map(|s| (Slot(s), batch(b"a"))).collect();
    let catchup = Message::Catchup {
        entries,
        commit_upto: Slot(upto),
    };
    let out = deliver(r, primary, catchup);
    assert!(out.events.contains(&Event::Rebuilt), "{out:?}");
    assert!(!r.is_amnesiac());
}

/// A heartbeat of replica 0 as the primary of ballot 3.
pub(super) fn heartbeat_of_ballot_3(commit_upto: u64, log_end: u64) -> Message {
    Message::Heartbeat {
        ballot: Ballot(3),
        commit_upto: Slot(commit_upto),
        read_seq: 1,
        compact_upto: Slot(0),
        log_end: Slot(log_end),
        bootstrap: false,
    }
}

#[test]
fn an_amnesiac_replica_does_not_vote_until_a_slot_after_the_primary_log_end_commits() {
    let mut r = started_amnesiac(1);
    let primary = ReplicaId(0);
    deliver(&mut r, primary, heartbeat_of_ballot_3(0, 5));
    let accept = Message::Accept {
        ballot: Ballot(3),
        slot: Slot(6),
        value: batch(b"a"),
        commit_upto: Slot(0),
    };
    let out = deliver(&mut r, primary, accept);
    assert!(out.persist.is_empty(), "{out:?}");
    // Everything handed out is durable (the shell never reports an LSN it was not given).
    let upto_lsn = r.last_lsn;
    let out = step(&mut r, Input::Durable { upto_lsn });
    assert!(
        !out.sends
            .iter()
            .any(|(_, m)| matches!(m, Message::Accepted { .. })),
        "an amnesiac replica voted: {out:?}"
    );
    // Catch-up brings slots 1..=6 (slot 6 was proposed after it heard the log end of 5).
    catch_up_and_rebuild(&mut r, primary, 6);
    let accept = Message::Accept {
        ballot: Ballot(3),
        slot: Slot(7),
        value: batch(b"b"),
        commit_upto: Slot(6),
    };
    let out = deliver(&mut r, primary, accept);
    assert_eq!(out.persist.len(), 1, "votes again once rebuilt: {out:?}");
}

#[test]
fn messages_with_absurd_ballots_or_slots_change_nothing() {
    let mut r = replica(1);
    step(
        &mut r,
        Input::Tick {
            now_ms: 0,
            random: 1,
        },
    );
    let from = ReplicaId(0);
    let huge = Message::Prepare {
        ballot: Ballot(u64::MAX),
        from_slot: Slot(1),
        released: None,
    };
    let out = deliver(&mut r, from, huge);
    assert!(out.sends.is_empty() && out.persist.is_empty(), "{out:?}");
    assert_eq!(r.promised(), Ballot(0));
    let far = Message::Accept {
        ballot: Ballot(3),
        slot: Slot(1 << 62),
        value: batch(b"a"),
        commit_upto: Slot(0),
    };
    let out = deliver(&mut r, from, far);
    assert!(out.sends.is_empty() && out.persist.is_empty(), "{out:?}");
    // A sane message right after is handled as usual.
    let prepare = Message::Prepare {
        ballot: Ballot(3),
        from_slot: Slot(1),
        released: None,
    };
    let out = deliver(&mut r, from, prepare);
    assert_eq!(out.persist.len(), 1);
    assert_eq!(r.promised(), Ballot(3));
}

/// A follower of primary 0 (ballot 3) that heard an Accept at t=1000 is asked by replica 2 to
/// promise ballot 5 at `prepare_at_ms`; returns whether it promised.
fn promises_after_hearing_primary(
    lease: bool,
    prepare_at_ms: u64,
    released: Option<Ballot>,
) -> bool {
    let cfg = PaxosConfig {
        replica_id: ReplicaId(1),
        lease_enabled: lease,
        ..PaxosConfig::default()
    };
    let mut r = Replica::new(cfg, DurableState::default());
    boot(&mut r);
    r.observe_clock(1000);
    let (from, accept) = accept_a_from_primary_0();
    deliver(&mut r, from, accept);
    r.observe_clock(prepare_at_ms);
    let prepare = Message::Prepare {
        ballot: Ballot(5),
        from_slot: Slot(1),
        released,
    };
    let from = ReplicaId(2);
    let out = deliver(&mut r, from, prepare);
    out.persist
        .iter()
        .any(|(_, rec)| *rec == Record::Promise { ballot: Ballot(5) })
}

#[test]
fn in_lease_mode_a_follower_promises_no_new_ballot_while_its_primary_may_hold_a_lease() {
    let timeout = PaxosConfig::default().election_timeout_min_ms;
    // Heard 100 ms ago: the primary's lease may run, no promise.
    assert!(!promises_after_hearing_primary(true, 1100, None));
    // A primary of an older ballot than the one followed released nothing that counts.
    assert!(!promises_after_hearing_primary(true, 1100, Some(Ballot(2))));
    // The primary it follows handed its role over (TimeoutNow): promise at once.
    assert!(promises_after_hearing_primary(true, 1100, Some(Ballot(3))));
    // Silent for a full timeout: any lease it held has run out.
    assert!(promises_after_hearing_primary(true, 1000 + timeout, None));
    // Without leases nothing is held.
    assert!(promises_after_hearing_primary(false, 1100, None));
}

/// Pushes a heartbeat round acknowledged by `acks` onto primary `p` and releases reads; returns
/// the lease expiry after it.
fn ack_round(r: &mut Replica, acks: u64) -> u64 {
    let now = r.now_ms;
    let Role::Primary(state) = &mut r.role else {
        panic!("not primary");
    };
    state.reads.next_seq += 1;
    let seq = state.reads.next_seq;
    state.reads.rounds.push_back(Round {
        seq,
        sent_ms: now,
        reads: Vec::new(),
        acks,
    });
    let mut out = Outputs::default();
    r.release_reads(&mut out);
    let Role::Primary(state) = &r.role else {
        panic!("not primary");
    };
    state.reads.lease_expiry_ms
}

#[test]
fn a_lease_read_is_offered_only_by_a_primary_holding_a_lease() {
    let (mut rs, _, _) = run_three(60, false);
    let p = rs.iter().position(|r| r.is_primary()).expect("a primary");
    for r in rs.iter_mut() {
        r.cfg.lease_enabled = true;
    }
    assert_eq!(rs[p].lease_read(), None, "no round acknowledged yet");
    let other = (p + 1) % 3;
    let expiry = ack_round(&mut rs[p], (1 << p) | (1 << other));
    let commit = rs[p].log.commit_upto();
    assert!(commit > Slot(0), "the run committed something");
    assert_eq!(rs[p].lease_read(), Some((commit, expiry)));
    assert_eq!(rs[other].lease_read(), None, "a follower offers none");
    rs[p].cfg.lease_enabled = false;
    assert_eq!(rs[p].lease_read(), None, "leases off");
}

#[test]
fn a_primary_that_began_a_transfer_holds_no_lease_again_in_its_ballot() {
    let (mut rs, _, _) = run_three(60, false);
    let p = rs.iter().position(|r| r.is_primary()).expect("a primary");
    rs[p].cfg.lease_enabled = true;
    let to = ReplicaId(((p + 1) % 3) as u32);
    let quorum_acks = (1 << p) | (1 << to.0);
    assert!(
        ack_round(&mut rs[p], quorum_acks) > 0,
        "a quorum-acked round gives a lease"
    );
    step(&mut rs[p], Input::TransferLeadership { to });
    let Role::Primary(state) = &mut rs[p].role else {
        panic!("still primary while the transfer runs");
    };
    assert_eq!(state.reads.lease_expiry_ms, 0);
    assert_eq!(rs[p].lease_read(), None, "no lease to read under");
    let Role::Primary(state) = &mut rs[p].role else {
        panic!("still primary while the transfer runs");
    };
    state.transfer = None; // the transfer timed out
    assert_eq!(ack_round(&mut rs[p], quorum_acks), 0, "the lease came back");
}

/// Replica `id`'s config with PreVote skipped: it stands for election as soon as it times out.
pub(super) fn eager(id: u32) -> PaxosConfig {
    PaxosConfig {
        replica_id: ReplicaId(id),
        faults: Faults {
            skip_prevote: true,
            ..Faults::default()
        },
        ..PaxosConfig::default()
    }
}

/// Boots `c`, lets its election timeout pass (PreVote skipped) and makes its own promise
/// durable: it waits for its peers' promises. Returns its ballot.
pub(super) fn campaign(c: &mut Replica) -> Ballot {
    boot(c);
    let out = step(
        c,
        Input::Tick {
            now_ms: 10_000,
            random: 1,
        },
    );
    let ballot = out
        .sends
        .iter()
        .find_map(|(_, m)| match m {
            Message::Prepare { ballot, .. } => Some(*ballot),
            _ => None,
        })
        .expect("a prepare");
    step(c, Input::Durable { upto_lsn: Lsn(1) });
    ballot
}

/// Replica 0 elected with replica 1's promise; `pipeline_depth` slots may be in flight.
pub(super) fn primary_with_pipeline(depth: usize) -> (Replica, Ballot) {
    let mut p = Replica::new(
        PaxosConfig {
            pipeline_depth: depth,
            ..eager(0)
        },
        DurableState::default(),
    );
    let ballot = campaign(&mut p);
    let promise = Message::Promise {
        ballot,
        log_start: Slot(1),
        commit_upto: Slot(0),
        entries: Vec::new(),
        amnesiac: false,
        more: false,
    };
    let from = ReplicaId(1);
    deliver(&mut p, from, promise);
    assert!(p.is_primary());
    (p, ballot)
}

/// Commands a follower forwarded wait in the primary's queue with their origin; when the
/// primary steps down they go back to that origin (not to the primary's own clients), and a
/// replica that does not lead refuses forwarded commands instead of passing them on.
#[test]
fn forwarded_commands_a_primary_cannot_take_go_back_to_their_origin() {
    let (mut p, ballot) = primary_with_pipeline(1);
    let cmd = |b: &'static [u8]| Bytes::from_static(b);
    let forward = |commands: Vec<Bytes>| Input::Message {
        from: ReplicaId(2),
        message: Message::Forward { commands },
    };
    // The pipeline (one slot) is full with the first; the second waits in the queue.
    step(&mut p, forward(vec![cmd(b"first")]));
    let out = step(&mut p, forward(vec![cmd(b"second")]));
    assert!(!out
        .sends
        .iter()
        .any(|(_, m)| matches!(m, Message::Accept { .. })));
    // Replica 1 stands with a higher ballot: the primary promises and steps down.
    let prepare = Message::Prepare {
        ballot: ballot.next_owned_by(ReplicaId(1), 3),
        from_slot: Slot(1),
        released: None,
    };
    let from = ReplicaId(1);
    let out = deliver(&mut p, from, prepare);
    assert!(!p.is_primary());
    let refused = Message::ForwardRefused {
        commands: vec![cmd(b"second")],
        overloaded: false,
    };
    assert!(
        out.sends.contains(&(ReplicaId(2), refused)),
        "{:?}",
        out.sends
    );
    assert!(
        out.proposals_rejected.is_empty(),
        "{:?}",
        out.proposals_rejected
    );
    // Now a follower, it refuses a forwarded command back to its sender.
    let out = step(&mut p, forward(vec![cmd(b"third")]));
    let refused = Message::ForwardRefused {
        commands: vec![cmd(b"third")],
        overloaded: false,
    };
    assert_eq!(out.sends, vec![(ReplicaId(2), refused)]);
}
