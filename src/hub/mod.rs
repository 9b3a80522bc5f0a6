//! The hub: one per OS thread, created lazily, running the scheduler loop
//! on the main greenlet's stack whenever main blocks.
//!
//! One loop iteration ("tick"): run the greenlets that were ready when the
//! tick began → fire due timers → poll the reactor (without blocking if
//! something is ready, else until the next deadline). If nothing is ready,
//! no timer is pending and nobody waits for IO, the blocked caller gets
//! [`Error::Deadlock`](crate::Error::Deadlock) instead of hanging.
//!
//! **Architecture Invariant:** the hub never resumes a coroutine itself; it
//! only answers the trampoline's [`Schedule::next`] with the greenlet to run.

pub(crate) mod dump;
pub(crate) mod join;
pub(crate) mod join_state;
pub(crate) mod monitor;
pub(crate) mod reactor;
pub(crate) mod remote;
pub(crate) use reactor::Interest;
pub(crate) mod scheduler;
pub(crate) mod slot;
pub(crate) use slot::Slot;
pub(crate) mod spawn;
pub(crate) mod timeout;
pub(crate) mod timers;
pub(crate) mod trace;
pub(crate) mod wait;
pub(crate) mod watcher;

use std::cell::{Cell, OnceCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use dump::{
    Dump, Frame, GreenletInfo, GreenletState, StackTrace, WaitingOn, dump, dump_brief,
    dump_on_signal, run_info,
};
pub use join::{JoinAll, Joined, joinall, joinall_timeout, killall, killall_with};
pub use join_state::LinkKey;
pub use monitor::{
    BlockedReport, blocked_threshold, clear_blocked_hook, set_blocked_hook, set_blocked_threshold,
};
pub use remote::{HubHandle, RemoteJoinHandle, RemoteTask};
pub use spawn::{Builder, Finished, JoinHandle, set_copy_stacks, spawn, spawn_later};
pub use timeout::{Timeout, sleep, sleep_until, with_timeout, with_timeout_silent, yield_now};
pub use wait::{Iwait, Waitable, iwait, wait};
pub use watcher::Watcher;

use crate::greenlet::{self, Inner, Outcome, Schedule};
use reactor::Reactor;
use remote::{Remote, RemoteWaits};
use scheduler::ReadyQueue;
use timers::Timers;

/// The per-thread scheduler state.
pub(crate) struct Hub {
    pub(crate) ready: ReadyQueue,
    pub(crate) timers: Timers,
    pub(crate) reactor: Reactor,
    /// Greenlets left to run in the current tick.
    budget: Cell<usize>,
    /// The inbox for other threads, created with the first `HubHandle`.
    remote: OnceCell<Arc<Remote>>,
    /// Greenlets waiting for another thread's `RemoteWaker`.
    pub(crate) remote_waits: RemoteWaits,
    /// What the blocked-hub detector samples (`monitor.rs`).
    pub(crate) probe: Arc<monitor::Probe>,
    /// The time at a recent tick boundary: when the hub read the clock
    /// anyway, and at least every [`CLOCK_EVERY`] ticks. Parks record it
    /// (the dump's "since") without reading the clock themselves; packed
    /// as they store it.
    pub(crate) clock: Cell<slot::PackedInstant>,
    /// Ticks left before the clock is read on the fast path.
    clock_in: Cell<u32>,
    /// Work from other threads ran since the last blocking poll (see
    /// `spin_for_remote`).
    remote_busy: Cell<bool>,
    /// Told at every tick boundary and around every blocking poll (the
    /// patched futex waits on std's thread parker, `monkey/futex.rs`).
    idle_hook: Cell<Option<IdleHook>>,
}

/// What [`Hub::set_idle_hook`] installs.
type IdleHook = fn(Idle) -> bool;

/// Where the hub is, for its [`Hub::set_idle_hook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    /// A tick boundary, before the next greenlets run.
    Tick,
    /// About to block in the poller; the hook returns false to prevent
    /// that (it made a greenlet ready).
    Sleep,
    /// Back from a poll that `Sleep` allowed.
    Woke,
}

/// How long a hub that just ran work from other threads spins for more
/// before it blocks in its poll.
const SPIN: Duration = Duration::from_micros(20);

/// Whether this process may run on more than one CPU (read once).
fn multi_cpu() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// On the tick fast path (no timers, no IO), how many ticks may pass
/// without a clock read: the dump's "since" is late by at most that many
/// ticks' work.
const CLOCK_EVERY: u32 = 64;

thread_local! {
    static HUB: OnceCell<Rc<Hub>> = const { OnceCell::new() };
}

/// This thread's hub, created on first use.
pub(crate) fn get() -> Rc<Hub> {
    with(|h| h.clone())
}

