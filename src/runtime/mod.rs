//! All the cores: a hub per OS thread, started, fed and joined together
//! (the thread-per-core layer of seastar, glommio and monoio, on top of
//! greenhouse's hub-per-thread model).
//!
//! Nothing here changes how a hub works. A [`Runtime`] starts N threads,
//! each of which makes its hub and runs it (its main greenlet parks until
//! the runtime stops it); work reaches a hub as a closure through its
//! [`HubHandle`], and runs there as a greenlet with every `!Send` type of
//! the crate at hand. There is no work stealing and no lock on a hub's
//! hot path: greenlets never move between hubs. What crosses threads is
//! `Send` by construction: closures handed over, their results, the
//! [`crate::sync::mpmc`] channels, and [`Server`], which drives one
//! [`StreamServer`](crate::net::StreamServer) per hub.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! let rt = greenhouse::Runtime::builder().hubs(2).build()?;
//! let total = Arc::new(AtomicUsize::new(0));
//! let t = total.clone();
//! // On every hub at once: 100 greenlets each.
//! let per_hub = rt.run_on_each(move |hub| {
//!     let workers: Vec<_> = (0..100)
//!         .map(|i| greenhouse::spawn(move || i * hub))
//!         .collect();
//!     let sum: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
//!     t.fetch_add(sum, Ordering::Relaxed);
//!     sum
//! })?;
//! assert_eq!(per_hub, vec![0, 4950]);
//! assert_eq!(total.load(Ordering::Relaxed), 4950);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod server;

pub use server::{Server, ServerBuilder};

use std::fmt;
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, panicked};
use crate::hub::HubHandle;
use crate::sync::mpmc;

/// How long [`Runtime`]'s `Drop` lets the greenlets still alive on its
/// hubs unwind after killing them.
const DROP_GRACE: Duration = Duration::from_secs(1);

/// Configures and starts a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    hubs: Option<usize>,
    name: String,
    stack_size: Option<usize>,
    pin: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: a hub per available core, threads named
    /// `greenhouse-hub-<i>`, std's thread stack size, no pinning.
    pub fn new() -> Builder {
        Builder {
            hubs: None,
            name: "greenhouse-hub".to_string(),
            stack_size: None,
            pin: false,
        }
    }

    /// How many hubs (OS threads) to run; 0 means the default, one per
    /// core available to the process (`available_parallelism`, which
    /// honours affinity masks and cgroup quotas).
    pub fn hubs(mut self, n: usize) -> Builder {
        self.hubs = (n > 0).then_some(n);
        self
    }

    /// The threads' names: `<prefix>-<hub index>`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Builder {
        self.name = prefix.into();
        self
    }

    /// The OS stack size of each hub's thread: the stack of its main
    /// greenlet, which runs the scheduler and the closures of
    /// [`Runtime::block_on`]'s callers only through greenlets, so the
    /// default suffices unless main itself recurses deeply. Spawned
    /// greenlets have their own pooled stacks
    /// ([`Builder::stack_size`](crate::Builder::stack_size)).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Pins hub `i` to the `i`-th CPU the process may run on (round
    /// robin when there are more hubs than CPUs), with
    /// `sched_setaffinity`.
    pub fn pin_to_cores(mut self, pin: bool) -> Builder {
        self.pin = pin;
        self
    }

    /// Starts the hubs' threads; returns once every hub is running.
    ///
    /// # Errors
    /// If a thread cannot be started, its hub cannot make its poller, or
    /// pinning fails. The hubs already started are stopped again.
    pub fn build(self) -> io::Result<Runtime> {
        let n = match self.hubs {
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let cpus = if self.pin {
            allowed_cpus()?
        } else {
            Vec::new()
        };
        let mut rt = Runtime { hubs: Vec::new() };
        for i in 0..n {
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            rt.hubs.push(start_hub(i, &self, cpu)?);
        }
        Ok(rt)
    }
}

/// One hub's thread, as the runtime keeps it.
struct HubThread {
    handle: HubHandle,
    /// Sending the grace period (or dropping it) makes the hub stop.
    stop: Option<mpmc::Sender<Duration>>,
    thread: Option<thread::JoinHandle<()>>,
    name: String,
}

