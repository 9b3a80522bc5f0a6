//! Sleep hooks: `nanosleep`, `clock_nanosleep` (std's `thread::sleep`),
//! `usleep` and `sleep`. Inside a greenlet they park on a hub timer.
//!
//! An expired [`Timeout`](crate::Timeout) ends the sleep early and the call
//! reports success (the scope records that it fired). Reporting `EINTR`
//! instead would make callers such as std's `thread::sleep` retry the
//! remaining time forever.
//!
//! A kill (during the sleep, or pending from an earlier patched call) makes
//! `nanosleep`, `clock_nanosleep` and `usleep` fail with `ECANCELED`
//! without sleeping. std's `thread::sleep` treats any error but `EINTR` as
//! a bug and panics; that panic is an ordinary Rust unwind from std's own
//! frame, so a `thread::sleep` loop in a killed greenlet unwinds at its
//! next sleep (destructors run) and the greenlet ends as killed (its base
//! recognizes the pending kill). A C caller sees the error. `sleep(3)`,
//! which can only answer with the seconds left (and whose callers loop on
//! that), still sleeps and reports success.
//! Invalid arguments and clocks other than the real-time, monotonic and
//! boot-time clocks go to libc, which reports them as it always does.

use std::time::{Duration, Instant};

use libc::{c_int, c_uint, clockid_t, timespec};

use super::{Waited, cooperative, errno, real, set_errno};
use crate::greenlet::Woke;

pub(super) fn keep() {
    for f in [
        nanosleep as *const (),
        clock_nanosleep as *const (),
        usleep as *const (),
        sleep as *const (),
    ] {
        super::keep_symbol(f);
    }
}

/// A valid `timespec` as a duration (`None`: let libc report the error).
///
/// # Safety
/// `t` is null or points at a readable `timespec`.
pub(super) unsafe fn duration(t: *const timespec) -> Option<Duration> {
    if t.is_null() {
        return None;
    }
    // SAFETY: non-null and readable (caller).
    let t = unsafe { *t };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return None;
    }
    Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

/// How a cooperative sleep ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slept {
    /// It slept (or a `Timeout` ended it early): report success.
    Done,
    /// The greenlet was killed, now or by an earlier patched call: report
    /// `ECANCELED` (the kill stays deferred).
    Killed,
    /// Impossible here (nothing else could ever run): sleep in libc.
    Impossible,
}

/// Sleeps `d` cooperatively, leaving errno as it was. With `cancellable`,
/// a pending kill ends it at once, and a kill during it is reported.
fn park_for(d: Duration, cancellable: bool) -> Slept {
    let killed = || {
        crate::greenlet::with_current(|c| {
            let pending = c.ext.deferred_exit.get();
            if pending {
                c.ext.cancelled.set(true);
            }
            pending
        })
    };
    if cancellable && killed() {
        return Slept::Killed;
    }
    let saved = errno();
    let slept = if d.is_zero() {
        match super::guarded(crate::hub::scheduler::yield_now) {
            Err(Waited::Killed) => Slept::Killed,
            _ => Slept::Done,
        }
    } else {
        match super::sleep_until(Instant::now().checked_add(d)) {
            Waited::Woke(Woke::Deadlock) | Waited::Unsupported => Slept::Impossible,
            Waited::Killed => Slept::Killed,
            Waited::Woke(_) => Slept::Done,
        }
    };
    set_errno(saved);
    match slept {
        Slept::Killed if cancellable && killed() => Slept::Killed,
        Slept::Killed => Slept::Done,
        s => s,
    }
}

/// Hooked `nanosleep(2)`.
///
/// # Safety
/// libc's contract for `nanosleep`.
#[unsafe(no_mangle)]
unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    if cooperative() {
        // SAFETY: `req` is null or readable (libc's contract).
        if let Some(d) = unsafe { duration(req) } {
            match park_for(d, true) {
                Slept::Done => return 0,
                Slept::Killed => {
                    set_errno(libc::ECANCELED);
                    return -1;
                }
                Slept::Impossible => {}
            }
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::nanosleep(req, rem) }
}

/// The time left until `t` on `clock`, for `TIMER_ABSTIME` sleeps.
pub(super) fn until_absolute(clock: clockid_t, t: Duration) -> Option<Duration> {
    let mut now = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is valid for writes.
    if unsafe { libc::clock_gettime(clock, &raw mut now) } != 0 {
        return None;
    }
    // SAFETY: a valid, readable timespec.
    let now = unsafe { duration(&raw const now) }?;
    Some(t.saturating_sub(now))
}

/// Hooked `clock_nanosleep(2)` (returns an error number, not -1).
///
/// # Safety
/// libc's contract for `clock_nanosleep`.
#[unsafe(no_mangle)]
unsafe extern "C" fn clock_nanosleep(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    let known = matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME
    );
    if cooperative() && known && flags & !libc::TIMER_ABSTIME == 0 {
        // SAFETY: `req` is null or readable (libc's contract).
        let d = unsafe { duration(req) }.and_then(|t| {
            if flags & libc::TIMER_ABSTIME != 0 {
                until_absolute(clock, t)
            } else {
                Some(t)
            }
        });
        if let Some(d) = d {
            match park_for(d, true) {
                Slept::Done => return 0,
                Slept::Killed => return libc::ECANCELED,
                Slept::Impossible => {}
            }
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::clock_nanosleep(clock, flags, req, rem) }
}

/// Hooked `usleep(3)`.
///
/// # Safety
/// None beyond libc's (there are no pointers).
#[unsafe(no_mangle)]
unsafe extern "C" fn usleep(usec: c_uint) -> c_int {
    if cooperative() {
        match park_for(Duration::from_micros(u64::from(usec)), true) {
            Slept::Done => return 0,
            Slept::Killed => {
                set_errno(libc::ECANCELED);
                return -1;
            }
            Slept::Impossible => {}
        }
    }
    // SAFETY: the caller's argument, unchanged.
    unsafe { real::usleep(usec) }
}

/// Hooked `sleep(3)` (returns the seconds left: 0 when it slept).
///
/// # Safety
/// None beyond libc's (there are no pointers).
#[unsafe(no_mangle)]
unsafe extern "C" fn sleep(secs: c_uint) -> c_uint {
    if cooperative() && park_for(Duration::from_secs(u64::from(secs)), false) == Slept::Done {
        return 0;
    }
    // SAFETY: the caller's argument, unchanged.
    unsafe { real::sleep(secs) }
}
