//! Spreading connections that mostly read over the other executors of the process.
//!
//! The front accepts every connection on the executor of the primary it feeds, so a write
//! reaches its replica without crossing cores. Reads under the primary's lease need no step of
//! the primary (atomics and the store, which any thread may read), so a connection that mostly
//! reads is best served on any executor: on a server of several cores, the accepting front
//! hands every other connection that has made `thrift.spread_after_reads` reads, with writes
//! at most `thrift.spread_max_write_percent` of its calls, to a helper front on another
//! executor (round robin, the accepting executor taking its turn too). Its writes, from then
//! on, cross to the primary like a forwarded call: worth it when they are a small share (a
//! write-heavy connection stays, where its writes need no crossing). The socket moves as a
//! duplicated descriptor with the bytes already read after the last complete message, and the
//! session's committed version with it; the client sees nothing. A connection is judged once,
//! when it reaches the reads, and moves only after its replies are all written (so every write
//! it made is answered) and while its session holds no transaction state (no read version
//! set, no read conflicts). TLS connections stay where they were accepted.

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

/// A connection on its way to another executor: its socket and how it starts there.
pub struct Handed {
    fd: OwnedFd,
    start: Start,
}

/// Where connections are handed to: one channel per helper front.
pub type HandOff = mpsc::UnboundedSender<Handed>;

/// The accepting front's side: the helpers and whose turn the next connection is.
pub struct Spreader {
    helpers: Vec<HandOff>,
    turn: Cell<usize>,
    after_reads: u32,
    max_write_percent: u32,
}

