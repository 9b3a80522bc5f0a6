//! The `select` family and `ppoll`: `select`, `pselect`, `ppoll` and
//! `__ppoll_chk` (`ppoll` under `_FORTIFY_SOURCE`).
//!
//! As in `poll.rs`: libc's own call is asked first with a zero timeout; if
//! nothing is ready the greenlet parks on the reactor (on the fd, or on a
//! private epoll set of all of them) and libc is asked again after every
//! wake-up, so counts, result sets, `revents` and errno are libc's.
//! `select`'s sets are kept and put back before each retry (libc clears
//! what is not ready), and its timeout is updated to the time left, as
//! Linux does. With a signal mask (`pselect`, `ppoll`), the park lasts at
//! most 10 ms at a time: a signal the mask lets through is delivered at
//! the next ask (the masks cannot be swapped atomically around a park).
//! A zero timeout, a caller outside a greenlet and arguments libc refuses
//! go straight to libc.

use std::time::{Duration, Instant};

use libc::{c_int, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

use super::poll::{ms_left, pollfds, target, timespec_left, wait_ready};
use super::{cooperative, real};

pub(super) fn keep() {
    for f in [
        select as *const (),
        pselect as *const (),
        ppoll as *const (),
        __ppoll_chk as *const (),
    ] {
        super::keep_symbol(f);
    }
}

/// How long a park lasts at most when the caller passed a signal mask.
const MASK_STEP: Duration = Duration::from_millis(10);

/// A valid `timespec` as a duration (`None`: invalid, let libc say so).
fn timespec_duration(t: &timespec) -> Option<Duration> {
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return None;
    }
    Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

/// The caller's timeout: `Ok(None)` forever, `Err(())` invalid.
///
/// # Safety
/// `t` is null or readable.
unsafe fn spec_timeout(t: *const timespec) -> Result<Option<Duration>, ()> {
    // SAFETY: null or readable (caller).
    match unsafe { t.as_ref() } {
        None => Ok(None),
        Some(t) => timespec_duration(t).map(Some).ok_or(()),
    }
}

const ZERO: timespec = timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// Hooked `ppoll(2)`.
///
/// # Safety
/// libc's contract for `ppoll`.
#[unsafe(no_mangle)]
unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    // SAFETY: `tmo` is null or readable (libc's contract).
    let timeout = unsafe { spec_timeout(tmo) };
    let Ok(timeout) = timeout else {
        // SAFETY: the caller's arguments, unchanged (libc reports EINVAL).
        return unsafe { real::ppoll(fds, nfds, tmo, sigmask) };
    };
    if timeout == Some(Duration::ZERO) || !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::ppoll(fds, nfds, tmo, sigmask) };
    }
    let step = (!sigmask.is_null()).then_some(MASK_STEP);
    wait_ready(
        timeout,
        step,
        // SAFETY: libc's contract for `ppoll`.
        || target(unsafe { pollfds(fds, nfds) }),
        || {},
        // SAFETY: the caller's arguments, with a zero timeout.
        || unsafe { real::ppoll(fds, nfds, &ZERO, sigmask) },
        |until| {
            let left = timespec_left(until);
            let p = left
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const timespec);
            // SAFETY: the caller's arguments, with the time left.
            unsafe { real::ppoll(fds, nfds, p, sigmask) }
        },
    )
}

/// Hooked `__ppoll_chk` (`ppoll` under `_FORTIFY_SOURCE`).
///
/// # Safety
/// libc's contract for `__ppoll_chk`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const timespec,
    sigmask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    if (fdslen / size_of::<pollfd>()) < nfds as usize {
        // SAFETY: libc's check reports the overflow (and aborts).
        return unsafe { real::__ppoll_chk(fds, nfds, tmo, sigmask, fdslen) };
    }
    // SAFETY: checked as libc would; the rest is `ppoll`'s contract.
    unsafe { ppoll(fds, nfds, tmo, sigmask) }
}

/// The caller's three sets, kept to put back before each retry.
struct Sets {
    nfds: c_int,
    ptrs: [*mut fd_set; 3],
    kept: [Option<fd_set>; 3],
}

impl Sets {
    /// # Safety
    /// Each pointer is null or points at a readable and writable `fd_set`.
    unsafe fn new(nfds: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set) -> Sets {
        let ptrs = [r, w, e];
        // SAFETY: null or readable (caller).
        let kept = ptrs.map(|p| unsafe { p.as_ref() }.copied());
        Sets { nfds, ptrs, kept }
    }

    /// Puts the caller's sets back as they were given.
    fn restore(&self) {
        for (p, k) in self.ptrs.iter().zip(&self.kept) {
            if let Some(k) = k {
                // SAFETY: non-null pointers are writable (`new`'s contract).
                unsafe { **p = *k };
            }
        }
    }

