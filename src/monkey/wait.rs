//! Child-process waits: `waitpid`, `wait4`, `waitid` (std's `Child::wait`,
//! `Command::status` and `Command::output` end in these).
//!
//! Inside a greenlet a blocking wait asks libc's call with `WNOHANG`
//! first; if the child has not changed state, the greenlet parks. For one
//! child waited for its exit, it parks on a `pidfd` (Linux 5.3 and later;
//! readable once the child has exited) on the reactor; for any child, a
//! process group, or stops and continues (`WUNTRACED`, `WCONTINUED`, which
//! a pidfd does not report), and where `pidfd_open` fails, it parks on a
//! timer and asks again, 1 ms at first, doubling up to 50 ms. Whatever
//! ends the wait, the result and errno are libc's own from a `WNOHANG`
//! call. An expired `Timeout` fails the call with `ETIMEDOUT`, a kill with
//! `ECANCELED` (the child is then left to a later wait). `WNOHANG` calls and
//! callers outside greenlets go straight to libc.

use std::time::{Duration, Instant};

use libc::{c_int, id_t, idtype_t, pid_t, rusage, siginfo_t};

use super::{Waited, cooperative, errno, real, set_errno, wait_errno, wait_fd};
use crate::greenlet::Woke;
use crate::hub::Interest;

pub(super) fn keep() {
    for f in [
        waitpid as *const (),
        wait4 as *const (),
        waitid as *const (),
    ] {
        super::keep_symbol(f);
    }
}

/// A pidfd for `pid`, if the kernel gives one (closed on drop).
struct PidFd(c_int);

impl PidFd {
    fn open(pid: pid_t) -> Option<PidFd> {
        // SAFETY: the pidfd_open system call takes a pid and flags.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        (fd >= 0).then_some(PidFd(fd as c_int))
    }
}

impl Drop for PidFd {
    fn drop(&mut self) {
        // SAFETY: the fd this value opened and owns.
        unsafe { libc::close(self.0) };
    }
}

/// Waits until `probe` (libc's call with `WNOHANG`) reports something:
/// `Some(result)` means return it, `None` means "not yet". `exit_of` is
/// the child to watch with a pidfd when the wait is for one child's exit.
/// Returns `Err(errno)` if the park itself failed (timeout, kill).
fn park_until(
    exit_of: Option<pid_t>,
    mut probe: impl FnMut() -> Option<c_int>,
) -> Result<c_int, c_int> {
    let saved = errno();
    let mut pidfd = exit_of.and_then(PidFd::open);
    let mut step = Duration::from_millis(1);
    loop {
        if let Some(r) = probe() {
            if r >= 0 {
                set_errno(saved);
            }
            return Ok(r);
        }
        let w = match &pidfd {
            Some(fd) => wait_fd(fd.0, Interest::Read, None),
            None => {
                let w = super::sleep_until(Instant::now().checked_add(step));
                step = (step * 2).min(Duration::from_millis(50));
                w
            }
        };
        match w {
            Waited::Woke(Woke::Ready | Woke::Deadline) => {}
            // The poller refused the pidfd: poll on a timer instead.
            Waited::Unsupported if pidfd.is_some() => pidfd = None,
            Waited::Unsupported | Waited::Woke(Woke::Deadlock) => return Err(0),
            w => return Err(wait_errno(w).unwrap_or(libc::EINTR)),
        }
    }
}

/// The child whose exit a pidfd can report, for `pid` and `options`.
fn one_child_exit(pid: pid_t, options: c_int) -> Option<pid_t> {
    (pid > 0 && options & (libc::WUNTRACED | libc::WCONTINUED) == 0).then_some(pid)
}

/// Hooked `wait4(2)`.
///
/// # Safety
/// libc's contract for `wait4`.
#[unsafe(no_mangle)]
unsafe extern "C" fn wait4(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    usage: *mut rusage,
) -> pid_t {
    if options & libc::WNOHANG != 0 || !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::wait4(pid, status, options, usage) };
    }
    let probe = || {
        // SAFETY: the caller's arguments, with WNOHANG.
        let r = unsafe { real::wait4(pid, status, options | libc::WNOHANG, usage) };
        (r != 0).then_some(r)
    };
    match park_until(one_child_exit(pid, options), probe) {
        Ok(r) => r,
        // Cannot wait cooperatively here: block, as unpatched.
        // SAFETY: the caller's arguments, unchanged.
        Err(0) => unsafe { real::wait4(pid, status, options, usage) },
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// Hooked `waitpid(2)`: `wait4` without resource usage.
///
/// # Safety
/// libc's contract for `waitpid`.
#[unsafe(no_mangle)]
unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    // SAFETY: the caller's arguments; a null rusage is allowed.
    unsafe { wait4(pid, status, options, std::ptr::null_mut()) }
}

/// Hooked `waitid(2)`.
///
/// # Safety
/// libc's contract for `waitid`.
#[unsafe(no_mangle)]
unsafe extern "C" fn waitid(
    idtype: idtype_t,
    id: id_t,
    infop: *mut siginfo_t,
    options: c_int,
) -> c_int {
    if options & libc::WNOHANG != 0 || infop.is_null() || !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::waitid(idtype, id, infop, options) };
    }
    let probe = || {
        // With WNOHANG and nothing to report, waitid returns 0 and leaves
        // `si_pid` as it was: zero it first to tell (as its manual says).
        // SAFETY: `infop` is non-null and writable (libc's contract).
        unsafe {
            (*infop) = std::mem::zeroed();
            let r = real::waitid(idtype, id, infop, options | libc::WNOHANG);
            (r != 0 || (*infop).si_pid() != 0).then_some(r)
        }
    };
    let exit_of = if idtype == libc::P_PID && options & (libc::WSTOPPED | libc::WCONTINUED) == 0 {
        pid_t::try_from(id).ok().filter(|p| *p > 0)
    } else {
        None
    };
    match park_until(exit_of, probe) {
        Ok(r) => r,
        // SAFETY: the caller's arguments, unchanged.
        Err(0) => unsafe { real::waitid(idtype, id, infop, options) },
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}
