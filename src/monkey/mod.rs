//! Monkey patching (gevent's `monkey.patch_all()`): after
//! [`patch_all`], blocking libc calls made by unmodified code — std's
//! `TcpStream`, `UdpSocket`, `UnixStream`, `thread::sleep`, `ToSocketAddrs`,
//! third-party crates built on them, C code linked into the binary — park
//! only the calling greenlet instead of the whole thread.
//!
//! Needs the `monkey` cargo feature.
//!
//! # How
//!
//! The binary itself defines the libc functions that blocking code reaches
//! (`recv`, `send`, `read`, `write`, `accept4`, `connect`, `poll`, `select`,
//! `epoll_wait`,
//! `clock_nanosleep`, `getaddrinfo`, … — see `ARCHITECTURE.md` for the full
//! list). A definition in the executable wins over libc's for every call the
//! executable makes, so std's calls land in these hooks. Each hook asks one
//! cheap question: *is this a greenlet on a thread with a hub, after
//! `patch_all`?* If not, it calls libc's own function (found with
//! `dlsym(RTLD_NEXT, …)`) with the same arguments, and nothing else
//! happens. If so:
//!
//! - a socket call is tried non-blocking (`MSG_DONTWAIT`); if it would
//!   block, the greenlet parks on the hub's reactor until the fd is ready,
//!   then tries again. `SO_RCVTIMEO`/`SO_SNDTIMEO` are honoured (the call
//!   then fails with `EAGAIN`, as it would unpatched), a blocking `send`
//!   still sends everything, and `MSG_WAITALL` still waits for all of it;
//! - `poll`, `ppoll`, `select`, `pselect` and `epoll_wait` (and its
//!   `pwait` siblings) with a timeout park until one of their fds is ready
//!   (a C library's own epoll loop parks its greenlet, not the hub);
//! - the sleeps park on a timer;
//! - `waitpid`/`wait4`/`waitid` (std's `Child::wait`, `Command::status`
//!   and `output`) park until the child changes state (on a `pidfd`);
//! - `getaddrinfo` for a host name runs on the
//!   [thread pool](crate::threadpool) while the greenlet parks;
//! - futex waits (`syscall(SYS_futex)`: std's `Mutex`, `RwLock`,
//!   `Condvar`, `Once`/`OnceLock`/`LazyLock`, `Barrier`, `mpsc` channels
//!   and `thread::park`, and parking_lot) park the greenlet against the
//!   futex word, and a `FUTEX_WAKE` from any thread wakes it through its
//!   hub (details below);
//! - C code's locks — `pthread_mutex_lock`, `pthread_cond_wait`,
//!   `sem_wait` and their timed variants — park the greenlet; the hooked
//!   `pthread_mutex_unlock`, `pthread_cond_signal`/`broadcast` and
//!   `sem_post` wake it, from any thread;
//! - `pthread_join` (`JoinHandle::join` of an OS thread) parks while a
//!   helper thread joins.
//!
//! A would-block costs what greenhouse's own sockets cost: the fd's
//! registration with the hub's poller, its blocking mode and socket
//! timeouts are remembered across calls. To keep that true, `close`,
//! `dup2`, `dup3`, `close_range`, `fclose`, `fcntl`, `ioctl` and
//! `setsockopt` are hooked too, for bookkeeping only. Code that closes fds
//! with raw system calls (not through libc) and reuses their numbers with
//! patched code tells the hooks with [`forget_fd`].
//!
//! Untouched, exactly as unpatched: calls outside greenlets (plain threads,
//! before `patch_all`, inside the hub's own loop), regular files, pipes and
//! other non-socket fds, and sockets the code made non-blocking itself.
//!
//! # Timeout and kill
//!
//! A [`Timeout`](crate::Timeout) that expires during a patched call makes
//! it fail with `ETIMEDOUT` (`io::ErrorKind::TimedOut`); a sleep returns
//! early instead, since it has no way to report an error.
//!
//! A kill cannot unwind through libc's caller: C frames, and Rust's calls
//! to `extern "C"` functions, must not be unwound. So the patched call the
//! greenlet is blocked in fails with `ECANCELED` (a sleep returns early),
//! and [`GreenletExit`] is raised at the greenlet's
//! next greenhouse blocking call; if the greenlet returns first, its join
//! still reports [`Error::Killed`](crate::Error::Killed). Code that
//! propagates IO errors (`?`) therefore ends at once. Code that ignores
//! the error and keeps calling patched socket functions keeps running,
//! like a gevent greenlet that catches `GreenletExit`, until its next
//! sleep: a killed greenlet's `nanosleep`, `clock_nanosleep` and `usleep`
//! fail with `ECANCELED` without sleeping, std's `thread::sleep` panics on
//! that error (it expects only `EINTR`), and that ordinary Rust unwind
//! ends the greenlet as killed, its destructors run. So a `loop` of
//! `std::thread::sleep` dies at once when killed.
//!
//! # Waits on locks, channels and threads
//!
//! A futex caller retries whenever a wait ends early, and `pthread_join`
//! cannot fail half-way, so these waits follow their own rules:
//!
//! - a wait **without** a timeout of its own — `Mutex::lock`,
//!   `RwLock::read`/`write`, `Condvar::wait`, `recv`, `send` on a full
//!   `sync_channel`, `Barrier::wait`, a `OnceLock` being initialized
//!   elsewhere, `thread::park`, `JoinHandle::join` — is not ended by an
//!   armed [`Timeout`](crate::Timeout) (std would only wait again at once);
//!   the scope fires at the greenlet's next greenhouse call;
//! - a wait **with** a timeout — `Condvar::wait_timeout`,
//!   `thread::park_timeout`, `recv_timeout` — ends as timed out when an
//!   armed `Timeout` expires; a std call that loops until its own deadline
//!   (`recv_timeout`, `wait_timeout_while`) then waits on for the rest of
//!   its own time, since the scope has already fired;
//! - a kill ends a futex wait as a spurious wake-up: std re-checks and,
//!   for a lock, waits again until it has it, so the std call returns
//!   normally (with the guard it asked for) and [`GreenletExit`] is raised
//!   at the greenlet's next greenhouse call, whose unwind drops the guard
//!   (std marks the `Mutex` poisoned, as for any unwind through a guard).
//!   A killed greenlet never ends holding a lock. A kill during
//!   `JoinHandle::join` waits for the join to finish.
//!
//! The waker side works from anywhere: an OS thread unlocking a `Mutex`
//! a greenlet waits for wakes it through its hub's inbox; a greenlet of
//! the same hub releasing it makes the waiter ready at once. A greenlet
//! holding a std lock across a greenhouse call (a patched socket write, a
//! `sleep`) no longer blocks the thread for the others: they park, it
//! runs on and releases it. Waiters keep their hub waiting as a
//! [`HubHandle`](crate::HubHandle) does (another thread may wake them);
//! if nothing else can run and no other thread exists in the process,
//! the hub reports [`Deadlock`](crate::Error::Deadlock).
//!
//! Limits: std's thread parker is one per OS thread, shared by all its
//! greenlets, so `thread::park` waiters of one thread wake together and
//! each such wait is also polled (1 ms doubling to 256 ms) for an
//! `unpark` that a running greenlet's own `park` consumed; std's channels
//! never wake a waiter of the sending thread, so a `std::sync::mpsc`
//! channel between two greenlets of one thread hangs its receiver (use
//! [`sync::Queue`](crate::sync::Queue)); a *recursive* pthread mutex is
//! owned by the thread, so one held by a greenlet across a patched call
//! lets another greenlet of the same thread in; `pthread_rwlock_*`,
//! `pthread_barrier_wait`, spin locks and shared (non-private) futexes,
//! which another process may wake, block the thread.
//!
//! Thread-local state is the thread's, not the greenlet's. A blocking
//! call that keeps some while it waits holds it for every greenlet of the
//! thread: tokio marks a thread as inside a runtime for the length of a
//! `Runtime::block_on`, so the sync `postgres` client (which runs each
//! call in `block_on` on the calling thread) works in one greenlet per
//! thread at a time, and a second greenlet entering meanwhile gets
//! tokio's "Cannot start a runtime from within a runtime" panic. Crates
//! whose runtime runs on threads of their own (reqwest's blocking client)
//! have no such limit; for async clients, await them from greenlets
//! through [`bridge::tokio`](crate::bridge) instead (feature `tokio`).
//!
//! For C code's locks the same rules hold: `pthread_mutex_lock` waits
//! until it has the mutex; the timed variants end at their deadline or an
//! armed `Timeout` with `ETIMEDOUT`; a kill makes `sem_wait` fail with
//! `EINTR` (as a signal would) and `pthread_cond_wait` return as a
//! spurious wake-up with the mutex locked again.
//!
//! # Examples
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//!
//! greenhouse::monkey::patch_all();
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! // A plain std server in a greenlet.
//! let server = greenhouse::spawn(move || -> std::io::Result<()> {
//!     let (mut conn, _) = listener.accept()?;
//!     conn.write_all(b"hello")
//! });
//! let mut client = TcpStream::connect(addr)?;
//! client.set_read_timeout(Some(Duration::from_secs(5)))?;
//! // This blocking read parks main while the server greenlet runs.
//! // Unpatched it would block the thread, the server would never run,
//! // and the read would time out.
//! let mut buf = [0u8; 5];
//! client.read_exact(&mut buf)?;
//! assert_eq!(&buf, b"hello");
//! server.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod accept;
mod dns;
mod epoll;
/// Keeps the item or statement it wraps only on the targets where the
/// variadic hooks (`fcntl`, `ioctl`, `syscall`) are sound: see `fds.rs`.
macro_rules! variadic_targets {
    ($($t:tt)*) => {
        #[cfg(all(
            target_os = "linux",
            any(
                target_arch = "x86_64",
                target_arch = "aarch64",
                target_arch = "riscv64"
            )
        ))]
        $($t)*
    };
}

