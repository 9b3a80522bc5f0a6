//! The reactor: readiness of file descriptors, on an epoll set it owns.
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
//! The reactor owns its epoll fd and an eventfd [`Notifier`] that other
//! threads write to wake it ([`HubHandle`](super::HubHandle)). Adding and
//! deleting go through `rustix`'s safe `epoll` calls (so `EPOLLRDHUP` can
//! be asked for, which `polling` cannot). The wait is one `epoll_pwait2`
//! (nanosecond timeouts; `epoll_wait` on kernels without it): one system
//! call per hub wait. The eventfd is edge-triggered and never read.
//!
//! # Invariant
//! A [`Source`] in the slab refers to an fd that stays open until
//! [`Reactor::deregister`] is called for it; its owner
//! ([`Watcher`](super::Watcher)) guarantees that by deregistering in its
//! `Drop` before the fd is closed.

use std::cell::{Cell, OnceCell, RefCell};
#[cfg(feature = "monkey")]
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use libc::c_int;
use rustix::event::{EventfdFlags, epoll};

use super::dump::WaitingOn;
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
    /// What its epoll events carry: its index in the slab (its key) in the
    /// low 32 bits, a serial number of the registration above. An event
    /// whose token is not the source's own is stale (a cached borrowed
    /// registration whose fd was closed while a dup kept the file open,
    /// see [`Reactor::wait_borrowed`]) and is ignored.
    token: u64,
    readers: WaitList,
    writers: WaitList,
    /// The async tasks polling it, allocated at the first (most sources
    /// are only waited on by greenlets, and every connection has one).
    wakers: OnceCell<Box<Wakers>>,
    /// A stream read returned less than it asked for, and no readable
    /// event has come since: the socket holds no data (see
    /// `Watcher::read_stream`).
    read_drained: Cell<bool>,
    /// An event reported the read side closed (`EPOLLRDHUP`, `EPOLLHUP` or
    /// `EPOLLERR`). Final: no edge will follow it, so from then on reads
    /// are always tried and `read_drained` is never trusted.
    read_closed: Cell<bool>,
}

/// The async task polling a read / a write on a source
/// (`Watcher::poll_io`): one each, the latest replacing the one before, as
/// in `async-io`. A set waker counts in the reactor's `waiting`.
#[derive(Default)]
struct Wakers {
    read: RefCell<Option<Waker>>,
    write: RefCell<Option<Waker>>,
}

impl Wakers {
    /// The slot for `interest`.
    fn slot(&self, interest: Interest) -> &RefCell<Option<Waker>> {
        match interest {
            Interest::Read => &self.read,
            Interest::Write => &self.write,
        }
    }
}

impl Source {
    /// Its index in the slab.
    fn key(&self) -> usize {
        self.token as u32 as usize
    }

    /// Its async wakers, if one was ever set.
    fn wakers(&self) -> Option<&Wakers> {
        self.wakers.get().map(|w| &**w)
    }

    /// Takes the async waker for `interest`, if one is set.
    fn take_waker(&self, interest: Interest) -> Option<Waker> {
        self.wakers()?.slot(interest).borrow_mut().take()
    }

    /// Wakes the readers and/or the writers; returns how many woke. The
    /// async wakers are moved to `wakers`, for the caller to wake once it
    /// holds no borrow (a foreign waker may run any code).
    fn wake(&self, flags: u32, ready: &ReadyQueue, wakers: &mut Vec<Waker>) -> usize {
        let (readable, writable) = (flags & READ_FLAGS != 0, flags & WRITE_FLAGS != 0);
        if flags & CLOSED_FLAGS != 0 {
            self.read_closed.set(true);
        }
        let mut woken = 0;
        if readable {
            self.read_drained.set(false);
            woken += self.readers.wake_all(ready);
            wakers.extend(self.take_waker(Interest::Read));
        }
        if writable {
            woken += self.writers.wake_all(ready);
            wakers.extend(self.take_waker(Interest::Write));
        }
        woken
    }

    #[cfg(any(feature = "futures-io", feature = "tokio"))]
    fn waker_slot(&self, interest: Interest) -> &RefCell<Option<Waker>> {
        self.wakers.get_or_init(Box::default).slot(interest)
    }

