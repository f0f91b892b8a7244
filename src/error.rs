//! The crate's error: one type over the subsystems' own errors (`ConfigError`, `WalError`,
//! `StorageError`, `TlsError`, `TransportError`), for the paths that cross subsystems — a
//! replica's start and run, its applier, the files beside its WAL. Clients never see it:
//! the front answers them with a `service::ServiceError` (an `ErrorCode` and a message), and
//! the shell turns a replica's failure into `TIMEOUT`/`UNAVAILABLE` for the clients it owed.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::storage::StorageError;
use crate::tls::TlsError;
use crate::transport::TransportError;
use crate::wal::WalError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A file beside the WAL (the incarnation counter, the rebuilding marker) or its directory.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Such a file holds something it never should.
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    /// A WAL record that passed its checksum does not decode (written by another version).
    #[error("wal record {lsn}: {source}")]
    WalRecord {
        lsn: u64,
        #[source]
        source: crate::paxos::DecodeError,
    },
    /// The WAL task stopped: a write or sync failed (never retried).
    #[error("{0}")]
    WalStopped(String),
    /// The store refused a step the replica cannot go on without.
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: StorageError,
    },
    /// The applier stopped; the replica stops with it.
    #[error("apply failed: {0}")]
    Apply(Box<Error>),
    /// A failure a test asked for (`setFaultInjection`).
    #[error("{0}")]
    Injected(&'static str),
}

impl Error {
    /// Wraps an IO error on `path`: `.map_err(Error::file(&path))`.
    pub fn file(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::File {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
