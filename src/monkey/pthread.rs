//! pthread waits that do not go through `syscall`: `pthread_join` (std's
//! `JoinHandle::join` of an OS thread, and C code's joins), and C code's
//! locks: glibc's mutexes, condition variables and semaphores enter the
//! kernel directly, so their futex waits never reach `futex.rs`.
//!
//! # Locks, conditions, semaphores
//!
//! A greenlet's `pthread_mutex_lock` tries `pthread_mutex_trylock`, and
//! while the mutex is busy parks registered on the mutex's address
//! (`futex::wait_for`); the hooked `pthread_mutex_unlock` unlocks with
//! libc and then wakes one greenlet registered there. `sem_wait` and
//! `sem_post` work the same way with `sem_trywait`. `pthread_cond_wait`
//! registers on the condition variable, unlocks the mutex (waking its
//! greenlet waiters), parks until `pthread_cond_signal` (one) or
//! `pthread_cond_broadcast` (all) — each of which also signals libc's own
//! waiters — or its timeout, then locks the mutex again the same way.
//! OS threads wait in libc as always; a signal or unlock may then wake
//! one greenlet and one thread, which is a spurious wake-up for one of
//! them (both recheck). `pthread_cond_timedwait` measures its deadline on
//! the clock the condition variable was made with (`pthread_cond_init` is
//! hooked to note `pthread_condattr_setclock`'s choice; the default is
//! `CLOCK_REALTIME`).
//!
//! Timeout and kill: a lock has no way to fail, so `pthread_mutex_lock`
//! waits until it has the mutex (a kill or `Timeout` takes effect at the
//! greenlet's next greenhouse call); the timed variants fail with
//! `ETIMEDOUT` at their deadline or an armed `Timeout`. A kill makes
//! `sem_wait` and `sem_timedwait` fail with `EINTR` (as a signal would)
//! and `pthread_cond_wait` return as a spurious wake-up, with the mutex
//! locked again.
//!
//! The owner of a pthread mutex is the thread, not the greenlet: a
//! *recursive* mutex held by one greenlet lets another greenlet of the
//! same thread in, as it would let the same thread in unpatched.
//!
//! # Joins
//!
//! Inside a greenlet the join runs on a helper thread (libc's own
//! `pthread_join`: any thread may join a joinable thread) while the
//! greenlet parks; the helper wakes it through its hub. The call cannot
//! fail half-way (std asserts that a join succeeds, and the helper writes
//! the thread's return value through the caller's pointer), so neither an
//! armed `Timeout` nor a kill ends it: both take effect at the greenlet's
//! next greenhouse call after the join, as for a futex wait without a
//! timeout (see `futex.rs`).

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use std::time::Instant;

use libc::{
    c_int, c_void, clockid_t, pthread_cond_t, pthread_condattr_t, pthread_mutex_t, pthread_t,
    sem_t, timespec,
};

use super::futex::{Gave, SpinVec, park_once, wait_for, wake_address};
use super::{cooperative, errno, real, set_errno};
use crate::hub::dump::WaitingOn;
use crate::hub::remote::remote_wait;
use crate::threadpool::ThreadPool;

pub(super) fn keep() {
    for f in [
        pthread_join as *const (),
        pthread_mutex_lock as *const (),
        pthread_mutex_timedlock as *const (),
        pthread_mutex_clocklock as *const (),
        pthread_mutex_unlock as *const (),
        pthread_cond_init as *const (),
        pthread_cond_destroy as *const (),
        pthread_cond_wait as *const (),
        pthread_cond_timedwait as *const (),
        pthread_cond_clockwait as *const (),
        pthread_cond_signal as *const (),
        pthread_cond_broadcast as *const (),
        sem_wait as *const (),
        sem_timedwait as *const (),
        sem_clockwait as *const (),
        sem_post as *const (),
    ] {
        super::keep_symbol(f);
    }
}

/// Whether this call may park: patched, in a greenlet, and not inside the
/// futex hook's own work.
fn parks() -> bool {
    cooperative() && !super::futex::in_hook()
}

/// When an absolute `t` on `clock` is: `Some(None)` for never (the
/// instant is out of range), `None` if `t` is invalid (libc reports it).
///
/// # Safety
/// `t` is null or points at a readable `timespec`.
unsafe fn deadline(clock: clockid_t, t: *const timespec) -> Option<Option<Instant>> {
    // SAFETY: null or readable (caller).
    let d = unsafe { super::sleep::duration(t) }?;
    let left = super::sleep::until_absolute(clock, d)?;
    Some(Instant::now().checked_add(left))
}

// ---- mutexes ----

