//! [`wait_future`]: a future polled on the calling greenlet's stack.
//!
//! # The wakers
//!
//! Each call lends the future a *root* waker whose data points at a
//! [`LocalWake`] in the call's own frame. The root is never owned by
//! anyone but the call: a future only sees `&Waker` through its
//! `Context`, so to keep it, it must clone it, and a clone is a different
//! waker, an `Arc<WakeState>` that holds no pointer into the frame. So the
//! root's data pointer is only dereferenced while `poll` runs, when the
//! frame is alive (a future may hand `&Waker` to a scoped thread during
//! `poll`, so `LocalWake` is `Sync`: atomics and a `OnceLock`).
//!
//! - Root `wake_by_ref` (a future that wakes itself during `poll`, like a
//!   `yield_now`) sets a flag; the call yields to other greenlets and polls
//!   again.
//! - A clone's wake sets `WakeState::woken` (one state per call, made by
//!   the first clone, so a ready future allocates nothing), and if it was
//!   clear, delivers one wake to the call's key in the hub's
//!   `RemoteWaits`: a ready-queue push on the hub's own thread, a
//!   `Job::Wake` through the inbox from another. The call clears `woken`
//!   before each poll and reads it after, before it parks, so a wake
//!   that lands between the two is never lost, even from a clone woken
//!   and dropped within the poll (spurious wake-ups only cost a poll).
//! - While any clone lives (`WakeState::clones`, not counting the call's
//!   own reference), the hub counts one live handle and waits for other
//!   threads instead of reporting a deadlock; the last clone dropped
//!   gives it back. So a future that returns `Pending` and keeps no waker
//!   can only be ended by a timeout or a kill, and the hub reports
//!   [`Error::Deadlock`] when nothing else can run.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::hub::dump::WaitingOn;
use crate::hub::remote::{Remote, wake_from_anywhere};
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
    remote: Arc<Remote>,
    key: u64,
    /// The root was woken during `poll`.
    woken: AtomicBool,
    /// What clones point at, made by the first clone (from any thread):
    /// a ready future costs no allocation.
    state: OnceLock<Arc<WakeState>>,
}

/// What the call and its clones share; no pointer into any stack. The
/// call holds one strong reference that `clones` does not count.
struct WakeState {
    remote: Arc<Remote>,
    key: u64,
    /// A wake since the call last cleared it (deliveries coalesce).
    woken: AtomicBool,
    /// Live clones (wakers with this vtable). While there are any, the
    /// hub counts one live handle (it waits for other threads instead
    /// of reporting a deadlock); the last one dropped gives it back, so
    /// the hub sees the future let go of its waker.
    clones: AtomicUsize,
}

impl WakeState {
    fn wake(&self) {
        // SeqCst, paired with the call's clear-poll-check sequence.
        if !self.woken.swap(true, Ordering::SeqCst) {
            wake_from_anywhere(&self.remote, self.key);
        }
    }

    /// A new clone's count (`Arc` and `clones`).
    fn add_clone(self: &Arc<Self>) -> *const () {
        if self.clones.fetch_add(1, Ordering::AcqRel) == 0 {
            self.remote.acquire();
        }
        Arc::into_raw(self.clone()).cast()
    }
}

impl LocalWake {
    fn state(&self) -> &Arc<WakeState> {
        self.state.get_or_init(|| {
            Arc::new(WakeState {
                remote: self.remote.clone(),
                key: self.key,
                woken: AtomicBool::new(false),
                clones: AtomicUsize::new(0),
            })
        })
    }
}

// Both are reached from other threads: the root during `poll` (scoped
// threads), the state at any time.
const _: () = {
    const fn sync<T: Send + Sync>() {}
    sync::<LocalWake>();
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
    RawWaker::new(local.state().add_clone(), &SHARED_VTABLE)
}

unsafe fn root_wake(data: *const ()) {
    // SAFETY: as in `root_clone`.
    let local = unsafe { &*data.cast::<LocalWake>() };
    local.woken.store(true, Ordering::Release);
}

unsafe fn root_drop(_: *const ()) {}

/// The state a clone's data points at.
///
/// # Safety
/// `data` is a clone's: from `WakeState::add_clone`, whose counts the
/// clone still holds.
unsafe fn clone_state<'a>(data: *const ()) -> &'a WakeState {
    // SAFETY: the caller's contract: the clone holds an `Arc` count, so
    // the state is alive while the clone is.
    unsafe { &*data.cast::<WakeState>() }
}

unsafe fn shared_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is a live clone's (the vtable is only reached
    // through one); a new clone gets counts of its own.
    let st = unsafe { clone_state(data) };
    if st.clones.fetch_add(1, Ordering::AcqRel) == 0 {
        st.remote.acquire(); // unreachable in practice: this clone is live
    }
    // SAFETY: as above; the `Arc` count is one more for the new clone.
    unsafe { Arc::increment_strong_count(data.cast::<WakeState>()) };
    RawWaker::new(data, &SHARED_VTABLE)
}

unsafe fn shared_wake(data: *const ()) {
    // SAFETY: `data` is a live clone's; `wake` consumes it, like a drop.
    unsafe {
        clone_state(data).wake();
        shared_drop(data);
    }
}

unsafe fn shared_wake_by_ref(data: *const ()) {
    // SAFETY: `data` is a live clone's, which keeps its counts.
    unsafe { clone_state(data) }.wake();
}

unsafe fn shared_drop(data: *const ()) {
    // SAFETY: `data` is a live clone's; dropping gives its counts back
    // (the `Arc` last, so the state outlives the `clones` update).
    let st = unsafe { Arc::from_raw(data.cast::<WakeState>()) };
    if st.clones.fetch_sub(1, Ordering::AcqRel) == 1 {
        st.remote.release();
    }
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
        remote,
        key,
        woken: AtomicBool::new(false),
        state: OnceLock::new(),
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
        if let Some(st) = local.state.get() {
            st.woken.store(false, Ordering::SeqCst);
        }
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
        if local
            .state
            .get()
            .is_some_and(|st| st.woken.load(Ordering::SeqCst))
        {
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
