//! `accept`/`accept4` hooks.
//!
//! Inside a greenlet, a blocking listener is waited on with the reactor
//! until `ppoll` sees a pending connection, and then accepted *without
//! blocking*: another thread or process sharing the listener (a prefork
//! server, a second acceptor thread) may take that connection first, and
//! a blocking `accept` would then block the whole hub. The kernel has no
//! per-call non-blocking flag for `accept`, so the listener is made
//! non-blocking for the call and restored after it (a *window*, counted
//! per fd across threads, so overlapping windows restore the flags once,
//! to what the code set). On `EAGAIN` the greenlet parks again.
//!
//! A plain thread's blocking `accept` on the same listener can meet such
//! a window and get `EAGAIN`, which a blocking listener never gives: the
//! hook, which sees every `accept` of the process, waits for the listener
//! and tries again then (within the socket's `SO_RCVTIMEO`, if it has one).
//! A process that shares the listener without greenhouse's hooks can see
//! that `EAGAIN` during a window (a few microseconds per accept).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use libc::{c_int, sockaddr, socklen_t};

use super::socket::{block_until_ready, ready_now, socket_deadline, would_block};
use super::{Waited, cooperative, errno, real, set_errno, wait_errno, wait_fd};
use crate::hub::Interest;

pub(super) fn keep() {
    super::keep_symbol(accept as *const ());
    super::keep_symbol(accept4 as *const ());
}

/// One listener made non-blocking by the hooks: how many accepts are in
/// their window, and the file status flags to restore after the last.
struct Window {
    fd: c_int,
    count: usize,
    flags: c_int,
}

/// The open windows. A spin lock, not a `Mutex`: the hooks must not call
/// anything that may one day be hooked itself (futex waits); the critical
/// sections are two `fcntl`s long.
struct Windows {
    busy: AtomicBool,
    list: std::cell::UnsafeCell<Vec<Window>>,
}

// SAFETY: `list` is only touched by `Windows::with`, which holds `busy`.
unsafe impl Sync for Windows {}

static WINDOWS: Windows = Windows {
    busy: AtomicBool::new(false),
    list: std::cell::UnsafeCell::new(Vec::new()),
};

impl Windows {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Window>) -> R) -> R {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: `busy` is held: no other thread is inside `with`, and `f`
        // cannot re-enter (it only runs `fcntl` and `Vec` operations).
        let r = f(unsafe { &mut *self.list.get() });
        self.busy.store(false, Ordering::Release);
        r
    }
}

/// Whether the code wants `fd` non-blocking: its own flags, not a window's.
fn nonblocking_by_choice(fd: c_int) -> bool {
    WINDOWS.with(|w| match w.iter().find(|x| x.fd == fd) {
        Some(x) => x.flags & libc::O_NONBLOCK != 0,
        None => super::fds::nonblocking_now(fd).unwrap_or(true),
    })
}

/// `accept4` that never blocks: in a window, on a blocking listener.
///
/// # Safety
/// libc's contract for `accept4`.
unsafe fn accept_now(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    let opened = WINDOWS.with(|w| {
        if let Some(x) = w.iter_mut().find(|x| x.fd == fd) {
            x.count += 1;
            return true;
        }
        // SAFETY: F_GETFL on an fd number only reads flags (at worst EBADF).
        let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
        if fl < 0 {
            return false;
        }
        // SAFETY: F_SETFL with the fd's own flags plus O_NONBLOCK.
        // libc's own, not the hook: a window does not move the flags epoch
        // on (nobody caches a listener's flags, see `nonblocking_by_choice`).
        if unsafe { real::fcntl(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as usize) } < 0 {
            return false;
        }
        w.push(Window {
            fd,
            count: 1,
            flags: fl,
        });
        true
    });
    // SAFETY: the caller's arguments.
    let r = unsafe { real::accept4(fd, addr, len, flags) };
    let e = errno();
    if opened {
        WINDOWS.with(|w| {
            if let Some(at) = w.iter().position(|x| x.fd == fd) {
                w[at].count -= 1;
                if w[at].count == 0 {
                    let x = w.swap_remove(at);
                    // SAFETY: as above; restores the flags the code set.
                    unsafe { real::fcntl(fd, libc::F_SETFL, x.flags as usize) };
                }
            }
        });
    }
    set_errno(e);
    r
}

/// Hooked `accept4(2)`.
///
/// # Safety
/// libc's contract for `accept4`.
#[unsafe(no_mangle)]
unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    if !cooperative() || nonblocking_by_choice(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { accept_blocking(fd, addr, len, flags) };
    }
    let saved = errno();
    let deadline = socket_deadline(fd, Interest::Read);
    loop {
        if !ready_now(fd, libc::POLLIN) {
            let w = wait_fd(fd, Interest::Read, deadline);
            if let Some(e) = wait_errno(w) {
                set_errno(e);
                return -1;
            }
            if w == Waited::Unsupported {
                // The reactor cannot watch it: block as unpatched.
                // SAFETY: the caller's arguments.
                return unsafe { accept_blocking(fd, addr, len, flags) };
            }
            continue;
        }
        // SAFETY: the caller's arguments.
        let r = unsafe { accept_now(fd, addr, len, flags) };
        if r >= 0 {
            set_errno(saved);
            return r;
        }
        if !would_block(errno()) {
            return -1;
        }
        // Someone else took the connection: wait for the next one.
    }
}

/// libc's blocking `accept4`, except that an `EAGAIN` caused by another
/// thread's window (never a blocking listener's answer, unless its
/// `SO_RCVTIMEO` ran out) waits for the listener and tries again.
///
/// # Safety
/// libc's contract for `accept4`.
unsafe fn accept_blocking(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let deadline = socket_deadline(fd, Interest::Read);
    loop {
        // SAFETY: the caller's arguments.
        let r = unsafe { real::accept4(fd, addr, len, flags) };
        if r >= 0 || !would_block(errno()) || nonblocking_by_choice(fd) {
            return r;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return r; // the socket's own timeout: EAGAIN, as unpatched
        }
        let e = errno();
        if !block_until_ready(fd, Interest::Read, deadline) {
            set_errno(e);
            return r;
        }
    }
}

/// Hooked `accept(2)`: as [`accept4`] with no flags.
///
/// # Safety
/// libc's contract for `accept`.
#[unsafe(no_mangle)]
unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments; flags 0 is plain `accept`.
    unsafe { accept4(fd, addr, len, 0) }
}