/// One `pthread_mutex_trylock`: `None` while another holds it.
///
/// # Safety
/// `m` is a valid mutex (libc's contract).
unsafe fn try_lock(m: *mut pthread_mutex_t) -> Option<c_int> {
    // SAFETY: the caller's mutex.
    let r = unsafe { real::pthread_mutex_trylock(m) };
    (r != libc::EBUSY).then_some(r)
}

/// Locks `m` cooperatively, until `until`; `None` if it must be done in
/// libc (nothing else can run), `Some(ETIMEDOUT)` if `until` passed.
///
/// # Safety
/// `m` is a valid mutex (libc's contract).
unsafe fn lock_until(m: *mut pthread_mutex_t, until: Option<Instant>) -> Option<c_int> {
    let on = WaitingOn::Primitive("pthread mutex");
    // SAFETY: the caller's mutex.
    match wait_for(m as usize, until, false, on, || unsafe { try_lock(m) }) {
        Gave::Done(r) => Some(r),
        Gave::TimedOut => Some(libc::ETIMEDOUT),
        Gave::Killed | Gave::Impossible => None,
    }
}

/// Hooked `pthread_mutex_lock(3)`.
///
/// # Safety
/// libc's contract for `pthread_mutex_lock`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int {
    if parks() {
        // SAFETY: the caller's mutex.
        if let Some(r) = unsafe { lock_until(m, None) } {
            return r;
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::pthread_mutex_lock(m) }
}

/// Hooked `pthread_mutex_timedlock(3)` (`CLOCK_REALTIME`).
///
/// # Safety
/// libc's contract for `pthread_mutex_timedlock`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_mutex_timedlock(m: *mut pthread_mutex_t, t: *const timespec) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { pthread_mutex_clocklock(m, libc::CLOCK_REALTIME, t) }
}

/// Hooked `pthread_mutex_clocklock(3)`.
///
/// # Safety
/// libc's contract for `pthread_mutex_clocklock`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_mutex_clocklock(
    m: *mut pthread_mutex_t,
    clock: clockid_t,
    t: *const timespec,
) -> c_int {
    if parks() {
        // SAFETY: the caller's timeout and mutex.
        if let Some(until) = unsafe { deadline(clock, t) } {
            // SAFETY: the caller's arguments (libc's contract).
            if let Some(r) = unsafe { lock_until(m, until) } {
                return r;
            }
        }
    }
    if clock == libc::CLOCK_REALTIME {
        // SAFETY: the caller's arguments (older glibc lacks clocklock).
        return unsafe { real::pthread_mutex_timedlock(m, t) };
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::pthread_mutex_clocklock(m, clock, t) }
}

/// Hooked `pthread_mutex_unlock(3)`: libc's, then one greenlet waiting for
/// the mutex is woken.
///
/// # Safety
/// libc's contract for `pthread_mutex_unlock`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: the caller's arguments, unchanged.
    let r = unsafe { real::pthread_mutex_unlock(m) };
    if r == 0 {
        wake_address(m as usize, 1);
    }
    r
}

// ---- condition variables ----

/// Condition variables made with a clock other than `CLOCK_REALTIME`.
static CLOCKS: SpinVec<(usize, clockid_t)> = SpinVec::new();

/// The clock `c`'s timed waits use.
fn clock_of(c: *mut pthread_cond_t) -> clockid_t {
    let at = c as usize;
    CLOCKS.with(|v| {
        v.iter()
            .find(|e| e.0 == at)
            .map_or(libc::CLOCK_REALTIME, |e| e.1)
    })
}

/// Hooked `pthread_cond_init(3)`: notes the clock of `attr`.
///
/// # Safety
/// libc's contract for `pthread_cond_init`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_cond_init(
    c: *mut pthread_cond_t,
    attr: *const pthread_condattr_t,
) -> c_int {
    // SAFETY: the caller's arguments, unchanged.
    let r = unsafe { real::pthread_cond_init(c, attr) };
    let mut clock = libc::CLOCK_REALTIME;
    if r == 0 && !attr.is_null() {
        // SAFETY: an initialized attribute object (libc's contract).
        unsafe { libc::pthread_condattr_getclock(attr, &raw mut clock) };
    }
    let at = c as usize;
    CLOCKS.with(|v| {
        v.retain(|e| e.0 != at);
        if clock != libc::CLOCK_REALTIME {
            v.push((at, clock));
        }
    });
    r
}

/// Hooked `pthread_cond_destroy(3)`.
///
/// # Safety
/// libc's contract for `pthread_cond_destroy`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_cond_destroy(c: *mut pthread_cond_t) -> c_int {
    let at = c as usize;
    CLOCKS.with(|v| v.retain(|e| e.0 != at));
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::pthread_cond_destroy(c) }
}

