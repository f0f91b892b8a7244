//! The Thrift front's message walker and decoder on arbitrary bytes: no panic, no hang, no
//! allocation beyond the input; a resumed walk (bytes arriving in pieces) finds the same end
//! as a whole walk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paxoskv::front::{codec, wire};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode(data);
    let Ok(Some(t)) = codec::detect(data) else {
        return;
    };
    let whole = codec::scan(data, t, 1 << 20);
    if let Ok(codec::Scan::Complete { header, body }) = whole {
        let _ = wire::decode(&data[header..header + body]);
    }
    // The same bytes in pieces of a size taken from the input.
    let step = 1 + data.first().copied().unwrap_or(0) as usize % 61;
    let mut state = codec::ScanState::default();
    let mut cut = 0;
    let resumed = loop {
        cut = (cut + step).min(data.len());
        match codec::scan_resume(&data[..cut], t, 1 << 20, &mut state) {
            Ok(codec::Scan::Incomplete) if cut < data.len() => continue,
            other => break other,
        }
    };
    if let (Ok(a), Ok(b)) = (&whole, &resumed) {
        assert_eq!(a, b, "a resumed walk disagrees with a whole walk");
    }
});
