//! [`Event`] and [`AsyncResult`]: one-shot and resettable signals.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::hub::dump::WaitingOn;
use crate::hub::scheduler::{Token, WaitList, Woke, own_timeout};
use crate::hub::watcher::deadline_in;

/// A flag greenlets can wait for (gevent's `Event`, Python's
/// `threading.Event`). Cheap to clone: clones share the flag.
///
/// `set` wakes every waiter. A waiter woken by `set` returns `true` even if
/// the flag was cleared again before it ran. As in gevent, a greenlet that
/// calls `wait` on a set event while the waiters that `set` woke have not
/// all run yet lets them run first (it yields once), so it never overtakes
/// them; otherwise `wait` on a set event returns at once.
///
/// `!Send`: it belongs to one hub. From another thread, hand a closure to
/// the hub with a [`HubHandle`](crate::HubHandle) and `set` it there.
///
/// # Examples
///
/// ```
/// use greenhouse::sync::Event;
///
/// let ready = Event::new();
/// let r = ready.clone();
/// let waiter = greenhouse::spawn(move || r.wait());
/// greenhouse::yield_now();
/// assert!(!waiter.is_ready());
/// ready.set();
/// assert_eq!(waiter.join()?, Ok(()));
/// # Ok::<(), greenhouse::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Event {
    inner: Rc<EventInner>,
}

#[derive(Default)]
struct EventInner {
    flag: Cell<bool>,
    /// Bumped by every `set` that raised the flag.
    sets: Cell<u64>,
    /// The parks the last `set` woke (dropped once they have run).
    notified: RefCell<Vec<Token>>,
    waiters: WaitList,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .field("waiters", &self.inner.waiters.len())
            .finish()
    }
}

impl Event {
    /// A new, cleared event.
    pub fn new() -> Event {
        Event::default()
    }

    /// Raises the flag and wakes every waiter.
    pub fn set(&self) {
        if !self.inner.flag.replace(true) {
            self.inner.sets.set(self.inner.sets.get() + 1);
            let mut woken = std::mem::take(&mut *self.inner.notified.borrow_mut());
            woken.clear();
            crate::hub::with(|hub| self.inner.waiters.wake_all_into(&hub.ready, &mut woken));
            *self.inner.notified.borrow_mut() = woken;
        }
    }

    /// Lowers the flag; later `wait`s block until the next `set`.
    pub fn clear(&self) {
        self.inner.flag.set(false);
    }

    /// Whether the flag is up.
    pub fn is_set(&self) -> bool {
        self.inner.flag.get()
    }

    /// Waits until the flag is set (returns at once if it is).
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
    /// [`Error::Deadlock`] if nothing could ever set it.
    #[inline] // no frame of its own on a parked stack
    pub fn wait(&self) -> Result<(), Error> {
        self.wait_deadline(None).map_err(Woke::error)
    }

    /// Waits up to `timeout`; tells whether the flag was set.
    ///
    /// # Errors
    /// As for [`wait`](Self::wait) (an armed `Timeout` is an error; this
    /// call's own timeout is `Ok(false)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = greenhouse::sync::Event::new();
    /// assert_eq!(e.wait_timeout(Duration::from_millis(5)), Ok(false));
    /// e.set();
    /// assert_eq!(e.wait_timeout(Duration::from_millis(5)), Ok(true));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        own_timeout(self.wait_deadline(deadline_in(timeout))).map(|r| r.is_some())
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<(), Woke> {
        if self.is_set() {
            let pending = {
                let mut n = self.inner.notified.borrow_mut();
                n.retain(Token::is_queued);
                !n.is_empty()
            };
            if pending {
                // They are queued ahead of us: yielding lets them run.
                crate::hub::scheduler::yield_now();
            }
            return Ok(());
        }
        let seen = self.inner.sets.get();
        self.inner
            .waiters
            .wait_until(deadline, WaitingOn::Primitive("Event"), || {
                self.is_set() || self.inner.sets.get() != seen
            })
    }
}

