//! [`wait_future`]: a future polled on the calling greenlet's stack.
//!
//! # The wakers
//!
//! Each call lends the future a *root* waker whose data points at a
//! [`LocalWake`] in the call's own frame. The root is never owned by
//! anyone but the call: a future only sees `&Waker` through its
//! `Context`, so to keep it, it must clone it, and a clone is a different
//! waker, an `Arc<SharedWake>` that holds no pointer into the frame. So the
//! root's data pointer is only dereferenced while `poll` runs, when the
//! frame is alive (a future may hand `&Waker` to a scoped thread during
//! `poll`, so `LocalWake` is `Sync`: atomics and a mutex).
//!
//! - Root `wake_by_ref` (a future that wakes itself during `poll`, like a
//!   `yield_now`) sets a flag; the call yields to other greenlets and polls
//!   again.
//! - A `SharedWake` wake sets the call's `WakeState::woken` (shared by
//!   every clone and the call), and if it was clear, delivers one wake to the call's key in the hub's `RemoteWaits`: a
//!   ready-queue push on the hub's own thread, a `Job::Wake` through the
//!   inbox from another. The call clears `woken` before each poll and
//!   reads it after, before it parks, so a wake that lands between the
//!   two is never lost (spurious wake-ups only cost a poll).
//! - A `SharedWake` keeps the hub waiting for other threads (its
//!   `LiveGuard`): while the future holds a clone, the hub does not
//!   report a deadlock. The call itself holds it only weakly (and a
//!   clone made once the last one is gone makes a new one, with the same
//!   key), so the hub sees the future drop its last clone. A future that
//!   returns `Pending` and keeps no waker can only be ended by a timeout
//!   or a kill, and the hub reports [`Error::Deadlock`] when nothing else
//!   can run. A clone woken and dropped within one `poll` is not lost: its
//!   wake is in the `WakeState` the call reads after the poll.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::hub::dump::WaitingOn;
use crate::hub::remote::{LiveGuard, Remote, wake_from_anywhere};
use crate::hub::scheduler::{Woke, park_with};
use crate::hub::watcher::deadline_in;

/// Runs `fut` to completion on the calling greenlet and returns its
/// output, parking only this greenlet while the future is pending (the
/// hub runs the others). Called outside greenlets (from `main`), it runs
/// the hub while it waits, like every blocking call.
///
/// Any runtime-agnostic future works: `futures` channels, `async-channel`,
/// `event-listener`, `async-lock`, timers built on threads, a greenhouse
/// [`JoinHandle`](crate::JoinHandle), a [`RemoteTask`](crate::RemoteTask).
/// Futures that need a tokio reactor need the `tokio` feature's bridge.
///
/// # Errors
/// - [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires
///   (the future is dropped);
/// - [`Error::Deadlock`] if the future is pending, keeps no waker, and
///   nothing else can run;
/// - [`Error::Spawn`] if the hub's poller cannot be created.
///
/// A kill raises [`GreenletExit`](crate::GreenletExit) here: the future is
/// dropped as the greenlet's stack unwinds.
///
/// # Examples
///
/// ```
/// use futures::channel::oneshot;
///
/// let (tx, rx) = oneshot::channel();
/// let sender = std::thread::spawn(move || tx.send(42).unwrap());
/// // Only this greenlet waits; the hub runs the others meanwhile.
/// assert_eq!(greenhouse::wait_future(rx)?, Ok(42));
/// sender.join().unwrap();
/// # Ok::<(), greenhouse::Error>(())
/// ```
pub fn wait_future<F: IntoFuture>(fut: F) -> Result<F::Output, Error> {
    wait_until(fut.into_future(), None)
}

/// [`wait_future`], giving up after `timeout` with [`Error::TimedOut`]
/// (the future is dropped).
///
/// # Errors
/// As [`wait_future`], plus `TimedOut` when `timeout` passes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let never = std::future::pending::<()>();
/// assert_eq!(
///     greenhouse::wait_future_timeout(never, Duration::from_millis(10)),
///     Err(greenhouse::Error::TimedOut)
/// );
/// ```
pub fn wait_future_timeout<F: IntoFuture>(fut: F, timeout: Duration) -> Result<F::Output, Error> {
    wait_until(fut.into_future(), deadline_in(timeout))
}

/// The root waker's target: lives in [`wait_until`]'s frame.
struct LocalWake {
    /// Shared with every clone, of every generation.
    state: Arc<WakeState>,
    /// The root was woken during `poll`.
    woken: AtomicBool,
    /// The live shared waker, if the future kept a clone: made by a
    /// root's clone (from any thread) when none is alive. Weak, so that
    /// the hub sees the future drop its last clone.
    shared: Mutex<Weak<SharedWake>>,
}

/// What the call and its clones share; no pointer into any stack.
struct WakeState {
    remote: Arc<Remote>,
    key: u64,
    /// A wake since the call last cleared it (deliveries coalesce).
    woken: AtomicBool,
}

/// What clones of the root point at: the state, and the hub kept waiting
/// for other threads while any clone lives.
struct SharedWake {
    _live: LiveGuard,
    state: Arc<WakeState>,
}