/// Starts hub `index`'s thread and waits until its hub runs.
fn start_hub(index: usize, cfg: &Builder, cpu: Option<usize>) -> io::Result<HubThread> {
    let name = format!("{}-{index}", cfg.name);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = mpmc::bounded::<Duration>(1);
    let mut b = thread::Builder::new().name(name.clone());
    if let Some(s) = cfg.stack_size {
        b = b.stack_size(s);
    }
    let thread = b.spawn(move || {
        let started = cpu
            .map_or(Ok(()), pin_to)
            .and_then(|()| HubHandle::current());
        let ok = started.is_ok();
        let _ = ready_tx.send(started);
        if !ok {
            return;
        }
        // The hub runs while main waits here.
        let grace = stop_rx.recv().unwrap_or(DROP_GRACE);
        shut_down_here(grace);
    })?;
    match ready_rx.recv() {
        Ok(Ok(handle)) => Ok(HubThread {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
            name,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other(format!(
                "hub thread {name} died while starting"
            )))
        }
    }
}

/// The end of a hub's thread: kills every greenlet still alive on it, and
/// lets them unwind for up to `grace` (those still alive then are
/// abandoned, as at any thread's exit).
fn shut_down_here(grace: Duration) {
    let until = Instant::now() + grace;
    crate::hub::spawn::kill_all_spawned();
    while crate::hub::spawn::live_spawned() > 0 && Instant::now() < until {
        if crate::hub::timeout::try_sleep(Duration::from_millis(1)).is_err() {
            break;
        }
    }
}

/// A hub per OS thread, each running its own scheduler, reactor and
/// timers: see the [module docs](self).
///
/// Dropping it stops every hub (as [`shutdown`](Self::shutdown) with a
/// 1 s grace period) and joins their threads.
pub struct Runtime {
    hubs: Vec<HubThread>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("hubs", &self.hubs.len())
            .finish()
    }
}

impl Runtime {
    /// A runtime with the default [`Builder`]: a hub per core.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// A [`Builder`] to configure one.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// How many hubs it runs.
    pub fn hubs(&self) -> usize {
        self.hubs.len()
    }

    /// A handle to hub `index` (`None` beyond the last), to hand it
    /// closures or [`call`](HubHandle::call) it.
    pub fn handle(&self, index: usize) -> Option<HubHandle> {
        self.hubs.get(index).map(|h| h.handle.clone())
    }

    /// Runs `f(hub_index)` as a greenlet on every hub at once, and returns
    /// the results in hub order once all have finished. The caller parks
    /// meanwhile (only its greenlet, if it is one).
    ///
    /// # Errors
    /// The first hub's error, in hub order, after every hub has finished:
    /// [`Error::Panicked`] if `f` panicked there (the other hubs go on
    /// regardless), [`Error::Killed`] if its greenlet was killed,
    /// [`Error::HubClosed`] if the hub stopped.
    pub fn run_on_each<F, R>(&self, f: F) -> Result<Vec<R>, Error>
    where
        F: Fn(usize) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        let f = Arc::new(f);
        let jobs: Vec<_> = self
            .hubs
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let f = f.clone();
                h.handle.submit(move || f(i))
            })
            .collect();
        let mut out = Vec::with_capacity(jobs.len());
        let mut first_err = None;
        for job in jobs {
            match job.and_then(|j| j.join()) {
                Ok(v) => out.push(v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Runs `f` as a greenlet on hub 0 and returns its result; the entry
    /// point of a program's main (`Runtime::new()?.block_on(serve)`).
    ///
    /// # Errors
    /// As [`HubHandle::call`].
    pub fn block_on<F, R>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self.hubs.first() {
            Some(h) => h.handle.call(f),
            None => Err(Error::HubClosed),
        }
    }

    /// Stops every hub: each kills the greenlets still alive on it and
    /// lets them unwind for up to `grace` (a server's handlers, a loop
    /// that never ends), then its thread exits; this waits for all of
    /// them. Stop servers first ([`Server::stop`]) for a graceful end.
    ///
    /// # Errors
    /// [`Error::Panicked`] if a hub's thread itself panicked (a greenlet's
    /// panic is its joiner's business, not the thread's).
    pub fn shutdown(mut self, grace: Duration) -> Result<(), Error> {
        self.stop_all(grace)
    }

    fn stop_all(&mut self, grace: Duration) -> Result<(), Error> {
        for h in &mut self.hubs {
            if let Some(stop) = h.stop.take() {
                let _ = stop.send(grace);
            }
        }
        let mut first_err = None;
        for h in &mut self.hubs {
            if let Some(t) = h.thread.take() {
                if let Err(p) = t.join() {
                    first_err.get_or_insert(panicked(h.name.clone(), p));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.stop_all(DROP_GRACE);
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most `size_of::<cpu_set_t>()` bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        set
    };
    let max = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is initialised; CPU_ISSET reads bit `c < max`.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes bit
    // `cpu`, which is below the set's size (it came from `allowed_cpus`);
    // sched_setaffinity(0) reads the set for the calling thread.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
