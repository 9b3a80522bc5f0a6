//! Other threads talking to a hub: [`HubHandle`] hands it closures to run
//! as greenlets, and [`RemoteWaker`] wakes one parked greenlet (the thread
//! pool's completion path).
//!
//! Both push a [`Job`] into the hub's [`Remote`] inbox under a mutex and
//! then `notify` the hub's eventfd, which makes the hub's next (or current)
//! `epoll_wait` return. The hub drains the inbox at every tick boundary and
//! after every poll. The notification is sticky (an eventfd), so a job
//! pushed while the hub is busy running greenlets is never missed.
//!
//! **Liveness:** while any `HubHandle` or `RemoteWaker` exists, the hub
//! waits for it in the poller instead of reporting
//! [`Error::Deadlock`]. Dropping the last one
//! notifies the hub, so it can re-check.
//!
//! **Closing:** when the hub's thread exits, the inbox is closed; later
//! handoffs fail with [`Error::HubClosed`] and queued jobs are dropped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::dump::WaitingOn;
use super::reactor::Notifier;
use super::scheduler::{ReadyQueue, Token, Woke, park_with};
use crate::error::Error;

/// Work handed to a hub from another thread.
enum Job {
    /// Run this closure of the runtime's own in the hub's drain (it only
    /// spawns and links: no user code runs there).
    Run(Box<dyn FnOnce() + Send>),
    /// Wake the greenlet parked in [`RemoteWait`] number `key`.
    Wake(u64),
}

/// A hub's inbox for other threads. Shared by the hub and every handle.
pub(crate) struct Remote {
    inbox: Mutex<Inbox>,
    /// True while `inbox.jobs` may be non-empty (read without the lock at
    /// every tick).
    pending: AtomicBool,
    /// The hub is in (or about to enter) a blocking poll: only then does
    /// a handoff write the eventfd (see [`Remote::announce_sleep`]).
    sleeping: AtomicBool,
    /// Live `HubHandle`s, `RemoteWaker`s, and `wait_future` calls whose
    /// future keeps a waker.
    live: AtomicUsize,
    /// Of `live`, the greenlets parked in a patched futex wait (see
    /// [`futex_only`](Self::futex_only)).
    futex: AtomicUsize,
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct Inbox {
    jobs: Vec<Job>,
    closed: bool,
}

impl Remote {
    pub(crate) fn new(notifier: Arc<Notifier>) -> Remote {
        Remote {
            inbox: Mutex::new(Inbox::default()),
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            futex: AtomicUsize::new(0),
            notifier,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A job's closure never runs under this lock, so poisoning can only
        // come from a panic between two plain pushes: the data is intact.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, job: Job) -> Result<(), Job> {
        let mut inbox = self.lock();
        if inbox.closed {
            return Err(job);
        }
        inbox.jobs.push(job);
        // SeqCst, paired with `announce_sleep`: either this sees the hub
        // asleep and writes the eventfd, or the hub sees the job before it
        // blocks. A hub that is running (or spinning) sees `pending` at
        // its next tick boundary: no system call for the handoff.
        self.pending.store(true, Ordering::SeqCst);
        drop(inbox);
        if self.sleeping.load(Ordering::SeqCst) {
            // A failed notify (the hub closed its poller) leaves the job
            // for the hub's next tick, which then sees `pending`.
            let _ = self.notifier.notify();
        }
        Ok(())
    }

    /// The hub is about to block in its poll. Returns false if a job came
    /// meanwhile (then it must not block): the other half of the pairing
    /// in [`send`](Self::send).
    pub(crate) fn announce_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        !self.pending.load(Ordering::SeqCst)
    }

