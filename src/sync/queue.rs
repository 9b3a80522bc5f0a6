//! The queue family: [`Queue`], [`LifoQueue`], [`PriorityQueue`],
//! [`JoinableQueue`] and the rendezvous [`Channel`].
//!
//! All five are one [`Core`] over a different [`Buffer`]. Getters and
//! putters wait in [`Handoff`] queues, so the oldest waiter is always
//! served first:
//!
//! - `put` with a getter waiting hands the item straight to it (the buffer
//!   is empty then).
//! - `get` from a full queue refills the freed place from the oldest
//!   waiting putter at once, so a newcomer's `put_nowait` still finds the
//!   queue full.
//! - A getter killed after an item reached it gives the item back: to the
//!   next getter, or to the front of the buffer.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::waiters::Handoff;
use crate::error::Error;
use crate::hub::dump::WaitingOn;
use crate::hub::scheduler::{WaitList, Woke, own_timeout};
use crate::hub::watcher::deadline_in;

/// Where a queue keeps its items between `put` and `get`.
pub(crate) trait Buffer<T>: Default {
    fn push(&mut self, item: T);
    fn pop(&mut self) -> Option<T>;
    /// Puts back an item that should come out next.
    fn unpop(&mut self, item: T);
    fn len(&self) -> usize;
}

/// First in, first out.
pub(crate) struct Fifo<T>(VecDeque<T>);
/// Last in, first out.
pub(crate) struct Lifo<T>(Vec<T>);
/// Smallest first.
pub(crate) struct Smallest<T>(BinaryHeap<Reverse<T>>);

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}