mod fds;
variadic_targets! { mod futex; }
mod poll;
mod pthread;
mod real;
mod select;
mod sleep;
mod socket;
mod wait;

use std::cell::Cell;
use std::hint::black_box;
use std::io;
use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use libc::c_int;

use crate::greenlet::{self, GreenletExit, ThrownError};
use crate::hub::timeout::{ScopeExpired, unwind_stopped};
use crate::hub::{self, Interest, scheduler::Woke};

static PATCHED: AtomicBool = AtomicBool::new(false);

/// Makes blocking libc calls cooperative inside greenlets, process-wide.
///
/// After this, on every thread that has a hub, a std or third-party call
/// that would block parks only the calling greenlet (main included) and
/// lets the hub run others. Threads without a hub, and calls outside
/// greenlets, keep plain blocking behaviour. Calling it again does nothing.
///
/// It also makes sure the hooks are linked into the binary: a library
/// whose symbols nobody references would be dropped by the linker.
///
/// # Examples
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
///
/// greenhouse::monkey::patch_all();
/// let (asleep, most) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
/// let sleepers: Vec<_> = (0..100)
///     .map(|_| {
///         let (asleep, most) = (asleep.clone(), most.clone());
///         greenhouse::spawn(move || {
///             asleep.set(asleep.get() + 1);
///             most.set(most.get().max(asleep.get()));
///             std::thread::sleep(Duration::from_millis(50)); // plain std
///             asleep.set(asleep.get() - 1);
///         })
///     })
///     .collect();
/// greenhouse::joinall(sleepers);
/// // All 100 were asleep at once, on one thread.
/// assert_eq!(most.get(), 100);
/// ```
pub fn patch_all() {
    socket::keep();
    accept::keep();
    select::keep();
    epoll::keep();
    wait::keep();
    poll::keep();
    sleep::keep();
    dns::keep();
    fds::keep();
    pthread::keep();
    variadic_targets! { futex::keep(); }
    real::resolve_all();
    PATCHED.store(true, Ordering::SeqCst);
}

