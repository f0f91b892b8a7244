//! The replies of one executor turn go to the kernel together (`thrift.batch_reply_sends`).
//!
//! Each plain-TCP connection's writer hands its encoded replies here instead of calling `send`
//! itself. One task per executor, woken by the first of them, sends everything queued with ONE
//! `io_uring_enter` on a small ring of its own. On loopback or a LAN a `send` also wakes the
//! client; when every `send` is its own system call, the scheduler may switch to the woken
//! client at the end of each one, and the executor (with every request it holds) waits. Handed
//! to the kernel in one call, the wake-ups of a whole turn cost the executor at most one switch.
//!
//! A batch costs the writer a second wake-up (it waits for the flusher's result) and the
//! flusher a run, which pays only when a turn holds many replies: every reply counts towards
//! its turn, and replies batch while the average over recent turns is at least
//! `MIN_TURN_REPLIES`; below it each writer sends its own (`Sent::Unsent`).
//!
//! Sends use `MSG_DONTWAIT`: a socket without room completes at once with what it took (maybe
//! nothing), and the writer sends the rest the usual way (waiting for the socket). Where the
//! ring cannot be set up (io_uring refused), writers use the usual way for everything.
//!
//! Safety of the raw ring: a queued buffer is a copy owned by the queue until its completion
//! is reaped, and the flusher submits and reaps in one synchronous step, so no buffer is freed
//! or reused while the kernel holds it. A writer that is dropped before its buffer is submitted
//! marks it cancelled and it is never submitted (its descriptor may be closed and reused by
//! then); once submitted, the kernel holds the socket itself, so a close cannot redirect it.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Poll, Waker};

/// What became of a buffer handed to [`send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The kernel took this many bytes (all of them, or fewer when the socket had no room).
    Bytes(usize),
    /// Not sent (no ring on this thread, or the kernel did not take the submission): the
    /// caller sends it all itself.
    Unsent,
    /// The send failed (the connection is broken); what reached the peer is unknown.
    Failed(std::io::ErrorKind),
}

/// Sends on this executor's batch, counted since the thread started (the process-wide
/// counts are metrics: `crate::metrics::reply_batch_sent`).
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// `io_uring_enter` calls that submitted sends.
    pub batches: u64,
    /// Buffers submitted.
    pub sends: u64,
}

/// Queues `bytes` for `fd` in this turn's batch and waits until the kernel took them; at once
/// `Sent::Unsent` while turns are not busy enough to batch.
pub async fn send(fd: RawFd, bytes: &[u8]) -> Sent {
    let Some(batch) = Batch::current() else {
        return Sent::Unsent;
    };
    // Every reply counts towards its turn, batched or not: the flusher runs once a turn and
    // keeps the average, which decides whether the next turns batch.
    batch.turn_replies.set(batch.turn_replies.get() + 1);
    let wake = batch.flusher.borrow_mut().take();
    if let Some(w) = wake {
        w.wake();
    }
    if batch.turn_average.get() < batch.min_turn.get() as f64 {
        return Sent::Unsent;
    }
    let done = Rc::new(Done::default());
    batch.queue.borrow_mut().push(Entry {
        fd,
        bytes: bytes.to_vec(),
        done: done.clone(),
    });
    let guard = CancelOnDrop(&done);
    let sent = std::future::poll_fn(|cx| match done.res.get() {
        Some(r) => Poll::Ready(match r {
            r if r >= 0 => Sent::Bytes(r as usize),
            NOT_SUBMITTED => Sent::Unsent,
            r if r == -libc::EAGAIN => Sent::Bytes(0),
            r => Sent::Failed(std::io::Error::from_raw_os_error(-r).kind()),
        }),
        None => {
            *done.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
    std::mem::forget(guard);
    sent
}

/// Where a connection's replies go: its write half and, for a plain-TCP connection whose
/// replies join the executor's batches, its socket.
pub struct ReplySink<W> {
    pub wr: W,
    pub batched: Option<RawFd>,
}

impl<W: futures_lite::AsyncWrite + Unpin> ReplySink<W> {
    /// Writes all of `bytes`: through this turn's batch when the connection has one, and what
    /// the batch did not send (a full socket, turns not busy enough) the usual way.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let sent = match self.batched {
            Some(fd) => match send(fd, bytes).await {
                Sent::Bytes(n) => n.min(bytes.len()),
                Sent::Unsent => 0,
                Sent::Failed(kind) => return Err(kind.into()),
            },
            None => 0,
        };
        match &bytes[sent..] {
            [] => Ok(()),
            rest => crate::util::io::write_all_flushed(&mut self.wr, rest).await,
        }
    }
}

/// Sets this thread's batching threshold (replies per turn), for tests.
#[cfg(test)]
pub fn set_min_turn(replies: u32) {
    if let Some(b) = Batch::current() {
        b.min_turn.set(replies);
    }
}

/// This thread's counts (zero where nothing was sent through a batch).
#[cfg(test)]
pub fn stats() -> Stats {
    BATCH.with(|b| {
        b.get()
            .and_then(|b| b.as_ref())
            .map_or_else(Stats::default, |b| b.stats.get())
    })
}

struct Entry {
    fd: RawFd,
    bytes: Vec<u8>,
    done: Rc<Done>,
}

#[derive(Default)]
struct Done {
    /// The send's result (bytes taken, or a negative errno) once reaped.
    res: Cell<Option<i32>>,
    waker: RefCell<Option<Waker>>,
    cancelled: Cell<bool>,
}

struct CancelOnDrop<'a>(&'a Done);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.0.cancelled.set(true);
    }
}

