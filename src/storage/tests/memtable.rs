//! `StoreOptions::memtable_bytes`: a store's memtables stay within two of that size however
//! much is written without a flush of its own.

use super::*;

/// Memory held by the store's memtables (the one being written and those waiting for a flush)
/// after 24 MiB of writes in runs of 64 KiB values, with no flush started by the caller.
fn memtables_after_24_mib(memtable_bytes: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut e = KvStoreExecutor::open(
        dir.path(),
        StoreOptions {
            durability: Durability::ExternalLog,
            memtable_bytes,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let value = Bytes::from(vec![b'v'; 64 << 10]);
    let mut peak = 0;
    for i in 0..384 {
        let write = WriteOp::Set {
            cf: "".into(),
            key: Bytes::from(format!("k{i:04}")),
            value: value.clone(),
        };
        apply(&mut e, vec![Command::blind(vec![write])]);
        let held = e
            .db()
            .property_int_value("rocksdb.cur-size-all-mem-tables")
            .unwrap()
            .unwrap_or(0);
        peak = peak.max(held);
    }
    peak
}

#[test]
fn memtables_stay_within_two_of_the_configured_size() {
    const MIB: u64 = 1 << 20;
    // Two memtables of 1 MiB, and the arena's last block over the size.
    let small = memtables_after_24_mib(1 << 20);
    assert!(small <= 3 * MIB, "memtables held {small} bytes");
    // With the default (64 MiB) nothing was flushed: all 24 MiB are still in memory.
    let default = memtables_after_24_mib(StoreOptions::default().memtable_bytes);
    assert!(default >= 24 * MIB, "memtables held {default} bytes");
}
