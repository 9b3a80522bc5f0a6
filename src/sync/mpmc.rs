//! Channels between hubs and threads: [`Sender`] and [`Receiver`] are
//! `Send` and `Clone` (multi-producer, multi-consumer), and a blocking
//! `send` or `recv` parks only the calling greenlet, on whichever hub it
//! runs. A plain thread that waits runs its own (lazily made) hub while it
//! waits, like every blocking call of greenhouse.
//!
//! The items sit in a FIFO behind a mutex, held only to push or pop one
//! item and, when someone waits, to pop one waiter; no greenlet code runs
//! under it. A waiter is a `RemoteWaker`: woken from its own hub's
//! thread it is a ready-queue push; from another thread, a push into that
//! hub's inbox and one `eventfd` notify (none if the hub was notified and
//! has not run since).
//!
//! **No item is lost.** Items are never handed to a particular receiver:
//! a send wakes the oldest waiting receiver, which takes the oldest item
//! when it runs. A receiver that gives up after being woken (killed, timed
//! out) without taking an item passes its wake-up on to the next waiting
//! receiver, so an item never sits in the channel while a receiver
//! sleeps. Senders waiting for room are treated alike.
//!
//! **Closing:** when the last `Sender` is dropped, receivers take what is
//! left and then get [`Error::Closed`]; when the last `Receiver` is
//! dropped, sends fail with [`Error::Closed`] and give the item back (the
//! items still queued are dropped with the channel).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::hub::remote::{RemoteWaker, remote_wait};
use crate::hub::scheduler::Woke;
use crate::hub::watcher::deadline;

pub use super::queue::PutError;

/// A channel with no bound: `send` never waits.
///
/// # Examples
///
/// ```
/// let (tx, rx) = greenhouse::sync::mpmc::unbounded();
/// let producers: Vec<_> = (0..4)
///     .map(|t| {
///         let tx = tx.clone();
///         std::thread::spawn(move || {
///             for i in 0..100 {
///                 tx.send(t * 100 + i).unwrap();
///             }
///         })
///     })
///     .collect();
/// drop(tx);
/// // Receiving parks this greenlet (here main, running its hub).
/// let mut got: Vec<i32> = rx.iter().collect();
/// got.sort();
/// assert_eq!(got, (0..400).collect::<Vec<_>>());
/// for p in producers {
///     p.join().unwrap();
/// }
/// ```
pub fn unbounded<T: Send>() -> (Sender<T>, Receiver<T>) {
    channel(None)
}

/// A channel holding at most `capacity` items (at least 1): `send` waits
/// while it is full.
///
/// # Examples
///
/// ```
/// let (tx, rx) = greenhouse::sync::mpmc::bounded(1);
/// tx.send("first")?;
/// assert!(tx.try_send("second").is_err()); // full
/// assert_eq!(rx.recv()?, "first");
/// tx.send("second")?;
/// assert_eq!(rx.recv()?, "second");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bounded<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    channel(Some(capacity.max(1)))
}

fn channel<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            receivers_waiting: VecDeque::new(),
            senders_waiting: VecDeque::new(),
            senders: 1,
            receivers: 1,
            next_id: 0,
        }),
        cap,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
    cap: Option<usize>,
}

struct State<T> {
    items: VecDeque<T>,
    receivers_waiting: VecDeque<Waiter>,
    senders_waiting: VecDeque<Waiter>,
    senders: usize,
    receivers: usize,
    next_id: u64,
}

/// A parked greenlet and how to wake it.
struct Waiter {
    id: u64,
    waker: RemoteWaker,
}

/// The two sides' waiting lines.
#[derive(Clone, Copy)]
enum Side {
    Receivers,
    Senders,
}

impl<T> State<T> {
    fn line(&mut self, side: Side) -> &mut VecDeque<Waiter> {
        match side {
            Side::Receivers => &mut self.receivers_waiting,
            Side::Senders => &mut self.senders_waiting,
        }
    }

    /// Takes the oldest waiter of `side` out, to be woken once the lock is
    /// released.
    fn pop_waiter(&mut self, side: Side) -> Option<RemoteWaker> {
        self.line(side).pop_front().map(|w| w.waker)
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics under this lock but a `VecDeque` allocation
        // failure, which aborts: the state is never half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_full(&self, st: &State<T>) -> bool {
        self.cap.is_some_and(|c| st.items.len() >= c)
    }

    /// Parks the caller on `side` until woken or `deadline`. `ready` is
    /// asked under the lock after registering (so no wake-up between the
    /// caller's failed try and the park is lost); if it already holds, the
    /// caller does not park.
    fn park(
        &self,
        side: Side,
        deadline: Option<Instant>,
        ready: impl Fn(&Self, &State<T>) -> bool,
    ) -> Result<(), Error> {
        let (waker, wait) = remote_wait().map_err(Error::spawn)?;
        let id = {
            let mut st = self.lock();
            if ready(self, &st) {
                return Ok(());
            }
            let id = st.next_id;
            st.next_id += 1;
            st.line(side).push_back(Waiter { id, waker });
            id
        };
        // Leaves the line on every path (a kill unwinds through here). A
        // waiter that was woken but gives up passes the wake-up on to the
        // next one if its reason (an item, or room) is still there.
        struct Leave<'a, T> {
            shared: &'a Shared<T>,
            side: Side,
            id: u64,
            retrying: bool,
        }
        impl<T> Drop for Leave<'_, T> {
            fn drop(&mut self) {
                let wake = {
                    let mut st = self.shared.lock();
                    let line = st.line(self.side);
                    if let Some(at) = line.iter().position(|w| w.id == self.id) {
                        // Never woken: just leave. Its waker is dropped
                        // below, outside the lock, and wakes nobody: this
                        // wait is over.
                        line.remove(at).map(|w| w.waker)
                    } else if self.retrying {
                        None // woken, and will use it: the caller retries
                    } else {
                        let pass = match self.side {
                            Side::Receivers => !st.items.is_empty(),
                            Side::Senders => !self.shared.is_full(&st),
                        };
                        if pass { st.pop_waiter(self.side) } else { None }
                    }
                };
                drop(wake);
            }
        }
        let mut leave = Leave {
            shared: self,
            side,
            id,
            retrying: false,
        };
        let woke = wait.wait(deadline);
        if woke == Woke::Ready {
            leave.retrying = true;
            Ok(())
        } else {
            Err(woke.error())
        }
    }
}