/// A greenlet's wait on `c` until signalled or `until` (see the module
/// docs); `None` to let libc wait (nothing else can run).
///
/// # Safety
/// libc's contract for `pthread_cond_wait`: `m` is locked by the caller.
unsafe fn cond_wait_until(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    until: Option<Instant>,
) -> Option<c_int> {
    let on = WaitingOn::Primitive("pthread condition");
    // Registered on `c` before the mutex is released: a signal after the
    // unlock finds the entry.
    let unlock = || {
        // SAFETY: the caller holds `m`.
        match unsafe { pthread_mutex_unlock(m) } {
            0 => Ok(()),
            e => Err(e),
        }
    };
    let r = match park_once(c as usize, until, on, unlock) {
        Err(e) => return Some(e), // not the owner: nothing waited
        Ok(Gave::Done(())) => 0,
        Ok(Gave::TimedOut) => libc::ETIMEDOUT,
        Ok(Gave::Killed | Gave::Impossible) => {
            // Nothing else can run: lock again and wait in libc.
            // SAFETY: the caller's mutex, which it held before.
            let relocked = unsafe { lock_until(m, None) }
                .unwrap_or_else(|| unsafe { real::pthread_mutex_lock(m) });
            return if relocked == 0 { None } else { Some(relocked) };
        }
    };
    // Lock again, cooperatively; a lock cannot fail half-way.
    // SAFETY: the caller's mutex.
    let relocked =
        unsafe { lock_until(m, None) }.unwrap_or_else(|| unsafe { real::pthread_mutex_lock(m) });
    Some(if relocked == 0 { r } else { relocked })
}

/// Hooked `pthread_cond_wait(3)`.
///
/// # Safety
/// libc's contract for `pthread_cond_wait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_cond_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) -> c_int {
    if parks() {
        // SAFETY: the caller's condition variable and locked mutex.
        if let Some(r) = unsafe { cond_wait_until(c, m, None) } {
            return r;
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::pthread_cond_wait(c, m) }
}

/// Hooked `pthread_cond_timedwait(3)`, on the clock `c` was made with.
///
/// # Safety
/// libc's contract for `pthread_cond_timedwait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_cond_timedwait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    t: *const timespec,
) -> c_int {
    if parks() {
        // SAFETY: the caller's timeout, condition variable and mutex.
        if let Some(until) = unsafe { deadline(clock_of(c), t) } {
            // SAFETY: the caller's arguments (libc's contract).
            if let Some(r) = unsafe { cond_wait_until(c, m, until) } {
                return r;
            }
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::pthread_cond_timedwait(c, m, t) }
}

/// Hooked `pthread_cond_clockwait(3)`.
///
/// # Safety
/// libc's contract for `pthread_cond_clockwait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_cond_clockwait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    clock: clockid_t,
    t: *const timespec,
) -> c_int {
    if parks() {
        // SAFETY: the caller's timeout, condition variable and mutex.
        if let Some(until) = unsafe { deadline(clock, t) } {
            // SAFETY: the caller's arguments (libc's contract).
            if let Some(r) = unsafe { cond_wait_until(c, m, until) } {
                return r;
            }
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::pthread_cond_clockwait(c, m, clock, t) }
}

/// Hooked `pthread_cond_signal(3)`: libc's (for threads), and one greenlet.
///
/// # Safety
/// libc's contract for `pthread_cond_signal`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_cond_signal(c: *mut pthread_cond_t) -> c_int {
    // SAFETY: the caller's arguments, unchanged.
    let r = unsafe { real::pthread_cond_signal(c) };
    wake_address(c as usize, 1);
    r
}

/// Hooked `pthread_cond_broadcast(3)`: libc's, and every greenlet.
///
/// # Safety
/// libc's contract for `pthread_cond_broadcast`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_cond_broadcast(c: *mut pthread_cond_t) -> c_int {
    // SAFETY: the caller's arguments, unchanged.
    let r = unsafe { real::pthread_cond_broadcast(c) };
    wake_address(c as usize, usize::MAX);
    r
}

// ---- semaphores ----

