//! A bounded pool of OS threads for calls that truly block (file IO,
//! CPU-heavy work, blocking C libraries), like gevent's `threadpool`.
//!
//! [`spawn_blocking`] runs a closure on a worker thread and parks only the
//! calling greenlet until it is done; the hub keeps running the others.
//! Workers are started on demand up to the pool's bound and exit after 10
//! seconds without work. The result travels back through a shared slot,
//! and the worker wakes the greenlet through the hub's poller (a
//! `RemoteWaker`).
//!
//! A greenlet that gives up waiting (killed, or its `Timeout` expired)
//! cannot stop the OS thread: the closure runs to completion and its
//! result is dropped.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

use crate::error::{Error, panicked};
use crate::hub::remote::remote_wait;
use crate::hub::scheduler::Woke;

/// How many worker threads the default pool may start (gevent's default).
pub const DEFAULT_MAX_THREADS: usize = 10;

/// How long an idle worker waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

type Task = Box<dyn FnOnce() + Send>;

/// A bounded set of OS worker threads. Cheap to clone (a shared handle),
/// `Send` and `Sync`.
///
/// # Examples
///
/// ```
/// use greenhouse::threadpool::ThreadPool;
///
/// let pool = ThreadPool::new(2);
/// let len = pool.spawn_blocking(|| std::fs::read("Cargo.toml").map(|b| b.len()))??;
/// assert!(len > 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    max_threads: usize,
}

struct State {
    tasks: VecDeque<Task>,
    threads: usize,
    idle: usize,
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ThreadPool")
            .field("max_threads", &self.shared.max_threads)
            .field("threads", &st.threads)
            .field("queued", &st.tasks.len())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Tasks run outside the lock, so a poisoned lock holds intact data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ThreadPool {
    /// A pool that runs at most `max_threads` closures at once (at least 1).
    /// No thread starts until there is work.
    pub fn new(max_threads: usize) -> ThreadPool {
        ThreadPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    tasks: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                }),
                work: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
        }
    }

    /// The bound on worker threads.
    pub fn max_threads(&self) -> usize {
        self.shared.max_threads
    }

    /// Worker threads alive now (busy or idle).
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// Runs `f` on a worker thread and parks the calling greenlet until it
    /// returns; other greenlets keep running meanwhile. When every worker
    /// is busy, `f` waits its turn (FIFO).
    ///
    /// # Errors
    /// - [`Error::Panicked`] (named `"blocking task"`) if `f` panicked;
    /// - [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout)
    ///   expired first (`f` still runs to completion; its result is dropped);
    /// - [`Error::Spawn`] if no worker thread can be started at all.
    ///
    /// A kill unwinds the caller at once, as for any other blocking call.
    pub fn spawn_blocking<F, T>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (waker, wait) = remote_wait().map_err(Error::spawn)?;
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        self.submit(Box::new(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f));
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            waker.wake();
        }))?;
        let woke = wait.wait(None);
        if woke != Woke::Ready {
            return Err(woke.error());
        }
        let r = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match r {
            Some(Ok(v)) => Ok(v),
            Some(Err(p)) => Err(panicked("blocking task".into(), p)),
            // The waker fired without a result: the task was dropped unrun.
            None => Err(Error::spawn(io::Error::other(
                "the blocking task was dropped",
            ))),
        }
    }

    /// Queues `task` to run on a worker; never blocks. For callers that
    /// wait for it their own way (the `pthread_join` hook).
    pub(crate) fn submit(&self, task: Task) -> Result<(), Error> {
        let mut st = self.shared.lock();
        st.tasks.push_back(task);
        if st.idle >= st.tasks.len() || st.threads >= self.shared.max_threads {
            drop(st);
            self.shared.work.notify_one();
            return Ok(());
        }
        st.threads += 1;
        let n = st.threads;
        drop(st);
        let shared = self.shared.clone();
        let started = thread::Builder::new()
            .name(format!("greenhouse-blocking-{n}"))
            .spawn(move || worker(&shared));
        if let Err(e) = started {
            let mut st = self.shared.lock();
            st.threads -= 1;
            if st.threads == 0 {
                // Nobody will ever run it: take it back (it is the newest).
                let task = st.tasks.pop_back();
                drop(st);
                drop(task);
                return Err(Error::spawn(io::Error::new(
                    e.kind(),
                    format!("cannot start a worker thread: {e}"),
                )));
            }
        }
        Ok(())
    }
}

fn worker(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if let Some(task) = st.tasks.pop_front() {
            drop(st);
            task();
            st = shared.lock();
            continue;
        }
        st.idle += 1;
        let (guard, timeout) = shared
            .work
            .wait_timeout(st, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        st.idle -= 1;
        if timeout.timed_out() && st.tasks.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

/// The process-wide pool behind [`spawn_blocking`], with
/// [`DEFAULT_MAX_THREADS`] workers at most.
pub fn default_pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(DEFAULT_MAX_THREADS))
}

/// Runs `f` on the [default pool](default_pool) and parks only the calling
/// greenlet until it returns. See [`ThreadPool::spawn_blocking`].
///
/// # Errors
/// As for [`ThreadPool::spawn_blocking`].
///
/// # Examples
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
///
/// // A greenlet keeps ticking while a blocking call runs on a worker.
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let ticker = greenhouse::spawn(move || loop {
///     greenhouse::sleep(Duration::from_millis(5));
///     t.set(t.get() + 1);
/// });
/// let v = greenhouse::threadpool::spawn_blocking(|| {
///     std::thread::sleep(Duration::from_millis(100)); // blocks only a worker
///     42
/// })?;
/// assert_eq!(v, 42);
/// assert!(ticks.get() > 0);
/// ticker.kill()?;
/// # Ok::<(), greenhouse::Error>(())
/// ```
pub fn spawn_blocking<F, T>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    default_pool().spawn_blocking(f)
}
