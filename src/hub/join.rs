//! Waiting on many greenlets at once: `joinall`, `joinall_timeout`,
//! `killall`, and [`JoinAll`], gevent's `joinall` with its options.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use super::dump::WaitingOn;
use super::join_state::LinkKey;
use super::scheduler::{Token, park_with};
use super::spawn::JoinHandle;
use super::watcher::deadline_in;
use crate::error::Error;
use crate::greenlet::Woke;

/// Waits for every greenlet and returns their results in the given order.
///
/// # Examples
///
/// ```
/// let hs: Vec<_> = (0..3).map(|i| greenhouse::spawn(move || i * 10)).collect();
/// let rs: Vec<_> = greenhouse::joinall(hs).into_iter().map(Result::unwrap).collect();
/// assert_eq!(rs, [0, 10, 20]);
/// ```
pub fn joinall<T: 'static>(
    handles: impl IntoIterator<Item = JoinHandle<T>>,
) -> Vec<Result<T, Error>> {
    handles.into_iter().map(JoinHandle::join).collect()
}

/// One entry of [`joinall_timeout`]'s answer, in the order given.
#[derive(Debug)]
pub enum Joined<T> {
    /// It finished in time; this is its result.
    Done(Result<T, Error>),
    /// Still running at the deadline; here is its handle back.
    Pending(JoinHandle<T>),
}

/// Waits up to `timeout` for all greenlets; reports which finished.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use greenhouse::{Joined, joinall_timeout, sleep, spawn};
///
/// let fast = spawn(|| 1);
/// let slow = spawn(|| { sleep(Duration::from_secs(10)); 2 });
/// let r = joinall_timeout(vec![fast, slow], Duration::from_millis(20));
/// assert!(matches!(r[0], Joined::Done(Ok(1))));
/// assert!(matches!(r[1], Joined::Pending(_)));
/// ```
pub fn joinall_timeout<T: 'static>(
    handles: Vec<JoinHandle<T>>,
    timeout: Duration,
) -> Vec<Joined<T>> {
    let deadline = deadline_in(timeout);
    handles
        .into_iter()
        .map(|h| match h.wait_until(deadline) {
            Ok(()) => Joined::Done(h.take()),
            Err(_) => Joined::Pending(h),
        })
        .collect()
}

/// Kills every greenlet (all at once), then waits until all are dead.
///
/// # Errors
/// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let hs: Vec<_> = (0..3)
///     .map(|_| greenhouse::spawn(|| greenhouse::sleep(Duration::from_secs(60))))
///     .collect();
/// greenhouse::killall(&hs).unwrap();
/// assert!(hs.iter().all(|h| h.is_ready()));
/// ```
pub fn killall<'a, T: 'a>(
    handles: impl IntoIterator<Item = &'a JoinHandle<T>>,
) -> Result<(), Error> {
    let hs: Vec<&JoinHandle<T>> = handles.into_iter().collect();
    for h in &hs {
        h.kill_nowait();
    }
    for h in &hs {
        h.wait_until(None)?;
    }
    Ok(())
}

/// [`killall`] with an error (gevent's `killall(greenlets, exception=...)`):
/// each greenlet ends with `error` unless it catches the unwind (see
/// [`JoinHandle::kill_with`]).
///
/// # Errors
/// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use greenhouse::Error;
///
/// let hs: Vec<_> = (0..3)
///     .map(|_| greenhouse::spawn(|| greenhouse::sleep(Duration::from_secs(60))))
///     .collect();
/// greenhouse::yield_now();
/// let stop = Error::custom(std::io::Error::other("stop"));
/// greenhouse::killall_with(&hs, stop.clone())?;
/// for h in hs {
///     assert_eq!(h.join(), Err(stop.clone()));
/// }
/// # Ok::<(), Error>(())
/// ```
pub fn killall_with<'a, T: 'a>(
    handles: impl IntoIterator<Item = &'a JoinHandle<T>>,
    error: Error,
) -> Result<(), Error> {
    let hs: Vec<&JoinHandle<T>> = handles.into_iter().collect();
    for h in &hs {
        h.kill_with_nowait(error.clone());
    }
    for h in &hs {
        h.wait_until(None)?;
    }
    Ok(())
}

