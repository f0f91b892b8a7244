//! The client front: the Thrift service `TransactionalKV` on glommio io_uring TCP.
//!
//! `codec` cuts messages off the byte stream, `wire` decodes calls and encodes replies with the
//! generated structs (`generated`, from `thrift/paxoskv.thrift` by `scripts/gen-thrift.sh`),
//! `handlers` serves each method against a `KvService`, and `server` runs the listener and the
//! connections. Must not: make consensus or storage decisions.

pub mod bounded_input;
pub mod codec;
#[allow(clippy::all, dead_code, unused)]
#[rustfmt::skip]
pub mod generated;
#[cfg(feature = "server")]
pub mod handlers;
#[cfg(feature = "server")]
mod host;
#[cfg(feature = "server")]
pub mod server;
pub mod wire;

#[cfg(feature = "server")]
pub use host::*;