struct Batch {
    ring: Ring,
    queue: RefCell<Vec<Entry>>,
    flusher: RefCell<Option<Waker>>,
    #[cfg(test)]
    stats: Cell<Stats>,
    /// Replies of the current turn so far (batched or sent one by one).
    turn_replies: Cell<u32>,
    /// Replies per turn, a moving average over the last turns (each weighs 1/8).
    turn_average: Cell<f64>,
    /// Batching starts once `turn_average` reaches it (`MIN_TURN_REPLIES`).
    min_turn: Cell<u32>,
}

/// The replies per turn from which a batch pays: below it (a reply or two ready at once) the
/// writer's second wake-up and the flusher's run cost more than the switches they save, and
/// each reply is sent by its writer. 4 against 16 (perf/README.md, 2026-12-01): mixed 90:10 at
/// 64 clients +6-8% in four pairs, transactions at 16 clients +12-18%, reads at 64 clients
/// +7-8%, the rest even (at 256 clients both batch).
const MIN_TURN_REPLIES: u32 = 4;

thread_local! {
    static BATCH: std::cell::OnceCell<Option<Rc<Batch>>> = const { std::cell::OnceCell::new() };
}

impl Batch {
    /// This executor's batch, set up (and its flusher task started) on first use.
    fn current() -> Option<Rc<Batch>> {
        BATCH.with(|cell| {
            cell.get_or_init(|| {
                let ring = match Ring::new(RING_ENTRIES) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(
                            "no io_uring for batched reply sends ({e}); sending one by one"
                        );
                        return None;
                    }
                };
                let batch = Rc::new(Batch {
                    ring,
                    queue: RefCell::new(Vec::new()),
                    flusher: RefCell::new(None),
                    #[cfg(test)]
                    stats: Cell::new(Stats::default()),
                    turn_replies: Cell::new(0),
                    turn_average: Cell::new(0.0),
                    min_turn: Cell::new(MIN_TURN_REPLIES),
                });
                glommio::spawn_local(flusher(Rc::downgrade(&batch))).detach();
                Some(batch)
            })
            .clone()
        })
    }

    /// Sends every queued buffer: one `io_uring_enter` per `RING_ENTRIES` of them.
    fn flush(&self) {
        let mut queued = std::mem::take(&mut *self.queue.borrow_mut());
        queued.retain(|e| !e.done.cancelled.get());
        while !queued.is_empty() {
            let rest = queued.split_off(queued.len().min(RING_ENTRIES as usize));
            let chunk = std::mem::replace(&mut queued, rest);
            let results = self.ring.send_all(&chunk);
            #[cfg(test)]
            self.stats.set(Stats {
                batches: self.stats.get().batches + 1,
                sends: self.stats.get().sends + chunk.len() as u64,
            });
            crate::metrics::reply_batch_sent(chunk.len() as u64);
            for (e, r) in chunk.into_iter().zip(results) {
                let r = if r == KERNEL_MAY_HOLD {
                    std::mem::forget(e.bytes);
                    -libc::EIO
                } else {
                    r
                };
                e.done.res.set(Some(r));
                if let Some(w) = e.done.waker.borrow_mut().take() {
                    w.wake();
                }
            }
        }
    }
}