/// Turns patching off again: from now on every hooked call behaves as
/// unpatched (calls already parked finish cooperatively). Useful to compare
/// both behaviours in one process.
pub fn unpatch_all() {
    PATCHED.store(false, Ordering::SeqCst);
}

/// Whether [`patch_all`] is in effect.
pub fn is_patched() -> bool {
    PATCHED.load(Ordering::Relaxed)
}

/// Tells the hooks that `fd` was closed or replaced by a path they cannot
/// see, so that nothing they remember about it (its registration with a
/// hub's poller, whether it is non-blocking, its socket timeouts) is used
/// for whatever the number names next.
///
/// The hooks see every close, `dup2`, `dup3`, `close_range` and `fclose`
/// made through libc, and every `fcntl(F_SETFL)`, `ioctl(FIONBIO)` and
/// timeout `setsockopt`. Code that closes fds with raw system calls
/// (rustix's `linux_raw` backend, an inline `syscall`) and then lets
/// patched code wait on a new fd with the same number calls this right
/// after closing. Without it such a wait could park until its timeout:
/// the hub would still hold the old file's registration.
///
/// # Examples
///
/// ```
/// use std::os::fd::IntoRawFd;
///
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// let fd = a.into_raw_fd();
/// // Closed behind libc's back:
/// unsafe { libc::syscall(libc::SYS_close, fd) };
/// greenhouse::monkey::forget_fd(fd);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn forget_fd(fd: RawFd) {
    fds::forget(fd);
}

thread_local! {
    /// Patched calls on this thread that parked (see [`parked_calls`]).
    static PARKED: Cell<u64> = const { Cell::new(0) };
}

/// How many patched libc calls have parked a greenlet on this thread so
/// far: a way to check that code really yields (and, on a plain thread,
/// that nothing was touched: it stays 0).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// greenhouse::monkey::patch_all();
/// let before = greenhouse::monkey::parked_calls();
/// greenhouse::spawn(|| std::thread::sleep(Duration::from_millis(1))).join().unwrap();
/// assert_eq!(greenhouse::monkey::parked_calls(), before + 1);
/// ```
pub fn parked_calls() -> u64 {
    PARKED.with(Cell::get)
}

