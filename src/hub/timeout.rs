//! Time: `sleep`, `yield_now`, and `Timeout` scopes.
//!
//! A [`Timeout`] is a deadline attached to the greenlet that armed it.
//! Every blocking operation of that greenlet parks with the earlier of its
//! own deadline and the scope's, so an expired scope interrupts whatever
//! the greenlet is blocked in — and every later blocking call — with
//! [`Error::TimedOut`] until the guard is dropped (`sleep`, which returns
//! nothing, ends early instead).

use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::scheduler::{self, Woke};
use super::slot::Scope;
use crate::error::Error;
use crate::greenlet::{self, Inner};

/// Suspends the current greenlet for `duration`; other greenlets run
/// meanwhile. `sleep(Duration::ZERO)` is [`yield_now`].
///
/// Like `std::thread::sleep` it returns nothing: the only ways out are the
/// time passing, a kill (which unwinds, as everywhere), and an armed
/// [`Timeout`] expiring first. Then the sleep ends early, the guard reports
/// [`fired`](Timeout::fired), [`with_timeout`] returns
/// [`Error::TimedOut`], and every later blocking call of the greenlet that
/// returns a `Result` fails with `TimedOut` until the guard is dropped
/// (so a loop that only sleeps should check `fired`).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// let t0 = Instant::now();
/// greenhouse::sleep(Duration::from_millis(10));
/// assert!(t0.elapsed() >= Duration::from_millis(10));
/// ```
#[inline] // a thin wrapper: no frame of its own on a parked stack
pub fn sleep(duration: Duration) {
    if duration.is_zero() {
        yield_now();
        return;
    }
    sleep_until(super::watcher::saturating_deadline(duration));
}

/// Suspends the current greenlet until `deadline` (yields if it has
/// passed). Ends early only if an armed [`Timeout`] expires first (see
/// [`sleep`]).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// let at = Instant::now() + Duration::from_millis(5);
/// greenhouse::sleep_until(at);
/// assert!(Instant::now() >= at);
/// ```
#[inline]
pub fn sleep_until(deadline: Instant) {
    // Ending early is what an expired Timeout asks for; it reports itself.
    let _ = sleep_woke(deadline);
}

/// [`sleep`] that says why it ended (see [`sleep_checked`]).
pub(crate) fn try_sleep(duration: Duration) -> Result<(), Error> {
    sleep_checked(super::watcher::saturating_deadline(duration))
}

/// [`sleep_until`] that says why it ended: `Err(TimedOut)` when an armed
/// `Timeout` expired first (for the crate's own retry loops, which must
/// stop then).
pub(crate) fn sleep_checked(deadline: Instant) -> Result<(), Error> {
    match sleep_woke(deadline) {
        Woke::TimedOut => Err(Error::TimedOut),
        Woke::Deadlock => Err(Error::Deadlock),
        Woke::Ready | Woke::Deadline => Ok(()),
    }
}

/// The sleep itself: `Deadline` when it ran its course, else what ended it
/// early (`TimedOut` or `Deadlock`). A one-byte result, so that the frames
/// of a sleeping greenlet hold no `Error` (a copy-stack greenlet's parked
/// frames are copied).
#[inline] // into the caller's frame: one frame fewer on a parked stack
fn sleep_woke(deadline: Instant) -> Woke {
    if deadline <= Instant::now() {
        yield_now();
        return Woke::Deadline;
    }
    loop {
        // A sleep is always a scheduling point: if the deadline passed
        // before the park could start (`register` is then not called),
        // yield once instead.
        let mut parked = false;
        let woke = scheduler::park_with(Some(deadline), super::dump::WaitingOn::Sleep, |_token| {
            parked = true
        });
        if !parked {
            yield_now();
        }
        match woke {
            Woke::Ready if Instant::now() < deadline => continue,
            Woke::Ready => return Woke::Deadline,
            w => return w,
        }
    }
}

