//! WAL recovery from arbitrary segment bytes: the records found are in LSN sequence and end
//! inside the data; record and command payloads decode or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paxoskv::paxos::Record;
use paxoskv::wal::{recover_segment, Lsn};

fuzz_target!(|data: &[u8]| {
    let first = Lsn(1 + data.first().copied().unwrap_or(0) as u64 % 4);
    let (records, end, _acknowledged) = recover_segment(data, first);
    assert!(end <= data.len());
    for (i, (lsn, payload)) in records.iter().enumerate() {
        assert_eq!(lsn.0, first.0 + i as u64);
        let _ = Record::decode(payload);
    }
    let _ = Record::decode(data);
});
