//! The reactor: readiness of file descriptors, on top of `polling::Poller`.
//!
//! Each fd is added once with no interest (`Event::none`), armed (oneshot)
//! only while some greenlet waits on it, and deleted before it is closed.
//! This is the only module that calls `Poller::add`/`modify`/`delete`.
//!
//! # Invariant
//! A [`Source`] in the slab refers to an fd that stays open until
//! [`Reactor::deregister`] is called for it; its owner
//! ([`Watcher`](super::Watcher)) guarantees that by deregistering in its
//! `Drop` before the fd is closed.

use std::cell::{Cell, OnceCell, RefCell};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use polling::{Event, Events, Poller};

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
    /// What the poller is armed for now: (read, write).
    armed: Cell<(bool, bool)>,
}

pub(crate) struct Reactor {
    poller: OnceCell<Poller>,
    events: RefCell<Events>,
    sources: RefCell<Vec<Option<Rc<Source>>>>,
    free: RefCell<Vec<usize>>,
    /// Greenlets inside [`Reactor::wait`] right now.
    waiting: Cell<usize>,
}

impl Reactor {
    pub(crate) fn new() -> Self {
        Reactor {
            poller: OnceCell::new(),
            events: RefCell::new(Events::new()),
            sources: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            waiting: Cell::new(0),
        }
    }

    fn poller(&self) -> io::Result<&Poller> {
        if let Some(p) = self.poller.get() {
            return Ok(p);
        }
        let p = Poller::new()?;
        Ok(self.poller.get_or_init(|| p))
    }

    /// Adds `fd` to the poller with no interest.
    pub(crate) fn register(&self, fd: BorrowedFd<'_>) -> io::Result<Rc<Source>> {
        let poller = self.poller()?;
        let key = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut s = self.sources.borrow_mut();
            s.push(None);
            s.len() - 1
        });
        // SAFETY: the caller (Watcher) owns the fd and deregisters it before
        // closing it (module invariant), as `Poller::add` requires.
        if let Err(e) = unsafe { poller.add(&fd, Event::none(key)) } {
            self.free.borrow_mut().push(key);
            return Err(e);
        }
        let src = Rc::new(Source {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            key,
            readers: WaitList::default(),
            writers: WaitList::default(),
            armed: Cell::new((false, false)),
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

    /// Arms the poller for whatever the source's waiters need now.
    fn update(&self, src: &Source) -> io::Result<()> {
        let want = (!src.readers.is_empty(), !src.writers.is_empty());
        if want == src.armed.get() {
            return Ok(());
        }
        let ev = match want {
            (true, true) => Event::all(src.key),
            (true, false) => Event::readable(src.key),
            (false, true) => Event::writable(src.key),
            (false, false) => Event::none(src.key),
        };
        let poller = self.poller()?;
        // SAFETY: module invariant: the fd is open while registered.
        let fd = unsafe { BorrowedFd::borrow_raw(src.fd) };
        poller.modify(fd, ev)?;
        src.armed.set(want);
        Ok(())
    }

    /// Parks the current greenlet until `src` is ready for `interest`, the
    /// deadline passes, or the greenlet is killed. No interest or waiter is
    /// left behind on any of these paths.
    pub(crate) fn wait(
        &self,
        src: &Source,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> io::Result<Woke> {
        // Declared first, dropped last: re-arms (or disarms) after the wait
        // list guard has removed our entry.
        struct Rearm<'a>(&'a Reactor, &'a Source);
        impl Drop for Rearm<'_> {
            fn drop(&mut self) {
                self.0.waiting.set(self.0.waiting.get() - 1);
                let _ = self.0.update(self.1);
            }
        }
        self.waiting.set(self.waiting.get() + 1);
        let _rearm = Rearm(self, src);
        let list = match interest {
            Interest::Read => &src.readers,
            Interest::Write => &src.writers,
        };
        list.wait_armed(deadline, || self.update(src))
    }

    /// Waits for IO events (up to `timeout`) and makes their waiters ready.
    pub(crate) fn poll(&self, timeout: Option<Duration>, ready: &ReadyQueue) -> io::Result<usize> {
        let poller = self.poller()?;
        let mut events = self.events.borrow_mut();
        events.clear();
        poller.wait(&mut events, timeout)?;
        let mut woken = 0;
        for ev in events.iter() {
            let src = self.sources.borrow().get(ev.key).and_then(|s| s.clone());
            let Some(src) = src else { continue };
            // Oneshot: the poller disarmed the fd when it reported it.
            src.armed.set((false, false));
            if ev.readable {
                woken += src.readers.wake_all(ready);
            }
            if ev.writable {
                woken += src.writers.wake_all(ready);
            }
            let _ = self.update(&src);
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

    /// Sources registered, and greenlets waiting on any of them.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let sources = self.sources.borrow();
        let live = sources.iter().flatten();
        let (mut n, mut waiters, mut armed) = (0, 0, 0);
        for s in live {
            n += 1;
            waiters += s.readers.len() + s.writers.len();
            let a = s.armed.get();
            armed += usize::from(a.0) + usize::from(a.1);
        }
        (n, waiters, armed)
    }

    /// True if some greenlet waits for IO (so the hub is not deadlocked).
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.get() > 0
    }

    /// Drops every source's waiters (thread teardown).
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.sources.borrow_mut());
        drop(all);
    }
}