impl Spreader {
    /// None when there is nowhere to spread to (or spreading is off: `after_reads` 0).
    pub fn new(
        helpers: Vec<HandOff>,
        after_reads: u32,
        max_write_percent: u32,
    ) -> Option<Rc<Spreader>> {
        (!helpers.is_empty() && after_reads > 0).then(|| {
            Rc::new(Spreader {
                helpers,
                turn: Cell::new(0),
                after_reads,
                max_write_percent,
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

/// One connection's record on the accepting front: how many reads and writes it made,
/// whether its place is settled.
pub struct ReadMostly {
    spreader: Rc<Spreader>,
    fd: RawFd,
    reads: u32,
    writes: u32,
    settled: bool,
}

impl ReadMostly {
    /// `fd` is the connection's socket (plain TCP), open for as long as this record lives.
    pub fn new(spreader: Rc<Spreader>, fd: RawFd) -> Self {
        ReadMostly {
            spreader,
            fd,
            reads: 0,
            writes: 0,
            settled: false,
        }
    }

    /// Counts a call the connection made (reads and writes; other calls count as neither).
    pub fn note(&mut self, call: &Call) {
        if order_of(call) == Order::Write {
            self.writes = self.writes.saturating_add(1);
        } else if is_plain_read(call) {
            self.reads = self.reads.saturating_add(1);
        }
    }

    /// Whether the connection moves now (and then where). It is judged once, when it has
    /// made `spread_after_reads` reads, `idle` says its replies are all written and its
    /// session holds no transaction state: it moves (on its turn) if its writes are at most
    /// `spread_max_write_percent` of its reads and writes, and is settled either way.
    pub fn hand_to(&mut self, idle: bool, session: &Session) -> Option<HandOff> {
        if self.settled || self.reads < self.spreader.after_reads || !idle {
            return None;
        }
        if !session_can_move(session) {
            return None;
        }
        self.settled = true;
        let calls = u64::from(self.reads) + u64::from(self.writes);
        if u64::from(self.writes) * 100 > u64::from(self.spreader.max_write_percent) * calls {
            return None;
        }
        self.spreader.next_home().cloned()
    }

    /// The connection, ready to send: a duplicate of its socket (this executor closes its own
    /// descriptor when the connection's task ends), the bytes read past its last message and
    /// what its session carries over.
    pub fn package(
        &self,
        pending: &[u8],
        transport: Option<Transport>,
        session: &Session,
    ) -> std::io::Result<Handed> {
        // SAFETY: `fd` is the connection's socket, open while the connection's task (which
        // owns this record) runs; it is only borrowed to duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) }.try_clone_to_owned()?;
        Ok(Handed {
            fd,
            start: Start {
                pending: pending.to_vec(),
                transport,
                // All a movable session holds (`session_can_move`).
                committed_version: session.committed_version,
            },
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

/// A session moves with its connection when it holds no transaction state and every write it
/// made is answered: what is left (the committed version) is carried in `Handed`.
fn session_can_move(s: &Session) -> bool {
    s.read_version.is_none()
        && s.read_conflicts.is_empty()
        && s.last_write.as_ref().is_none_or(|w| w.is_set())
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
        glommio::spawn_local(server::run_connection(
            ctx.clone(),
            conns.clone(),
            stream,
            None,
            h.start,
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
    use std::os::fd::AsRawFd;

    fn spreader(
        helpers: usize,
        after: u32,
    ) -> (Rc<Spreader>, Vec<mpsc::UnboundedReceiver<Handed>>) {
        spreader_with(helpers, after, 20)
    }

    fn spreader_with(
        helpers: usize,
        after: u32,
        max_write_percent: u32,
    ) -> (Rc<Spreader>, Vec<mpsc::UnboundedReceiver<Handed>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..helpers).map(|_| mpsc::unbounded()).unzip();
        let sp = Spreader::new(txs, after, max_write_percent).expect("a spreader");
        (sp, rxs)
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

    /// A connection's record after `writes` setKeys, then `reads` gets.
    fn conn(sp: &Rc<Spreader>, fd: RawFd, writes: usize, reads: usize) -> ReadMostly {
        let mut r = ReadMostly::new(sp.clone(), fd);
        (0..writes).for_each(|_| r.note(&set()));
        (0..reads).for_each(|_| r.note(&get()));
        r
    }

    /// Where `n` fresh connections of `writes` setKeys then `reads` gets go, one after the
    /// other (None: kept here).
    fn homes(sp: &Rc<Spreader>, writes: usize, reads: usize, n: usize) -> Vec<Option<usize>> {
        (0..n)
            .map(|_| {
                which(
                    conn(sp, -1, writes, reads).hand_to(true, &Session::default()),
                    sp,
                )
            })
            .collect()
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
        assert!(Spreader::new(Vec::new(), 16, 20).is_none());
        let (tx, _rx) = mpsc::unbounded();
        assert!(Spreader::new(vec![tx], 0, 20).is_none());
    }

    #[test]
    fn qualifying_connections_take_turns_over_this_executor_and_each_helper() {
        let (sp, _rx) = spreader(2, 1);
        assert_eq!(
            homes(&sp, 0, 1, 7),
            vec![None, Some(0), Some(1), None, Some(0), Some(1), None]
        );
    }

    #[test]
    fn a_connection_moves_only_after_enough_plain_reads_while_idle_and_with_an_empty_session() {
        let (sp, _rx) = spreader(1, 3);
        // The first qualifying connection keeps its place (its turn); use the second turn.
        let mut first = ReadMostly::new(sp.clone(), -1);
        for _ in 0..3 {
            first.note(&get());
        }
        assert!(first.hand_to(true, &Session::default()).is_none());

        let mut r = ReadMostly::new(sp.clone(), -1);
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
    fn a_connection_whose_writes_pass_the_share_is_settled_where_it_is_and_takes_no_turn() {
        let (sp, _rx) = spreader(1, 4);
        // 2 writes of 6 calls: 33% > 20%.
        let mut r = conn(&sp, -1, 2, 4);
        assert!(r.hand_to(true, &Session::default()).is_none());
        // Judged once: more reads later do not bring it back.
        for _ in 0..100 {
            r.note(&get());
        }
        assert!(r.hand_to(true, &Session::default()).is_none());
        // And it took no turn: the next two qualifying connections (1 write of 5 calls: 20%,
        // the limit itself) are kept, then moved.
        assert_eq!(homes(&sp, 1, 4, 2), vec![None, Some(0)]);
    }

    #[test]
    fn with_no_write_share_allowed_one_write_keeps_a_connection_where_it_is() {
        let (sp, _rx) = spreader_with(1, 2, 0);
        assert!(conn(&sp, -1, 1, 10)
            .hand_to(true, &Session::default())
            .is_none());
        assert_eq!(homes(&sp, 0, 2, 2), vec![None, Some(0)]);
    }

    #[test]
    fn a_session_moves_once_its_writes_are_answered_and_carries_its_committed_version() {
        let (sp, _rx) = spreader(1, 2);
        // Take the accepting executor's turn first.
        assert!(conn(&sp, -1, 0, 2)
            .hand_to(true, &Session::default())
            .is_none());

        let socket = std::fs::File::open("/dev/null").expect("a descriptor to duplicate");
        let mut r = conn(&sp, socket.as_raw_fd(), 1, 9);
        let fence = Rc::new(crate::txn::interactive::Fence::default());
        let mut session = Session {
            committed_version: Some(Version(41)),
            last_write: Some(fence.clone()),
            ..Session::default()
        };
        assert!(
            r.hand_to(true, &session).is_none(),
            "a write not answered yet"
        );
        session.read_conflicts.push(crate::txn::command::KeyRange {
            cf: "default".into(),
            begin: bytes::Bytes::from_static(b"a"),
            end: bytes::Bytes::from_static(b"b"),
        });
        fence.set();
        assert!(
            r.hand_to(true, &session).is_none(),
            "the session holds read conflicts"
        );
        session.read_conflicts.clear();
        assert_eq!(which(r.hand_to(true, &session), &sp), Some(0));
        let handed = r
            .package(b"half", Some(Transport::Framed), &session)
            .expect("packaged");
        assert_eq!(handed.start.committed_version, Some(Version(41)));
        assert_eq!(handed.start.pending, b"half");
    }
}