/// Lets every other ready greenlet run once, then continues (gevent's
/// `sleep(0)`).
///
/// # Examples
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// let ran = Rc::new(Cell::new(false));
/// let r = ran.clone();
/// let _h = greenhouse::spawn(move || r.set(true));
/// greenhouse::yield_now();
/// assert!(ran.get());
/// ```
pub fn yield_now() {
    scheduler::yield_now();
}

/// The earliest deadline among the scopes `g` has armed. Raises the
/// unwind of a silent scope that fired and has not unwound yet (one whose
/// unwind a patched libc call stopped).
#[inline]
pub(crate) fn scope_deadline(g: &Inner) -> Option<Instant> {
    let scopes = g.ext.cold_if()?.deadlines.borrow();
    if scopes.is_empty() {
        return None;
    }
    let earliest = scopes.iter().map(|d| d.deadline).min();
    drop(scopes);
    raise_silent(g);
    earliest
}

/// Marks every expired scope of `g` as having fired; a silent one then
/// unwinds the greenlet to its scope.
pub(crate) fn mark_fired(g: &Inner) {
    let Some(cold) = g.ext.cold_if() else {
        return;
    };
    let now = Instant::now();
    for d in cold.deadlines.borrow_mut().iter_mut() {
        if d.deadline <= now {
            d.fired = true;
        }
    }
    raise_silent(g);
}

/// The unwind payload of a silent scope that fired: its id.
pub(crate) struct ScopeExpired(pub(crate) u64);

/// Unwinds to the outermost silent scope that fired, if any.
fn raise_silent(g: &Inner) {
    let Some(cold) = g.ext.cold_if() else {
        return;
    };
    let id = {
        let mut scopes = cold.deadlines.borrow_mut();
        let Some(s) = scopes
            .iter_mut()
            .find(|s| s.silent && s.fired && !s.raising)
        else {
            return;
        };
        s.raising = true;
        s.id
    };
    std::panic::resume_unwind(Box::new(ScopeExpired(id)));
}

/// A patched libc call stopped a silent scope's unwind (C frames must not
/// be unwound): the next park raises it again.
#[cfg(feature = "monkey")]
pub(crate) fn unwind_stopped(g: &Inner, e: &ScopeExpired) {
    let Some(cold) = g.ext.cold_if() else {
        return;
    };
    for s in cold.deadlines.borrow_mut().iter_mut() {
        if s.id == e.0 {
            s.raising = false;
        }
    }
}

/// A deadline for the current greenlet (gevent's `Timeout`).
///
/// While the guard lives, any blocking operation of the greenlet that
/// armed it (join, socket IO, waits) fails with [`Error::TimedOut`] once
/// the deadline has passed, and [`sleep`] ends early. Dropping the guard
/// disarms it. Scopes nest: the earliest deadline wins.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use greenhouse::{Error, Timeout, sleep, spawn};
///
/// let t0 = Instant::now();
/// let t = Timeout::start(Duration::from_millis(10));
/// sleep(Duration::from_secs(10)); // cut short
/// assert!(t.fired() && t0.elapsed() < Duration::from_secs(10));
/// assert_eq!(spawn(|| 1).join(), Err(Error::TimedOut)); // so is every later wait
/// drop(t);
/// assert_eq!(spawn(|| 1).join(), Ok(1));
/// ```
#[must_use = "a Timeout is disarmed when dropped: bind it (`let _t = Timeout::start(d);`) for the scope it guards"]
pub struct Timeout {
    g: Rc<Inner>,
    id: u64,
    deadline: Instant,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Timeout {
    /// Arms a timeout of `duration` for the current greenlet.
    pub fn start(duration: Duration) -> Timeout {
        Timeout::start_at(super::watcher::saturating_deadline(duration))
    }

    /// Arms a timeout expiring at `deadline` for the current greenlet.
    pub fn start_at(deadline: Instant) -> Timeout {
        Timeout::arm(deadline, false)
    }

    fn arm(deadline: Instant, silent: bool) -> Timeout {
        let g = greenlet::current_rc();
        let id = greenlet::next_id();
        g.ext.cold().deadlines.borrow_mut().push(Scope {
            id,
            deadline,
            fired: false,
            silent,
            raising: false,
        });
        Timeout {
            g,
            id,
            deadline,
            _not_send: PhantomData,
        }
    }

    /// When it expires.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether it has interrupted a blocking operation.
    pub fn fired(&self) -> bool {
        self.g.ext.cold_if().is_some_and(|c| {
            c.deadlines
                .borrow()
                .iter()
                .any(|d| d.id == self.id && d.fired)
        })
    }

    /// Whether it is still waiting to expire (gevent's `pending`): armed,
    /// not fired, and its deadline not yet reached.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use greenhouse::{Timeout, sleep};
    ///
    /// let t = Timeout::start(Duration::from_millis(5));
    /// assert!(t.pending());
    /// sleep(Duration::from_millis(50)); // cut short at 5 ms
    /// assert!(!t.pending() && t.fired());
    /// ```
    pub fn pending(&self) -> bool {
        !self.fired() && Instant::now() < self.deadline
    }

    /// Disarms it (same as dropping it).
    pub fn cancel(self) {}
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let Some(c) = self.g.ext.cold_if() {
            c.deadlines.borrow_mut().retain(|d| d.id != self.id);
        }
    }
}

