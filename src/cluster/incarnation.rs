//! Request identity across restarts. A replica recognises its own clients' commands in the log
//! by (origin replica, request id). Request ids therefore carry the replica's incarnation — a
//! counter persisted beside its WAL and bumped at every start — in their high bits, so a slot
//! re-emitted after a restart (WAL replay, a new primary re-proposing, catch-up) can never be
//! taken for a new client's request that happens to have the same sequence number.
//!
//! Must not: reuse an incarnation: the bumped value is durable (written, fsynced, renamed,
//! directory fsynced) before the replica takes its first request.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Bits of a request id that count requests within one incarnation.
pub const REQUEST_SEQ_BITS: u32 = 40;
/// Incarnations before the counter would wrap (a replica restarted 16 million times).
pub const INCARNATION_MAX: u64 = (1 << (64 - REQUEST_SEQ_BITS)) - 1;

const FILE_NAME: &str = "incarnation";

/// Reads the incarnation persisted in `dir`, makes the next one durable, and returns it.
pub fn next_incarnation(dir: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(Error::file(dir))?;
    let path = dir.join(FILE_NAME);
    let previous = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<u64>().map_err(|e| Error::BadFile {
            path: path.clone(),
            message: format!("bad incarnation {s:?}: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::file(&path)(e)),
    };
    let next = previous + 1;
    if next > INCARNATION_MAX {
        return Err(Error::BadFile {
            path,
            message: format!("incarnation {next} exceeds {INCARNATION_MAX}"),
        });
    }
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(Error::file(&tmp))?;
    f.write_all(format!("{next}\n").as_bytes())
        .map_err(Error::file(&tmp))?;
    f.sync_all().map_err(Error::file(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::file(&path))?;
    super::rebuild::sync_dir(dir)?;
    Ok(next)
}

/// The first request id of an incarnation; ids then count up by one.
pub fn first_request_id(incarnation: u64) -> u64 {
    (incarnation << REQUEST_SEQ_BITS) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_gets_a_new_incarnation_and_disjoint_request_ids() {
        let dir = tempfile::tempdir().unwrap();
        let a = next_incarnation(dir.path()).unwrap();
        let b = next_incarnation(dir.path()).unwrap();
        assert_eq!((a, b), (1, 2));
        // A billion requests in the first incarnation stay below the second's first id.
        assert!(first_request_id(a) + 1_000_000_000 < first_request_id(b));
        assert_ne!(first_request_id(a), first_request_id(b));
    }

    #[test]
    fn a_damaged_incarnation_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "garbage").unwrap();
        assert!(next_incarnation(dir.path()).is_err());
    }
}
