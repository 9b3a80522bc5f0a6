//! [`Semaphore`], [`BoundedSemaphore`], [`Lock`] and [`RLock`].
//!
//! All four rest on [`Permits`]: a counter plus a [`Handoff`] queue. A
//! release with greenlets waiting hands the permit straight to the oldest
//! one, so the counter is positive only while nobody waits and nobody can
//! overtake a waiter.

use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::waiters::Handoff;
use crate::error::Error;
use crate::greenlet::{Inner, current_ptr};
use crate::hub::scheduler::{Woke, own_timeout};
use crate::hub::watcher::deadline_in;

/// A permit counter with FIFO handoff.
struct Permits {
    free: Cell<usize>,
    /// `Some(n)`: releasing beyond `n` free permits is an error.
    bound: Option<usize>,
    waiters: Handoff<()>,
}

impl Permits {
    fn new(n: usize, bounded: bool, what: &'static str) -> Permits {
        Permits {
            free: Cell::new(n),
            bound: bounded.then_some(n),
            waiters: Handoff::new(what),
        }
    }

    fn try_acquire(&self) -> bool {
        let n = self.free.get();
        if n > 0 {
            self.free.set(n - 1);
        }
        n > 0
    }

    fn acquire(&self, deadline: Option<Instant>) -> Result<(), Woke> {
        if self.try_acquire() {
            return Ok(());
        }
        self.waiters
            .receive(deadline, |()| self.release_unchecked())
    }

    fn release(&self) -> Result<(), Error> {
        if self.bound.is_some_and(|b| self.free.get() >= b) {
            return Err(Error::Invalid(
                "BoundedSemaphore released more times than it was acquired",
            ));
        }
        self.release_unchecked();
        Ok(())
    }

    fn release_unchecked(&self) {
        if self.waiters.hand(()).is_err() {
            self.free.set(self.free.get() + 1);
        }
    }
}

macro_rules! semaphore {
    ($(#[$doc:meta])* $name:ident, $bounded:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            inner: Rc<Permits>,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("available", &self.available())
                    .finish()
            }
        }

        impl $name {
            /// A semaphore with `permits` free permits.
            pub fn new(permits: usize) -> Self {
                $name {
                    inner: Rc::new(Permits::new(permits, $bounded, stringify!($name))),
                }
            }

            /// Free permits right now.
            pub fn available(&self) -> usize {
                self.inner.free.get()
            }

            /// Whether an `acquire` would wait.
            pub fn is_locked(&self) -> bool {
                self.available() == 0
            }

            /// Takes a permit if one is free, without waiting.
            pub fn try_acquire(&self) -> bool {
                self.inner.try_acquire()
            }

            /// Takes a permit, waiting (FIFO) until one is free.
            ///
            /// # Errors
            /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout)
            /// expires; [`Error::Deadlock`] if nothing could ever release.
            pub fn acquire(&self) -> Result<(), Error> {
                self.inner.acquire(None).map_err(Woke::error)
            }

            /// Like [`acquire`](Self::acquire), giving up after `timeout`;
            /// tells whether it got the permit.
            ///
            /// # Errors
            /// As for `acquire`.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
                own_timeout(self.inner.acquire(deadline_in(timeout))).map(|r| r.is_some())
            }

            /// Takes a permit and returns a guard that releases it on drop.
            ///
            /// # Errors
            /// As for `acquire`.
            pub fn access(&self) -> Result<SemaphoreGuard, Error> {
                self.acquire()?;
                Ok(SemaphoreGuard {
                    permits: self.inner.clone(),
                })
            }
        }
    };
}

semaphore!(
    /// A counting semaphore (gevent's `Semaphore`): `acquire` takes a
    /// permit, waiting in FIFO order while none is free; `release` gives one
    /// back. Releasing more than was acquired just adds permits (use
    /// [`BoundedSemaphore`] to make that an error). Cheap to clone: clones
    /// share the permits.
    ///
    /// `!Send`: it belongs to one hub (see [`HubHandle`](crate::HubHandle)
    /// for other threads).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::sync::Semaphore;
    ///
    /// let slots = Semaphore::new(2);
    /// let hs: Vec<_> = (0..6)
    ///     .map(|_| {
    ///         let s = slots.clone();
    ///         greenhouse::spawn(move || {
    ///             let _permit = s.access()?; // at most 2 in here at once
    ///             greenhouse::sleep(std::time::Duration::from_millis(1));
    ///             Ok::<(), greenhouse::Error>(())
    ///         })
    ///     })
    ///     .collect();
    /// for h in hs {
    ///     h.join()??;
    /// }
    /// assert_eq!(slots.available(), 2);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    Semaphore,
    false
);