impl<T> Buffer<T> for Fifo<T> {
    fn push(&mut self, item: T) {
        self.0.push_back(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn unpop(&mut self, item: T) {
        self.0.push_front(item);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T> Default for Lifo<T> {
    fn default() -> Self {
        Lifo(Vec::new())
    }
}

impl<T> Buffer<T> for Lifo<T> {
    fn push(&mut self, item: T) {
        self.0.push(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn unpop(&mut self, item: T) {
        self.0.push(item);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T: Ord> Default for Smallest<T> {
    fn default() -> Self {
        Smallest(BinaryHeap::new())
    }
}

impl<T: Ord> Buffer<T> for Smallest<T> {
    fn push(&mut self, item: T) {
        self.0.push(Reverse(item));
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|r| r.0)
    }
    fn unpop(&mut self, item: T) {
        self.0.push(Reverse(item));
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The queue was full: here is the item back.
pub struct Full<T>(pub T);

/// The queue was empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

/// A blocking `put` gave up: the item comes back, with the reason
/// ([`Error::TimedOut`] or [`Error::Deadlock`]).
pub struct PutError<T> {
    /// The item that was not put.
    pub item: T,
    /// Why the put gave up.
    pub error: Error,
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is full")
    }
}

impl<T> std::error::Error for Full<T> {}

impl fmt::Display for Empty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is empty")
    }
}

impl std::error::Error for Empty {}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "put gave up: {}", self.error)
    }
}

impl<T> std::error::Error for PutError<T> {}

/// The shared state of every queue type.
pub(crate) struct Core<T, B> {
    buf: RefCell<B>,
    /// `None`: unbounded; `Some(0)`: rendezvous.
    cap: Option<usize>,
    getters: Handoff<T>,
    putters: Handoff<T>,
    /// Items put and not yet marked done (`JoinableQueue`).
    unfinished: Cell<usize>,
    joiners: WaitList,
    /// `iwait`s waiting for something to get.
    watchers: WaitList,
}

impl<T, B: Buffer<T>> Core<T, B> {
    fn new(cap: Option<usize>) -> Self {
        Core {
            buf: RefCell::new(B::default()),
            cap,
            getters: Handoff::new("Queue::get"),
            putters: Handoff::new("Queue::put"),
            unfinished: Cell::new(0),
            joiners: WaitList::default(),
            watchers: WaitList::default(),
        }
    }

    fn len(&self) -> usize {
        self.buf.borrow().len()
    }

    fn is_full(&self) -> bool {
        self.cap.is_some_and(|c| self.len() >= c)
    }

    fn accepted(&self) {
        self.unfinished.set(self.unfinished.get() + 1);
    }

    fn put_nowait(&self, item: T) -> Result<(), Full<T>> {
        let item = match self.getters.hand(item) {
            Ok(()) => {
                self.accepted();
                return Ok(());
            }
            Err(item) => item,
        };
        if self.is_full() {
            return Err(Full(item));
        }
        self.buf.borrow_mut().push(item);
        self.accepted();
        self.something_to_get();
        Ok(())
    }

    /// Whether a `get` would return at once.
    fn has_item(&self) -> bool {
        self.len() > 0 || self.putters.len() > 0
    }

    /// Wakes the `iwait`s: a `get` would now return at once.
    fn something_to_get(&self) {
        if !self.watchers.is_empty() {
            self.watchers.wake_all_now();
        }
    }

    fn put(&self, item: T, deadline: Option<Instant>) -> Result<(), PutError<T>> {
        let Err(Full(item)) = self.put_nowait(item) else {
            if self.cap == Some(0) {
                // A rendezvous hands the item to a waiting getter: let it
                // run with it before the putter goes on (gevent's order).
                crate::hub::scheduler::yield_now();
            }
            return Ok(());
        };
        // The taker counts it as accepted when it moves the item out. A
        // waiting putter is something to get (a `Channel`'s readiness).
        self.something_to_get();
        self.putters
            .offer(item, deadline)
            .map_err(|(item, woke)| PutError {
                item,
                error: woke.error(),
            })
    }

    fn get_nowait(&self) -> Result<T, Empty> {
        let popped = self.buf.borrow_mut().pop();
        if let Some(item) = popped {
            // Refill the freed place from the oldest waiting putter.
            if let Some(next) = self.putters.take() {
                self.buf.borrow_mut().push(next);
                self.accepted();
            }
            return Ok(item);
        }
        // Empty buffer (a rendezvous channel): take straight from a putter.
        match self.putters.take() {
            Some(item) => {
                self.accepted();
                Ok(item)
            }
            None => Err(Empty),
        }
    }

    fn get(&self, deadline: Option<Instant>) -> Result<T, Woke> {
        if let Ok(item) = self.get_nowait() {
            return Ok(item);
        }
        self.getters.receive(deadline, |item| self.give_back(item))
    }

    /// An item that reached a getter who died before taking it.
    fn give_back(&self, item: T) {
        if let Err(item) = self.getters.hand(item) {
            self.buf.borrow_mut().unpop(item);
            self.something_to_get();
        }
    }

    fn task_done(&self) -> Result<(), Error> {
        let n = self.unfinished.get();
        if n == 0 {
            return Err(Error::Invalid(
                "task_done called more times than items were put",
            ));
        }
        self.unfinished.set(n - 1);
        if n == 1 {
            self.joiners.wake_all_now();
        }
        Ok(())
    }

    fn join(&self, deadline: Option<Instant>) -> Result<(), Woke> {
        self.joiners.wait_until(
            deadline,
            WaitingOn::Primitive("JoinableQueue::join"),
            || self.unfinished.get() == 0,
        )
    }
}

macro_rules! queue_type {
    (
        $(#[$doc:meta])*
        $name:ident, $buf:ident, [$($bound:tt)*]
    ) => {
        $(#[$doc])*
        pub struct $name<T> {
            core: Rc<Core<T, $buf<T>>>,
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name { core: self.core.clone() }
            }
        }

        impl<T: $($bound)*> crate::hub::wait::sealed::Sealed for $name<T> {
            fn ready_list(&self) -> crate::hub::wait::sealed::ReadyList<'_> {
                crate::hub::wait::sealed::ReadyList(&self.core.watchers)
            }
        }

        /// Ready while a `get` would return at once (an item is there, or
        /// a putter waits).
        impl<T: $($bound)*> crate::Waitable for $name<T> {
            fn is_ready(&self) -> bool {
                self.core.has_item()
            }
        }

        impl<T: $($bound)*> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.core.len())
                    .field("maxsize", &self.core.cap)
                    .field("getters", &self.core.getters.len())
                    .field("putters", &self.core.putters.len())
                    .finish()
            }
        }

        impl<T: $($bound)*> $name<T> {
            /// Puts `item`, waiting (FIFO) while the queue is full.
            ///
            /// # Errors
            /// A [`PutError`] with the item back if an armed
            /// [`Timeout`](crate::Timeout) expires ([`Error::TimedOut`]) or
            /// no getter can ever come ([`Error::Deadlock`]).
            pub fn put(&self, item: T) -> Result<(), PutError<T>> {
                self.core.put(item, None)
            }

            /// Like [`put`](Self::put), giving up after `timeout` with
            /// [`Error::TimedOut`] and the item back.
            ///
            /// # Errors
            /// As for `put`.
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
                self.core.put(item, deadline_in(timeout))
            }

            /// Puts `item` without waiting.
            ///
            /// # Errors
            /// [`Full`] with the item back if there is no room (for a
            /// rendezvous, if no getter is waiting).
            pub fn put_nowait(&self, item: T) -> Result<(), Full<T>> {
                self.core.put_nowait(item)
            }

            /// Takes the next item, waiting (FIFO) while there is none.
            ///
            /// # Errors
            /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout)
            /// expires; [`Error::Deadlock`] if no item can ever come.
            pub fn get(&self) -> Result<T, Error> {
                self.core.get(None).map_err(Woke::error)
            }