/// Runs `f` with a [`Timeout`] of `duration` armed.
///
/// Returns `Ok` with `f`'s value, or [`Error::TimedOut`] if the deadline
/// interrupted any blocking operation inside `f` (its value is then
/// dropped: `f` was cut short).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use greenhouse::{Error, sleep, with_timeout};
///
/// assert_eq!(with_timeout(Duration::from_secs(5), || 7), Ok(7));
/// let slow = with_timeout(Duration::from_millis(5), || sleep(Duration::from_secs(5)));
/// assert_eq!(slow, Err(Error::TimedOut));
/// ```
pub fn with_timeout<R>(duration: Duration, f: impl FnOnce() -> R) -> Result<R, Error> {
    let t = Timeout::start(duration);
    let r = f();
    if t.fired() {
        Err(Error::TimedOut)
    } else {
        Ok(r)
    }
}

/// Runs `f` under a *silent* timeout (gevent's `with Timeout(seconds,
/// False):` block): if the deadline passes while `f` waits, `f` is
/// unwound from that wait (its destructors run, as for a kill) and the
/// answer is `None`; otherwise `Some` of what `f` returned.
///
/// Unlike [`with_timeout`], `f` does not run on after the expiry: every
/// blocking call inside it, including [`sleep`], ends the block. Code that
/// never blocks cannot be interrupted (as in gevent). Scopes nest; the
/// outermost expired silent scope is the one that ends. A `catch_unwind`
/// inside `f` must let payloads it does not know go on
/// ([`resume_unwind`](std::panic::resume_unwind)), as for a kill.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use greenhouse::{sleep, with_timeout_silent};
///
/// let mut steps = 0;
/// let r = with_timeout_silent(Duration::from_millis(20), || {
///     loop {
///         sleep(Duration::from_millis(5)); // the expiry ends the loop here
///         steps += 1;
///     }
/// });
/// assert_eq!(r, None::<()>);
/// assert!(steps >= 1);
/// assert_eq!(with_timeout_silent(Duration::from_secs(5), || 7), Some(7));
/// ```
pub fn with_timeout_silent<R>(duration: Duration, f: impl FnOnce() -> R) -> Option<R> {
    let t = Timeout::arm(super::watcher::saturating_deadline(duration), true);
    let id = t.id;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    drop(t);
    match r {
        Ok(v) => Some(v),
        Err(p) => match p.downcast::<ScopeExpired>() {
            Ok(e) if e.0 == id => None,
            Ok(e) => std::panic::resume_unwind(e),
            Err(p) => std::panic::resume_unwind(p),
        },
    }
}