    /// The hub's poll returned.
    pub(crate) fn woke_up(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// One more live handle (the hub waits for other threads while any
    /// is alive); [`release`](Self::release) gives it back.
    pub(crate) fn acquire(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// One live handle fewer (see [`acquire`](Self::acquire)).
    pub(crate) fn release(&self) {
        // SeqCst, paired with `announce_sleep` and the hub's re-check of
        // `is_live` after it: either this sees the hub asleep and wakes
        // it, or the hub sees the count at zero before it blocks.
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 && self.sleeping.load(Ordering::SeqCst) {
            // The last one: let a hub waiting only for us re-check.
            let _ = self.notifier.notify();
        }
    }

    /// Whether some handle or waker is alive (the hub must wait for it).
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst) > 0
    }

    /// One more greenlet parked in a patched futex wait: live like a
    /// handle (any thread may wake it), but counted apart, see
    /// [`futex_only`](Self::futex_only).
    #[cfg(feature = "monkey")]
    pub(crate) fn acquire_futex(&self) {
        self.futex.fetch_add(1, Ordering::Relaxed);
        self.acquire();
    }

    /// The futex waiter of [`acquire_futex`](Self::acquire_futex) is gone.
    #[cfg(feature = "monkey")]
    pub(crate) fn release_futex(&self) {
        self.futex.fetch_sub(1, Ordering::Relaxed);
        self.release();
    }

    /// Whether everything keeping the hub live is a futex waiter: then, if
    /// no other thread exists that could wake them, nothing ever will.
    pub(crate) fn futex_only(&self) -> bool {
        let f = self.futex.load(Ordering::SeqCst);
        f > 0 && self.live.load(Ordering::SeqCst) == f && !self.has_jobs()
    }

    /// Whether jobs may be waiting.
    #[inline]
    pub(crate) fn has_jobs(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Closes the inbox (the hub is going away) and drops what is queued.
    pub(crate) fn close(&self) {
        let jobs = {
            let mut inbox = self.lock();
            inbox.closed = true;
            std::mem::take(&mut inbox.jobs)
        };
        drop(jobs);
    }
}

/// The hub's side: greenlets parked in [`RemoteWait`], by key.
#[derive(Default)]
pub(crate) struct RemoteWaits {
    next_key: std::cell::Cell<u64>,
    waits: RefCell<HashMap<u64, WaitEntry, BuildHasherDefault<KeyHasher>>>,
}

/// Hashes the sequential wait keys with one multiplication (Fibonacci
/// hashing): they are never chosen by anyone outside, so SipHash's
/// protection buys nothing, and `wait_future` inserts and removes one
/// per wait.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct WaitEntry {
    token: Option<Token>,
    woken: bool,
}

/// Runs the jobs in `remote`'s inbox: spawns closures, wakes waiters.
pub(crate) fn drain(remote: &Remote, waits: &RemoteWaits, ready: &ReadyQueue) {
    if !remote.pending.swap(false, Ordering::AcqRel) {
        return;
    }
    let jobs = std::mem::take(&mut remote.lock().jobs);
    for job in jobs {
        match job {
            Job::Run(f) => f(),
            Job::Wake(key) => wake_key(waits, ready, key),
        }
    }
}

/// Wakes the greenlet parked in [`RemoteWait`] number `key`, if it still
/// waits.
fn wake_key(waits: &RemoteWaits, ready: &ReadyQueue, key: u64) {
    let token = {
        let mut w = waits.waits.borrow_mut();
        match w.get_mut(&key) {
            Some(e) => {
                e.woken = true;
                e.token.take()
            }
            None => None, // the waiter gave up (timeout, kill)
        }
    };
    if let Some(t) = token {
        t.wake(ready, Woke::Ready);
    }
}

/// A `Send` handle to one thread's hub: other threads hand it closures,
/// which run there as new greenlets (gevent's `async` watcher, or
/// `loop.run_callback_threadsafe`).
///
/// The hub is woken through its poller's notify, so a hub blocked in
/// `epoll_wait` (or in a `sleep`, a `join`, a socket) picks the closure up
/// at once. Closures run in the order they were handed over. A hub runs
/// only while its thread is inside greenhouse (blocked in a sleep, a join,
/// a socket call, a queue, or yielding); a thread busy in plain code picks
/// the closures up at its next such call.
///
/// While any `HubHandle` exists, the hub treats it as a source of future
/// work: a greenlet waiting for something only a handle can bring waits
/// instead of getting [`Error::Deadlock`].
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
///
/// let hub = greenhouse::HubHandle::current()?;
/// let (tx, rx) = mpsc::channel();
/// let worker = std::thread::spawn(move || {
///     // On another OS thread: run this on the hub's thread, as a greenlet.
///     hub.spawn(move || {
///         let me = greenhouse::current().name();
///         tx.send(me).unwrap();
///     })
///     .unwrap();
/// });
/// worker.join().unwrap();
/// greenhouse::sleep(std::time::Duration::from_millis(1)); // let the hub run it
/// assert!(rx.recv()?.starts_with("Greenlet-"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HubHandle {
    remote: Arc<Remote>,
}

