//! Groups of greenlets: [`Group`] (unbounded) and [`Pool`] (at most `n`
//! at once), gevent's `gevent.pool`.
//!
//! A group tracks its live members, so it can `join` or `kill` them all.
//! A pool adds a [`Semaphore`] of `n` permits: `spawn` takes one (waiting,
//! FIFO, while the pool is full) and the member gives it back when it ends,
//! however it ends. `map`, `imap` and `imap_unordered` feed the work from a
//! separate *feeder* greenlet, so the caller only waits for results.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::panic;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::greenlet::{Greenlet, GreenletExit};
use crate::hub::dump::WaitingOn;
use crate::hub::scheduler::{WaitList, Woke, own_timeout};
use crate::hub::watcher::deadline_in;
use crate::hub::{Builder, JoinHandle, spawn, spawn::kill_nowait};
use crate::sync::{Queue, Semaphore};

/// A set of greenlets to wait for or kill together (gevent's `Group`).
/// Cheap to clone: clones share the set.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use greenhouse::pool::Group;
///
/// let group = Group::new();
/// for i in 0..3u64 {
///     group.spawn(move || greenhouse::sleep(Duration::from_millis(i)))?;
/// }
/// assert_eq!(group.len(), 3);
/// group.join()?;
/// assert!(group.is_empty());
/// # Ok::<(), greenhouse::Error>(())
/// ```
#[derive(Clone)]
pub struct Group {
    inner: Rc<GroupInner>,
}

struct GroupInner {
    /// `Some` for a [`Pool`]: one permit per running member.
    slots: Option<Semaphore>,
    members: RefCell<HashMap<u64, Greenlet>>,
    next_key: Cell<u64>,
    /// Woken whenever a member ends.
    changed: WaitList,
}

/// Held by a member's closure: leaving the group on drop, however the
/// member ends (returned, panicked, killed, or never started).
struct Membership {
    group: Rc<GroupInner>,
    key: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let me = self.group.members.borrow_mut().remove(&self.key);
        drop(me);
        if let Some(s) = &self.group.slots {
            s.release();
        }
        self.group.changed.wake_all_now();
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("len", &self.len()).finish()
    }
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

/// The handles the feeder passes to an `imap` iterator.
enum Feed<T> {
    Task(JoinHandle<T>),
    Result(Result<T, Error>),
    /// No more input; for `imap_unordered`, how many results to expect.
    End(usize),
}

impl Group {
    /// An empty, unbounded group.
    pub fn new() -> Group {
        Group::with_slots(None)
    }

    fn with_slots(slots: Option<Semaphore>) -> Group {
        Group {
            inner: Rc::new(GroupInner {
                slots,
                members: RefCell::new(HashMap::new()),
                next_key: Cell::new(0),
                changed: WaitList::default(),
            }),
        }
    }

    /// Live members.
    pub fn len(&self) -> usize {
        self.inner.members.borrow().len()
    }

    /// Whether no member is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the current greenlet is a member.
    pub fn contains_current(&self) -> bool {
        let me = Greenlet::current();
        self.inner.members.borrow().values().any(|g| *g == me)
    }

