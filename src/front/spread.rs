//! Spreading read-only connections over the other executors of the process.
//!
//! The front accepts every connection on the executor of the primary it feeds, so a write
//! reaches its replica without crossing cores. Reads under the primary's lease need no step of
//! the primary (atomics and the store, which any thread may read), so a connection that only
//! reads can be served on any executor: on a server of several cores, the accepting front hands
//! every other connection that has made `thrift.spread_after_reads` reads and nothing else to a
//! helper front on another executor (round robin, the accepting executor taking its turn too).
//! The socket moves as a duplicated descriptor with the bytes already read after the last
//! complete message; the client sees nothing. A connection moves once, after its replies are
//! all written, while its session holds nothing (no read version set, no read conflicts, no
//! write); one that writes later is still served where it is (its writes cross to the primary
//! like a forwarded call). TLS connections stay where they were accepted.

use std::cell::Cell;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use futures_channel::mpsc;
use futures_lite::StreamExt;

use super::codec::Transport;
use super::ctx::FrontCtx;
use super::pipeline::{order_of, Order};
use super::server::{self, Conns, Start};
use super::wire::Call;
use crate::service::KvService;
use crate::txn::interactive::Session;

/// A connection on its way to another executor.
pub struct Handed {
    fd: OwnedFd,
    /// Bytes read after the last complete message (the start of the next one).
    pending: Vec<u8>,
    transport: Option<Transport>,
}

/// Where connections are handed to: one channel per helper front.
pub type HandOff = mpsc::UnboundedSender<Handed>;

/// The accepting front's side: the helpers and whose turn the next connection is.
pub struct Spreader {
    helpers: Vec<HandOff>,
    turn: Cell<usize>,
    after_reads: u32,
}

impl Spreader {
    /// None when there is nowhere to spread to (or spreading is off: `after_reads` 0).
    pub fn new(helpers: Vec<HandOff>, after_reads: u32) -> Option<Rc<Spreader>> {
        (!helpers.is_empty() && after_reads > 0).then(|| {
            Rc::new(Spreader {
                helpers,
                turn: Cell::new(0),
                after_reads,
            })
        })
    }

    /// Where the next connection that qualified goes: None keeps it on this executor.
    fn next_home(&self) -> Option<&HandOff> {
        let t = self.turn.get();
        self.turn.set((t + 1) % (self.helpers.len() + 1));
        t.checked_sub(1).and_then(|i| self.helpers.get(i))
    }
}

/// One connection's record on the accepting front: how many reads it made, whether it did
/// anything else, whether its place is settled.
pub struct ReadOnly {
    spreader: Rc<Spreader>,
    fd: RawFd,
    reads: u32,
    settled: bool,
}

impl ReadOnly {
    /// `fd` is the connection's socket (plain TCP), open for as long as this record lives.
    pub fn new(spreader: Rc<Spreader>, fd: RawFd) -> Self {
        ReadOnly {
            spreader,
            fd,
            reads: 0,
            settled: false,
        }
    }

    /// Counts a call the connection made; a write settles it where it is.
    pub fn note(&mut self, call: &Call) {
        if order_of(call) == Order::Write {
            self.settled = true;
        } else if is_plain_read(call) {
            self.reads = self.reads.saturating_add(1);
        }
    }

    /// Whether the connection moves now (and then where): it made enough reads and nothing
    /// else, `idle` says its replies are all written, and its session holds nothing. Asked
    /// once it qualifies; the answer settles it either way.
    pub fn hand_to(&mut self, idle: bool, session: &Session) -> Option<HandOff> {
        if self.settled || self.reads < self.spreader.after_reads || !idle {
            return None;
        }
        if !session_is_empty(session) {
            return None;
        }
        self.settled = true;
        self.spreader.next_home().cloned()
    }

    /// The connection, ready to send: a duplicate of its socket (this executor closes its own
    /// descriptor when the connection's task ends) and the bytes read past its last message.
    pub fn package(&self, pending: &[u8], transport: Option<Transport>) -> std::io::Result<Handed> {
        // SAFETY: `fd` is the connection's socket, open while the connection's task (which
        // owns this record) runs; it is only borrowed to duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) }.try_clone_to_owned()?;
        Ok(Handed {
            fd,
            pending: pending.to_vec(),
            transport,
        })
    }
}

/// Calls that read committed data and leave nothing in the session.
fn is_plain_read(call: &Call) -> bool {
    matches!(
        call,
        Call::Get(_)
            | Call::GetRange(_)
            | Call::SnapshotGet(_)
            | Call::SnapshotGetRange(_)
            | Call::SnapshotRead(_)
            | Call::GetReadVersion(_)
    )
}