/// A value (or an error) delivered once to any number of waiters
/// (gevent's `AsyncResult`, a future). Cheap to clone: clones share it.
///
/// Every waiter gets a clone of the value, so `T: Clone` (wrap big values
/// in `Rc`). To carry an error, use `AsyncResult<Result<T, E>>` and
/// [`set_error`](AsyncResult::set_error).
///
/// `!Send`, like [`Event`].
///
/// # Examples
///
/// ```
/// use greenhouse::sync::AsyncResult;
///
/// let answer: AsyncResult<Result<u32, String>> = AsyncResult::new();
/// let waiters: Vec<_> = (0..3)
///     .map(|_| {
///         let a = answer.clone();
///         greenhouse::spawn(move || a.get())
///     })
///     .collect();
/// answer.set(Ok(42))?;
/// for w in waiters {
///     assert_eq!(w.join()??, Ok(42));
/// }
/// assert!(answer.set_error("too late".into()).is_err()); // set once
/// # Ok::<(), greenhouse::Error>(())
/// ```
pub struct AsyncResult<T> {
    inner: Rc<ResultInner<T>>,
}

struct ResultInner<T> {
    value: RefCell<Option<T>>,
    waiters: WaitList,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        AsyncResult {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for AsyncResult<T> {
    fn default() -> Self {
        AsyncResult {
            inner: Rc::new(ResultInner {
                value: RefCell::new(None),
                waiters: WaitList::default(),
            }),
        }
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.inner.value.borrow().is_some())
            .finish()
    }
}

impl<T: Clone> AsyncResult<T> {
    /// A new, empty result.
    pub fn new() -> Self {
        AsyncResult::default()
    }

    /// Stores the value and wakes every waiter.
    ///
    /// # Errors
    /// [`Error::Invalid`] if a value was already set; `value` is dropped.
    pub fn set(&self, value: T) -> Result<(), Error> {
        {
            let mut v = self.inner.value.borrow_mut();
            if v.is_some() {
                return Err(Error::Invalid("the AsyncResult is already set"));
            }
            *v = Some(value);
        }
        self.inner.waiters.wake_all_now();
        Ok(())
    }

    /// Whether a value is there.
    pub fn is_ready(&self) -> bool {
        self.inner.value.borrow().is_some()
    }

    /// The value if it is there, without waiting.
    pub fn peek(&self) -> Option<T> {
        self.inner.value.borrow().clone()
    }

    /// Waits for the value and returns a clone of it.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
    /// [`Error::Deadlock`] if nothing could ever set it.
    pub fn get(&self) -> Result<T, Error> {
        self.get_deadline(None).map_err(Woke::error)
    }

    /// Like [`get`](Self::get), giving up after `timeout` with
    /// [`Error::TimedOut`].
    ///
    /// # Errors
    /// As for `get`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_deadline(deadline_in(timeout)).map_err(Woke::error)
    }

    /// Waits up to `timeout`; tells whether the value is there.
    ///
    /// # Errors
    /// As for `get`, except that this call's own timeout is `Ok(false)`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        own_timeout(self.get_deadline(deadline_in(timeout))).map(|r| r.is_some())
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<T, Woke> {
        let value = &self.inner.value;
        self.inner
            .waiters
            .wait_until(deadline, WaitingOn::Primitive("AsyncResult"), || {
                value.borrow().is_some()
            })?;
        Ok(self.peek().expect("checked by wait_until"))
    }
}

impl<T: Clone, E: Clone> AsyncResult<Result<T, E>> {
    /// Stores an error as the result (gevent's `set_exception`).
    ///
    /// # Errors
    /// [`Error::Invalid`] if a result was already set.
    pub fn set_error(&self, error: E) -> Result<(), Error> {
        self.set(Err(error))
    }
}

impl crate::hub::wait::sealed::Sealed for Event {
    fn ready_list(&self) -> crate::hub::wait::sealed::ReadyList<'_> {
        crate::hub::wait::sealed::ReadyList(&self.inner.waiters)
    }
}

/// Ready once set.
impl crate::Waitable for Event {
    fn is_ready(&self) -> bool {
        self.is_set()
    }
}

impl<T> crate::hub::wait::sealed::Sealed for AsyncResult<T> {
    fn ready_list(&self) -> crate::hub::wait::sealed::ReadyList<'_> {
        crate::hub::wait::sealed::ReadyList(&self.inner.waiters)
    }
}

/// Ready once it holds its value.
impl<T> crate::Waitable for AsyncResult<T> {
    fn is_ready(&self) -> bool {
        self.inner.value.borrow().is_some()
    }
}