    /// How many async wakers are set.
    fn wakers_set(&self) -> usize {
        self.wakers().map_or(0, |w| {
            usize::from(w.read.borrow().is_some()) + usize::from(w.write.borrow().is_some())
        })
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
/// `EPOLLRDHUP` so that a peer's FIN is visible as such.
const REGISTER_FLAGS: epoll::EventFlags = epoll::EventFlags::IN
    .union(epoll::EventFlags::OUT)
    .union(epoll::EventFlags::RDHUP)
    .union(epoll::EventFlags::PRI)
    .union(epoll::EventFlags::ET);
/// The key of the [`Notifier`]'s eventfd in the epoll set (sources use
/// their token, whose low half is a slab index, far below `u32::MAX`).
const NOTIFY_KEY: u64 = u64::MAX;
/// The epoll bits that make a source readable or writable.
const READ_FLAGS: u32 =
    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
const WRITE_FLAGS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// The bits that say no more data will ever arrive to be read.
const CLOSED_FLAGS: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// How many events one wait can return.
const MAX_EVENTS: usize = 1024;

/// The kernel's signal set size, for the system calls that take a mask.
const SIGSET_SIZE: libc::size_t = 8;

/// One `epoll_pwait2` (nanosecond timeout) on `epfd` into `buf`; falls
/// back to `epoll_wait` (milliseconds, rounded up) where the kernel lacks
/// it. An interrupted wait reports no events.
fn epoll_wait(
    epfd: BorrowedFd<'_>,
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
        // SAFETY: `epfd` is a live epoll fd (borrowed); `buf` has room for
        // `max` events, which the kernel writes; `tsp` is null or a valid
        // timespec; no signal mask. The system call itself, not libc's
        // symbol, which the `monkey` feature interposes.
        n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epfd.as_raw_fd(),
                buf.as_mut_ptr(),
                max,
                tsp,
                std::ptr::null::<libc::sigset_t>(),
                SIGSET_SIZE,
            )
        } as c_int;
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            NO_PWAIT2.store(true, Ordering::Relaxed);
        }
    }
    if NO_PWAIT2.load(Ordering::Relaxed) {
        let ms = timeout.map_or(-1, |t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            c_int::try_from(ms).unwrap_or(c_int::MAX)
        });
        // SAFETY: as above: a live epoll fd, room for `max` events, no
        // signal mask; the system call, not the interposed symbol.
        n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                epfd.as_raw_fd(),
                buf.as_mut_ptr(),
                max,
                ms,
                std::ptr::null::<libc::sigset_t>(),
                SIGSET_SIZE,
            )
        } as c_int;
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

/// Wakes a hub blocked in its epoll wait, from any thread: an eventfd in
/// the hub's epoll set (edge-triggered, never read: see `drained`).
pub(crate) struct Notifier {
    fd: OwnedFd,
    /// A write is outstanding: later notifies need not write again until
    /// the hub has drained it.
    notified: AtomicBool,
}

impl Notifier {
    /// Makes the hub's current or next epoll wait return.
    ///
    /// # Errors
    /// If the eventfd cannot be written (it never fills: its counter
    /// grows by one per hub wake-up, and would need 2^64 of them).
    pub(crate) fn notify(&self) -> io::Result<()> {
        if self.notified.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        rustix::io::write(&self.fd, &1u64.to_ne_bytes())?;
        Ok(())
    }

    /// The hub's side, after the eventfd reported a write. The eventfd is
    /// edge-triggered, and every write makes an edge, so it is never read
    /// (one system call less per cross-thread wake-up): its counter only
    /// grows, by one per notify that found the flag clear, and would need
    /// 2^64 of them to fill. A notify racing with this either saw the flag
    /// still set (and did not write; the hub drains its inbox after every
    /// poll anyway) or writes after it (the next wait sees that edge).
    fn drained(&self) {
        self.notified.store(false, Ordering::Release);
    }
}

/// The epoll set and its notifier, created together on first use.
struct Epoll {
    fd: OwnedFd,
    notifier: Arc<Notifier>,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let efd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &fd,
            &efd,
            epoll::EventData::new_u64(NOTIFY_KEY),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        let notifier = Arc::new(Notifier {
            fd: efd,
            notified: AtomicBool::new(false),
        });
        Ok(Epoll { fd, notifier })
    }
}

pub(crate) struct Reactor {
    epoll: OnceCell<Epoll>,
    /// The raw buffer [`Reactor::poll`] waits into.
    raw: RefCell<Vec<libc::epoll_event>>,
    sources: RefCell<Vec<Option<Rc<Source>>>>,
    free: RefCell<Vec<usize>>,
    /// Greenlets inside [`Reactor::wait`] right now, plus the async
    /// wakers set on sources ([`Reactor::set_waker`]).
    waiting: Cell<usize>,
    /// The async wakers one poll fires (kept to reuse its allocation).
    wakers: RefCell<Vec<Waker>>,
    /// Fds owned by other code that greenlets have waited on
    /// ([`Reactor::wait_borrowed`]).
    #[cfg(feature = "monkey")]
    borrowed: RefCell<HashMap<RawFd, Borrowed>>,
    /// Registrations so far: the high half of every source's token.
    serial: Cell<u32>,
}