    /// Spawns `f` as a member (for a [`Pool`], after waiting FIFO for a free
    /// slot). It leaves the group when it ends, however it ends.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires
    /// while waiting for a slot; [`Error::Deadlock`] if no slot can ever
    /// free up; [`Error::Spawn`] if no stack can be allocated.
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.spawn_after(|s| s.acquire().map(|()| true), f)
    }

    /// Takes a slot (for a pool) with `slot`, which says whether it got
    /// one, then spawns `f` as a member.
    #[track_caller]
    fn spawn_after<F, T>(
        &self,
        slot: impl FnOnce(&Semaphore) -> Result<bool, Error>,
        f: F,
    ) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let membership = self.join_slot(slot)?;
        let key = membership.key;
        // On failure the closure (and the membership) is dropped: the slot
        // is released there.
        let h = Builder::new().spawn(move || {
            let _member = membership;
            f()
        })?;
        self.inner.members.borrow_mut().insert(key, h.greenlet());
        Ok(h)
    }

    /// A slot (taken with `slot`, for a pool) and a membership key;
    /// [`Error::PoolFull`] if `slot` got none.
    fn join_slot(
        &self,
        slot: impl FnOnce(&Semaphore) -> Result<bool, Error>,
    ) -> Result<Membership, Error> {
        if let Some(s) = &self.inner.slots {
            if !slot(s)? {
                return Err(Error::PoolFull);
            }
        }
        let key = self.inner.next_key.get();
        self.inner.next_key.set(key + 1);
        Ok(Membership {
            group: self.inner.clone(),
            key,
        })
    }

    /// Adds a greenlet spawned elsewhere (or made with
    /// [`Builder::create`], which this does not start) as a member, after
    /// waiting FIFO for a free slot in a pool (gevent's `add`). It leaves
    /// the group when it finishes. A finished greenlet, or one already in
    /// the group, is not added again. The group holds what it tracks: an
    /// added greenlet that is never started keeps its slot until it is
    /// started or killed (by [`kill`](Self::kill), for one).
    ///
    /// # Errors
    /// As for [`spawn`](Self::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::pool::Group;
    ///
    /// let group = Group::new();
    /// let h = greenhouse::Builder::new().create(|| 5)?;
    /// group.add(&h)?;
    /// assert_eq!(group.len(), 1);
    /// h.start();
    /// group.join()?;
    /// assert!(group.is_empty());
    /// assert_eq!(h.join(), Ok(5));
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn add<T: 'static>(&self, h: &JoinHandle<T>) -> Result<(), Error> {
        self.add_after(|s| s.acquire().map(|()| true), h)
    }

    fn add_after<T: 'static>(
        &self,
        slot: impl FnOnce(&Semaphore) -> Result<bool, Error>,
        h: &JoinHandle<T>,
    ) -> Result<(), Error> {
        let g = h.greenlet();
        if h.is_ready() || self.inner.members.borrow().values().any(|m| *m == g) {
            return Ok(());
        }
        let membership = self.join_slot(slot)?;
        self.inner.members.borrow_mut().insert(membership.key, g);
        // Dropped (leaving the group) when the greenlet finishes, or with
        // its record if it is never started.
        h.watch(Box::new(move || drop(membership)));
        Ok(())
    }

    /// Runs `f` in the group and waits for its result (gevent's `apply`).
    /// A member calling this runs `f` itself, so a full pool cannot
    /// deadlock on its own members.
    ///
    /// # Errors
    /// As for [`spawn`](Self::spawn) and [`JoinHandle::join`].
    #[track_caller]
    pub fn apply<F, T>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if self.contains_current() {
            return Ok(f());
        }
        self.spawn(f)?.join()
    }

    /// Waits until every member has ended.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
    /// [`Error::Deadlock`] if that can never happen.
    pub fn join(&self) -> Result<(), Error> {
        self.wait_until_at_most(0, None).map_err(Woke::error)
    }

    /// Like [`join`](Self::join), giving up after `timeout`; tells whether
    /// every member ended.
    ///
    /// # Errors
    /// As for `join`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        own_timeout(self.wait_until_at_most(0, deadline_in(timeout))).map(|r| r.is_some())
    }

    fn wait_until_at_most(&self, n: usize, deadline: Option<Instant>) -> Result<(), Woke> {
        self.inner
            .changed
            .wait_until(deadline, WaitingOn::Primitive("Group::join"), || {
                self.len() <= n
            })
    }

    /// Kills every member and waits until they are dead. A member calling
    /// this kills the others first, then unwinds itself.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires
    /// while waiting.
    pub fn kill(&self) -> Result<(), Error> {
        let me = Greenlet::current();
        let others: Vec<Greenlet> = self
            .inner
            .members
            .borrow()
            .values()
            .filter(|g| **g != me)
            .cloned()
            .collect();
        for g in &others {
            kill_nowait(g.inner(), None);
        }
        let member = usize::from(self.contains_current());
        self.wait_until_at_most(member, None).map_err(Woke::error)?;
        if member == 1 {
            panic::resume_unwind(Box::new(GreenletExit));
        }
        Ok(())
    }

    /// Runs `f` on every item, as members, and returns the results in input
    /// order.
    ///
    /// # Errors
    /// The first error in input order: a task's panic
    /// ([`Error::Panicked`]) or kill, or a failure to spawn. Tasks still
    /// running then are left to finish.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenhouse::pool::Pool::new(4);
    /// let squares = pool.map(|x: u32| x * x, 0..10)?;
    /// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn map<A, T, F, I>(&self, f: F, items: I) -> Result<Vec<T>, Error>
    where
        F: Fn(A) -> T + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
        A: 'static,
        T: 'static,
    {
        self.imap(f, items).collect()
    }

    /// Like [`map`](Self::map), lazily: an iterator of results in input
    /// order. A feeder greenlet spawns the tasks as slots free up; dropping
    /// the iterator stops the feeder (tasks already running finish).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenhouse::pool::Pool::new(2);
    /// let mut it = pool.imap(|s: &str| s.len(), vec!["a", "bcd", "ef"]);
    /// assert_eq!(it.next(), Some(Ok(1)));
    /// assert_eq!(it.collect::<Result<Vec<_>, _>>()?, [3, 2]);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn imap<A, T, F, I>(&self, f: F, items: I) -> Imap<T>
    where
        F: Fn(A) -> T + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
        A: 'static,
        T: 'static,
    {
        self.feed(f, items, false)
    }

    /// Like [`imap`](Self::imap), yielding each result as soon as its task
    /// finishes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let group = greenhouse::pool::Group::new();
    /// let done: Vec<u64> = group
    ///     .imap_unordered(|ms: u64| {
    ///         greenhouse::sleep(Duration::from_millis(ms));
    ///         ms
    ///     }, [30, 1, 15])
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(done, [1, 15, 30]);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn imap_unordered<A, T, F, I>(&self, f: F, items: I) -> Imap<T>
    where
        F: Fn(A) -> T + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
        A: 'static,
        T: 'static,
    {
        self.feed(f, items, true)
    }

    fn feed<A, T, F, I>(&self, f: F, items: I, unordered: bool) -> Imap<T>
    where
        F: Fn(A) -> T + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'static,
        A: 'static,
        T: 'static,
    {
        let out: Queue<Feed<T>> = Queue::new();
        let (group, q) = (self.clone(), out.clone());
        let items = items.into_iter();
        let f = Rc::new(f);
        let feeder = spawn(move || {
            let mut n = 0;
            for a in items {
                let f = f.clone();
                n += 1;
                match group.spawn(move || f(a)) {
                    Ok(h) if unordered => {
                        let q = q.clone();
                        h.link_take(move |r| drop(q.put_nowait(Feed::Result(r))));
                    }
                    Ok(h) => drop(q.put_nowait(Feed::Task(h))),
                    Err(e) => {
                        drop(q.put_nowait(Feed::Result(Err(e))));
                        break;
                    }
                }
            }
            drop(q.put_nowait(Feed::End(n)));
        });
        Imap {
            out,
            feeder,
            received: 0,
            expected: None,
            done: false,
        }
    }
}

