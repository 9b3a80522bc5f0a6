//! The reactor: readiness of file descriptors, on top of `polling::Poller`.
//!
//! Each fd is added once, edge-triggered, for both read and write plus
//! `EPOLLRDHUP`, and deleted before it is closed. A greenlet waits only
//! after its operation returned `WouldBlock`, so the next edge is
//! guaranteed to come, and no `epoll_ctl` is needed per wait (a oneshot
//! registration costs one re-arm system call per park). A readiness check
//! that did not try an operation first ([`Reactor::is_ready`]) asks the
//! kernel with `ppoll(2)` before parking. This is the only module that adds
//! fds to the poller's epoll set or deletes them.
//!
//! `polling` owns the epoll fd and wakes the hub from other threads
//! (`Poller::notify`). Adding and deleting are direct `epoll_ctl` calls on
//! that fd (`polling` cannot ask for `EPOLLRDHUP`), and the wait is one
//! `epoll_pwait2`, because `Poller::wait` costs five system calls per call
//! (timerfd arm and re-arm, notifier drain and re-arm). `Poller::wait` runs
//! only when the notifier fired, so that `polling` re-arms it.
//!
//! # Invariant
//! A [`Source`] in the slab refers to an fd that stays open until
//! [`Reactor::deregister`] is called for it; its owner
//! ([`Watcher`](super::Watcher)) guarantees that by deregistering in its
//! `Drop` before the fd is closed.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libc::c_int;
use polling::{Events, Poller};

use super::scheduler::{ReadyQueue, WaitList, Woke};

/// Read or write readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// One registered fd and the greenlets waiting on it.
pub(crate) struct Source {
    fd: RawFd,
    key: usize,
    readers: WaitList,
    writers: WaitList,
    /// A stream read returned less than it asked for, and no readable
    /// event has come since: the socket holds no data (see
    /// `Watcher::read_stream`).
    read_drained: Cell<bool>,
    /// An event reported the read side closed (`EPOLLRDHUP`, `EPOLLHUP` or
    /// `EPOLLERR`). Final: no edge will follow it, so from then on reads
    /// are always tried and `read_drained` is never trusted.
    read_closed: Cell<bool>,
}

impl Source {
    /// Wakes the readers and/or the writers; returns how many woke.
    fn wake(&self, flags: u32, ready: &ReadyQueue) -> usize {
        let (readable, writable) = (flags & READ_FLAGS != 0, flags & WRITE_FLAGS != 0);
        if flags & CLOSED_FLAGS != 0 {
            self.read_closed.set(true);
        }
        let mut woken = 0;
        if readable {
            self.read_drained.set(false);
            woken += self.readers.wake_all(ready);
        }
        if writable {
            woken += self.writers.wake_all(ready);
        }
        woken
    }

    /// Marks the source as holding no data until its next readable event.
    pub(crate) fn mark_drained(&self) {
        self.read_drained.set(true);
    }

    /// Whether the source is known to hold no data (see
    /// [`mark_drained`](Self::mark_drained)). Never after the read side
    /// closed: EOF or an error must be read, and no edge would announce it.
    pub(crate) fn is_drained(&self) -> bool {
        self.read_drained.get() && !self.read_closed.get()
    }
}

/// What every fd is registered for: both directions, edge-triggered, plus
/// `EPOLLRDHUP` so that a peer's FIN is visible as such (`polling` does
/// not register it, which is why registration is a direct `epoll_ctl`).
const REGISTER_FLAGS: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;
/// The epoll bits that make a source readable or writable (the meaning
/// `polling` gives them).
const READ_FLAGS: u32 =
    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
const WRITE_FLAGS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// The bits that say no more data will ever arrive to be read.
const CLOSED_FLAGS: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// How many events one wait can return.
const MAX_EVENTS: usize = 1024;

/// One `epoll_pwait2` (nanosecond timeout) on `epfd` into `buf`; falls
/// back to `epoll_wait` (milliseconds, rounded up) where the kernel lacks
/// it. An interrupted wait reports no events.
fn epoll_wait(
    epfd: RawFd,
    buf: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
    let max = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
    let mut n = -1;
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: `buf` has room for `max` events; `tsp` is null or a valid
        // timespec; no signal mask.
        n = unsafe { libc::epoll_pwait2(epfd, buf.as_mut_ptr(), max, tsp, std::ptr::null()) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            NO_PWAIT2.store(true, Ordering::Relaxed);
        }
    }
    if NO_PWAIT2.load(Ordering::Relaxed) {
        let ms = timeout.map_or(-1, |t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            c_int::try_from(ms).unwrap_or(c_int::MAX)
        });
        // SAFETY: `buf` has room for `max` events.
        n = unsafe { libc::epoll_wait(epfd, buf.as_mut_ptr(), max, ms) };
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(n as usize)
}

