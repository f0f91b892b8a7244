//! Executor and reader tests over a real RocksDB in a temporary directory.

use bytes::Bytes;

use super::*;
use crate::txn::command::single_key_range;
use crate::txn::{Command, KeyRange, Outcome, WriteOp};
use crate::types::{Sequence, Version};

mod conflict_index;
mod latest_cache;
mod memtable;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn set(k: &str, v: &str) -> WriteOp {
    WriteOp::Set {
        cf: "".into(),
        key: b(k),
        value: b(v),
    }
}

fn del(k: &str) -> WriteOp {
    WriteOp::Delete {
        cf: "".into(),
        key: b(k),
    }
}

fn open(dir: &tempfile::TempDir, window: u64) -> KvStoreExecutor {
    latest_cache::open_with_cache(dir, window, StoreOptions::default().latest_cache_bytes)
}

fn apply(e: &mut KvStoreExecutor, cmds: Vec<Command>) -> Vec<Outcome> {
    let seq = e.next_expected_sequence();
    e.apply(seq, &cmds).unwrap().unwrap()
}

fn committed(o: &Outcome) -> Version {
    match o {
        Outcome::Committed { version, .. } => *version,
        other => panic!("not committed: {other:?}"),
    }
}

fn range_all(r: &KvReader, q: RangeQuery, at: Version) -> Vec<String> {
    r.range(&q, at)
        .unwrap()
        .key_values
        .into_iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

fn q(begin: &str, end: &str) -> RangeQuery {
    RangeQuery {
        cf: "".into(),
        begin: b(begin),
        begin_or_equal: true,
        begin_offset: 0,
        end: b(end),
        end_or_equal: false,
        end_offset: 0,
        limit: 0,
        max_bytes: 0,
    }
}

#[test]
fn apply_is_exactly_once_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut e = open(&dir, 1000);
        assert_eq!(e.next_expected_sequence(), Sequence(1));
        let o = e
            .apply(Sequence(1), &[Command::blind(vec![set("a", "1")])])
            .unwrap()
            .unwrap();
        assert_eq!(committed(&o[0]), Version(1));
        e.apply(
            Sequence(2),
            &[
                Command::blind(vec![set("b", "2")]),
                Command::blind(vec![set("c", "3")]),
            ],
        )
        .unwrap()
        .unwrap();
        // A gap is refused, a replay is skipped.
        assert!(matches!(
            e.apply(Sequence(4), &[]),
            Err(StorageError::OutOfOrder { .. })
        ));
        assert_eq!(
            e.apply(Sequence(2), &[Command::blind(vec![set("b", "X")])])
                .unwrap(),
            None
        );
    }
    let mut e = open(&dir, 1000);
    assert_eq!(e.next_expected_sequence(), Sequence(3));
    assert_eq!(e.last_version(), Version(3));
    // Replaying the already-applied batch after the restart changes nothing.
    assert_eq!(
        e.apply(Sequence(2), &[Command::blind(vec![set("b", "X")])])
            .unwrap(),
        None
    );
    let r = e.reader();
    assert_eq!(r.get("", b"b", Version(3)).unwrap(), Some(b("2")));
    let o = apply(&mut e, vec![Command::blind(vec![set("d", "4")])]);
    assert_eq!(committed(&o[0]), Version(4));
}

#[test]
fn conflicting_transactions_exactly_one_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 1000);
    let rv = committed(&apply(&mut e, vec![Command::blind(vec![set("k", "0")])])[0]);
    let txn = |v: &str| Command {
        read_version: Some(rv),
        writes: vec![set("k", v)],
        read_conflicts: vec![single_key_range("", &b("k"))],
    };
    // Both in one batch: the first commits, the second sees the first's write.
    let o = apply(&mut e, vec![txn("1"), txn("2")]);
    committed(&o[0]);
    assert!(
        matches!(&o[1], Outcome::Conflict { key } if key == &b("k")),
        "{o:?}"
    );
    // And across batches.
    let o = apply(&mut e, vec![txn("3")]);
    assert!(matches!(o[0], Outcome::Conflict { .. }));
    assert_eq!(e.reader().get_latest("", b"k").unwrap(), Some(b("1")));
    // A transaction reading another key does not conflict.
    let other = Command {
        read_version: Some(rv),
        writes: vec![set("k", "4")],
        read_conflicts: vec![single_key_range("", &b("unrelated"))],
    };
    committed(&apply(&mut e, vec![other])[0]);
}

