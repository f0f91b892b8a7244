//! Tests of the WAL segments: reopen and rotation, torn tails, damage before acknowledged groups, short writes.

use super::*;
use glommio::LocalExecutorBuilder;

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn records_survive_reopen_and_segments_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (mut wal, recs) = Wal::open(&d, 64 << 10, false).await.unwrap();
        assert!(recs.is_empty());
        for i in 0..300u32 {
            let payload = vec![i as u8; 1 + (i as usize * 7) % 900];
            assert_eq!(wal.append(&payload).unwrap(), Lsn(i as u64 + 1));
            if i % 10 == 9 {
                assert_eq!(wal.sync().await.unwrap(), Lsn(i as u64 + 1));
            }
        }
        assert!(
            wal.segment_count() > 1,
            "300 records of ~450 B rotate 64 KiB segments"
        );
        wal.close().await.unwrap();
        let (mut wal, recs) = Wal::open(&d, 64 << 10, false).await.unwrap();
        assert_eq!(recs.len(), 300);
        for (i, (lsn, p)) in recs.iter().enumerate() {
            assert_eq!(*lsn, Lsn(i as u64 + 1));
            assert_eq!(p.len(), 1 + (i * 7) % 900);
            assert!(p.iter().all(|&b| b == i as u8));
        }
        assert_eq!(wal.append(b"next").unwrap(), Lsn(301));
        wal.sync().await.unwrap();
        let before = wal.segment_count();
        assert!(wal.remove_before(Lsn(200)).unwrap() > 0);
        assert!(wal.segment_count() < before);
        let first = wal.first_lsn();
        wal.close().await.unwrap();
        let (_wal, recs) = Wal::open(&d, 64 << 10, false).await.unwrap();
        assert_eq!(recs.first().unwrap().0, first);
        assert_eq!(recs.last().unwrap().0, Lsn(301));
    });
}

/// The (first) segment file in `dir`; the directory may also hold a spare being prepared.
fn segment_file(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(SEGMENT_SUFFIX))
        .unwrap()
}

#[test]
fn damage_before_later_acknowledged_group_commits_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let d2 = d.clone();
    run(move || async move {
        let (mut wal, _) = Wal::open(&d, 64 << 10, false).await.unwrap();
        // Three group commits of three records each.
        for g in 0..3u8 {
            for i in 0..3u8 {
                wal.append(&[g * 10 + i; 100]).unwrap();
            }
            wal.sync().await.unwrap();
        }
        wal.close().await.unwrap();
    });
    let seg = segment_file(&d2);
    let clean = std::fs::read(&seg).unwrap();
    let rec = 100 + RECORD_HEADER_BYTES;
    // A flipped byte in the first group: two acknowledged groups follow it.
    let mut bytes = clean.clone();
    bytes[rec + RECORD_HEADER_BYTES + 7] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let d3 = d2.clone();
    run(move || async move {
        match Wal::open(&d3, 64 << 10, true).await {
            Err(WalError::Corrupt(m)) => assert!(m.contains("--rebuild"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok((_, recs)) => panic!("damage mid-log was cut silently: {} records", recs.len()),
        }
    });
    // The same damage in the last group is a torn tail: cut it.
    let mut bytes = clean;
    bytes[7 * rec + RECORD_HEADER_BYTES + 7] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    run(move || async move {
        let (_, recs) = Wal::open(&d2, 64 << 10, true).await.unwrap();
        assert_eq!(recs.len(), 7, "the torn last group is cut at the damage");
    });
}

#[test]
fn a_short_write_fails_the_sync_and_poisons_the_log_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (mut wal, _) = Wal::open(&d, 64 << 10, true).await.unwrap();
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
        }
        assert_eq!(wal.sync().await.unwrap(), Lsn(10));
        wal.inject_short_write();
        for i in 10..40u8 {
            wal.append(&[i; 100]).unwrap();
        }
        match wal.sync().await {
            Err(WalError::Io { message, .. }) => assert!(message.contains("short write")),
            other => panic!("a short write was taken for a full one: {other:?}"),
        }
        assert!(matches!(wal.append(b"x"), Err(WalError::Failed)));
        assert!(matches!(wal.sync().await, Err(WalError::Failed)));
        drop(wal);
        let (_, recs) = Wal::open(&d, 64 << 10, true).await.unwrap();
        assert!(
            recs.len() >= 10,
            "acknowledged records lost: {}",
            recs.len()
        );
        for (i, (lsn, payload)) in recs.iter().take(10).enumerate() {
            assert_eq!(*lsn, Lsn(i as u64 + 1));
            assert_eq!(&payload[..], &[i as u8; 100][..]);
        }
    });
}

#[test]
fn torn_tail_is_cut_and_later_appends_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let d2 = d.clone();
    run(move || async move {
        let (mut wal, _) = Wal::open(&d, 64 << 10, false).await.unwrap();
        for i in 0..10u8 {
            wal.append(&[i; 100]).unwrap();
        }
        wal.sync().await.unwrap();
        wal.close().await.unwrap();
    });
    // Damage the last record's payload, as a torn write would. (The directory also holds
    // the next segment, prepared in the background.)
    let seg = segment_file(&d2);
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = 9 * (100 + RECORD_HEADER_BYTES) + RECORD_HEADER_BYTES + 50;
    bytes[last] ^= 0xFF;
    // And leave a stray fragment further on.
    bytes[5000] = 0xAB;
    std::fs::write(&seg, &bytes).unwrap();
    let d3 = d2.clone();
    run(move || async move {
        let (mut wal, recs) = Wal::open(&d3, 64 << 10, true).await.unwrap();
        assert_eq!(recs.len(), 9, "the torn record is cut");
        assert_eq!(wal.append(b"after").unwrap(), Lsn(10));
        wal.sync().await.unwrap();
        wal.close().await.unwrap();
        let (_, recs) = Wal::open(&d3, 64 << 10, true).await.unwrap();
        assert_eq!(recs.len(), 10);
        assert_eq!(&recs[9].1[..], b"after");
    });
    let bytes = std::fs::read(&seg).unwrap();
    assert_eq!(bytes[5000], 0, "fragments past the tail are zeroed");
}
