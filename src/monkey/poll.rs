//! The `poll` hook (std's `connect_timeout` uses it, as do C clients).
//!
//! A `poll` with a timeout first asks libc's `poll` without waiting. If
//! nothing is ready, the greenlet parks on the reactor: on the one fd
//! itself when it waits for reading or for writing, otherwise on a private
//! epoll set holding every fd (an epoll fd is itself pollable). After any
//! wake-up libc's `poll` is asked again, so the result — counts, `revents`,
//! errno — is always libc's own.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use libc::{c_int, nfds_t, pollfd, size_t};

use super::{Waited, cooperative, errno, real, set_errno, wait_errno, wait_fd};
use crate::greenlet::Woke;
use crate::hub::Interest;
use crate::hub::watcher::deadline;

pub(super) fn keep() {
    super::keep_symbol(poll as *const ());
    super::keep_symbol(__poll_chk as *const ());
}

const READ_EVENTS: i16 = libc::POLLIN | libc::POLLRDNORM | libc::POLLRDHUP;
const WRITE_EVENTS: i16 = libc::POLLOUT | libc::POLLWRNORM;

/// What a parked `poll` (or `select`, `ppoll`, `epoll_wait`) waits on.
pub(super) enum Target {
    /// One fd, for reading or for writing.
    One(RawFd, Interest),
    /// A private epoll fd holding all of them (closed on drop).
    Set(RawFd),
    /// No fds at all: `poll` is a sleep.
    Nothing,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Set(ep) = *self {
            // SAFETY: `ep` is the epoll fd this value created and owns.
            unsafe { libc::close(ep) };
        }
    }
}

/// Chooses what to wait on; `None` if the fds cannot be watched (then the
/// hook lets libc's `poll` block, as unpatched).
pub(super) fn target(fds: &[pollfd]) -> Option<Target> {
    let live: Vec<&pollfd> = fds.iter().filter(|p| p.fd >= 0).collect();
    if live.is_empty() {
        return Some(Target::Nothing);
    }
    if let [p] = live[..] {
        if p.events != 0 && p.events & !READ_EVENTS == 0 {
            return Some(Target::One(p.fd, Interest::Read));
        }
        if p.events != 0 && p.events & !WRITE_EVENTS == 0 {
            return Some(Target::One(p.fd, Interest::Write));
        }
    }
    // SAFETY: plain system call; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return None;
    }
    let set = Target::Set(ep);
    // The same fd may appear twice: watch the union of its events.
    let mut merged: Vec<(RawFd, u32)> = Vec::with_capacity(live.len());
    for p in live {
        // The POLL* and EPOLL* bits have the same values on Linux.
        let ev = p.events as u16 as u32;
        match merged.iter_mut().find(|(fd, _)| *fd == p.fd) {
            Some((_, e)) => *e |= ev,
            None => merged.push((p.fd, ev)),
        }
    }
    for (fd, events) in merged {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `ev` is valid for the call; `ep` is our epoll fd.
        let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &raw mut ev) };
        // A regular file cannot be watched (EPERM), but it never blocks
        // either: libc's `poll` reports it. Anything else: give up.
        if r != 0 && errno() != libc::EPERM {
            return None;
        }
    }
    Some(set)
}

/// libc's `poll` without waiting.
///
/// # Safety
/// libc's contract for `poll`.
unsafe fn probe(fds: *mut pollfd, nfds: nfds_t) -> c_int {
    // SAFETY: the caller's arguments, with a zero timeout.
    unsafe { real::poll(fds, nfds, 0) }
}

/// How a cooperative wait inside a readiness hook ended.
enum Parked {
    /// Return this (errno is set: libc's, or the saved one on success).
    Done(c_int),
    /// It cannot wait cooperatively: call libc's blocking function with
    /// the time left until this deadline.
    Block(Option<Instant>),
}

/// The wait loop of every readiness hook (`poll`, `ppoll`, `select`,
/// `pselect`, `epoll_wait`...): park on `target` until `until`, and after
/// every wake-up ask `probe` (libc's own call with a zero timeout) again,
/// so the result is always libc's. With `step`, the park never lasts
/// longer than that (the caller passed a signal mask: a signal it lets
/// through is seen at the next probe).
fn park_loop(
    target: &Target,
    until: Option<Instant>,
    step: Option<Duration>,
    saved: c_int,
    mut probe: impl FnMut() -> c_int,
) -> Parked {
    loop {
        let wake = match (until, step) {
            (u, Some(s)) => {
                let next = Instant::now() + s;
                Some(u.map_or(next, |u| u.min(next)))
            }
            (u, None) => u,
        };
        let w = match *target {
            Target::One(fd, interest) => wait_fd(fd, interest, wake),
            Target::Set(ep) => wait_fd(ep, Interest::Read, wake),
            Target::Nothing => super::sleep_until(wake),
        };
        match w {
            Waited::Woke(Woke::Ready | Woke::Deadline) => {
                let r = probe();
                let timed_out = until.is_some_and(|d| Instant::now() >= d)
                    || (matches!(target, Target::Nothing) && step.is_none());
                if r != 0 || timed_out {
                    if r >= 0 {
                        set_errno(saved);
                    }
                    return Parked::Done(r);
                }
            }
            Waited::Unsupported | Waited::Woke(Woke::Deadlock) => {
                set_errno(saved);
                return Parked::Block(until);
            }
            Waited::Woke(Woke::TimedOut) | Waited::Killed => {
                set_errno(wait_errno(w).unwrap_or(libc::EINTR));
                return Parked::Done(-1);
            }
        }
    }
}