#[test]
fn range_conflicts_and_column_families() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 1000);
    let rv = committed(&apply(&mut e, vec![Command::blind(vec![set("a", "0")])])[0]);
    apply(&mut e, vec![Command::blind(vec![set("m", "1")])]);
    let reads = |cf: &str, lo: &str, hi: &str| Command {
        read_version: Some(rv),
        writes: vec![set("z", "w")],
        read_conflicts: vec![KeyRange {
            cf: cf.into(),
            begin: b(lo),
            end: b(hi),
        }],
    };
    assert!(matches!(
        apply(&mut e, vec![reads("", "k", "n")])[0],
        Outcome::Conflict { .. }
    ));
    committed(&apply(&mut e, vec![reads("", "n", "y")])[0]);
    // "m" in another column family is a different key.
    committed(&apply(&mut e, vec![reads("other", "k", "n")])[0]);
    apply(
        &mut e,
        vec![Command::blind(vec![WriteOp::Set {
            cf: "other".into(),
            key: b("m"),
            value: b("cf"),
        }])],
    );
    let r = e.reader();
    let v = r.last_version();
    assert_eq!(r.get("other", b"m", v).unwrap(), Some(b("cf")));
    assert_eq!(r.get("", b"m", v).unwrap(), Some(b("1")));
    assert_eq!(r.get("absent-cf", b"m", v).unwrap(), None);
}

#[test]
fn snapshot_reads_see_old_values_after_overwrite_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 1000);
    let v1 = committed(&apply(&mut e, vec![Command::blind(vec![set("k", "old")])])[0]);
    let v2 = committed(&apply(&mut e, vec![Command::blind(vec![set("k", "new")])])[0]);
    let v3 = committed(&apply(&mut e, vec![Command::blind(vec![del("k")])])[0]);
    let r = e.reader();
    assert_eq!(r.get("", b"k", Version(0)).unwrap(), None);
    assert_eq!(r.get("", b"k", v1).unwrap(), Some(b("old")));
    assert_eq!(r.get("", b"k", v2).unwrap(), Some(b("new")));
    assert_eq!(r.get("", b"k", v3).unwrap(), None);
    assert!(matches!(
        r.get("", b"k", Version(99)),
        Err(StorageError::FutureVersion { .. })
    ));
    assert_eq!(range_all(&r, q("", "\u{7f}"), v2), vec!["k"]);
    assert!(range_all(&r, q("", "\u{7f}"), v3).is_empty());
}

#[test]
fn range_selector_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 1000);
    let keys = ["a", "b", "c", "d", "e"];
    apply(
        &mut e,
        vec![Command::blind(keys.iter().map(|k| set(k, k)).collect())],
    );
    // A deleted key is invisible to every selector.
    apply(
        &mut e,
        vec![
            Command::blind(vec![set("bb", "x")]),
            Command::blind(vec![del("bb")]),
        ],
    );
    let r = e.reader();
    let v = r.last_version();
    assert_eq!(range_all(&r, q("b", "d"), v), vec!["b", "c"]);
    let mut x = q("b", "d");
    x.begin_or_equal = false;
    x.end_or_equal = true;
    assert_eq!(range_all(&r, x, v), vec!["c", "d"]);
    let mut x = q("b", "d");
    x.begin_offset = 1;
    x.end_offset = 1;
    assert_eq!(range_all(&r, x, v), vec!["c", "d"]);
    let mut x = q("c", "d");
    x.begin_offset = -2;
    assert_eq!(range_all(&r, x, v), vec!["a", "b", "c"]);
    let mut x = q("c", "e");
    x.end_offset = -1;
    assert_eq!(range_all(&r, x, v), vec!["c"]);
    let mut x = q("a", "\u{7f}");
    x.begin_offset = -5;
    assert_eq!(
        range_all(&r, x, v),
        keys.to_vec(),
        "clamped at the first key"
    );
    // Limits and has_more: exactly `limit` keys means no more.
    let mut x = q("a", "\u{7f}");
    x.limit = 5;
    let res = r.range(&x, v).unwrap();
    assert_eq!(res.key_values.len(), 5);
    assert!(!res.has_more);
    x.limit = 4;
    let res = r.range(&x, v).unwrap();
    assert_eq!(res.key_values.len(), 4);
    assert!(res.has_more);
    assert_eq!(res.key_values[0], (b("a"), b("a")));
    // A byte bound cuts the range with has_more (each pair here is 2 bytes), never below one pair.
    let mut x = q("a", "\u{7f}");
    x.max_bytes = 5;
    let res = r.range(&x, v).unwrap();
    assert_eq!(res.key_values.len(), 2);
    assert!(res.has_more);
    x.max_bytes = 1;
    let res = r.range(&x, v).unwrap();
    assert_eq!(res.key_values.len(), 1);
    assert!(res.has_more);
    x.max_bytes = 10;
    let res = r.range(&x, v).unwrap();
    assert_eq!(res.key_values.len(), 5);
    assert!(!res.has_more);
}