            /// Like [`get`](Self::get), giving up after `timeout` with
            /// [`Error::TimedOut`].
            ///
            /// # Errors
            /// As for `get`.
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
                self.core.get(deadline_in(timeout)).map_err(Woke::error)
            }

            /// Like [`get_timeout`](Self::get_timeout), with its own
            /// timeout passing as `Ok(None)` (an armed `Timeout` scope is
            /// still an error).
            #[allow(dead_code)]
            pub(crate) fn get_own_timeout(&self, timeout: Duration) -> Result<Option<T>, Error> {
                own_timeout(self.core.get(deadline_in(timeout)))
            }

            /// Takes the next item without waiting.
            ///
            /// # Errors
            /// [`Empty`] if there is none.
            pub fn get_nowait(&self) -> Result<T, Empty> {
                self.core.get_nowait()
            }

            /// Items buffered now (items offered by waiting putters of a
            /// full queue are not counted).
            pub fn len(&self) -> usize {
                self.core.len()
            }

            /// Whether no item is buffered.
            pub fn is_empty(&self) -> bool {
                self.core.len() == 0
            }

            /// Whether a `put` would wait.
            pub fn is_full(&self) -> bool {
                self.core.is_full()
            }

            /// The bound given at creation (`None`: unbounded).
            pub fn maxsize(&self) -> Option<usize> {
                self.core.cap
            }
        }
    };
}

macro_rules! sized_constructors {
    ($name:ident, [$($bound:tt)*]) => {
        impl<T: $($bound)*> Default for $name<T> {
            fn default() -> Self {
                $name::new()
            }
        }

        impl<T: $($bound)*> $name<T> {
            /// An unbounded queue: `put` never waits.
            pub fn new() -> Self {
                $name { core: Rc::new(Core::new(None)) }
            }

            /// A queue holding at most `maxsize` items: `put` waits while it
            /// is full. `bounded(0)` is a rendezvous, like [`Channel`].
            pub fn bounded(maxsize: usize) -> Self {
                $name { core: Rc::new(Core::new(Some(maxsize))) }
            }
        }
    };
}

queue_type!(
    /// A FIFO queue (gevent's `Queue`), unbounded or with a `maxsize`.
    /// Cheap to clone: clones share the queue.
    ///
    /// Waiting getters and putters are served oldest first. A getter that
    /// times out or is killed never swallows an item, and a `put` that
    /// gives up returns its item.
    ///
    /// `!Send`: it belongs to one hub. To feed it from another thread, hand
    /// a closure to the hub with a [`HubHandle`](crate::HubHandle).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::sync::Queue;
    ///
    /// let q = Queue::bounded(2);
    /// let producer = {
    ///     let q = q.clone();
    ///     greenhouse::spawn(move || {
    ///         for i in 0..5 {
    ///             q.put(i).unwrap(); // waits while 2 items are queued
    ///         }
    ///     })
    /// };
    /// let got: Vec<i32> = (0..5).map(|_| q.get().unwrap()).collect();
    /// assert_eq!(got, [0, 1, 2, 3, 4]);
    /// producer.join()?;
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    Queue, Fifo, []
);
sized_constructors!(Queue, []);