/// Runs `f` with this thread's hub (no reference count traffic).
#[inline]
pub(crate) fn with<R>(f: impl FnOnce(&Rc<Hub>) -> R) -> R {
    HUB.with(|h| {
        f(h.get_or_init(|| {
            let hub = Rc::new(Hub {
                ready: ReadyQueue::default(),
                timers: Timers::default(),
                reactor: Reactor::new(),
                budget: Cell::new(0),
                remote: OnceCell::new(),
                remote_waits: RemoteWaits::default(),
                probe: monitor::register(),
                clock: Cell::new(slot::PackedInstant::of(Some(Instant::now()))),
                clock_in: Cell::new(CLOCK_EVERY),
                remote_busy: Cell::new(false),
                idle_hook: Cell::new(None),
            });
            greenlet::install_scheduler(hub.clone());
            hub
        }))
    })
}

/// Runs `f` with this thread's hub if it exists and is not being torn
/// down (for destructors).
pub(crate) fn try_with<R>(f: impl FnOnce(&Rc<Hub>) -> R) -> Option<R> {
    HUB.try_with(|h| h.get().map(f)).ok().flatten()
}

impl Hub {
    /// The inbox for other threads (creating the poller if needed).
    pub(crate) fn remote(&self) -> io::Result<Arc<Remote>> {
        if let Some(r) = self.remote.get() {
            return Ok(r.clone());
        }
        let r = Arc::new(Remote::new(self.reactor.notifier()?));
        Ok(self.remote.get_or_init(|| r).clone())
    }

    /// Installs `f` to be told where the hub is (see [`Idle`]); one per
    /// hub, for the monkey hooks.
    #[cfg(feature = "monkey")]
    pub(crate) fn set_idle_hook(&self, f: IdleHook) {
        self.idle_hook.set(Some(f));
    }

    /// Tells the idle hook, if any; its answer (true without one).
    #[inline]
    fn idle(&self, at: Idle) -> bool {
        self.idle_hook.get().is_none_or(|f| f(at))
    }

    /// Runs what other threads handed over, if anything.
    #[inline]
    fn drain_remote(&self) {
        if let Some(r) = self.remote.get() {
            if r.has_jobs() {
                remote::drain(r, &self.remote_waits, &self.ready);
                self.remote_busy.set(true);
            }
        }
    }

    /// Before a blocking poll of a hub that just ran work from other
    /// threads: waits up to [`SPIN`] for more (a cross-hub ping-pong's
    /// answer), without system calls, as the sender writes the eventfd
    /// only for a hub that announced it sleeps. Only on a machine with
    /// more than one CPU (spinning on one would keep the sender off it),
    /// and never past `until`. True if a job came.
    fn spin_for_remote(&self, r: &Remote, until: Option<Instant>) -> bool {
        if !self.remote_busy.replace(false) || !multi_cpu() {
            return false;
        }
        let start = Instant::now();
        let end = until.map_or(start + SPIN, |u| u.min(start + SPIN));
        let mut n = 0u32;
        loop {
            if r.has_jobs() {
                return true;
            }
            std::hint::spin_loop();
            n += 1;
            if n % 64 == 0 && Instant::now() >= end {
                return false;
            }
        }
    }

    /// Whether another thread may still hand work over or wake a greenlet.
    fn remote_live(&self) -> bool {
        self.remote
            .get()
            .is_some_and(|r| r.is_live() || r.has_jobs())
    }

    /// Nothing but greenlets in patched futex waits keeps the hub live,
    /// and no other thread exists to wake them: none ever will be.
    fn futex_deadlock(&self) -> bool {
        !self.reactor.has_waiters()
            && self.remote.get().is_some_and(|r| r.futex_only())
            && remote::only_thread()
    }