/// Runs after the writers of a turn queued their buffers (glommio runs ready tasks in order).
async fn flusher(batch: std::rc::Weak<Batch>) {
    loop {
        let ready = std::future::poll_fn(|cx| {
            let Some(b) = batch.upgrade() else {
                return Poll::Ready(false);
            };
            if b.turn_replies.get() == 0 {
                *b.flusher.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(true)
            }
        })
        .await;
        match batch.upgrade() {
            Some(b) if ready => {
                let turn = f64::from(b.turn_replies.replace(0));
                b.turn_average
                    .set(b.turn_average.get() * 0.875 + turn * 0.125);
                b.flush();
            }
            _ => return,
        }
    }
}

const RING_ENTRIES: u32 = 256;
const IORING_OP_SEND: u8 = 26;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_FEAT_SINGLE_MMAP: u32 = 1;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
/// The result of a send that was never submitted.
const NOT_SUBMITTED: i32 = -libc::ECANCELED;
/// The result of a submitted send whose completion could not be waited for: the kernel may
/// still read its buffer, which is therefore leaked, and the connection is failed.
const KERNEL_MAY_HOLD: i32 = i32::MIN;

// The kernel's `io_uring_params`, `io_uring_sqe` and `io_uring_cqe` (include/uapi/linux/io_uring.h).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RingOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    /// SQ: flags; CQ: overflow.
    field4: u32,
    /// SQ: dropped; CQ: cqes.
    field5: u32,
    /// SQ: array; CQ: flags.
    field6: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: RingOffsets,
    cq_off: RingOffsets,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    msg_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// A submission and completion ring used by one thread, for sends only.
struct Ring {
    fd: RawFd,
    rings: *mut u8,
    rings_len: usize,
    sqes: *mut Sqe,
    sqes_len: usize,
    sq_tail: *const AtomicU32,
    sq_mask: u32,
    sq_array: *mut u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    cqes: *const Cqe,
}

