//! Point reads through the latest-version cache (`latest.rs`) over a real store.

use bytes::Bytes;

use super::*;

/// A store whose latest-version cache holds at most `latest_cache_bytes` (0: none).
pub(super) fn open_with_cache(
    dir: &tempfile::TempDir,
    window: u64,
    latest_cache_bytes: u64,
) -> KvStoreExecutor {
    KvStoreExecutor::open(
        dir.path(),
        StoreOptions {
            mvcc_window_versions: window,
            durability: Durability::ExternalLog,
            latest_cache_bytes,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Every point read answers the same with the latest-version cache as RocksDB alone, through
/// fills, recorded writes, deletions and reads at older versions.
#[test]
fn point_reads_through_the_latest_version_cache_answer_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 1000);
    let v1 = committed(&apply(&mut e, vec![Command::blind(vec![set("k", "one")])])[0]);
    let r = e.reader();
    // The first lookup turns the cache on; this miss reads RocksDB and fills the entry.
    assert_eq!(r.get("", b"k", v1).unwrap(), Some(b("one")));
    assert!(e.shared().latest.bytes() > 0, "the miss filled the cache");
    assert_eq!(r.get("", b"absent", v1).unwrap(), None);
    assert_eq!(r.get("", b"k", v1).unwrap(), Some(b("one")));
    // From now on the apply path records its writes.
    let v2 = committed(&apply(&mut e, vec![Command::blind(vec![set("k", "two")])])[0]);
    let v3 = committed(&apply(&mut e, vec![Command::blind(vec![set("absent", "now")])])[0]);
    assert_eq!(r.get("", b"k", v3).unwrap(), Some(b("two")));
    assert_eq!(r.get("", b"absent", v3).unwrap(), Some(b("now")));
    // Older read versions than the cached entry go to RocksDB.
    assert_eq!(r.get("", b"k", v1).unwrap(), Some(b("one")));
    assert_eq!(r.get("", b"absent", v2).unwrap(), None);
    let v4 = committed(&apply(&mut e, vec![Command::blind(vec![del("k")])])[0]);
    assert_eq!(r.get("", b"k", v4).unwrap(), None);
    assert_eq!(r.get_latest("", b"k").unwrap(), None);
    assert_eq!(r.get("", b"k", v3).unwrap(), Some(b("two")));
    assert!(matches!(
        r.get("", b"k", Version(99)),
        Err(StorageError::FutureVersion { .. })
    ));
    // The cache answered (it holds entries), and a store without it answers the same.
    assert!(e.shared().latest.bytes() > 0);
    let dir2 = tempfile::tempdir().unwrap();
    let mut plain = open_with_cache(&dir2, 1000, 0);
    for cmd in [
        set("k", "one"),
        set("k", "two"),
        set("absent", "now"),
        del("k"),
    ] {
        apply(&mut plain, vec![Command::blind(vec![cmd])]);
    }
    let p = plain.reader();
    for at in [v1, v2, v3, v4] {
        for key in [&b"k"[..], b"absent"] {
            assert_eq!(r.get("", key, at).unwrap(), p.get("", key, at).unwrap());
        }
    }
}

/// A step of a linear congruential generator (tests need cheap, repeatable keys).
fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

/// Readers on other threads racing the apply path, with a cache small enough to evict all the
/// time: every point read at the latest version returns the newest value written at or below
/// it, whether it came from the cache, a fill or RocksDB.
#[test]
fn concurrent_point_reads_through_a_small_evicting_cache_never_see_a_stale_value() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let mut e = open_with_cache(&dir, 1_000_000, 64 * 100);
    const KEYS: u64 = 40;
    // (version, key) of every write, pushed before the write is applied.
    let history: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|seed| {
            let r = e.reader();
            let (history, done) = (history.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                let mut i = seed;
                while !done.load(Ordering::SeqCst) {
                    i = lcg(i);
                    let k = (i >> 33) % KEYS;
                    let at = r.last_version();
                    let got = r.get("", format!("k{k}").as_bytes(), at).unwrap();
                    let expected = history
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(v, key)| *key == k && *v <= at.0)
                        .map(|(v, _)| *v)
                        .max();
                    assert_eq!(
                        got,
                        expected.map(|v| Bytes::from(v.to_string())),
                        "key k{k} at {at:?}"
                    );
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    e.keep_latest(true);
    let mut rng = 7u64;
    for _ in 0..20_000 {
        rng = lcg(rng);
        let k = (rng >> 33) % KEYS;
        let version = e.last_version().next().0;
        history.lock().unwrap().push((version, k));
        let cmd = Command::blind(vec![set(&format!("k{k}"), &version.to_string())]);
        assert_eq!(committed(&apply(&mut e, vec![cmd])[0]).0, version);
        // Now and then a stretch where reads go elsewhere: the cache may go off and on.
        e.keep_latest(version % 5000 < 4000);
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 100, "the readers ran");
    }
}
