//! The reactor: readiness of file descriptors, on top of `polling::Poller`.
//!
//! Each fd is added once, edge-triggered, for both read and write
//! (`PollMode::Edge`), and deleted before it is closed. A greenlet waits
//! only after its operation returned `WouldBlock`, so the next edge is
//! guaranteed to come, and no `epoll_ctl` is needed per wait (a oneshot
//! registration costs one re-arm system call per park). A readiness check
//! that did not try an operation first ([`Reactor::is_ready`]) asks the
//! kernel with `ppoll(2)` before parking. This is the only module that calls
//! `Poller::add`/`delete`.
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

use polling::{Event, Events, PollMode, Poller};

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
}

pub(crate) struct Reactor {
    poller: OnceCell<Arc<Poller>>,
    events: RefCell<Events>,
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
        // SAFETY: the caller (Watcher) owns the fd and deregisters it before
        // closing it (module invariant), as `Poller::add` requires.
        if let Err(e) = unsafe { poller.add_with_mode(&fd, Event::all(key), PollMode::Edge) } {
            self.free.borrow_mut().push(key);
            return Err(e);
        }
        let src = Rc::new(Source {
            fd: fd.as_raw_fd(),
            key,
            readers: WaitList::default(),
            writers: WaitList::default(),
        });
        self.sources.borrow_mut()[key] = Some(src.clone());
        Ok(src)
    }

    /// Removes `src` from the poller; must run before its fd is closed.
    pub(crate) fn deregister(&self, src: &Source) {
        if let Some(p) = self.poller.get() {
            // SAFETY: module invariant: the fd is still open here.
            let fd = unsafe { BorrowedFd::borrow_raw(src.fd) };
            let _ = p.delete(fd);
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
    pub(crate) fn poll(&self, timeout: Option<Duration>, ready: &ReadyQueue) -> io::Result<usize> {
        let poller = self.poller()?;
        let mut events = self.events.borrow_mut();
        events.clear();
        poller.wait(&mut events, timeout)?;
        let mut woken = 0;
        // Waking only queues greenlets (and may drop tokens, which never
        // touches `sources`), so the slab can stay borrowed.
        let sources = self.sources.borrow();
        for ev in events.iter() {
            let Some(Some(src)) = sources.get(ev.key) else {
                continue;
            };
            if ev.readable {
                woken += src.readers.wake_all(ready);
            }
            if ev.writable {
                woken += src.writers.wake_all(ready);
            }
        }
        Ok(woken)
    }

    /// Wakes everything registered (used when the poller itself fails, so
    /// that waiters retry and see the error instead of hanging).
    pub(crate) fn wake_everyone(&self, ready: &ReadyQueue) {
        let all: Vec<Rc<Source>> = self.sources.borrow().iter().flatten().cloned().collect();
        for s in all {
            s.readers.wake_all(ready);
            s.writers.wake_all(ready);
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
