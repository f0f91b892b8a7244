//! Deterministic simulation of the Paxos core (see `sim/mod.rs`). `SIM_SEEDS=N` and
//! `SIM_SEED_START=S` pick the seeds; `SIM_STEPS` the chaos events per seed.
//! A failure prints the command that replays it.

mod sim;

use paxoskv::paxos::Faults;
use sim::{run, SimOptions};
use std::time::Instant;

const DEFAULT_SEEDS: u64 = 10_000;
const DEFAULT_STEPS: usize = 5_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

#[test]
fn simulation_seeds_hold_every_invariant() {
    let start = env_u64("SIM_SEED_START", 0);
    let count = env_u64("SIM_SEEDS", DEFAULT_SEEDS);
    let steps = env_u64("SIM_STEPS", DEFAULT_STEPS as u64) as usize;
    let began = Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4) as u64;
    let results: Vec<(u64, Result<sim::Stats, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut seed = start + t;
                    while seed < start + count {
                        // A panic in the core (a `debug_assert!` of an invariant) fails the
                        // seed that hit it, rather than silently ending this thread's seeds.
                        let r = std::panic::catch_unwind(|| {
                            run(seed, SimOptions::for_seed(seed, steps))
                        })
                        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
                        let failed = r.is_err();
                        out.push((seed, r));
                        if failed {
                            break;
                        }
                        seed += threads;
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut total = sim::Stats::default();
    for (seed, r) in &results {
        match r {
            Ok(s) => {
                total.events += s.events;
                total.sim_ms += s.sim_ms;
                total.committed_slots += s.committed_slots;
                total.ops_completed += s.ops_completed;
                total.view_changes += s.view_changes;
                total.crashes += s.crashes;
                total.snapshots += s.snapshots;
                total.wipes += s.wipes;
                total.promise_parts += s.promise_parts;
                total.forwards += s.forwards;
                total.forwarded_reads += s.forwarded_reads;
            }
            Err(e) => panic!(
                "seed {seed} failed: {e}\nreplay: SIM_SEED_START={seed} SIM_SEEDS=1 SIM_STEPS={steps} cargo test --release --test simulation simulation_seeds"
            ),
        }
    }
    eprintln!(
        "simulated {count} seeds x {steps} chaos steps in {:.1?}: {total:?}",
        began.elapsed()
    );
    if count >= 100 {
        // Clients talk to any replica: node-mode forwarding is part of what the seeds cover.
        assert!(
            total.forwards > 0 && total.forwarded_reads > 0,
            "no forwarded commands or reads: {total:?}"
        );
    }
}

/// Runs seeds with a broken rule until some checker reports it; returns the report.
fn first_violation(faults: Faults, seeds: u64, check_durability: bool) -> Option<(u64, String)> {
    (0..seeds).find_map(|seed| {
        let mut opts = SimOptions::for_seed(seed, DEFAULT_STEPS);
        opts.faults = faults.clone();
        opts.check_durability = check_durability;
        run(seed, opts).err().map(|e| (seed, e))
    })
}

#[test]
fn checkers_catch_reply_before_persist() {
    let faults = Faults {
        reply_before_persist: true,
        ..Faults::default()
    };
    let (seed, e) =
        first_violation(faults.clone(), 50, true).expect("durability checker must bite");
    assert!(e.contains("DURABILITY"), "seed {seed}: {e}");
    // Without the durability checker, the lost promises/accepts must still show up as a
    // safety violation after crashes. (A crash that loses every record leaves an empty WAL,
    // and an empty WAL starts amnesiac, which hides the lie: it takes more seeds to bite.)
    let (seed, e) = first_violation(faults, 1500, false).expect("agreement checker must bite");
    assert!(
        e.contains("AGREEMENT") || e.contains("LINEARIZABILITY") || e.contains("PREFIX"),
        "seed {seed}: {e}"
    );
}

#[test]
fn checkers_catch_quorum_of_one() {
    let faults = Faults {
        quorum_of_one: true,
        ..Faults::default()
    };
    let (seed, e) =
        first_violation(faults.clone(), 50, true).expect("durability checker must bite");
    assert!(e.contains("DURABILITY"), "seed {seed}: {e}");
    let (seed, e) = first_violation(faults, 200, false).expect("agreement checker must bite");
    assert!(
        e.contains("AGREEMENT") || e.contains("LINEARIZABILITY") || e.contains("PREFIX"),
        "seed {seed}: {e}"
    );
}

#[test]
fn checkers_catch_a_wiped_replica_voting_as_if_it_remembered() {
    let faults = Faults {
        ignore_amnesia: true,
        ..Faults::default()
    };
    let found = (0..3000).find_map(|seed| {
        let mut opts = SimOptions::for_seed(seed, DEFAULT_STEPS);
        opts.faults = faults.clone();
        opts.disk_wipes = true;
        run(seed, opts).err().map(|e| (seed, e))
    });
    let (seed, e) = found.expect("agreement checker must bite");
    assert!(
        e.contains("AGREEMENT") || e.contains("LINEARIZABILITY") || e.contains("PREFIX"),
        "seed {seed}: {e}"
    );
}

#[test]
fn checkers_catch_skipped_prevote() {
    let faults = Faults {
        skip_prevote: true,
        ..Faults::default()
    };
    let (seed, e) = first_violation(faults, 50, true).expect("storm checker must bite");
    assert!(e.contains("VIEW-CHANGE STORM"), "seed {seed}: {e}");
}