/// Results of [`Group::imap`] (input order) or [`Group::imap_unordered`]
/// (completion order). Each item is the task's result: an error if it
/// panicked or was killed, or if waiting failed (after which the iterator
/// ends).
pub struct Imap<T> {
    out: Queue<Feed<T>>,
    feeder: JoinHandle<()>,
    received: usize,
    expected: Option<usize>,
    done: bool,
}

impl<T> fmt::Debug for Imap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("received", &self.received)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: 'static> Iterator for Imap<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        loop {
            if self.done || self.expected == Some(self.received) {
                self.done = true;
                return None;
            }
            match self.out.get() {
                Ok(Feed::Task(h)) => {
                    self.received += 1;
                    return Some(h.join());
                }
                Ok(Feed::Result(r)) => {
                    self.received += 1;
                    return Some(r);
                }
                Ok(Feed::End(n)) => self.expected = Some(n),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<T> Drop for Imap<T> {
    fn drop(&mut self) {
        self.feeder.kill_nowait();
    }
}

/// A [`Group`] that runs at most `size` members at once (gevent's `Pool`).
/// Every `Group` method works on a pool (it derefs to one); `spawn` waits
/// (FIFO) while the pool is full. Cheap to clone.
///
/// # Examples
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use greenhouse::pool::Pool;
///
/// let pool = Pool::new(3);
/// let (inside, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
/// for _ in 0..10 {
///     let (inside, peak) = (inside.clone(), peak.clone());
///     pool.spawn(move || {
///         inside.set(inside.get() + 1);
///         peak.set(peak.get().max(inside.get()));
///         greenhouse::sleep(Duration::from_millis(2));
///         inside.set(inside.get() - 1);
///     })?;
/// }
/// pool.join()?;
/// assert_eq!(peak.get(), 3);
/// # Ok::<(), greenhouse::Error>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    group: Group,
    size: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .field("len", &self.len())
            .finish()
    }
}