impl HubHandle {
    /// A handle to the calling thread's hub (created if needed).
    ///
    /// # Errors
    /// The poller cannot be created (out of file descriptors).
    pub fn current() -> io::Result<HubHandle> {
        let remote = super::with(|hub| hub.remote())?;
        remote.acquire();
        Ok(HubHandle { remote })
    }

    /// Hands `f` to the hub, which runs it as a new greenlet at its next
    /// turn. Never blocks.
    ///
    /// The returned [`RemoteTask`] is a `Send` future of `f`'s result, for
    /// async code on any thread (a tokio task handing blocking-style work
    /// to a greenhouse hub); dropping it detaches the greenlet.
    ///
    /// # Errors
    /// [`Error::HubClosed`] if the hub's thread has exited; `f` is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let hub_thread = std::thread::spawn(move || {
    ///     tx.send(greenhouse::HubHandle::current().unwrap()).unwrap();
    ///     greenhouse::sleep(std::time::Duration::from_millis(200)); // its hub runs
    /// });
    /// let hub = rx.recv().unwrap();
    /// let task = hub.spawn(|| {
    ///     greenhouse::sleep(std::time::Duration::from_millis(1)); // blocking style
    ///     6 * 7
    /// })?;
    /// // Any executor can await it; here, a plain one.
    /// assert_eq!(futures::executor::block_on(task), Ok(42));
    /// hub_thread.join().unwrap();
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn spawn<F, R>(&self, f: F) -> Result<RemoteTask<R>, Error>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let shared = Arc::new(TaskShared {
            state: Mutex::new(TaskState {
                result: None,
                waker: None,
            }),
        });
        let done = TaskDone(Some(shared.clone()));
        self.remote
            .send(job_for(f, move |r| done.deliver(r)))
            .map_err(|_| Error::HubClosed)?;
        Ok(RemoteTask { shared })
    }

    /// Hands `f` to the hub to run as a new greenlet, and returns a handle
    /// whose [`join`](RemoteJoinHandle::join) parks the *calling* greenlet
    /// (only it) until `f`'s result is back. Never blocks.
    ///
    /// # Errors
    /// [`Error::HubClosed`] if the hub's thread has exited; [`Error::Spawn`]
    /// if this thread's own hub cannot wait (no fd for its poller).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let other = std::thread::spawn(move || {
    ///     tx.send(greenhouse::HubHandle::current().unwrap()).unwrap();
    ///     greenhouse::sleep(std::time::Duration::from_millis(300)); // its hub runs
    /// });
    /// let hub = rx.recv()?;
    /// let job = hub.submit(|| std::thread::current().id())?;
    /// // Meanwhile this thread's greenlets run; join parks only the caller.
    /// let ran_on = job.join()?;
    /// assert_ne!(ran_on, std::thread::current().id());
    /// other.join().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit<F, R>(&self, f: F) -> Result<RemoteJoinHandle<R>, Error>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (waker, wait) = remote_wait().map_err(Error::spawn)?;
        let slot: Arc<Mutex<Option<Result<R, Error>>>> = Arc::new(Mutex::new(None));
        let out = slot.clone();
        let deliver = move |r: Result<R, Error>| {
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            waker.wake();
        };
        self.remote
            .send(job_for(f, deliver))
            .map_err(|_| Error::HubClosed)?;
        Ok(RemoteJoinHandle { slot, wait })
    }

    /// Runs `f` on the hub as a new greenlet and returns its result, parking
    /// only the calling greenlet meanwhile: `submit(f)?.join()`.
    ///
    /// # Errors
    /// As [`submit`](Self::submit) and [`RemoteJoinHandle::join`].
    pub fn call<F, R>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit(f)?.join()
    }

    /// Whether the hub's thread has exited (later `spawn`s fail).
    pub fn is_closed(&self) -> bool {
        self.remote.lock().closed
    }

    /// Whether both handles reach the same hub.
    pub fn same_hub(&self, other: &HubHandle) -> bool {
        Arc::ptr_eq(&self.remote, &other.remote)
    }
}