/// gevent's `joinall(greenlets, timeout=None, raise_error=False,
/// count=None)`: waits on several greenlets, with options, and says which
/// finished.
///
/// The handles are borrowed, so the same one may appear twice (each
/// position is reported). [`wait`](JoinAll::wait) returns the positions
/// of the greenlets that finished, in the order they finished (those
/// already finished when it is called come first, in list order), once
///
/// - all have finished, or [`count`](JoinAll::count) of them have (the
///   rest keep running);
/// - or the [`timeout`](JoinAll::timeout) passed (the positions done so
///   far are returned: a timeout is not an error here, as in gevent);
/// - or, with [`raise_error`](JoinAll::raise_error), one failed: its
///   error is returned as soon as it happens (the earliest failure, not
///   the first in list order). A failure that happened before the call
///   counts, in list order.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use greenhouse::{JoinAll, Error, sleep, spawn};
///
/// let slow = spawn(|| { sleep(Duration::from_secs(10)); 1 });
/// let bad = spawn(|| -> i32 { sleep(Duration::from_millis(5)); panic!("boom") });
/// let quick = spawn(|| 3);
/// // Fail fast: the panic is reported while `slow` still runs.
/// let err = JoinAll::new().raise_error(true).wait([&slow, &bad, &quick]).unwrap_err();
/// assert!(err.to_string().contains("boom"));
/// // The first one to finish, whichever it is.
/// assert_eq!(JoinAll::new().count(1).wait([&slow, &quick]), Ok(vec![1]));
/// // Give up after a while: what finished by then.
/// let done = JoinAll::new().timeout(Duration::from_millis(10)).wait([&slow, &quick])?;
/// assert_eq!(done, [1]);
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct JoinAll {
    count: Option<usize>,
    raise_error: bool,
    timeout: Option<Duration>,
}

impl JoinAll {
    /// Wait for all, no timeout, failures are results like any other.
    pub fn new() -> JoinAll {
        JoinAll::default()
    }

    /// Returns once `n` of them have finished.
    pub fn count(mut self, n: usize) -> JoinAll {
        self.count = Some(n);
        self
    }

    /// With `true`, returns the first failure as soon as it happens.
    pub fn raise_error(mut self, yes: bool) -> JoinAll {
        self.raise_error = yes;
        self
    }

    /// Returns what finished by then after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> JoinAll {
        self.timeout = Some(timeout);
        self
    }

    /// Waits as configured; see [`JoinAll`].
    ///
    /// # Errors
    /// - with `raise_error`, the error of the earliest greenlet to fail
    ///   (also still in its handle for `join`);
    /// - [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) scope
    ///   expires first, [`Error::Deadlock`] if nothing can ever finish them.
    pub fn wait<'a, T: 'static>(
        &self,
        handles: impl IntoIterator<Item = &'a JoinHandle<T>>,
    ) -> Result<Vec<usize>, Error> {
        let hs: Vec<&JoinHandle<T>> = handles.into_iter().collect();
        let want = self.count.unwrap_or(hs.len()).min(hs.len());
        let deadline = self.timeout.and_then(deadline_in);
        let mut done = Vec::with_capacity(want);
        let shared = Rc::new(Finishes::default());
        let mut links = Links {
            hs: &hs,
            keys: Vec::new(),
        };
        for (i, h) in hs.iter().enumerate() {
            if h.is_ready() {
                if self.raise_error {
                    if let Some(e) = h.failure() {
                        return Err(e);
                    }
                }
                done.push(i);
            } else {
                let sh = shared.clone();
                let key = h.watch(Box::new(move || sh.push(i)));
                links.keys.push((i, key));
            }
        }
        while done.len() < want {
            let next = shared.queue.borrow_mut().pop_front();
            let Some(i) = next else {
                let woke = park_with(deadline, WaitingOn::JoinAny, |t| {
                    *shared.waiter.borrow_mut() = Some(t)
                });
                *shared.waiter.borrow_mut() = None;
                match woke {
                    Woke::Ready => continue,
                    Woke::Deadline => break,
                    other => return Err(other.error()),
                }
            };
            if self.raise_error {
                if let Some(e) = hs[i].failure() {
                    return Err(e);
                }
            }
            done.push(i);
        }
        Ok(done)
    }
}

/// Positions whose greenlet finished, and the token of the waiting park.
#[derive(Default)]
struct Finishes {
    queue: RefCell<VecDeque<usize>>,
    waiter: RefCell<Option<Token>>,
}

impl Finishes {
    /// Runs on the finishing greenlet's stack.
    fn push(&self, i: usize) {
        self.queue.borrow_mut().push_back(i);
        let waiter = self.waiter.borrow_mut().take();
        if let Some(t) = waiter {
            t.wake_now();
        }
    }
}

/// Unlinks every callback a wait registered, however it ends.
struct Links<'a, 'h, T> {
    hs: &'a [&'h JoinHandle<T>],
    keys: Vec<(usize, LinkKey)>,
}

impl<T> Drop for Links<'_, '_, T> {
    fn drop(&mut self) {
        for &(i, key) in &self.keys {
            self.hs[i].unlink(key);
        }
    }
}