fn count_park() {
    PARKED.with(|p| p.set(p.get() + 1));
}

/// The hooks' one question: patched, and running in a greenlet on a thread
/// with a hub (not inside the hub's own loop)? Two thread-local reads with
/// no initialisation, so it is safe before `main` and during thread exit.
#[inline]
fn cooperative() -> bool {
    PATCHED.load(Ordering::Relaxed) && greenlet::may_park()
}

/// How a cooperative wait inside a hook ended: a park's own outcome, or
/// one of the two endings only a hook has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waited {
    /// The park ended this way.
    Woke(Woke),
    /// The greenlet was killed; the exit is deferred (see the module docs).
    Killed,
    /// The wait is impossible here (the poller refused the fd): the hook
    /// falls back to blocking the thread, as unpatched.
    Unsupported,
}

/// Runs a parking operation inside a hook. A kill's unwind stops here (it
/// must not cross into libc's caller): it is recorded as the greenlet's
/// deferred exit, and the hook reports `ECANCELED`. A deferred exit from an
/// earlier call does not stop this park: it waits for the greenlet's next
/// greenhouse call (see the module docs).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Waited> {
    let pending = greenlet::with_current(|c| c.ext.deferred_exit.replace(false));
    let r = match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(p) if p.is::<GreenletExit>() => Err(Waited::Killed),
        Err(p) if p.is::<ThrownError>() => {
            // Killed with an error: deferred like any kill, error kept.
            if let Ok(t) = p.downcast::<ThrownError>() {
                greenlet::with_current(|c| *c.ext.cold().deferred_error.borrow_mut() = Some(t.0));
            }
            Err(Waited::Killed)
        }
        Err(p) if p.is::<ScopeExpired>() => {
            // A silent Timeout expired: the call times out, and the unwind
            // to its scope starts again at the greenlet's next park.
            if let Some(e) = p.downcast_ref::<ScopeExpired>() {
                greenlet::with_current(|c| unwind_stopped(c, e));
            }
            if pending {
                greenlet::with_current(|c| c.ext.deferred_exit.set(true));
            }
            return Err(Waited::Woke(Woke::TimedOut));
        }
        Err(_) => {
            // Parking raises nothing else; unwinding further is not allowed.
            // Raw write: std's stderr would call the hooked `write`.
            crate::stack::write_stderr(
                b"greenhouse: unexpected panic inside a patched libc call; aborting\n",
            );
            std::process::abort()
        }
    };
    if pending || r.is_err() {
        greenlet::with_current(|c| c.ext.deferred_exit.set(true));
    }
    r
}

/// Parks until `fd` is ready for `interest` or `deadline` passes.
fn wait_fd(fd: RawFd, interest: Interest, deadline: Option<Instant>) -> Waited {
    count_park();
    guarded(|| {
        match hub::try_with(|h| {
            h.reactor
                .wait_borrowed(fd, fds::generation(fd), interest, deadline)
        }) {
            Some(Ok(w)) => Waited::Woke(w),
            Some(Err(_)) | None => Waited::Unsupported,
        }
    })
    .unwrap_or_else(|w| w)
}

/// Parks until `deadline` (`None`: until killed or timed out).
fn sleep_until(deadline: Option<Instant>) -> Waited {
    if hub::try_with(|_| ()).is_none() {
        return Waited::Unsupported; // thread exit: the hub is gone
    }
    count_park();
    guarded(|| {
        loop {
            match hub::scheduler::park(deadline, hub::dump::WaitingOn::Sleep) {
                Woke::Ready
                    if deadline.is_some_and(|d| Instant::now() < d) || deadline.is_none() => {}
                Woke::Ready | Woke::Deadline => return Waited::Woke(Woke::Ready),
                w => return Waited::Woke(w),
            }
        }
    })
    .unwrap_or_else(|w| w)
}

/// The errno a failed cooperative wait reports; `None` for a ready one.
fn wait_errno(w: Waited) -> Option<c_int> {
    match w {
        Waited::Woke(Woke::Ready) | Waited::Unsupported => None,
        Waited::Woke(Woke::Deadline) => Some(libc::EAGAIN),
        Waited::Woke(Woke::TimedOut) => Some(libc::ETIMEDOUT),
        Waited::Killed => Some(libc::ECANCELED),
        Waited::Woke(Woke::Deadlock) => Some(libc::EDEADLK),
    }
}

fn errno() -> c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid
    // for the thread's lifetime.
    unsafe { *libc::__errno_location() = e };
}

/// Keeps a hook in the binary (see [`patch_all`]).
fn keep_symbol(f: *const ()) {
    black_box(f);
}
