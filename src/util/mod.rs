//! Small shared helpers with no knowledge of Paxos, storage or the network.
//!
//! `codec` is the little-endian binary reader/writer used by every encoding the project owns
//! (log commands, replica messages, WAL records). It never panics on bad input: every read is
//! bounds-checked and returns `DecodeError`.

pub mod codec;
pub mod duration;
pub mod guest;
pub mod io;
pub mod read_buf;
pub mod reply;
pub mod time;

#[cfg(test)]
mod wake_tests;