#[test]
fn versionstamps_fill_the_last_ten_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 1000);
    apply(&mut e, vec![Command::blind(vec![set("x", "y")])]);
    let o = apply(
        &mut e,
        vec![Command::blind(vec![
            WriteOp::SetVersionstampedKey {
                cf: "".into(),
                key_prefix: b("user/0123456789"),
                value: b("v"),
            },
            WriteOp::SetVersionstampedValue {
                cf: "".into(),
                key: b("vs"),
                value_prefix: b("val:0123456789"),
            },
        ])],
    );
    let Outcome::Committed { version, generated } = &o[0] else {
        panic!("{o:?}")
    };
    assert_eq!(*version, Version(2));
    let mut want_key = b"user/".to_vec();
    want_key.extend_from_slice(&2u64.to_be_bytes());
    want_key.extend_from_slice(&0u16.to_be_bytes());
    assert_eq!(generated[0], Bytes::from(want_key.clone()));
    let mut want_val = b"val:".to_vec();
    want_val.extend_from_slice(&2u64.to_be_bytes());
    want_val.extend_from_slice(&1u16.to_be_bytes());
    assert_eq!(generated[1], Bytes::from(want_val.clone()));
    let r = e.reader();
    assert_eq!(r.get_latest("", &want_key).unwrap(), Some(b("v")));
    assert_eq!(
        r.get_latest("", b"vs").unwrap(),
        Some(Bytes::from(want_val))
    );
    // Too short: refused at apply, nothing written.
    let o = apply(
        &mut e,
        vec![Command::blind(vec![
            set("partial", "no"),
            WriteOp::SetVersionstampedKey {
                cf: "".into(),
                key_prefix: b("short"),
                value: b("v"),
            },
        ])],
    );
    assert!(matches!(&o[0], Outcome::Invalid(m) if m.contains("at least 10")));
    assert_eq!(e.reader().get_latest("", b"partial").unwrap(), None);
}

#[test]
fn gc_removes_old_versions_and_old_reads_fail_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 3);
    let v1 = committed(&apply(&mut e, vec![Command::blind(vec![set("k", "1")])])[0]);
    let _ = committed(&apply(&mut e, vec![Command::blind(vec![set("gone", "x")])])[0]);
    apply(&mut e, vec![Command::blind(vec![del("gone")])]);
    for i in 2..=10 {
        apply(&mut e, vec![Command::blind(vec![set("k", &i.to_string())])]);
    }
    let r = e.reader();
    let latest = r.last_version();
    assert_eq!(r.oldest_version(), Version(latest.0 - 3));
    assert!(matches!(
        r.get("", b"k", v1),
        Err(StorageError::TooOld { .. })
    ));
    assert_eq!(r.get("", b"k", r.oldest_version()).unwrap(), Some(b("7")));
    // Old versions go when RocksDB compacts (the GC compaction filter); force one.
    e.compact_all();
    assert_eq!(r.get("", b"k", r.oldest_version()).unwrap(), Some(b("7")));
    assert_eq!(r.get_latest("", b"k").unwrap(), Some(b("10")));
    // Count raw version entries of "k": only versions the window can still see remain.
    let prefix = keys::data_key_prefix("", b"k");
    let n = e
        .db()
        .prefix_iterator(&prefix)
        .take_while(|kv| {
            kv.as_ref()
                .map(|(k, _)| k.starts_with(&prefix))
                .unwrap_or(false)
        })
        .count();
    assert!(n <= 4, "{n} versions of k remain");
    let gone = keys::data_key_prefix("", b"gone");
    let n = e
        .db()
        .prefix_iterator(&gone)
        .take_while(|kv| {
            kv.as_ref()
                .map(|(k, _)| k.starts_with(&gone))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(
        n, 0,
        "a deleted key leaves nothing once its tombstone left the window"
    );
    // A transaction whose read version left the window cannot commit.
    let o = apply(
        &mut e,
        vec![Command {
            read_version: Some(v1),
            writes: vec![set("k", "late")],
            read_conflicts: vec![single_key_range("", &b("k"))],
        }],
    );
    assert!(matches!(o[0], Outcome::TooOld { .. }));
}

#[test]
fn identical_logs_give_identical_bytes() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let mut e1 = open(&d1, 5);
    let mut e2 = open(&d2, 5);
    for i in 0..40u32 {
        let k = format!("k{}", i % 7);
        let cmd = Command {
            read_version: Some(Version(i.saturating_sub(2) as u64)),
            writes: vec![set(&k, &i.to_string())],
            read_conflicts: vec![single_key_range("", &b(&format!("k{}", (i + 1) % 7)))],
        };
        let a = apply(
            &mut e1,
            vec![
                cmd.clone(),
                Command::blind(vec![del(&format!("k{}", i % 5))]),
            ],
        );
        let b2 = apply(
            &mut e2,
            vec![cmd, Command::blind(vec![del(&format!("k{}", i % 5))])],
        );
        assert_eq!(a, b2);
    }
    type Dump = Vec<(Box<[u8]>, Box<[u8]>)>;
    let dump = |e: &KvStoreExecutor| -> Dump {
        e.db()
            .iterator(rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap())
            .collect()
    };
    assert_eq!(dump(&e1), dump(&e2));
}