/// The job that runs `f` as a greenlet on the target hub and hands its
/// result to `deliver` when it finishes. The job runs in the hub's drain,
/// where no user code may run: it only spawns `f` and links the delivery
/// (the result is taken out of its join state: nobody else joins it).
/// A job dropped unrun (the hub closed) drops `deliver` uncalled.
fn job_for<F, R>(f: F, deliver: impl FnOnce(Result<R, Error>) + Send + 'static) -> Job
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    Job::Run(Box::new(move || match super::Builder::new().spawn(f) {
        Ok(h) => {
            h.link_take(deliver);
        }
        Err(e) => deliver(Err(e)),
    }))
}

/// A `Send` future of the result of a closure handed to a hub with
/// [`HubHandle::spawn`]: await it from async code on any thread (or with
/// [`wait_future`](crate::wait_future) from a greenlet). Dropping it
/// detaches the greenlet, which runs on.
///
/// Its output is the closure's result, or [`Error::Panicked`] /
/// [`Error::Killed`] if its greenlet panicked or was killed there, or
/// [`Error::HubClosed`] if the hub exited before running it.
pub struct RemoteTask<R> {
    shared: Arc<TaskShared<R>>,
}

struct TaskShared<R> {
    state: Mutex<TaskState<R>>,
}

struct TaskState<R> {
    /// `Some` once finished (taken by the poll that returns it).
    result: Option<Result<R, Error>>,
    waker: Option<std::task::Waker>,
}

impl<R> TaskShared<R> {
    fn lock(&self) -> MutexGuard<'_, TaskState<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The hub's side of a [`RemoteTask`]: delivers the result once, or
/// [`Error::HubClosed`] if dropped undelivered.
struct TaskDone<R>(Option<Arc<TaskShared<R>>>);

impl<R> TaskDone<R> {
    fn deliver(mut self, r: Result<R, Error>) {
        if let Some(shared) = self.0.take() {
            finish(&shared, r);
        }
    }
}

impl<R> Drop for TaskDone<R> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            finish(&shared, Err(Error::HubClosed));
        }
    }
}

fn finish<R>(shared: &TaskShared<R>, r: Result<R, Error>) {
    let waker = {
        let mut st = shared.lock();
        st.result = Some(r);
        st.waker.take()
    };
    // Woken after the lock is released.
    if let Some(w) = waker {
        w.wake();
    }
}

impl<R> RemoteTask<R> {
    /// Whether the closure has finished (awaiting returns at once).
    pub fn is_finished(&self) -> bool {
        self.shared.lock().result.is_some()
    }
}

impl<R> std::future::Future for RemoteTask<R> {
    type Output = Result<R, Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut st = self.shared.lock();
        match st.result.take() {
            Some(r) => std::task::Poll::Ready(r),
            None => {
                match &st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.waker = Some(cx.waker().clone()),
                }
                std::task::Poll::Pending
            }
        }
    }
}