impl Ring {
    fn new(entries: u32) -> std::io::Result<Ring> {
        const _: () = assert!(std::mem::size_of::<Params>() == 120);
        const _: () = assert!(std::mem::size_of::<Sqe>() == 64);
        const _: () = assert!(std::mem::size_of::<Cqe>() == 16);
        let mut p = Params::default();
        // SAFETY: io_uring_setup writes only into `p`, which outlives the call.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, &mut p as *mut Params) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = fd as RawFd;
        let close = |e: std::io::Error| {
            // SAFETY: `fd` is the ring this function opened and nothing else holds it.
            unsafe { libc::close(fd) };
            e
        };
        if p.features & IORING_FEAT_SINGLE_MMAP == 0 {
            return Err(close(std::io::Error::other(
                "kernel without IORING_FEAT_SINGLE_MMAP",
            )));
        }
        let sq_len = p.sq_off.field6 as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.field5 as usize + p.cq_entries as usize * 16;
        let rings_len = sq_len.max(cq_len);
        let sqes_len = p.sq_entries as usize * std::mem::size_of::<Sqe>();
        let map = |len: usize, offset: libc::off_t| {
            // SAFETY: a fresh shared mapping of the ring's own regions, as io_uring_setup(2)
            // describes; checked for MAP_FAILED below.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd,
                    offset,
                )
            };
            if m == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(m as *mut u8)
            }
        };
        let rings = map(rings_len, 0).map_err(close)?;
        let sqes = match map(sqes_len, IORING_OFF_SQES) {
            Ok(s) => s as *mut Sqe,
            Err(e) => {
                // SAFETY: unmapping the mapping made just above.
                unsafe { libc::munmap(rings as *mut libc::c_void, rings_len) };
                return Err(close(e));
            }
        };
        let at = |off: u32| rings.wrapping_add(off as usize);
        // SAFETY: the offsets come from the kernel and lie inside the mapping.
        let (sq_mask, cq_mask) = unsafe {
            (
                *(at(p.sq_off.ring_mask) as *const u32),
                *(at(p.cq_off.ring_mask) as *const u32),
            )
        };
        Ok(Ring {
            fd,
            rings,
            rings_len,
            sqes,
            sqes_len,
            sq_tail: at(p.sq_off.tail) as *const AtomicU32,
            sq_mask,
            sq_array: at(p.sq_off.field6) as *mut u32,
            cq_head: at(p.cq_off.head) as *const AtomicU32,
            cq_tail: at(p.cq_off.tail) as *const AtomicU32,
            cq_mask,
            cqes: at(p.cq_off.field5) as *const Cqe,
        })
    }

    /// Submits one `MSG_DONTWAIT` send per entry (at most `RING_ENTRIES`) and reaps their
    /// completions; returns each one's result (bytes sent or a negative errno). Submitting and
    /// waiting are separate calls so that a short submission can never wait for completions
    /// that will not come; on a socket a `MSG_DONTWAIT` send completes while it is submitted,
    /// so the wait is normally not needed.
    fn send_all(&self, entries: &[Entry]) -> Vec<i32> {
        let n = entries.len() as u32;
        let mut results = vec![NOT_SUBMITTED; entries.len()];
        // SAFETY: only this thread uses the ring; every earlier submission was reaped before
        // the last call returned, so the `n <= RING_ENTRIES` slots from the tail are free. The
        // buffers stay alive (owned by `entries`) until their completions are reaped below, or
        // are leaked if the kernel might still use them.
        unsafe {
            let tail = (*self.sq_tail).load(Ordering::Acquire);
            for (i, e) in entries.iter().enumerate() {
                let idx = tail.wrapping_add(i as u32) & self.sq_mask;
                *self.sqes.add(idx as usize) = Sqe {
                    opcode: IORING_OP_SEND,
                    fd: e.fd,
                    addr: e.bytes.as_ptr() as u64,
                    len: e.bytes.len() as u32,
                    msg_flags: (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32,
                    user_data: i as u64,
                    ..Sqe::default()
                };
                *self.sq_array.add(idx as usize) = idx;
            }
            (*self.sq_tail).store(tail.wrapping_add(n), Ordering::Release);
            let submitted = loop {
                match self.enter(n, 0, 0) {
                    Ok(s) => break s.min(n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break 0,
                }
            };
            if submitted < n {
                // What the kernel did not take is taken back off the ring: its callers send
                // it themselves.
                (*self.sq_tail).store(tail.wrapping_add(submitted), Ordering::Release);
            }
            let mut reaped = self.reap(&mut results);
            while reaped < submitted {
                match self.enter(0, submitted - reaped, IORING_ENTER_GETEVENTS) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // Sends the kernel may still complete: their buffers must outlive
                        // them, and their connections cannot tell what was sent.
                        for (i, r) in results.iter_mut().enumerate() {
                            if *r == NOT_SUBMITTED && (i as u32) < submitted {
                                *r = KERNEL_MAY_HOLD;
                            }
                        }
                        return results;
                    }
                }
                reaped += self.reap(&mut results);
            }
        }
        results
    }

    fn enter(&self, to_submit: u32, min_complete: u32, flags: u32) -> std::io::Result<u32> {
        // SAFETY: the ring's own descriptor; no argument structure is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd,
                to_submit,
                min_complete,
                flags,
                std::ptr::null::<libc::c_void>(),
                0usize,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as u32)
        }
    }

    /// Takes every posted completion off the ring into `results`; returns how many.
    fn reap(&self, results: &mut [i32]) -> u32 {
        let mut count = 0;
        // SAFETY: head and tail are the kernel's published indices; entries between them are
        // completions the kernel wrote, read before the head moves past them.
        unsafe {
            let mut head = (*self.cq_head).load(Ordering::Acquire);
            let cq_tail = (*self.cq_tail).load(Ordering::Acquire);
            while head != cq_tail {
                let c = &*self.cqes.add((head & self.cq_mask) as usize);
                if let Some(slot) = results.get_mut(c.user_data as usize) {
                    *slot = c.res;
                }
                head = head.wrapping_add(1);
                count += 1;
            }
            (*self.cq_head).store(head, Ordering::Release);
        }
        count
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mappings and the descriptor are this ring's, and nothing is in flight
        // (every submission is reaped before `send_all` returns).
        unsafe {
            libc::munmap(self.sqes as *mut libc::c_void, self.sqes_len);
            libc::munmap(self.rings as *mut libc::c_void, self.rings_len);
            libc::close(self.fd);
        }
    }
}

#[cfg(test)]
mod tests;
