//! The durable "rebuilding" marker of a replica that lost its state (see `paxos::amnesia`).
//!
//! A replica that starts on an empty WAL cannot tell a new cluster from a replaced disk, so it
//! assumes the worst: it writes `<wal_dir>/rebuilding` (durably) before it takes part in
//! anything, starts amnesiac, and removes the marker once its core says it has rebuilt. A crash
//! in between keeps the marker, so the replica stays amnesiac across restarts until it is done.

use std::path::Path;

use crate::error::{Error, Result};

const FILE_NAME: &str = "rebuilding";

/// Whether the replica starts amnesiac: the marker exists, or the WAL held nothing (then the
/// marker is made durable before this returns).
pub fn amnesiac_at_start(dir: &Path, wal_empty: bool) -> Result<bool> {
    let path = dir.join(FILE_NAME);
    if path.exists() {
        return Ok(true);
    }
    if !wal_empty {
        return Ok(false);
    }
    std::fs::File::create(&path)
        .and_then(|f| f.sync_all())
        .map_err(Error::file(&path))?;
    sync_dir(dir)?;
    Ok(true)
}

/// The core rebuilt what it forgot: drop the marker.
pub fn mark_rebuilt(dir: &Path) -> Result<()> {
    let path = dir.join(FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::file(&path)(e)),
    }
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::file(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_wal_starts_amnesiac_until_marked_rebuilt_even_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(amnesiac_at_start(dir.path(), true).unwrap());
        // Restarted before rebuilding, with records in the WAL by now: still amnesiac.
        assert!(amnesiac_at_start(dir.path(), false).unwrap());
        mark_rebuilt(dir.path()).unwrap();
        assert!(!amnesiac_at_start(dir.path(), false).unwrap());
        mark_rebuilt(dir.path()).unwrap();
    }
}