impl<R> fmt::Debug for RemoteTask<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteTask")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// The result of a closure handed to another hub with
/// [`HubHandle::submit`]. `!Send`: it is joined on the thread that
/// submitted it.
pub struct RemoteJoinHandle<R> {
    slot: Arc<Mutex<Option<Result<R, Error>>>>,
    wait: RemoteWait,
}

impl<R> RemoteJoinHandle<R> {
    /// Parks the calling greenlet until the closure has finished on its
    /// hub, and returns its result.
    ///
    /// # Errors
    /// - [`Error::Panicked`] if the closure panicked (its greenlet's name,
    ///   message and payload);
    /// - [`Error::Killed`] if its greenlet was killed there;
    /// - [`Error::HubClosed`] if the hub exited before running it;
    /// - [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout)
    ///   expired first (the closure still runs; its result is dropped).
    pub fn join(self) -> Result<R, Error> {
        self.join_until(None)
    }

    /// [`join`](Self::join), giving up after `timeout` with
    /// [`Error::TimedOut`] (the closure still runs; its result is dropped).
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub fn join_timeout(self, timeout: std::time::Duration) -> Result<R, Error> {
        self.join_until(super::watcher::deadline(Some(timeout)))
    }

    fn join_until(self, deadline: Option<Instant>) -> Result<R, Error> {
        let woke = self.wait.wait(deadline);
        if woke != Woke::Ready {
            return Err(woke.error());
        }
        let r = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The waker fired without a result: the job was dropped unrun.
        r.unwrap_or(Err(Error::HubClosed))
    }
}

impl<R> fmt::Debug for RemoteJoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJoinHandle").finish_non_exhaustive()
    }
}

impl Clone for HubHandle {
    fn clone(&self) -> HubHandle {
        self.remote.acquire();
        HubHandle {
            remote: self.remote.clone(),
        }
    }
}

impl Drop for HubHandle {
    fn drop(&mut self) {
        self.remote.release();
    }
}

impl fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubHandle")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Wakes one [`RemoteWait`] from any thread. Dropping it without calling
/// [`wake`](RemoteWaker::wake) wakes the waiter too, so it is never
/// stranded.
pub(crate) struct RemoteWaker {
    remote: Arc<Remote>,
    key: u64,
}

impl RemoteWaker {
    pub(crate) fn wake(self) {
        drop(self);
    }
}

impl Drop for RemoteWaker {
    fn drop(&mut self) {
        wake_from_anywhere(&self.remote, self.key);
        self.remote.release();
    }
}

/// Wakes the greenlet parked in wait number `key` of `remote`'s hub, from
/// any thread. On the waiter's own thread it is a ready-queue push, no
/// inbox and no notify (the hub is running: it is this thread).
pub(crate) fn wake_from_anywhere(remote: &Arc<Remote>, key: u64) {
    let local = super::try_with(|hub| {
        let mine = hub.remote.get().is_some_and(|r| Arc::ptr_eq(r, remote));
        if mine {
            wake_key(&hub.remote_waits, &hub.ready, key);
        }
        mine
    });
    if local != Some(true) {
        // Fails only if the hub is gone, and its waiter with it.
        let _ = remote.send(Job::Wake(key));
    }
}

/// The parked side of a [`RemoteWaker`]; `!Send`. Dropping it forgets the
/// key, so a late wake is ignored.
pub(crate) struct RemoteWait {
    key: u64,
    _not_send: PhantomData<*const ()>,
}

impl RemoteWaits {
    /// A fresh key (never reused on this hub).
    pub(crate) fn new_key(&self) -> u64 {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        key
    }

    /// Makes `key` wakeable (until [`remove`](Self::remove)).
    pub(crate) fn insert(&self, key: u64) {
        self.waits.borrow_mut().entry(key).or_default();
    }

    /// Files the token a wake of `key` ends the current park with.
    pub(crate) fn set_token(&self, key: u64, token: Token) {
        if let Some(e) = self.waits.borrow_mut().get_mut(&key) {
            e.token = Some(token);
        }
    }