/// A registration of an fd other code owns (see [`Reactor::wait_borrowed`]).
#[cfg(feature = "monkey")]
struct Borrowed {
    src: Rc<Source>,
    /// The caller's generation of the fd when it was registered: `Some`,
    /// the registration is kept while the caller passes the same one;
    /// `None`, it lasts while somebody waits on it.
    generation: Option<u32>,
    /// Greenlets waiting on it right now.
    waiters: usize,
}

impl Reactor {
    pub(crate) fn new() -> Self {
        Reactor {
            epoll: OnceCell::new(),
            raw: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS]),
            sources: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            waiting: Cell::new(0),
            wakers: RefCell::new(Vec::new()),
            #[cfg(feature = "monkey")]
            borrowed: RefCell::new(HashMap::new()),
            serial: Cell::new(0),
        }
    }

    /// The epoll set, created on first use.
    fn epoll(&self) -> io::Result<&Epoll> {
        if let Some(e) = self.epoll.get() {
            return Ok(e);
        }
        let e = Epoll::new()?;
        Ok(self.epoll.get_or_init(|| e))
    }

    /// The notifier other threads wake this hub with (creating the epoll
    /// set if needed).
    pub(crate) fn notifier(&self) -> io::Result<Arc<Notifier>> {
        Ok(self.epoll()?.notifier.clone())
    }

    /// Adds `fd` to the epoll set, edge-triggered for reading and writing.
    /// An fd that greenlets waited on through the monkey hooks while other
    /// code owned it (its cached registration, see
    /// [`wait_borrowed`](Self::wait_borrowed)) is taken over.
    pub(crate) fn register(&self, fd: BorrowedFd<'_>) -> io::Result<Rc<Source>> {
        match self.add(fd) {
            #[cfg(feature = "monkey")]
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && self.release_borrowed(fd) => {
                self.add(fd)
            }
            r => r,
        }
    }

    /// Adds `fd` to the epoll set under a new slab key and token.
    fn add(&self, fd: BorrowedFd<'_>) -> io::Result<Rc<Source>> {
        let epoll = self.epoll()?;
        let key = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut s = self.sources.borrow_mut();
            s.push(None);
            s.len() - 1
        });
        // The token keeps the key in 32 bits (and `Source::key` reads it
        // from there): four billion registered fds are far beyond any
        // file limit, but a key that does not fit is refused, not wrapped.
        let Ok(key32) = u32::try_from(key) else {
            self.free.borrow_mut().push(key);
            return Err(io::Error::other("too many registered file descriptors"));
        };
        let serial = self.serial.get().wrapping_add(1);
        self.serial.set(serial);
        let token = (u64::from(serial) << 32) | u64::from(key32);
        // The caller owns `fd` (a Watcher, which deregisters it before
        // closing it; or the monkey hooks, see `wait_borrowed`), so the
        // epoll set never refers to a closed or reused fd under a live
        // token.
        let added = epoll::add(
            &epoll.fd,
            fd,
            epoll::EventData::new_u64(token),
            REGISTER_FLAGS,
        );
        if let Err(e) = added {
            self.free.borrow_mut().push(key);
            return Err(e.into());
        }
        let src = Rc::new(Source {
            fd: fd.as_raw_fd(),
            token,
            readers: WaitList::default(),
            writers: WaitList::default(),
            wakers: OnceCell::new(),
            read_drained: Cell::new(false),
            read_closed: Cell::new(false),
        });
        self.sources.borrow_mut()[key] = Some(src.clone());
        Ok(src)
    }

    #[cfg(any(feature = "futures-io", feature = "tokio"))]
    /// Has `waker` woken at `src`'s next `interest` edge (an async task's
    /// `poll` that just saw `WouldBlock`), replacing the waker set before.
    /// Counts as a waiter until the edge comes, or the source goes.
    pub(crate) fn set_waker(&self, src: &Source, interest: Interest, waker: &Waker) {
        let mut slot = src.waker_slot(interest).borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            Some(_) => *slot = Some(waker.clone()),
            None => {
                *slot = Some(waker.clone());
                self.waiting.set(self.waiting.get() + 1);
            }
        }
    }

    /// Wakes the async wakers taken from sources (after the slab borrow
    /// ends), and stops counting them as waiters.
    fn fire(&self, wakers: &mut Vec<Waker>) {
        self.waiting.set(self.waiting.get() - wakers.len());
        for w in wakers.drain(..) {
            w.wake();
        }
    }

    /// Removes `src` from the epoll set; must run before its fd is closed.
    pub(crate) fn deregister(&self, src: &Source) {
        if let Some(e) = self.epoll.get() {
            // SAFETY: module invariant: the fd is still open here (its owner
            // deregisters before closing it).
            let fd = unsafe { BorrowedFd::borrow_raw(src.fd) };
            let _ = epoll::delete(&e.fd, fd);
        }
        self.forget(src);
        // Its async tasks are woken: a poll now finds the fd gone.
        let mut wakers: Vec<Waker> = [Interest::Read, Interest::Write]
            .into_iter()
            .filter_map(|i| src.take_waker(i))
            .collect();
        self.fire(&mut wakers);
    }

    /// Removes `src` from the slab only, leaving the epoll set alone: for a
    /// cached borrowed registration whose fd was closed (the kernel dropped
    /// it with the last reference to the file; if a dup keeps the file
    /// open, its events carry a token no source has any more).
    fn forget(&self, src: &Source) {
        let removed = {
            let mut sources = self.sources.borrow_mut();
            let slot = sources.get_mut(src.key());
            match slot {
                Some(s) if s.as_ref().is_some_and(|s| s.token == src.token) => s.take(),
                _ => None,
            }
        };
        if removed.is_some() {
            self.free.borrow_mut().push(src.key());
        }
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
        // the next operation will report them. The system call itself: the
        // `monkey` feature interposes libc's `poll` and `ppoll`, and the
        // runtime's own calls must not go through its hooks.
        let n = unsafe {
            libc::syscall(
                libc::SYS_ppoll,
                &mut pfd,
                1 as libc::nfds_t,
                &zero,
                std::ptr::null::<libc::sigset_t>(),
                SIGSET_SIZE,
            )
        };
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
        let on = match interest {
            Interest::Read => WaitingOn::Readable(src.fd),
            Interest::Write => WaitingOn::Writable(src.fd),
        };
        list.wait(deadline, on)
    }

    /// Parks the current greenlet until `fd`, which other code owns, is
    /// ready for `interest` (see [`wait`](Self::wait)). The caller must
    /// have just seen the fd not ready (`EAGAIN`, or `poll` finding
    /// nothing): adding it reports the current state, and a registration
    /// kept from before delivers every edge since, so none is lost.
    ///
    /// `generation` is the caller's count of how often the fd number was
    /// closed or replaced (the monkey hooks on `close`, `dup2`, ...). With
    /// one, the registration is kept after the wait and reused while the
    /// caller passes the same generation: a later wait on the same fd costs
    /// no `epoll_ctl`. A different generation means the number now names
    /// another file: the old registration is forgotten (not deleted: the
    /// number may already belong to a [`Watcher`](super::Watcher)) and the
    /// fd added afresh. Without one, the fd is in the poller for the
    /// duration of the wait only, shared by every greenlet waiting on it at
    /// the time, and removed when the last of them stops waiting, on every
    /// path.
    ///
    /// # Errors
    /// If the poller refuses the fd (a regular file, or an fd a
    /// [`Watcher`](super::Watcher) registered already).
    ///
    /// # Contract
    /// `fd` stays open until this returns (the monkey hooks: the libc
    /// caller passed it to the call they are inside), and whenever it is
    /// closed or replaced afterwards, the generation the caller passes for
    /// it changes before the number can be reused.
    #[cfg(feature = "monkey")]
    pub(crate) fn wait_borrowed(
        &self,
        fd: RawFd,
        generation: Option<u32>,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> io::Result<Woke> {
        let src = {
            let mut b = self.borrowed.borrow_mut();
            let reuse = match b.get_mut(&fd) {
                Some(e) if e.generation.is_some() && e.generation == generation => {
                    e.waiters += 1;
                    Some(e.src.clone())
                }
                Some(e) if e.generation.is_none() && generation.is_none() => {
                    e.waiters += 1;
                    Some(e.src.clone())
                }
                _ => None,
            };
            match reuse {
                Some(src) => src,
                None => {
                    if let Some(stale) = b.remove(&fd) {
                        // A stale cached registration: the number was
                        // closed since. Greenlets still parked on it keep
                        // their `Rc` (as on a closed fd, nothing wakes them
                        // but their deadline or a kill).
                        self.forget(&stale.src);
                    }
                    // SAFETY: the caller keeps `fd` open until we return
                    // (contract above); without a generation the guard
                    // below deregisters it before then, with one the
                    // generation changes before the number is reused.
                    let src = self.add(unsafe { BorrowedFd::borrow_raw(fd) })?;
                    b.insert(
                        fd,
                        Borrowed {
                            src: src.clone(),
                            generation,
                            waiters: 1,
                        },
                    );
                    src
                }
            }
        };
        struct Release<'a>(&'a Reactor, RawFd, Rc<Source>);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut b = self.0.borrowed.borrow_mut();
                let Some(e) = b.get_mut(&self.1) else { return };
                if !Rc::ptr_eq(&e.src, &self.2) {
                    return; // replaced meanwhile: not ours any more
                }
                e.waiters -= 1;
                if e.waiters == 0 && e.generation.is_none() {
                    if let Some(e) = b.remove(&self.1) {
                        drop(b);
                        self.0.deregister(&e.src);
                    }
                }
            }
        }
        let _release = Release(self, fd, src.clone());
        Ok(self.wait(&src, interest, deadline))
    }

    /// Takes `fd`'s cached borrowed registration out of the epoll set, for a
    /// [`Watcher`](super::Watcher) adopting the fd (its `add` met
    /// `EEXIST`). False if there is none, or greenlets wait on it now.
    #[cfg(feature = "monkey")]
    fn release_borrowed(&self, fd: BorrowedFd<'_>) -> bool {
        let raw = fd.as_raw_fd();
        let entry = {
            let mut b = self.borrowed.borrow_mut();
            if b.get(&raw).is_none_or(|e| e.waiters > 0) {
                return false;
            }
            b.remove(&raw)
        };
        // The fd is open (the caller borrows it) and this registration is
        // the one `EEXIST` met: delete it.
        entry.is_some_and(|e| {
            self.deregister(&e.src);
            true
        })
    }

    /// Waits for IO events (up to `timeout`) and makes their waiters ready:
    /// one `epoll_pwait2`.
    pub(crate) fn poll(&self, timeout: Option<Duration>, ready: &ReadyQueue) -> io::Result<usize> {
        let epoll = self.epoll()?;
        let mut raw = self.raw.borrow_mut();
        let n = epoll_wait(epoll.fd.as_fd(), &mut raw, timeout)?;
        let mut woken = 0;
        // Waking only queues greenlets (and may drop tokens, which never
        // touches `sources`), so the slab can stay borrowed; async wakers
        // are woken after.
        let mut wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        let sources = self.sources.borrow();
        for ev in &raw[..n] {
            let (flags, key) = (ev.events, ev.u64);
            if key == NOTIFY_KEY {
                epoll.notifier.drained();
            } else if let Some(Some(src)) = sources.get(key as u32 as usize) {
                if src.token == key {
                    woken += src.wake(flags, ready, &mut wakers);
                }
            }
        }
        drop(sources);
        drop(raw);
        woken += wakers.len();
        self.fire(&mut wakers);
        *self.wakers.borrow_mut() = wakers;
        Ok(woken)
    }

    /// Wakes everything registered (used when the poller itself fails, so
    /// that waiters retry and see the error instead of hanging).
    pub(crate) fn wake_everyone(&self, ready: &ReadyQueue) {
        let all: Vec<Rc<Source>> = self.sources.borrow().iter().flatten().cloned().collect();
        let mut wakers = Vec::new();
        for s in all {
            s.wake((libc::EPOLLIN | libc::EPOLLOUT) as u32, ready, &mut wakers);
        }
        self.fire(&mut wakers);
    }

    /// Sources registered, greenlets waiting on any of them, and the
    /// (source, direction) pairs somebody waits on.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let sources = self.sources.borrow();
        let (mut n, mut waiters, mut armed) = (0, 0, 0);
        for s in sources.iter().flatten() {
            n += 1;
            waiters += s.readers.len() + s.writers.len() + s.wakers_set();
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
        #[cfg(feature = "monkey")]
        self.borrowed.borrow_mut().clear();
        let all = std::mem::take(&mut *self.sources.borrow_mut());
        drop(all);
    }
}

#[cfg(test)]
mod tests {
    /// Every connection has a source: like a greenlet's record, its size
    /// is part of an idle connection's memory (issue 21). The async wakers
    /// are boxed at first use, and the slab key is the token's low half.
    #[test]
    fn a_source_is_72_bytes() {
        assert_eq!(std::mem::size_of::<super::Source>(), 72);
    }
}