semaphore!(
    /// A semaphore that refuses to be released more often than it was
    /// acquired (gevent's `BoundedSemaphore`).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenhouse::sync::BoundedSemaphore::new(1);
    /// s.acquire()?;
    /// s.release()?;
    /// assert!(s.release().is_err()); // one release too many
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    BoundedSemaphore,
    true
);

impl Semaphore {
    /// Gives a permit back (to the oldest waiter, if any).
    pub fn release(&self) {
        self.inner.release_unchecked();
    }
}

impl BoundedSemaphore {
    /// Gives a permit back (to the oldest waiter, if any).
    ///
    /// # Errors
    /// [`Error::Invalid`] if that would exceed the initial count.
    pub fn release(&self) -> Result<(), Error> {
        self.inner.release()
    }
}

/// A permit of a [`Semaphore`] or [`BoundedSemaphore`], released on drop.
#[must_use = "the permit is released when the guard is dropped"]
pub struct SemaphoreGuard {
    permits: Rc<Permits>,
}

impl fmt::Debug for SemaphoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphoreGuard")
    }
}

impl Drop for SemaphoreGuard {
    fn drop(&mut self) {
        self.permits.release_unchecked();
    }
}

/// A mutual-exclusion lock that owns its data (gevent's `Lock`, in the
/// shape of `std::sync::Mutex`). Cheap to clone: clones share the lock.
///
/// Waiters get the lock in FIFO order. The guard releases it on drop,
/// including when the holder is killed (its stack unwinds). Locking again
/// from the greenlet that holds it is an error instead of a self-deadlock;
/// use [`RLock`] for re-entrancy.
///
/// `!Send`: it belongs to one hub.
///
/// # Examples
///
/// ```
/// use greenhouse::sync::Lock;
///
/// let total = Lock::new(0u64);
/// let hs: Vec<_> = (0..10)
///     .map(|i| {
///         let t = total.clone();
///         greenhouse::spawn(move || -> Result<(), greenhouse::Error> {
///             let mut g = t.lock()?;
///             let seen = *g;
///             greenhouse::yield_now(); // others run, but cannot enter
///             *g = seen + i;
///             Ok(())
///         })
///     })
///     .collect();
/// for h in hs {
///     h.join()??;
/// }
/// assert_eq!(*total.lock()?, 45);
/// # Ok::<(), greenhouse::Error>(())
/// ```
pub struct Lock<T = ()> {
    inner: Rc<LockInner<T>>,
}

struct LockInner<T> {
    permits: Permits,
    owner: Cell<*const Inner>,
    value: RefCell<T>,
}

impl<T> Clone for Lock<T> {
    fn clone(&self) -> Self {
        Lock {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Default> Default for Lock<T> {
    fn default() -> Self {
        Lock::new(T::default())
    }
}

impl<T> fmt::Debug for Lock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl<T> Lock<T> {
    /// A new, unlocked lock around `value`.
    pub fn new(value: T) -> Self {
        Lock {
            inner: Rc::new(LockInner {
                permits: Permits::new(1, true, "Lock"),
                owner: Cell::new(std::ptr::null()),
                value: RefCell::new(value),
            }),
        }
    }

    /// Whether some greenlet holds the lock (or it was just handed over).
    pub fn is_locked(&self) -> bool {
        self.inner.permits.free.get() == 0
    }

    /// Takes the lock, waiting (FIFO) while another greenlet holds it.
    ///
    /// # Errors
    /// - [`Error::Invalid`] if this greenlet already holds it;
    /// - [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
    /// - [`Error::Deadlock`] if the holder can never release it.
    pub fn lock(&self) -> Result<LockGuard<'_, T>, Error> {
        self.lock_deadline(None).map_err(LockFail::error)
    }

    /// Like [`lock`](Self::lock), giving up after `timeout` with `Ok(None)`.
    ///
    /// # Errors
    /// As for `lock`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_, T>>, Error> {
        match self.lock_deadline(deadline_in(timeout)) {
            Ok(g) => Ok(Some(g)),
            Err(LockFail::Woke(w)) => own_timeout(Err(w)),
            Err(e) => Err(e.error()),
        }
    }

    /// Takes the lock if it is free, without waiting.
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        self.inner.permits.try_acquire().then(|| self.guard())
    }

    fn lock_deadline(&self, deadline: Option<Instant>) -> Result<LockGuard<'_, T>, LockFail> {
        if self.inner.owner.get() == current_ptr() {
            return Err(LockFail::Reentry);
        }
        self.inner
            .permits
            .acquire(deadline)
            .map_err(LockFail::Woke)?;
        Ok(self.guard())
    }

    fn guard(&self) -> LockGuard<'_, T> {
        self.inner.owner.set(current_ptr());
        LockGuard {
            lock: &self.inner,
            value: Some(self.inner.value.borrow_mut()),
        }
    }
}

