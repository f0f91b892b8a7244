//! A thin, safe wrapper over Linux `epoll` and a `timerfd`, enough for one load-generator thread
//! to drive many non-blocking connections and wake at precise send times (open loop).
//!
//! Must not: own the sockets (callers keep them and deregister before dropping them).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub struct Poller {
    epfd: RawFd,
    timer_fd: RawFd,
    events: Vec<libc::epoll_event>,
}

/// The token under which the timer reports.
pub const TIMER_TOKEN: u64 = u64::MAX;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Poller {
    pub fn new(events_max: usize) -> io::Result<Poller> {
        // SAFETY: plain syscalls with valid flags; the fds are owned by the Poller.
        let epfd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let timer_fd = match check(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        }) {
            Ok(fd) => fd,
            Err(e) => {
                unsafe { libc::close(epfd) };
                return Err(e);
            }
        };
        let p = Poller {
            epfd,
            timer_fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; events_max.max(16)],
        };
        p.ctl(
            libc::EPOLL_CTL_ADD,
            timer_fd,
            libc::EPOLLIN as u32,
            TIMER_TOKEN,
        )?;
        Ok(p)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` outlives the call; epfd is valid while self lives.
        check(unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) })?;
        Ok(())
    }

    /// Watches `fd` edge-triggered for reads and writes.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let ev = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        self.ctl(libc::EPOLL_CTL_ADD, fd, ev as u32, token)
    }

    pub fn remove(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Arms the timer to fire once after `after` (zero disarms; use 1 ns for "now").
    pub fn arm_timer(&self, after: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid timer fd and spec pointer; old value not requested.
        check(unsafe { libc::timerfd_settime(self.timer_fd, 0, &spec, std::ptr::null_mut()) })?;
        Ok(())
    }

    fn drain_timer(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `buf`; EAGAIN is fine (nonblocking).
        unsafe { libc::read(self.timer_fd, buf.as_mut_ptr().cast(), 8) };
    }

    /// Waits up to `timeout` and calls `f(token, events)` for each ready fd.
    pub fn wait(&mut self, timeout: Duration, mut f: impl FnMut(u64, u32)) -> io::Result<()> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: the events buffer is valid for `len` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd,
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for i in 0..n as usize {
            let ev = self.events[i];
            let (token, bits) = (ev.u64, ev.events);
            if token == TIMER_TOKEN {
                self.drain_timer();
            }
            f(token, bits);
        }
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: both fds are owned by this Poller and closed once.
        unsafe {
            libc::close(self.timer_fd);
            libc::close(self.epfd);
        }
    }
}
