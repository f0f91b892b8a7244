//! The client front: the Thrift service `TransactionalKV` on glommio io_uring TCP.
//!
//! The layers, outside in: `server` (listener, connections, TLS, in-flight bounds) → `codec`
//! (cuts messages off the byte stream) → `wire` (decodes a call into `Call`, encodes replies;
//! the `calls!` table; `generated` from `thrift/paxoskv.thrift` by `scripts/gen-thrift.sh`) →
//! `cmd` (`handle`: ordering, faults, metrics; one module per command family) with `ctx` (what
//! every connection shares, and validation), `pipeline` (ordering on one connection) and
//! `reply` (the one place a `ServiceError` becomes wire text). Must not: make consensus or
//! storage decisions.
//!
//! Only `codec`, `wire`, `generated` and `bounded_input` are built for the client library.

pub mod bounded_input;
pub mod codec;
#[allow(clippy::all, dead_code, unused)]
#[rustfmt::skip]
pub mod generated;
#[cfg(feature = "server")]
pub mod cmd;
#[cfg(feature = "server")]
pub mod ctx;
#[cfg(feature = "server")]
mod host;
#[cfg(feature = "server")]
mod pipeline;
#[cfg(feature = "server")]
pub mod reply;
#[cfg(feature = "server")]
mod send_batch;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod spread;
pub mod wire;

#[cfg(feature = "server")]
pub use host::*;