    /// Forgets `key`: later wakes of it are ignored.
    pub(crate) fn remove(&self, key: u64) {
        let removed = self.waits.borrow_mut().remove(&key);
        drop(removed);
    }
}

/// A waker for another thread and the wait it ends.
pub(crate) fn remote_wait() -> io::Result<(RemoteWaker, RemoteWait)> {
    super::with(|hub| {
        let remote = hub.remote()?;
        let key = hub.remote_waits.new_key();
        hub.remote_waits.insert(key);
        remote.acquire();
        Ok((
            RemoteWaker { remote, key },
            RemoteWait {
                key,
                _not_send: PhantomData,
            },
        ))
    })
}

/// A key on this hub for a greenlet about to park in a patched futex wait
/// (`monkey/futex.rs`), and the hub's inbox that wakes it from any thread
/// ([`wake_from_anywhere`]). The hub counts the waiter as live
/// ([`Remote::acquire_futex`]) until whoever removes it from the futex
/// registry calls [`Remote::release_futex`].
#[cfg(feature = "monkey")]
pub(crate) fn futex_wait() -> io::Result<(Arc<Remote>, RemoteWait)> {
    super::with(|hub| {
        let remote = hub.remote()?;
        let key = hub.remote_waits.new_key();
        hub.remote_waits.insert(key);
        remote.acquire_futex();
        Ok((
            remote,
            RemoteWait {
                key,
                _not_send: PhantomData,
            },
        ))
    })
}

impl RemoteWait {
    /// The key a [`wake_from_anywhere`] ends this wait with.
    #[cfg(feature = "monkey")]
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// Parks until the waker fires (`Ready`), `deadline` passes, or an
    /// armed `Timeout` expires. Raises `GreenletExit` if killed.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Woke {
        self.wait_as(deadline, true, WaitingOn::OtherThread)
    }

    /// [`wait`](Self::wait), shown in dumps as `on`; with `scoped` false
    /// an armed `Timeout` does not end it (`park_unscoped_with`).
    pub(crate) fn wait_as(&self, deadline: Option<Instant>, scoped: bool, on: WaitingOn) -> Woke {
        loop {
            let woken = super::with(|hub| {
                hub.remote_waits
                    .waits
                    .borrow()
                    .get(&self.key)
                    .is_some_and(|e| e.woken)
            });
            if woken {
                return Woke::Ready;
            }
            let register = |token| {
                super::with(|hub| {
                    if let Some(e) = hub.remote_waits.waits.borrow_mut().get_mut(&self.key) {
                        e.token = Some(token);
                    }
                });
            };
            let woke = if scoped {
                park_with(deadline, on, register)
            } else {
                unscoped(deadline, on, register)
            };
            if woke != Woke::Ready {
                return woke;
            }
        }
    }
}

#[cfg(feature = "monkey")]
use super::scheduler::park_unscoped_with as unscoped;

/// Without the `monkey` feature nothing parks unscoped.
#[cfg(not(feature = "monkey"))]
fn unscoped(deadline: Option<Instant>, on: WaitingOn, register: impl FnOnce(Token)) -> Woke {
    park_with(deadline, on, register)
}

/// Whether the calling thread is the only thread of the process that could
/// wake a futex (Linux: `/proc/self/stat`'s thread count, less the blocked
/// hub monitor's; false where that cannot be read).
pub(crate) fn only_thread() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // Field 20 (num_threads), counting from the state after the command
    // name, which may itself hold spaces and parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return false;
    };
    rest.split_ascii_whitespace()
        .nth(17)
        .and_then(|n| n.parse::<usize>().ok())
        == Some(1 + super::monitor::own_threads())
}

impl Drop for RemoteWait {
    fn drop(&mut self) {
        super::try_with(|hub| {
            let removed = hub.remote_waits.waits.borrow_mut().remove(&self.key);
            drop(removed);
        });
    }
}
