//! Conflict checks through the index of recently written keys (`recent.rs`) over real stores.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

fn open_with_index(dir: &tempfile::TempDir, conflict_index_bytes: u64) -> KvStoreExecutor {
    KvStoreExecutor::open(
        dir.path(),
        StoreOptions {
            mvcc_window_versions: 200,
            durability: Durability::ExternalLog,
            conflict_index_bytes,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Stores with no index, an index a few dozen writes long (always evicting), and the default
/// one take the same random runs of transactions (one-key and wider read conflicts, read
/// versions from inside and below the window, puts and deletes, sometimes runs of blind writes
/// only) and decide every command the same; and the same as a store with no index that takes
/// one command per batch, where no check can see an earlier command of its batch.
#[test]
fn every_conflict_check_decides_as_rocksdb_alone_would() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut stores = [
        open_with_index(&dirs[0], 0),
        open_with_index(&dirs[1], 40 * 60),
        open_with_index(&dirs[2], 16 << 20),
    ];
    let one_dir = tempfile::tempdir().unwrap();
    let mut one_at_a_time = open_with_index(&one_dir, 0);
    let mut rng = SmallRng::seed_from_u64(7);
    let key = |rng: &mut SmallRng| format!("k{:02}", rng.gen_range(0..40));
    let mut conflicts = 0;
    let mut commits = 0;
    for run in 0..400 {
        let last = stores[0].last_version().0;
        let blind_only = run % 17 == 16;
        let mut cmds = Vec::new();
        for _ in 0..rng.gen_range(1..6) {
            let writes: Vec<WriteOp> = (0..rng.gen_range(1..3))
                .map(|_| {
                    let k = key(&mut rng);
                    if rng.gen_bool(0.15) {
                        del(&k)
                    } else {
                        set(&k, "v")
                    }
                })
                .collect();
            if blind_only || rng.gen_bool(0.2) {
                cmds.push(Command::blind(writes));
                continue;
            }
            let read_conflicts = (0..rng.gen_range(1..4))
                .map(|_| {
                    let k = rng.gen_range(0..40);
                    if rng.gen_bool(0.1) {
                        KeyRange {
                            cf: "".into(),
                            begin: b(&format!("k{k:02}")),
                            end: b(&format!("k{:02}", k + rng.gen_range(1..6))),
                        }
                    } else {
                        single_key_range("", &b(&format!("k{k:02}")))
                    }
                })
                .collect();
            let back = rng.gen_range(0..60u64).min(last);
            cmds.push(Command {
                read_version: Some(Version(last - back)),
                writes,
                read_conflicts,
            });
        }
        let outcomes: Vec<Vec<Outcome>> =
            stores.iter_mut().map(|e| apply(e, cmds.clone())).collect();
        let alone: Vec<Outcome> = cmds
            .iter()
            .flat_map(|c| apply(&mut one_at_a_time, vec![c.clone()]))
            .collect();
        assert_eq!(
            outcomes[0], alone,
            "run {run}: a batch decided otherwise than one at a time"
        );
        assert_eq!(
            outcomes[0], outcomes[1],
            "run {run}: the small index decided otherwise"
        );
        assert_eq!(
            outcomes[0], outcomes[2],
            "run {run}: the default index decided otherwise"
        );
        conflicts += outcomes[0]
            .iter()
            .filter(|o| matches!(o, Outcome::Conflict { .. }))
            .count();
        commits += outcomes[0]
            .iter()
            .filter(|o| matches!(o, Outcome::Committed { .. }))
            .count();
    }
    // The runs exercised both answers, and both indexes were recording.
    assert!(
        conflicts > 100 && commits > 300,
        "{conflicts} conflicts, {commits} commits"
    );
    assert!(stores[1].conflict_index().bytes() <= 40 * 60);
    assert!(stores[1].conflict_index().bytes() > 0);
    assert!(stores[2].conflict_index().bytes() > stores[1].conflict_index().bytes());
    assert_eq!(stores[0].conflict_index().bytes(), 0);
}