    /// Blocks the thread until the next timer (or IO, if anyone waits).
    fn wait_for_events(&self, now: Instant, something_ready: bool) -> bool {
        let waiting_io = self.reactor.has_waiters();
        if something_ready && !waiting_io {
            return true; // remote jobs are seen at every tick boundary
        }
        // Another thread may still hand work over: wait for its notify.
        let waiting_io = waiting_io || self.remote_live();
        let timeout = if something_ready {
            Some(Duration::ZERO)
        } else {
            match self.timers.next_deadline() {
                Some(d) => Some(d.saturating_duration_since(now)),
                None if waiting_io && !self.futex_deadlock() => None,
                None => return false, // deadlock
            }
        };
        // Another thread's handoff: spin briefly if they came just now,
        // then announce the sleep (the handoff's side of it is in
        // `Remote::send`).
        let mut timeout = timeout;
        if timeout != Some(Duration::ZERO) && !self.idle(Idle::Sleep) {
            timeout = Some(Duration::ZERO);
        }
        let told_sleep = timeout != Some(Duration::ZERO);
        let remote = self
            .remote
            .get()
            .filter(|_| timeout != Some(Duration::ZERO));
        if let Some(r) = remote {
            let until = timeout.map(|t| now + t);
            if self.spin_for_remote(r, until) || !r.announce_sleep() {
                timeout = Some(Duration::ZERO);
            } else if timeout.is_none() && !self.reactor.has_waiters() && !r.is_live() {
                // Waiting only for other threads, and the last handle
                // went meanwhile (its release saw no sleep to wake):
                // look again instead of blocking for ever.
                timeout = Some(Duration::ZERO);
            }
        }
        self.probe.set_polling(true);
        let polled = self.reactor.poll(timeout, &self.ready);
        self.probe.set_polling(false);
        if let Some(r) = remote {
            r.woke_up();
        }
        if told_sleep {
            self.idle(Idle::Woke);
        }
        if let Err(e) = polled {
            // Cannot poll (e.g. no fd left for the poller): fall back to a
            // plain sleep for timers and let IO waiters retry.
            if waiting_io {
                eprintln!("greenhouse: polling failed: {e}");
                self.reactor.wake_everyone(&self.ready);
            } else if let Some(t) = timeout {
                self.probe.set_polling(true);
                std::thread::sleep(t);
                self.probe.set_polling(false);
            }
        }
        true
    }
}

impl Schedule for Hub {
    fn next(&self) -> Option<Rc<Inner>> {
        self.probe.tick();
        loop {
            if self.budget.get() > 0 {
                if let Some(g) = self.ready.pop() {
                    self.budget.set(self.budget.get() - 1);
                    return Some(g);
                }
            }
            // Tick boundary. With no timers and nobody waiting for IO there
            // is nothing to poll: start the next tick without a system call.
            self.drain_remote();
            self.idle(Idle::Tick);
            if self
                .probe
                .dump_requested
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                dump::print_requested(&self.probe);
            }
            let idle_kernel = self.timers.len() == 0 && !self.reactor.has_waiters();
            if idle_kernel && !self.ready.is_empty() {
                self.budget.set(self.ready.len());
                let n = self.clock_in.get();
                if n == 0 {
                    self.clock_in.set(CLOCK_EVERY);
                    self.clock
                        .set(slot::PackedInstant::of(Some(Instant::now())));
                } else {
                    self.clock_in.set(n - 1);
                }
                continue;
            }
            let now = Instant::now();
            self.clock.set(slot::PackedInstant::of(Some(now)));
            self.timers.fire_due(now, &self.ready);
            if !self.wait_for_events(now, !self.ready.is_empty()) {
                return None;
            }
            self.drain_remote();
            if self.ready.is_empty() {
                // Woken by a timer that is now due, or spuriously: go round.
                self.timers.fire_due(Instant::now(), &self.ready);
            }
            self.budget.set(self.ready.len());
        }
    }

    #[cfg(feature = "tracing")]
    fn resuming(&self, g: &Inner) {
        trace::resuming(g);
    }

    #[cfg(feature = "tracing")]
    fn suspended(&self, g: &Inner) {
        trace::suspended(g);
    }

    fn unhandled(&self, dead: &Inner, outcome: Outcome) {
        if let Outcome::Panicked(p) = &outcome {
            crate::error::report_unhandled(&dead.name(), p.as_ref());
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Thread teardown: abandon whatever is still blocked.
        self.ready.clear();
        self.timers.clear();
        self.reactor.clear();
        if let Some(r) = self.remote.get() {
            r.close();
        }
        monitor::unregister(&self.probe);
    }
}

/// A snapshot of this thread's hub, for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Greenlets in the ready queue.
    pub ready: usize,
    /// Pending timers (sleeps, timeouts, delayed spawns).
    pub timers: usize,
    /// File descriptors registered with the reactor.
    pub io_sources: usize,
    /// Greenlets waiting for IO readiness.
    pub io_waiters: usize,
    /// Read/write interests currently armed in the poller.
    pub io_armed: usize,
    /// How stack guard pages are installed in this process:
    /// `madvise(MADV_GUARD_INSTALL)` or the `mprotect(PROT_NONE)` fallback.
    pub stack_guard: &'static str,
}

/// Reports what this thread's hub is holding.
///
/// # Examples
///
/// ```
/// let s = greenhouse::stats();
/// assert_eq!(s.io_waiters, 0);
/// ```
pub fn stats() -> HubStats {
    let hub = get();
    let (io_sources, io_waiters, io_armed) = hub.reactor.counts();
    HubStats {
        ready: hub.ready.len(),
        timers: hub.timers.len(),
        io_sources,
        io_waiters,
        io_armed,
        stack_guard: crate::stack::guard_mode(),
    }
}