    /// The sets as `pollfd`s (read: `POLLIN`, write: `POLLOUT`,
    /// except: `POLLPRI`), for choosing what to park on.
    fn pollfds(&self) -> Vec<pollfd> {
        let bits = [libc::POLLIN, libc::POLLOUT, libc::POLLPRI];
        let mut out = Vec::new();
        for fd in 0..self.nfds {
            let mut events = 0;
            for (k, b) in self.kept.iter().zip(bits) {
                // SAFETY: `fd` is below `nfds` <= FD_SETSIZE (checked).
                if k.as_ref().is_some_and(|s| unsafe { libc::FD_ISSET(fd, s) }) {
                    events |= b;
                }
            }
            if events != 0 {
                out.push(pollfd {
                    fd,
                    events,
                    revents: 0,
                });
            }
        }
        out
    }
}

/// The wait shared by `select` and `pselect`: `ask` is libc's call with a
/// zero timeout; `block` the blocking call with the time left. The sets
/// are put back before every ask but the first (libc's answer overwrote
/// them) and on failure.
fn select_like(
    sets: &Sets,
    timeout: Option<Duration>,
    step: Option<Duration>,
    ask: impl Fn() -> c_int,
    block: impl FnOnce(Option<Instant>) -> c_int,
) -> c_int {
    wait_ready(
        timeout,
        step,
        || target(&sets.pollfds()),
        || sets.restore(),
        ask,
        block,
    )
}

/// Hooked `select(2)`.
///
/// # Safety
/// libc's contract for `select`.
#[unsafe(no_mangle)]
unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tv: *mut timeval,
) -> c_int {
    // SAFETY: `tv` is null or readable (libc's contract).
    let timeout = match unsafe { tv.as_ref() } {
        None => Some(None),
        Some(t) if t.tv_sec >= 0 && (0..1_000_000).contains(&t.tv_usec) => Some(Some(
            Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000),
        )),
        Some(_) => None, // invalid: libc says EINVAL
    };
    let Some(timeout) = timeout else {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::select(nfds, r, w, e, tv) };
    };
    if !(0..=libc::FD_SETSIZE as c_int).contains(&nfds)
        || timeout == Some(Duration::ZERO)
        || !cooperative()
    {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::select(nfds, r, w, e, tv) };
    }
    let start = Instant::now();
    // SAFETY: the sets are null or valid `fd_set`s (libc's contract).
    let sets = unsafe { Sets::new(nfds, r, w, e) };
    let ask = || {
        let mut zero = timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: the caller's sets, with a zero timeout of our own.
        unsafe { real::select(nfds, r, w, e, &raw mut zero) }
    };
    let block = |until: Option<Instant>| {
        let ms = ms_left(until);
        let mut left = timeval {
            tv_sec: (ms.max(0) / 1000) as libc::time_t,
            tv_usec: ((ms.max(0) % 1000) * 1000) as libc::suseconds_t,
        };
        let p = if ms < 0 {
            std::ptr::null_mut()
        } else {
            &raw mut left
        };
        // SAFETY: the caller's sets, with the time left.
        unsafe { real::select(nfds, r, w, e, p) }
    };
    let n = select_like(&sets, timeout, None, ask, block);
    // Linux reports the time left in the caller's timeout.
    if let (Some(t), Some(total)) = (
        // SAFETY: `tv` is null or writable (libc's contract).
        unsafe { tv.as_mut() },
        timeout,
    ) {
        let left = total.saturating_sub(start.elapsed());
        t.tv_sec = left.as_secs() as libc::time_t;
        t.tv_usec = left.subsec_micros() as libc::suseconds_t;
    }
    n
}

/// Hooked `pselect(2)`.
///
/// # Safety
/// libc's contract for `pselect`.
#[unsafe(no_mangle)]
unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    // SAFETY: `tmo` is null or readable (libc's contract).
    let timeout = unsafe { spec_timeout(tmo) };
    let Ok(timeout) = timeout else {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::pselect(nfds, r, w, e, tmo, sigmask) };
    };
    if !(0..=libc::FD_SETSIZE as c_int).contains(&nfds)
        || timeout == Some(Duration::ZERO)
        || !cooperative()
    {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::pselect(nfds, r, w, e, tmo, sigmask) };
    }
    // SAFETY: the sets are null or valid `fd_set`s (libc's contract).
    let sets = unsafe { Sets::new(nfds, r, w, e) };
    // SAFETY: the caller's sets and mask, with a zero timeout.
    let ask = || unsafe { real::pselect(nfds, r, w, e, &ZERO, sigmask) };
    let block = |until: Option<Instant>| {
        let left = timespec_left(until);
        let p = left
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const timespec);
        // SAFETY: the caller's sets and mask, with the time left.
        unsafe { real::pselect(nfds, r, w, e, p, sigmask) }
    };
    let step = (!sigmask.is_null()).then_some(MASK_STEP);
    select_like(&sets, timeout, step, ask, block)
}