impl Pool {
    /// A pool of at most `size` concurrent members (`0` counts as 1).
    pub fn new(size: usize) -> Pool {
        let size = size.max(1);
        Pool {
            group: Group::with_slots(Some(Semaphore::new(size))),
            size,
        }
    }

    /// The bound on concurrent members.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Free slots right now (0 while spawners wait for one).
    pub fn free_count(&self) -> usize {
        self.slots().available()
    }

    /// Whether `spawn` would wait.
    pub fn is_full(&self) -> bool {
        self.free_count() == 0
    }

    /// Spawns `f` as a member if a slot is free now; never waits.
    ///
    /// # Errors
    /// [`Error::PoolFull`] if none is; [`Error::Spawn`] if no stack can be
    /// allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use greenhouse::{Error, pool::Pool};
    ///
    /// let pool = Pool::new(1);
    /// let busy = pool.try_spawn(|| greenhouse::sleep(Duration::from_millis(20)))?;
    /// assert_eq!(pool.try_spawn(|| ()).unwrap_err(), Error::PoolFull);
    /// assert_eq!(pool.spawn_timeout(|| (), Duration::from_millis(1)).unwrap_err(), Error::PoolFull);
    /// busy.join()?;
    /// assert!(pool.try_spawn(|| ()).is_ok());
    /// # Ok::<(), Error>(())
    /// ```
    #[track_caller]
    pub fn try_spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.group.spawn_after(|s| Ok(s.try_acquire()), f)
    }

    /// Spawns `f` as a member, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// [`Error::PoolFull`] if none freed up in time; otherwise as for
    /// [`spawn`](Group::spawn).
    #[track_caller]
    pub fn spawn_timeout<F, T>(&self, f: F, timeout: Duration) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.group.spawn_after(|s| s.acquire_timeout(timeout), f)
    }

    /// [`add`](Group::add) if a slot is free now; never waits.
    ///
    /// # Errors
    /// [`Error::PoolFull`] if none is.
    pub fn try_add<T: 'static>(&self, h: &JoinHandle<T>) -> Result<(), Error> {
        self.group.add_after(|s| Ok(s.try_acquire()), h)
    }

    /// [`add`](Group::add), waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// [`Error::PoolFull`] if none freed up in time; otherwise as for
    /// [`add`](Group::add).
    pub fn add_timeout<T: 'static>(
        &self,
        h: &JoinHandle<T>,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.group.add_after(|s| s.acquire_timeout(timeout), h)
    }

    /// [`wait_available`](Self::wait_available), giving up after
    /// `timeout`: returns the free slots, `0` if none freed up in time
    /// (gevent's `wait_available(timeout)`).
    ///
    /// # Errors
    /// As for `wait_available`.
    pub fn wait_available_timeout(&self, timeout: Duration) -> Result<usize, Error> {
        self.wait_free(crate::hub::watcher::deadline_in(timeout))
    }

    /// Waits for a free slot until `deadline`; `Ok(0)` if it passed.
    fn wait_free(&self, deadline: Option<std::time::Instant>) -> Result<usize, Error> {
        match self.group.inner.changed.wait_until(
            deadline,
            WaitingOn::Primitive("Pool slot"),
            || self.free_count() > 0,
        ) {
            Ok(()) => Ok(self.free_count()),
            Err(Woke::Deadline) => Ok(0),
            Err(w) => Err(w.error()),
        }
    }

    /// Waits until at least one slot is free; returns how many are.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
    /// [`Error::Deadlock`] if no member can ever end.
    pub fn wait_available(&self) -> Result<usize, Error> {
        self.wait_free(None)
    }

    fn slots(&self) -> &Semaphore {
        self.group
            .inner
            .slots
            .as_ref()
            .expect("a pool always has slots")
    }
}

impl Deref for Pool {
    type Target = Group;
    fn deref(&self) -> &Group {
        &self.group
    }
}
