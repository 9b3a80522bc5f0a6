//! Waiting for whichever of several things is ready first: gevent's
//! `iwait` and `wait` over greenlets, events, results and queues at once.
//!
//! Each park files one token for the waiting greenlet in the wait list of
//! every object it still waits for; whichever object wakes first ends the
//! park, and a guard removes every token on every way out (woken, timed
//! out, killed). Nothing stays registered between two `next` calls, so an
//! `Iwait` dropped half consumed leaves nothing behind.

use std::time::{Duration, Instant};

use super::dump::WaitingOn;
use super::scheduler::{WaitList, Woke, park_with};
use super::spawn::JoinHandle;
use super::watcher::deadline_in;
use crate::error::Error;

/// Something [`iwait`] and [`wait`] can wait for: a [`JoinHandle`]
/// (ready once the greenlet has finished), an [`Event`](crate::sync::Event)
/// (set), an [`AsyncResult`](crate::sync::AsyncResult) (has its value),
/// or a queue of [`sync`](crate::sync) (has an item to get; a `Channel`,
/// a putter waiting). Sealed: the crate implements it for its own types.
pub trait Waitable: sealed::Sealed {
    /// Whether waiting on it would return at once.
    fn is_ready(&self) -> bool;
}

pub(crate) mod sealed {
    /// Gives the wait machinery the list a ready object wakes.
    pub trait Sealed {
        /// The list woken when the object becomes ready.
        fn ready_list(&self) -> ReadyList<'_>;
    }

    /// A wait list, opaque outside the crate.
    pub struct ReadyList<'a>(pub(crate) &'a crate::hub::scheduler::WaitList);

    impl std::fmt::Debug for ReadyList<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("ReadyList")
        }
    }
}

impl<T> sealed::Sealed for JoinHandle<T> {
    fn ready_list(&self) -> sealed::ReadyList<'_> {
        sealed::ReadyList(self.waiters())
    }
}

impl<T> Waitable for JoinHandle<T> {
    fn is_ready(&self) -> bool {
        JoinHandle::is_ready(self)
    }
}

/// Yields the positions of `objects` as each becomes ready (gevent's
/// `iwait`); see [`Iwait`] for the options and the order.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use greenhouse::sync::{Event, Queue};
/// use greenhouse::{Waitable, iwait, sleep, spawn};
///
/// let done = Event::new();
/// let q: Queue<u32> = Queue::new();
/// let worker = spawn(|| sleep(Duration::from_millis(10)));
/// let (d, q2) = (done.clone(), q.clone());
/// let _setter = spawn(move || {
///     q2.put(7).unwrap();
///     sleep(Duration::from_millis(300)); // long after the worker is done
///     d.set();
/// });
/// let objects: [&dyn Waitable; 3] = [&done, &q, &worker];
/// let order: Vec<usize> = iwait(&objects).map(Result::unwrap).collect();
/// assert_eq!(order, [1, 2, 0]); // the queue, then the greenlet, then the event
/// ```
pub fn iwait<'a>(objects: &'a [&'a dyn Waitable]) -> Iwait<'a> {
    Iwait {
        objects,
        yielded: vec![false; objects.len()],
        left: objects.len(),
        deadline: None,
        over: false,
    }
}

/// Waits until `objects` are ready and returns their positions in the
/// order they became ready (gevent's `wait(objects)`); with options,
/// `iwait(objects).timeout(d).count(n).wait()`.
///
/// # Errors
/// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
/// [`Error::Deadlock`] if nothing can ever make them ready.
///
/// # Examples
///
/// ```
/// use greenhouse::{Waitable, spawn, wait};
/// let (a, b) = (spawn(|| 1), spawn(|| 2));
/// let objects: [&dyn Waitable; 2] = [&a, &b];
/// assert_eq!(wait(&objects), Ok(vec![0, 1]));
/// ```
pub fn wait(objects: &[&dyn Waitable]) -> Result<Vec<usize>, Error> {
    iwait(objects).wait()
}

/// The iterator [`iwait`] returns: each item is the position of the next
/// object that is ready.
///
/// Objects already ready come first, in list order; then each as it
/// becomes ready (objects that became ready during the same wait, in list
/// order). Each position is yielded once. The iteration ends when every
/// object was yielded, [`count`](Iwait::count) were, or the
/// [`timeout`](Iwait::timeout) passed. An armed [`Timeout`](crate::Timeout)
/// scope or a deadlock ends it with one `Err`.
///
/// Each wait registers with every object not yet yielded and unregisters
/// when it ends, so dropping the iterator at any point leaves nothing
/// behind; the price is O(objects) work per wait.
#[derive(Debug)]
#[must_use = "iterators are lazy: iterate it, or call `wait`"]
pub struct Iwait<'a> {
    objects: &'a [&'a dyn Waitable],
    yielded: Vec<bool>,
    left: usize,
    deadline: Option<Instant>,
    over: bool,
}

impl std::fmt::Debug for dyn Waitable + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waitable")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl<'a> Iwait<'a> {
    /// Ends the iteration `timeout` from now.
    pub fn timeout(mut self, timeout: Duration) -> Iwait<'a> {
        self.deadline = deadline_in(timeout);
        self
    }

    /// Ends the iteration after `n` positions (at most all of them).
    pub fn count(mut self, n: usize) -> Iwait<'a> {
        self.left = self.left.min(n);
        self
    }

    /// Collects the remaining positions (gevent's `wait`).
    ///
    /// # Errors
    /// As for [`wait`].
    pub fn wait(self) -> Result<Vec<usize>, Error> {
        self.collect()
    }

    fn take_ready(&mut self) -> Option<usize> {
        let i =
            (0..self.objects.len()).find(|&i| !self.yielded[i] && self.objects[i].is_ready())?;
        self.yielded[i] = true;
        self.left -= 1;
        Some(i)
    }
}

impl Iterator for Iwait<'_> {
    type Item = Result<usize, Error>;

    fn next(&mut self) -> Option<Result<usize, Error>> {
        if self.over || self.left == 0 {
            return None;
        }
        loop {
            if let Some(i) = self.take_ready() {
                return Some(Ok(i));
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.over = true;
                return None;
            }
            /// Takes the waiter out of every list it was filed in.
            struct Unfile<'b>(Vec<&'b WaitList>);
            impl Drop for Unfile<'_> {
                fn drop(&mut self) {
                    for l in &self.0 {
                        l.remove_current();
                    }
                }
            }
            let lists: Vec<&WaitList> = (0..self.objects.len())
                .filter(|&i| !self.yielded[i])
                .map(|i| self.objects[i].ready_list().0)
                .collect();
            let mut filed = Unfile(Vec::with_capacity(lists.len()));
            let woke = park_with(self.deadline, WaitingOn::Objects, |token| {
                for l in lists {
                    l.push(token.duplicate());
                    filed.0.push(l);
                }
            });
            drop(filed);
            match woke {
                Woke::Ready => {}
                Woke::Deadline => {
                    self.over = true;
                    // A last look: something may have become ready too.
                    return self.take_ready().map(Ok);
                }
                w => {
                    self.over = true;
                    return Some(Err(w.error()));
                }
            }
        }
    }
}