pub(crate) struct Reactor {
    poller: OnceCell<Arc<Poller>>,
    /// `polling`'s event list, for the notifier path of [`Reactor::poll`].
    events: RefCell<Events>,
    /// The raw buffer [`Reactor::poll`] waits into.
    raw: RefCell<Vec<libc::epoll_event>>,
    sources: RefCell<Vec<Option<Rc<Source>>>>,
    free: RefCell<Vec<usize>>,
    /// Greenlets inside [`Reactor::wait`] right now.
    waiting: Cell<usize>,
    /// Fds owned by other code, registered only while somebody waits on
    /// them ([`Reactor::wait_borrowed`]), with the number of such waiters.
    borrowed: RefCell<HashMap<RawFd, (Rc<Source>, usize)>>,
}

impl Reactor {
    pub(crate) fn new() -> Self {
        Reactor {
            poller: OnceCell::new(),
            events: RefCell::new(Events::new()),
            raw: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS]),
            sources: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            waiting: Cell::new(0),
            borrowed: RefCell::new(HashMap::new()),
        }
    }

    /// The poller, created on first use. Shared (`Arc`) so that other
    /// threads can `notify` it through a [`HubHandle`](super::HubHandle).
    pub(crate) fn poller(&self) -> io::Result<&Arc<Poller>> {
        if let Some(p) = self.poller.get() {
            return Ok(p);
        }
        let p = Arc::new(Poller::new()?);
        Ok(self.poller.get_or_init(|| p))
    }

    /// Adds `fd` to the poller, edge-triggered for reading and writing.
    pub(crate) fn register(&self, fd: BorrowedFd<'_>) -> io::Result<Rc<Source>> {
        let poller = self.poller()?;
        let key = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut s = self.sources.borrow_mut();
            s.push(None);
            s.len() - 1
        });
        let mut ev = libc::epoll_event {
            events: REGISTER_FLAGS,
            u64: key as u64,
        };
        // SAFETY: `ev` is a valid event; the epoll fd is the poller's and
        // outlives this call. The caller (Watcher) owns `fd` and
        // deregisters it before closing it (module invariant), so the epoll
        // set never refers to a closed or reused fd.
        let rc = unsafe {
            libc::epoll_ctl(
                poller.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            self.free.borrow_mut().push(key);
            return Err(io::Error::last_os_error());
        }
        let src = Rc::new(Source {
            fd: fd.as_raw_fd(),
            key,
            readers: WaitList::default(),
            writers: WaitList::default(),
            read_drained: Cell::new(false),
            read_closed: Cell::new(false),
        });
        self.sources.borrow_mut()[key] = Some(src.clone());
        Ok(src)
    }

    /// Removes `src` from the poller; must run before its fd is closed.
    pub(crate) fn deregister(&self, src: &Source) {
        if let Some(p) = self.poller.get() {
            // SAFETY: module invariant: the fd is still open here; a null
            // event is allowed for EPOLL_CTL_DEL.
            unsafe {
                libc::epoll_ctl(
                    p.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    src.fd,
                    std::ptr::null_mut(),
                )
            };
        }
        let removed = self
            .sources
            .borrow_mut()
            .get_mut(src.key)
            .and_then(Option::take);
        self.free.borrow_mut().push(src.key);
        drop(removed);
    }

    /// Asks the kernel whether `src` is ready for `interest` right now.
    pub(crate) fn is_ready(&self, src: &Source, interest: Interest) -> bool {
        let events = match interest {
            Interest::Read => libc::POLLIN | libc::POLLRDHUP,
            Interest::Write => libc::POLLOUT,
        };
        let mut pfd = libc::pollfd {
            fd: src.fd,
            events,
            revents: 0,
        };
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout, no signal mask; the fd
        // is open (module invariant). Errors and hang-ups count as ready:
        // the next operation will report them. `ppoll`, not `poll`: the
        // `monkey` feature interposes `poll`, and the runtime's own calls
        // must not go through its hooks.
        let n = unsafe { libc::ppoll(&mut pfd, 1, &zero, std::ptr::null()) };
        n > 0 && pfd.revents != 0
    }

    /// Parks the current greenlet until `src` reports `interest` (an edge
    /// after the caller's `WouldBlock`), the deadline passes, or the greenlet
    /// is killed. The wait-list guard leaves nothing behind on any path.
    #[inline]
    pub(crate) fn wait(&self, src: &Source, interest: Interest, deadline: Option<Instant>) -> Woke {
        struct Waiting<'a>(&'a Reactor);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.waiting.set(self.0.waiting.get() - 1);
            }
        }
        // A registered source implies the poller exists.
        self.waiting.set(self.waiting.get() + 1);
        let _waiting = Waiting(self);
        let list = match interest {
            Interest::Read => &src.readers,
            Interest::Write => &src.writers,
        };
        list.wait(deadline)
    }

    /// Parks the current greenlet until `fd`, which other code owns, is
    /// ready for `interest` (see [`wait`](Self::wait)). The fd is added to
    /// the poller for the duration of the wait only, shared by every
    /// greenlet waiting on it at the time, and removed when the last of
    /// them stops waiting, on every path. The caller must have just seen
    /// the fd not ready (`EAGAIN`, or `poll` finding nothing): adding it
    /// reports the current state, so no edge is lost in between.
    ///
    /// # Errors
    /// If the poller refuses the fd (a regular file, or an fd a
    /// [`Watcher`](super::Watcher) registered already).
    ///
    /// # Contract
    /// `fd` stays open until this returns (the monkey hooks: the libc
    /// caller passed it to the call they are inside).
    #[cfg(feature = "monkey")]
    pub(crate) fn wait_borrowed(
        &self,
        fd: RawFd,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> io::Result<Woke> {
        let src = {
            let mut b = self.borrowed.borrow_mut();
            match b.get_mut(&fd) {
                Some((src, n)) => {
                    *n += 1;
                    src.clone()
                }
                None => {
                    // SAFETY: the caller keeps `fd` open until we return
                    // (contract above), and the guard below deregisters it
                    // before then.
                    let src = self.register(unsafe { BorrowedFd::borrow_raw(fd) })?;
                    b.insert(fd, (src.clone(), 1));
                    src
                }
            }
        };
        struct Release<'a>(&'a Reactor, RawFd);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut b = self.0.borrowed.borrow_mut();
                let last = b.get_mut(&self.1).is_some_and(|(_, n)| {
                    *n -= 1;
                    *n == 0
                });
                if last {
                    if let Some((src, _)) = b.remove(&self.1) {
                        drop(b);
                        self.0.deregister(&src);
                    }
                }
            }
        }
        let _release = Release(self, fd);
        Ok(self.wait(&src, interest, deadline))
    }

    /// Waits for IO events (up to `timeout`) and makes their waiters ready.
    ///
    /// The wait itself is one `epoll_pwait2` on the poller's epoll fd.
    /// `Poller::wait` costs five system calls (it arms a timerfd, re-arms it
    /// and its notifier, and drains the notifier every time); it is called
    /// only when the notifier fired, to let `polling` clear and re-arm it.
    pub(crate) fn poll(&self, timeout: Option<Duration>, ready: &ReadyQueue) -> io::Result<usize> {
        let poller = self.poller()?;
        let mut raw = self.raw.borrow_mut();
        let n = epoll_wait(poller.as_raw_fd(), &mut raw, timeout)?;
        let mut woken = 0;
        let mut notified = false;
        {
            // Waking only queues greenlets (and may drop tokens, which never
            // touches `sources`), so the slab can stay borrowed.
            let sources = self.sources.borrow();
            for ev in &raw[..n] {
                let (flags, key) = (ev.events, ev.u64 as usize);
                let Some(Some(src)) = sources.get(key) else {
                    // `polling`'s own notifier (or timer): its key is not ours.
                    notified = true;
                    continue;
                };
                woken += src.wake(flags, ready);
            }
        }
        if notified {
            // A `HubHandle` notified us: `polling` drains its eventfd and
            // re-arms it inside `wait`. Take whatever else it reports too.
            let mut events = self.events.borrow_mut();
            events.clear();
            poller.wait(&mut events, Some(Duration::ZERO))?;
            let sources = self.sources.borrow();
            for ev in events.iter() {
                if let Some(Some(src)) = sources.get(ev.key) {
                    // `polling` hides `EPOLLRDHUP`, so a readable event seen
                    // here may have been a FIN: count it as one (this only
                    // costs the source the drained shortcut).
                    let mut flags = 0;
                    if ev.readable {
                        flags |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
                    }
                    if ev.writable {
                        flags |= libc::EPOLLOUT as u32;
                    }
                    woken += src.wake(flags, ready);
                }
            }
        }
        Ok(woken)
    }

    /// Wakes everything registered (used when the poller itself fails, so
    /// that waiters retry and see the error instead of hanging).
    pub(crate) fn wake_everyone(&self, ready: &ReadyQueue) {
        let all: Vec<Rc<Source>> = self.sources.borrow().iter().flatten().cloned().collect();
        for s in all {
            s.wake((libc::EPOLLIN | libc::EPOLLOUT) as u32, ready);
        }
    }

    /// Sources registered, greenlets waiting on any of them, and the
    /// (source, direction) pairs somebody waits on.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let sources = self.sources.borrow();
        let (mut n, mut waiters, mut armed) = (0, 0, 0);
        for s in sources.iter().flatten() {
            n += 1;
            waiters += s.readers.len() + s.writers.len();
            armed += usize::from(!s.readers.is_empty()) + usize::from(!s.writers.is_empty());
        }
        (n, waiters, armed)
    }

    /// True if some greenlet waits for IO (so the hub is not deadlocked).
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.get() > 0
    }

    /// Drops every source's waiters (thread teardown).
    pub(crate) fn clear(&self) {
        self.borrowed.borrow_mut().clear();
        let all = std::mem::take(&mut *self.sources.borrow_mut());
        drop(all);
    }
}