impl SharedWake {
    fn wake(&self) {
        let st = &self.state;
        // SeqCst, paired with the call's clear-poll-check sequence.
        if !st.woken.swap(true, Ordering::SeqCst) {
            wake_from_anywhere(&st.remote, st.key);
        }
    }
}

impl LocalWake {
    /// A new strong reference to the live shared waker, made if none is.
    fn clone_shared(&self) -> Arc<SharedWake> {
        let mut weak = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = weak.upgrade() {
            return s;
        }
        let s = Arc::new(SharedWake {
            _live: LiveGuard::new(self.state.remote.clone()),
            state: self.state.clone(),
        });
        *weak = Arc::downgrade(&s);
        s
    }
}

// Both are reached from other threads: the root during `poll` (scoped
// threads), the shared one at any time.
const _: () = {
    const fn sync<T: Send + Sync>() {}
    sync::<LocalWake>();
    sync::<SharedWake>();
    sync::<WakeState>();
};

static ROOT_VTABLE: RawWakerVTable =
    RawWakerVTable::new(root_clone, root_wake, root_wake, root_drop);

static SHARED_VTABLE: RawWakerVTable =
    RawWakerVTable::new(shared_clone, shared_wake, shared_wake_by_ref, shared_drop);

unsafe fn root_clone(data: *const ()) -> RawWaker {
    // SAFETY: a root waker's data is a `&LocalWake` in `wait_until`'s
    // frame, and the root is only reachable as `&Waker` through the
    // `Context` of a `poll` that frame is running (see the module docs),
    // so the frame is alive now.
    let local = unsafe { &*data.cast::<LocalWake>() };
    let shared = Arc::into_raw(local.clone_shared());
    RawWaker::new(shared.cast(), &SHARED_VTABLE)
}

unsafe fn root_wake(data: *const ()) {
    // SAFETY: as in `root_clone`.
    let local = unsafe { &*data.cast::<LocalWake>() };
    local.woken.store(true, Ordering::Release);
}

unsafe fn root_drop(_: *const ()) {}

unsafe fn shared_clone(data: *const ()) -> RawWaker {
    // SAFETY: a shared waker's data came from `Arc::into_raw` of an
    // `Arc<SharedWake>` whose count this waker holds; cloning adds one.
    unsafe { Arc::increment_strong_count(data.cast::<SharedWake>()) };
    RawWaker::new(data, &SHARED_VTABLE)
}

unsafe fn shared_wake(data: *const ()) {
    // SAFETY: as in `shared_clone`; `wake` consumes this waker's count.
    let shared = unsafe { Arc::from_raw(data.cast::<SharedWake>()) };
    shared.wake();
}

unsafe fn shared_wake_by_ref(data: *const ()) {
    // SAFETY: as in `shared_clone`; the waker keeps its count.
    let shared = unsafe { &*data.cast::<SharedWake>() };
    shared.wake();
}

unsafe fn shared_drop(data: *const ()) {
    // SAFETY: as in `shared_clone`; dropping gives this waker's count back.
    drop(unsafe { Arc::from_raw(data.cast::<SharedWake>()) });
}

/// Forgets the call's key on every way out (a late wake is then ignored).
struct Unregister(u64);

impl Drop for Unregister {
    fn drop(&mut self) {
        crate::hub::try_with(|hub| hub.remote_waits.remove(self.0));
    }
}

fn wait_until<F: Future>(fut: F, deadline: Option<Instant>) -> Result<F::Output, Error> {
    let (remote, key) = crate::hub::with(|hub| {
        hub.remote()
            .map(|r| (r, hub.remote_waits.new_key()))
            .map_err(Error::spawn)
    })?;
    let mut fut = std::pin::pin!(fut);
    let local = LocalWake {
        state: Arc::new(WakeState {
            remote,
            key,
            woken: AtomicBool::new(false),
        }),
        woken: AtomicBool::new(false),
        shared: Mutex::new(Weak::new()),
    };
    // SAFETY: the vtable's functions uphold `RawWaker`'s contract (clones
    // are `Arc`-counted shared wakers; the root's own drop does nothing),
    // and its data, `&local`, outlives `root`: `root` is declared after
    // `local`, so it is dropped first, and it is only lent out as `&Waker`
    // inside the `poll` calls below.
    let root =
        unsafe { Waker::from_raw(RawWaker::new((&raw const local).cast::<()>(), &ROOT_VTABLE)) };
    let mut cx = Context::from_waker(&root);
    let mut registered: Option<Unregister> = None;
    loop {
        local.woken.store(false, Ordering::Relaxed);
        local.state.woken.store(false, Ordering::SeqCst);
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Ok(v);
        }
        if local.woken.load(Ordering::Acquire) {
            // It woke itself: let the others run, then poll again.
            crate::hub::yield_now();
            continue;
        }
        if registered.is_none() {
            crate::hub::with(|hub| hub.remote_waits.insert(key));
            registered = Some(Unregister(key));
        }
        if local.state.woken.load(Ordering::SeqCst) {
            continue; // woken while polling
        }
        let woke = park_with(deadline, WaitingOn::Future, |token| {
            crate::hub::with(|hub| hub.remote_waits.set_token(key, token));
        });
        match woke {
            Woke::Ready => {}
            other => return Err(other.error()),
        }
    }
}