/// The whole cooperative wait of a readiness hook (`poll`, `ppoll`,
/// `select`, `pselect`, the `epoll_wait` family): `ask` (libc's call with a
/// zero timeout) once; if nothing is ready, park on `target()` via
/// [`park_loop`], asking again after every wake-up; if the fds cannot be
/// watched, or the wait cannot be cooperative, `block` (libc's blocking
/// call until the given deadline). `reset` runs before every ask but the
/// first, before `block`, and after a failure (`select` puts its sets back
/// there; the others have nothing to reset).
pub(super) fn wait_ready(
    timeout: Option<Duration>,
    step: Option<Duration>,
    target: impl FnOnce() -> Option<Target>,
    reset: impl Fn(),
    ask: impl Fn() -> c_int,
    block: impl FnOnce(Option<Instant>) -> c_int,
) -> c_int {
    let saved = errno();
    let r = ask();
    if r != 0 {
        return r;
    }
    let until = deadline(timeout);
    let Some(target) = target() else {
        reset();
        set_errno(saved);
        return block(until);
    };
    let retry = || {
        reset();
        ask()
    };
    match park_loop(&target, until, step, saved, retry) {
        Parked::Done(r) => {
            if r < 0 {
                // On an error the caller's arguments are as given (a
                // Timeout scope or a kill here; libc's own errors leave
                // them so too).
                reset();
            }
            r
        }
        Parked::Block(until) => {
            reset();
            block(until)
        }
    }
}

/// Milliseconds left until `until` for a blocking call (`-1`: forever).
pub(super) fn ms_left(until: Option<Instant>) -> c_int {
    match until {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now()).as_millis();
            c_int::try_from(left).unwrap_or(c_int::MAX)
        }
    }
}

/// The time left until `until` as a `timespec` for a blocking call
/// (`None`: forever).
pub(super) fn timespec_left(until: Option<Instant>) -> Option<libc::timespec> {
    until.map(|d| {
        let l = d.saturating_duration_since(Instant::now());
        libc::timespec {
            tv_sec: l.as_secs() as libc::time_t,
            tv_nsec: l.subsec_nanos() as libc::c_long,
        }
    })
}

/// The fds of a `pollfd` array (empty for a null pointer or none).
///
/// # Safety
/// `fds` is null or points at `nfds` readable entries.
pub(super) unsafe fn pollfds<'a>(fds: *const pollfd, nfds: nfds_t) -> &'a [pollfd] {
    if nfds == 0 || fds.is_null() {
        &[]
    } else {
        // SAFETY: `nfds` valid entries (caller); only read.
        unsafe { std::slice::from_raw_parts(fds, nfds as usize) }
    }
}

/// Hooked `poll(2)`.
///
/// # Safety
/// libc's contract for `poll`.
#[unsafe(no_mangle)]
unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    if timeout == 0 || !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::poll(fds, nfds, timeout) };
    }
    let timeout = (timeout > 0).then(|| Duration::from_millis(timeout as u64));
    wait_ready(
        timeout,
        None,
        // SAFETY: libc's contract for `poll`.
        || target(unsafe { pollfds(fds, nfds) }),
        || {},
        // SAFETY: the caller's arguments, with a zero timeout.
        || unsafe { probe(fds, nfds) },
        // SAFETY: the caller's arguments, with the time left.
        |until| unsafe { real::poll(fds, nfds, ms_left(until)) },
    )
}

/// Hooked `__poll_chk` (`poll` under `_FORTIFY_SOURCE`).
///
/// # Safety
/// libc's contract for `__poll_chk`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if (fdslen / size_of::<pollfd>()) < nfds as usize {
        // SAFETY: libc's check reports the overflow (and aborts).
        return unsafe { real::__poll_chk(fds, nfds, timeout, fdslen) };
    }
    // SAFETY: checked as libc would; the rest is `poll`'s contract.
    unsafe { poll(fds, nfds, timeout) }
}