enum LockFail {
    Reentry,
    Woke(Woke),
}

impl LockFail {
    fn error(self) -> Error {
        match self {
            LockFail::Reentry => {
                Error::Invalid("this greenlet already holds the Lock (an RLock can be re-entered)")
            }
            LockFail::Woke(w) => w.error(),
        }
    }
}

/// Exclusive access to a [`Lock`]'s data; unlocks on drop.
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a, T> {
    lock: &'a LockInner<T>,
    value: Option<RefMut<'a, T>>,
}

impl<T: fmt::Debug> fmt::Debug for LockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_deref().expect("present until drop")
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_deref_mut().expect("present until drop")
    }
}

impl<T> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        self.value = None;
        self.lock.owner.set(std::ptr::null());
        self.lock.permits.release_unchecked();
    }
}

/// A re-entrant lock (gevent's `RLock`): the greenlet that holds it may
/// lock it again; others wait (FIFO) until every guard of the holder is
/// dropped. Guards give shared access (`&T`), since several of the
/// holder's guards may be alive at once; put a `Cell` or `RefCell` inside
/// for mutation. Cheap to clone: clones share the lock.
///
/// # Examples
///
/// ```
/// use greenhouse::sync::RLock;
///
/// let lock = RLock::new(());
/// let outer = lock.lock()?;
/// let inner = lock.lock()?; // same greenlet: no deadlock
/// assert_eq!(lock.depth(), 2);
/// drop((inner, outer));
/// assert!(!lock.is_locked());
/// # Ok::<(), greenhouse::Error>(())
/// ```
pub struct RLock<T = ()> {
    inner: Rc<RLockInner<T>>,
}

struct RLockInner<T> {
    permits: Permits,
    owner: Cell<*const Inner>,
    depth: Cell<usize>,
    value: T,
}

impl<T> Clone for RLock<T> {
    fn clone(&self) -> Self {
        RLock {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Default> Default for RLock<T> {
    fn default() -> Self {
        RLock::new(T::default())
    }
}

impl<T> fmt::Debug for RLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("depth", &self.depth())
            .finish()
    }
}

impl<T> RLock<T> {
    /// A new, unlocked re-entrant lock around `value`.
    pub fn new(value: T) -> Self {
        RLock {
            inner: Rc::new(RLockInner {
                permits: Permits::new(1, true, "RLock"),
                owner: Cell::new(std::ptr::null()),
                depth: Cell::new(0),
                value,
            }),
        }
    }

    /// How many guards the holder has (0: unlocked).
    pub fn depth(&self) -> usize {
        self.inner.depth.get()
    }

    /// Whether some greenlet holds the lock (or it was just handed over).
    pub fn is_locked(&self) -> bool {
        self.inner.permits.free.get() == 0
    }

    /// Takes the lock, or takes it once more if this greenlet holds it.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
    /// [`Error::Deadlock`] if the holder can never release it.
    pub fn lock(&self) -> Result<RLockGuard<'_, T>, Error> {
        self.lock_deadline(None).map_err(Woke::error)
    }

    /// Like [`lock`](Self::lock), giving up after `timeout` with `Ok(None)`.
    ///
    /// # Errors
    /// As for `lock`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<RLockGuard<'_, T>>, Error> {
        own_timeout(self.lock_deadline(deadline_in(timeout)))
    }

    /// Takes the lock if it is free or already ours, without waiting.
    pub fn try_lock(&self) -> Option<RLockGuard<'_, T>> {
        if self.is_mine() || self.inner.permits.try_acquire() {
            Some(self.enter())
        } else {
            None
        }
    }

    fn lock_deadline(&self, deadline: Option<Instant>) -> Result<RLockGuard<'_, T>, Woke> {
        if !self.is_mine() {
            self.inner.permits.acquire(deadline)?;
        }
        Ok(self.enter())
    }

    fn is_mine(&self) -> bool {
        self.inner.owner.get() == current_ptr()
    }

    fn enter(&self) -> RLockGuard<'_, T> {
        self.inner.owner.set(current_ptr());
        self.inner.depth.set(self.inner.depth.get() + 1);
        RLockGuard { lock: &self.inner }
    }
}

/// Shared access to an [`RLock`]'s data; leaves one level on drop.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a, T> {
    lock: &'a RLockInner<T>,
}

impl<T: fmt::Debug> fmt::Debug for RLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.lock.value, f)
    }
}

impl<T> Deref for RLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.lock.value
    }
}

impl<T> Drop for RLockGuard<'_, T> {
    fn drop(&mut self) {
        let depth = self.lock.depth.get() - 1;
        self.lock.depth.set(depth);
        if depth == 0 {
            self.lock.owner.set(std::ptr::null());
            self.lock.permits.release_unchecked();
        }
    }
}