fn session_is_empty(s: &Session) -> bool {
    s.read_version.is_none()
        && s.read_conflicts.is_empty()
        && s.committed_version.is_none()
        && s.last_write.is_none()
}

/// A helper front: serves the connections handed to it, on its own executor, until the
/// process ends.
pub async fn run_helper<S: KvService>(
    ctx: Rc<FrontCtx<S>>,
    mut handed: mpsc::UnboundedReceiver<Handed>,
) {
    let conns = Conns::start(&ctx);
    while let Some(h) = handed.next().await {
        // SAFETY: the descriptor is an open TCP socket this task owns from here on.
        let stream = unsafe { glommio::net::TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
        let start = Start {
            pending: h.pending,
            transport: h.transport,
        };
        glommio::spawn_local(server::run_connection(
            ctx.clone(),
            conns.clone(),
            stream,
            None,
            start,
            None,
        ))
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::generated::{GetRequest, SetKeyRequest};
    use crate::types::Version;

    fn spreader(
        helpers: usize,
        after: u32,
    ) -> (Rc<Spreader>, Vec<mpsc::UnboundedReceiver<Handed>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..helpers).map(|_| mpsc::unbounded()).unzip();
        (Spreader::new(txs, after).expect("a spreader"), rxs)
    }

    fn get() -> Call {
        Call::Get(GetRequest::new(b"k".to_vec(), None::<String>))
    }

    fn set() -> Call {
        Call::SetKey(SetKeyRequest::new(
            b"k".to_vec(),
            b"v".to_vec(),
            None::<String>,
        ))
    }

    /// Which helper a `HandOff` leads to (None: kept here).
    fn which(to: Option<HandOff>, all: &Spreader) -> Option<usize> {
        to.map(|t| {
            all.helpers
                .iter()
                .position(|h| h.same_receiver(&t))
                .expect("one of the helpers")
        })
    }

    #[test]
    fn no_spreader_without_helpers_or_with_spreading_off() {
        assert!(Spreader::new(Vec::new(), 16).is_none());
        let (tx, _rx) = mpsc::unbounded();
        assert!(Spreader::new(vec![tx], 0).is_none());
    }

    #[test]
    fn qualifying_connections_take_turns_over_this_executor_and_each_helper() {
        let (sp, _rx) = spreader(2, 1);
        let homes: Vec<Option<usize>> = (0..7)
            .map(|_| {
                let mut r = ReadOnly::new(sp.clone(), -1);
                r.note(&get());
                which(r.hand_to(true, &Session::default()), &sp)
            })
            .collect();
        assert_eq!(
            homes,
            vec![None, Some(0), Some(1), None, Some(0), Some(1), None]
        );
    }

    #[test]
    fn a_connection_moves_only_after_enough_plain_reads_while_idle_and_with_an_empty_session() {
        let (sp, _rx) = spreader(1, 3);
        // The first qualifying connection keeps its place (its turn); use the second turn.
        let mut first = ReadOnly::new(sp.clone(), -1);
        for _ in 0..3 {
            first.note(&get());
        }
        assert!(first.hand_to(true, &Session::default()).is_none());

        let mut r = ReadOnly::new(sp.clone(), -1);
        r.note(&get());
        r.note(&get());
        assert!(
            r.hand_to(true, &Session::default()).is_none(),
            "2 reads < 3"
        );
        r.note(&get());
        assert!(
            r.hand_to(false, &Session::default()).is_none(),
            "replies unwritten"
        );
        let held = Session {
            read_version: Some(Version(5)),
            ..Session::default()
        };
        assert!(
            r.hand_to(true, &held).is_none(),
            "the session holds a read version"
        );
        // None of those settled it: it moves at the next chance.
        assert_eq!(which(r.hand_to(true, &Session::default()), &sp), Some(0));
        // Settled: never asked again.
        assert!(r.hand_to(true, &Session::default()).is_none());
    }

    #[test]
    fn a_write_settles_a_connection_where_it_is() {
        let (sp, _rx) = spreader(1, 2);
        let mut r = ReadOnly::new(sp.clone(), -1);
        r.note(&set());
        for _ in 0..10 {
            r.note(&get());
        }
        assert!(r.hand_to(true, &Session::default()).is_none());
        // And it took no turn: the next two qualifying connections are kept, then moved.
        let turns: Vec<Option<usize>> = (0..2)
            .map(|_| {
                let mut q = ReadOnly::new(sp.clone(), -1);
                q.note(&get());
                q.note(&get());
                which(q.hand_to(true, &Session::default()), &sp)
            })
            .collect();
        assert_eq!(turns, vec![None, Some(0)]);
    }
}