queue_type!(
    /// A last-in, first-out queue (gevent's `LifoQueue`).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenhouse::sync::LifoQueue::new();
    /// for i in 1..=3 {
    ///     q.put_nowait(i).unwrap();
    /// }
    /// assert_eq!(q.get()?, 3);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    LifoQueue, Lifo, []
);
sized_constructors!(LifoQueue, []);

queue_type!(
    /// A queue that hands out its smallest item first (gevent's
    /// `PriorityQueue`; use `(priority, item)` tuples or `Reverse`).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenhouse::sync::PriorityQueue::new();
    /// q.put_nowait((2, "later")).unwrap();
    /// q.put_nowait((1, "first")).unwrap();
    /// assert_eq!(q.get()?, (1, "first"));
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    PriorityQueue, Smallest, [Ord]
);
sized_constructors!(PriorityQueue, [Ord]);

queue_type!(
    /// A FIFO queue that also counts unfinished work (gevent's
    /// `JoinableQueue`): every item put must be marked with
    /// [`task_done`](JoinableQueue::task_done), and
    /// [`join`](JoinableQueue::join) waits until all are.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::sync::JoinableQueue;
    ///
    /// let q = JoinableQueue::new();
    /// let worker = {
    ///     let q = q.clone();
    ///     greenhouse::spawn(move || {
    ///         while let Ok(job) = q.get() {
    ///             let _ = job * 2; // work
    ///             q.task_done().unwrap();
    ///         }
    ///     })
    /// };
    /// for job in 0..10 {
    ///     q.put(job).unwrap();
    /// }
    /// q.join()?; // every job is done
    /// assert_eq!(q.unfinished(), 0);
    /// worker.kill()?;
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    JoinableQueue, Fifo, []
);
sized_constructors!(JoinableQueue, []);

impl<T> JoinableQueue<T> {
    /// Marks one item as processed.
    ///
    /// # Errors
    /// [`Error::Invalid`] if called more times than items were put.
    pub fn task_done(&self) -> Result<(), Error> {
        self.core.task_done()
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> usize {
        self.core.unfinished.get()
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires;
    /// [`Error::Deadlock`] if that can never happen.
    pub fn join(&self) -> Result<(), Error> {
        self.core.join(None).map_err(Woke::error)
    }

    /// Like [`join`](Self::join), giving up after `timeout`; tells whether
    /// all work was done.
    ///
    /// # Errors
    /// As for `join`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        own_timeout(self.core.join(deadline_in(timeout))).map(|r| r.is_some())
    }
}

queue_type!(
    /// A rendezvous channel (gevent's `Channel`): `put` waits until a
    /// `get` takes the item, and `put_nowait` succeeds only if a getter is
    /// already waiting. Nothing is ever buffered.
    ///
    /// As in gevent, a `put` that finds a getter waiting hands it the item
    /// and then lets it run (it yields): the putter goes on only after the
    /// getter has taken the item and run until it blocked or yielded.
    /// `put_nowait` hands over without yielding.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::sync::Channel;
    ///
    /// let ch = Channel::new();
    /// assert!(ch.put_nowait(1).is_err()); // nobody is waiting
    /// let taker = {
    ///     let ch = ch.clone();
    ///     greenhouse::spawn(move || ch.get())
    /// };
    /// ch.put(2).unwrap(); // returns once the taker has it
    /// assert_eq!(taker.join()?, Ok(2));
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    Channel, Fifo, []
);

impl<T> Default for Channel<T> {
    fn default() -> Self {
        Channel::new()
    }
}

impl<T> Channel<T> {
    /// A new rendezvous channel.
    pub fn new() -> Self {
        Channel {
            core: Rc::new(Core::new(Some(0))),
        }
    }
}