#[test]
fn external_log_durability_advances_only_when_a_flush_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, 100);
    apply(&mut e, vec![Command::blind(vec![set("a", "1")])]);
    apply(&mut e, vec![Command::blind(vec![set("b", "2")])]);
    // Applied, but only in the memtable: not durable.
    assert_eq!(e.durable_sequence().unwrap(), Sequence(0));
    e.start_flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.durable_sequence().unwrap() < Sequence(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "flush never completed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A slot applied after the flush started is not covered by it.
    apply(&mut e, vec![Command::blind(vec![set("c", "3")])]);
    assert_eq!(e.durable_sequence().unwrap(), Sequence(2));
    assert_eq!(e.flush().unwrap(), Sequence(3));
}

#[test]
fn many_slots_in_one_write_decide_like_one_at_a_time() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let mut one = open(&d1, 100);
    let mut many = open(&d2, 100);
    let slots: Vec<Vec<Command>> = (0..6u64)
        .map(|i| {
            vec![
                Command::blind(vec![set("k", &i.to_string())]),
                // Reads "k" (even slots: conflicts with the write of "k" just before it) or a
                // key nobody writes (odd slots: commits).
                Command {
                    read_version: Some(Version(i)),
                    writes: vec![set("other", &i.to_string())],
                    read_conflicts: vec![single_key_range(
                        "",
                        &b(if i % 2 == 0 { "k" } else { "untouched" }),
                    )],
                },
            ]
        })
        .collect();
    let mut expected = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        expected.push(one.apply(Sequence(i as u64 + 1), s).unwrap());
    }
    let refs: Vec<&[Command]> = slots.iter().map(Vec::as_slice).collect();
    // The first two were applied before (a replay): they come back as None.
    many.apply_many(Sequence(1), &refs[..2]).unwrap();
    let got = many.apply_many(Sequence(1), &refs).unwrap();
    assert_eq!(&got[..2], &[None, None]);
    assert_eq!(&got[2..], &expected[2..]);
    // The workload exercises both decisions.
    let reads: Vec<&Outcome> = expected.iter().map(|o| &o.as_ref().unwrap()[1]).collect();
    assert!(reads.iter().any(|o| matches!(o, Outcome::Conflict { .. })));
    assert!(reads.iter().any(|o| matches!(o, Outcome::Committed { .. })));
    assert_eq!(many.next_expected_sequence(), Sequence(7));
    assert_eq!(
        many.reader().get_latest("", b"k").unwrap(),
        one.reader().get_latest("", b"k").unwrap()
    );
    // A gap is refused.
    assert!(matches!(
        many.apply_many(Sequence(9), &refs[..1]),
        Err(StorageError::OutOfOrder { .. })
    ));
}