/// The sending side of a [`bounded`] or [`unbounded`] channel: `Send` and
/// `Clone`, usable from any thread and any greenlet.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving side of a [`bounded`] or [`unbounded`] channel: `Send`
/// and `Clone` (each item goes to one receiver).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// Why [`Sender::try_send`] failed, with the item back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The channel is bounded and full.
    Full(T),
    /// Every receiver is gone.
    Closed(T),
}

/// Why [`Receiver::try_recv`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// No item now.
    Empty,
    /// No item, and every sender is gone.
    Closed,
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the channel is full"),
            TrySendError::Closed(_) => f.write_str("the channel is closed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("the channel is empty"),
            TryRecvError::Closed => f.write_str("the channel is closed"),
        }
    }
}

impl std::error::Error for TryRecvError {}

impl<T: Send> Sender<T> {
    /// Sends `item`, waiting (parking only this greenlet) while a bounded
    /// channel is full.
    ///
    /// # Errors
    /// The item comes back with [`Error::Closed`] if every receiver is
    /// gone, [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout)
    /// expired, [`Error::Deadlock`] if nothing could ever make room.
    pub fn send(&self, item: T) -> Result<(), PutError<T>> {
        self.send_until(item, None)
    }

    /// [`send`](Self::send), giving up after `timeout` with
    /// [`Error::TimedOut`].
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.send_until(item, deadline(Some(timeout)))
    }

    /// Sends `item` if there is room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the item.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut st = self.shared.lock();
            if st.receivers == 0 {
                return Err(TrySendError::Closed(item));
            }
            if self.shared.is_full(&st) {
                return Err(TrySendError::Full(item));
            }
            st.items.push_back(item);
            st.pop_waiter(Side::Receivers)
        };
        drop(waker); // wakes the receiver, outside the lock
        Ok(())
    }

    fn send_until(&self, mut item: T, deadline: Option<Instant>) -> Result<(), PutError<T>> {
        loop {
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(v)) => {
                    return Err(PutError {
                        item: v,
                        error: Error::Closed,
                    });
                }
                Err(TrySendError::Full(v)) => item = v,
            }
            let parked = self.shared.park(Side::Senders, deadline, |sh, st| {
                st.receivers == 0 || !sh.is_full(st)
            });
            if let Err(error) = parked {
                return Err(PutError { item, error });
            }
        }
    }

    /// Items in the channel now.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Whether the channel holds no item now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound, for a [`bounded`] channel.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.cap
    }

    /// Whether every receiver is gone (sends fail from now on).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receivers == 0
    }
}

impl<T: Send> Receiver<T> {
    /// Takes the oldest item, waiting (parking only this greenlet) while
    /// there is none.
    ///
    /// # Errors
    /// [`Error::Closed`] once the channel is empty and every sender is
    /// gone; [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout)
    /// expired; [`Error::Deadlock`] if nothing could ever send.
    pub fn recv(&self) -> Result<T, Error> {
        self.recv_until(None)
    }

    /// [`recv`](Self::recv), giving up after `timeout` with
    /// [`Error::TimedOut`].
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.recv_until(deadline(Some(timeout)))
    }

    /// Takes the oldest item if there is one now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or [`TryRecvError::Closed`] once empty with
    /// every sender gone.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let (item, waker) = {
            let mut st = self.shared.lock();
            match st.items.pop_front() {
                Some(v) => {
                    let w = if self.shared.cap.is_some() {
                        st.pop_waiter(Side::Senders)
                    } else {
                        None
                    };
                    (v, w)
                }
                None if st.senders == 0 => return Err(TryRecvError::Closed),
                None => return Err(TryRecvError::Empty),
            }
        };
        drop(waker); // wakes a sender waiting for room, outside the lock
        Ok(item)
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, Error> {
        loop {
            match self.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Closed) => return Err(Error::Closed),
                Err(TryRecvError::Empty) => {}
            }
            self.shared.park(Side::Receivers, deadline, |_, st| {
                st.senders == 0 || !st.items.is_empty()
            })?;
        }
    }

    /// A blocking iterator: [`recv`](Self::recv) until the channel is
    /// closed (or the wait fails).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// Items in the channel now.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Whether the channel holds no item now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every sender is gone (receives fail once it is empty).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().senders == 0
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Receiver<T> {
        self.shared.lock().receivers += 1;
        Receiver {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let woken: VecDeque<Waiter> = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            if st.senders > 0 {
                return;
            }
            std::mem::take(&mut st.receivers_waiting)
        };
        drop(woken); // every receiver sees the close, outside the lock
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let woken: VecDeque<Waiter> = {
            let mut st = self.shared.lock();
            st.receivers -= 1;
            if st.receivers > 0 {
                return;
            }
            std::mem::take(&mut st.senders_waiting)
        };
        drop(woken); // every sender sees the close, outside the lock
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.shared.cap)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.shared.cap)
            .finish_non_exhaustive()
    }
}
