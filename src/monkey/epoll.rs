//! The `epoll_wait` family: `epoll_wait`, `epoll_pwait`, `epoll_pwait2`.
//!
//! A C library (or a second runtime) with its own epoll loop blocks in
//! these. Inside a greenlet the hook asks libc's call with a zero timeout;
//! if no event is there, the greenlet parks on the epoll fd itself (an
//! epoll fd is readable while events are pending, so the hub's poller
//! watches it like any fd), and asks again after every wake-up: the
//! events and errno are libc's. With a signal mask the park lasts at most
//! 10 ms at a time (see `select.rs`). The hub's own `epoll_pwait2` runs
//! inside the hub loop, where no hook is cooperative: straight to libc.

use std::time::{Duration, Instant};

use libc::{c_int, epoll_event, sigset_t, timespec};

use super::poll::{Target, ms_left, timespec_left, wait_ready};
use super::{cooperative, real};
use crate::hub::Interest;

pub(super) fn keep() {
    for f in [
        epoll_wait as *const (),
        epoll_pwait as *const (),
        epoll_pwait2 as *const (),
    ] {
        super::keep_symbol(f);
    }
}

/// The shared wait: `ask` is libc's call with a zero timeout, `block` the
/// blocking one until the given deadline.
fn wait(
    epfd: c_int,
    timeout: Option<Duration>,
    masked: bool,
    ask: impl Fn() -> c_int,
    block: impl FnOnce(Option<Instant>) -> c_int,
) -> c_int {
    let step = masked.then_some(Duration::from_millis(10));
    wait_ready(
        timeout,
        step,
        || Some(Target::One(epfd, Interest::Read)),
        || {},
        ask,
        block,
    )
}

/// The caller's millisecond timeout (`-1` or any negative: forever).
fn ms_timeout(ms: c_int) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

/// Hooked `epoll_wait(2)`.
///
/// # Safety
/// libc's contract for `epoll_wait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    if timeout == 0 || maxevents <= 0 || !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::epoll_wait(epfd, events, maxevents, timeout) };
    }
    wait(
        epfd,
        ms_timeout(timeout),
        false,
        // SAFETY: the caller's arguments, with a zero timeout.
        || unsafe { real::epoll_wait(epfd, events, maxevents, 0) },
        // SAFETY: the caller's arguments, with the time left.
        |until| unsafe { real::epoll_wait(epfd, events, maxevents, ms_left(until)) },
    )
}

/// Hooked `epoll_pwait(2)`.
///
/// # Safety
/// libc's contract for `epoll_pwait`.
#[unsafe(no_mangle)]
unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
    sigmask: *const sigset_t,
) -> c_int {
    if timeout == 0 || maxevents <= 0 || !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::epoll_pwait(epfd, events, maxevents, timeout, sigmask) };
    }
    wait(
        epfd,
        ms_timeout(timeout),
        !sigmask.is_null(),
        // SAFETY: the caller's arguments, with a zero timeout.
        || unsafe { real::epoll_pwait(epfd, events, maxevents, 0, sigmask) },
        // SAFETY: the caller's arguments, with the time left.
        |until| unsafe { real::epoll_pwait(epfd, events, maxevents, ms_left(until), sigmask) },
    )
}

/// Hooked `epoll_pwait2(2)` (nanosecond timeout).
///
/// # Safety
/// libc's contract for `epoll_pwait2`.
#[unsafe(no_mangle)]
unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    // SAFETY: null or readable (libc's contract).
    let timeout = match unsafe { tmo.as_ref() } {
        None => Some(None),
        Some(t) if t.tv_sec >= 0 && (0..1_000_000_000).contains(&t.tv_nsec) => {
            Some(Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32)))
        }
        Some(_) => None,
    };
    let Some(timeout) = timeout.filter(|t| *t != Some(Duration::ZERO)) else {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::epoll_pwait2(epfd, events, maxevents, tmo, sigmask) };
    };
    if maxevents <= 0 || !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::epoll_pwait2(epfd, events, maxevents, tmo, sigmask) };
    }
    const ZERO: timespec = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    wait(
        epfd,
        timeout,
        !sigmask.is_null(),
        // SAFETY: the caller's arguments, with a zero timeout.
        || unsafe { real::epoll_pwait2(epfd, events, maxevents, &ZERO, sigmask) },
        |until| {
            let left = timespec_left(until);
            let p = left
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const timespec);
            // SAFETY: the caller's arguments, with the time left.
            unsafe { real::epoll_pwait2(epfd, events, maxevents, p, sigmask) }
        },
    )
}