/// Every chunk of `src`'s snapshot, asked for in turn with `chunk_bytes` per chunk.
fn snapshot_chunks(src: &KvStoreExecutor, chunk_bytes: usize) -> Vec<SnapshotChunk> {
    let source = SnapshotSource::new(src.db().clone());
    let mut chunks: Vec<SnapshotChunk> = Vec::new();
    let mut cursor = Some(Bytes::new());
    let got = std::cell::RefCell::new(Vec::new());
    source.serve(
        chunk_bytes,
        || {
            if let Some(c) = got.borrow().last() {
                let c: &SnapshotChunk = c;
                if c.done {
                    return None;
                }
                cursor = Some(c.cursor.clone());
            }
            cursor.take()
        },
        |c| got.borrow_mut().push(c.unwrap()),
    );
    chunks.extend(got.into_inner());
    chunks
}

#[test]
fn a_snapshot_installed_in_small_chunks_reproduces_the_store_and_its_position() {
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = open(&da, 1_000);
    for i in 0..50 {
        apply(
            &mut a,
            vec![Command::blind(vec![set(&format!("k{i:02}"), "v1")])],
        );
    }
    let v_mid = a.last_version();
    for i in 0..25 {
        apply(
            &mut a,
            vec![Command::blind(vec![set(&format!("k{i:02}"), "v2")])],
        );
    }
    apply(&mut a, vec![Command::blind(vec![del("k49")])]);
    // The receiver holds data of its own that the install must replace.
    let mut b = open(&db_dir, 1_000);
    apply(&mut b, vec![Command::blind(vec![set("stale", "x")])]);

    let chunks = snapshot_chunks(&a, 200);
    assert!(chunks.len() > 5, "small chunks: {}", chunks.len());
    // A chunk's bytes are checksummed on the wire.
    let mut wire = Vec::new();
    chunks[1].encode(&mut wire);
    let mut r = crate::util::codec::Reader::new(&wire);
    assert_eq!(SnapshotChunk::decode(&mut r).unwrap(), chunks[1]);
    let n = wire.len();
    wire[n - 3] ^= 0x40;
    let mut r = crate::util::codec::Reader::new(&wire);
    assert_eq!(
        SnapshotChunk::decode(&mut r),
        Err(crate::util::codec::DecodeError::Checksum("snapshot chunk"))
    );

    let reader = b.reader();
    b.install_begin().unwrap();
    // Readers are fenced off while the store is incomplete.
    assert!(matches!(
        reader.get("", b"stale", Version(0)),
        Err(StorageError::Installing)
    ));
    for c in &chunks {
        b.install_chunk(c).unwrap();
    }
    let last = chunks.last().unwrap();
    b.install_finish(last.slot, last.last_version).unwrap();
    assert_eq!(b.next_expected_sequence(), a.next_expected_sequence());
    assert_eq!(b.last_version(), a.last_version());
    let (ra, rb) = (a.reader(), b.reader());
    for at in [v_mid, a.last_version()] {
        assert_eq!(
            range_all(&rb, q("", "\x7f"), at),
            range_all(&ra, q("", "\x7f"), at)
        );
        assert_eq!(
            rb.get("", b"k03", at).unwrap(),
            ra.get("", b"k03", at).unwrap()
        );
    }
    assert_eq!(rb.get("", b"stale", b.last_version()).unwrap(), None);
    // The next slot applies on top, exactly once.
    let seq = b.next_expected_sequence();
    assert!(b.apply(Sequence(seq.0 - 1), &[]).unwrap().is_none());
    apply(&mut b, vec![Command::blind(vec![set("after", "1")])]);
    let reopened = {
        drop(reader);
        drop(rb);
        drop(b);
        open(&db_dir, 1_000)
    };
    assert_eq!(reopened.next_expected_sequence(), Sequence(seq.0 + 1));
}

#[test]
fn a_crash_during_an_install_leaves_an_empty_store_not_a_partial_one() {
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = open(&da, 1_000);
    for i in 0..20 {
        apply(
            &mut a,
            vec![Command::blind(vec![set(&format!("k{i:02}"), "v")])],
        );
    }
    let chunks = snapshot_chunks(&a, 100);
    let mut b = open(&db_dir, 1_000);
    apply(&mut b, vec![Command::blind(vec![set("old", "x")])]);
    b.install_begin().unwrap();
    b.install_chunk(&chunks[0]).unwrap();
    // What RocksDB flushed before the "crash" holds the marker and part of the data.
    b.flush().unwrap();
    drop(b);
    let b = open(&db_dir, 1_000);
    assert_eq!(b.next_expected_sequence(), Sequence(1));
    assert_eq!(b.last_version(), Version(0));
    let r = b.reader();
    assert_eq!(r.get_latest("", b"k00").unwrap(), None);
    assert_eq!(r.get_latest("", b"old").unwrap(), None);
}