/// A semaphore wait until `until` (see the module docs); `None` to let
/// libc wait. errno is libc's, or `ETIMEDOUT`/`EINTR`.
///
/// # Safety
/// `s` is a valid semaphore (libc's contract).
unsafe fn sem_wait_until(s: *mut sem_t, until: Option<Instant>) -> Option<c_int> {
    let saved = errno();
    let on = WaitingOn::Primitive("semaphore");
    let attempt = || {
        // SAFETY: the caller's semaphore.
        let r = unsafe { real::sem_trywait(s) };
        (r == 0 || errno() != libc::EAGAIN).then_some(r)
    };
    match wait_for(s as usize, until, true, on, attempt) {
        Gave::Done(r) => {
            if r == 0 {
                set_errno(saved);
            }
            Some(r)
        }
        Gave::TimedOut => {
            set_errno(libc::ETIMEDOUT);
            Some(-1)
        }
        Gave::Killed => {
            set_errno(libc::EINTR);
            Some(-1)
        }
        Gave::Impossible => {
            set_errno(saved);
            None
        }
    }
}

/// Hooked `sem_wait(3)`.
///
/// # Safety
/// libc's contract for `sem_wait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sem_wait(s: *mut sem_t) -> c_int {
    if parks() {
        // SAFETY: the caller's semaphore.
        if let Some(r) = unsafe { sem_wait_until(s, None) } {
            return r;
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::sem_wait(s) }
}

/// Hooked `sem_timedwait(3)` (`CLOCK_REALTIME`).
///
/// # Safety
/// libc's contract for `sem_timedwait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sem_timedwait(s: *mut sem_t, t: *const timespec) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { sem_clockwait(s, libc::CLOCK_REALTIME, t) }
}

/// Hooked `sem_clockwait(3)`.
///
/// # Safety
/// libc's contract for `sem_clockwait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sem_clockwait(s: *mut sem_t, clock: clockid_t, t: *const timespec) -> c_int {
    if parks() {
        // SAFETY: the caller's timeout and semaphore.
        if let Some(until) = unsafe { deadline(clock, t) } {
            // SAFETY: the caller's arguments (libc's contract).
            if let Some(r) = unsafe { sem_wait_until(s, until) } {
                return r;
            }
        }
    }
    if clock == libc::CLOCK_REALTIME {
        // SAFETY: the caller's arguments (older glibc lacks clockwait).
        return unsafe { real::sem_timedwait(s, t) };
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::sem_clockwait(s, clock, t) }
}

/// Hooked `sem_post(3)`: libc's, then one greenlet waiting is woken.
///
/// # Safety
/// libc's contract for `sem_post`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sem_post(s: *mut sem_t) -> c_int {
    // SAFETY: the caller's arguments, unchanged.
    let r = unsafe { real::sem_post(s) };
    if r == 0 {
        wake_address(s as usize, 1);
    }
    r
}

// ---- joins ----

/// The helpers: a join may wait as long as its thread runs, so they are
/// not taken from the default pool (name lookups would queue behind
/// them). Idle helpers exit after a while, as the pool's do.
fn helpers() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(4096))
}

/// Not yet joined.
const PENDING: c_int = -1;

/// Hooked `pthread_join(3)`.
///
/// # Safety
/// libc's contract for `pthread_join`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_join(thread: pthread_t, retval: *mut *mut c_void) -> c_int {
    if !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::pthread_join(thread, retval) };
    }
    let Ok((waker, wait)) = remote_wait() else {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::pthread_join(thread, retval) };
    };
    let result = Arc::new(AtomicI32::new(PENDING));
    let out = result.clone();
    // The thread's return value comes back in a slot of its own, copied to
    // `retval` after the wake: the helper never writes into the caller's
    // memory, which may be a copy-stack greenlet's stack, moved out while
    // it waits (greenlet/copy.rs).
    let value = Arc::new(AtomicUsize::new(0));
    let value_out = value.clone();
    let job = Box::new(move || {
        let mut v: *mut c_void = std::ptr::null_mut();
        // SAFETY: the caller's thread; `v` is this frame's.
        let r = unsafe { real::pthread_join(thread, &mut v) };
        value_out.store(v as usize, Ordering::Relaxed);
        out.store(r, Ordering::Release);
        waker.wake();
    });
    if helpers().submit(job).is_err() {
        // Not even one helper thread: join here, blocking, as unpatched.
        // (The job was dropped unrun; its waker's wake finds no park.)
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::pthread_join(thread, retval) };
    }
    super::count_park();
    loop {
        let r = result.load(Ordering::Acquire);
        if r != PENDING {
            if r == 0 && !retval.is_null() {
                // SAFETY: the caller's return-value pointer, valid for a
                // write by `pthread_join`'s contract; the Acquire load
                // above ordered the helper's store of `value`.
                unsafe { *retval = value.load(Ordering::Relaxed) as *mut c_void };
            }
            return r;
        }
        // A kill is kept for later by `guarded`; no scope applies.
        let _ = super::guarded(|| wait.wait_as(None, false, WaitingOn::Primitive("pthread_join")));
    }
}
