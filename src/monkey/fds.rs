//! What the hooks remember about the fds they wait on, and the hooks that
//! keep it true: `close`, `dup2`, `dup3`, `close_range`, `fclose` (an fd
//! number closed or replaced) and `fcntl(F_SETFL)`, `ioctl(FIONBIO)`,
//! `setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)` (a file's blocking mode or
//! timeouts changed). As libgo does: bookkeeping only, each then calls
//! libc's own function with the caller's arguments.
//!
//! Two things are cached so that a patched call that would block costs what
//! greenhouse's own sockets cost (no system call beyond the transfer and
//! the hub's wait):
//!
//! - the reactor registration of the fd (one `epoll_ctl` to add it and one
//!   to delete it per wait otherwise), kept per hub by the reactor under
//!   the fd's **generation**: a process-wide counter per fd number that
//!   the close family bumps *before* closing, so a number reused for
//!   another file is always seen with a new generation (the kernel's own
//!   ordering of the close before the open that reuses the number carries
//!   the bump along);
//! - per thread, whether the code made the fd non-blocking and its socket
//!   timeouts (an `fcntl` and a `getsockopt` per wait otherwise), valid for
//!   the fd's generation and the process-wide **flags epoch**, which every
//!   `F_SETFL`, `FIONBIO` and timeout `setsockopt` bumps *after* the change
//!   (a reader that filled its cache from the old state tagged it with the
//!   old epoch). The epoch is process-wide, not per fd, because flags and
//!   timeouts belong to the open file, which `dup`s share under other
//!   numbers.
//!
//! What this cannot see (documented in the module docs of `monkey`): an fd
//! closed or changed by a raw system call that bypasses libc (rustix's
//! `linux_raw` backend, inline `syscall`), or by libc's own internal calls,
//! or a file's flags changed by another process sharing it. Code that does
//! so calls [`forget_fd`](super::forget_fd).
//!
//! `fcntl` and `ioctl` are variadic in C, and stable Rust cannot define a
//! variadic function. The hooks take the one optional argument as a fixed
//! `usize` and pass it on to libc's variadic function. This is sound on the
//! targets it is compiled for (see [`VARIADIC_HOOKS`]): there a variadic
//! caller passes its integer and pointer arguments in the same registers
//! (or stack slots) as for a fixed prototype, and a callee that reads one
//! more register than the caller set reads an unspecified value, which
//! libc ignores for the commands that take no argument.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use libc::{FILE, c_int, c_uint, c_ulong, c_void, socklen_t};

use super::real;
use crate::hub::Interest;

/// Whether the variadic `fcntl`/`ioctl` hooks exist on this target (see
/// the module docs): Linux on x86-64, AArch64 (AAPCS64, not Apple's
/// variant) and RISC-V 64, where variadic integer and pointer arguments
/// travel exactly as fixed ones. Elsewhere flags are never cached.
pub(super) const VARIADIC_HOOKS: bool = cfg!(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )
));

/// Fd numbers below this have a generation; the hooks' waits on higher
/// ones register for the wait only and read the flags every time.
const TABLE: usize = 1 << 20;

/// The generation of every fd number below [`TABLE`] (4 MiB of zeroed
/// memory; only the pages of numbers in use are ever touched).
static GENERATION: [AtomicU32; TABLE] = [const { AtomicU32::new(0) }; TABLE];

/// The highest fd number a generation was asked for: `close_range` need
/// not bump beyond it.
static HIGHEST: AtomicI32 = AtomicI32::new(-1);

/// Bumped after every change of a file's blocking mode or timeouts.
static EPOCH: AtomicU64 = AtomicU64::new(0);

pub(super) fn keep() {
    for f in [
        close as *const (),
        dup2 as *const (),
        dup3 as *const (),
        close_range as *const (),
        fclose as *const (),
        setsockopt as *const (),
    ] {
        super::keep_symbol(f);
    }
    variadic_targets! { variadic::keep(); }
}

/// `fd`'s generation: it changes whenever the number is closed or
/// replaced. `None` for numbers the table does not cover.
pub(super) fn generation(fd: RawFd) -> Option<u32> {
    let slot = GENERATION.get(usize::try_from(fd).ok()?)?;
    if HIGHEST.load(Ordering::Relaxed) < fd {
        HIGHEST.fetch_max(fd, Ordering::Relaxed);
    }
    Some(slot.load(Ordering::SeqCst))
}

/// Records that `fd` is about to be closed or replaced (see the module
/// docs: before the system call).
pub(super) fn forget(fd: RawFd) {
    if let Some(slot) = usize::try_from(fd).ok().and_then(|i| GENERATION.get(i)) {
        slot.fetch_add(1, Ordering::SeqCst);
    }
}

/// Records that some file's flags or timeouts changed (after the change).
fn flags_changed() {
    EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// What one thread knows about one fd, valid for `generation` and `epoch`.
#[derive(Clone, Copy)]
struct Known {
    generation: u32,
    epoch: u64,
    nonblocking: Option<bool>,
    /// The receive and send timeouts, once read.
    timeouts: [Option<Option<Duration>>; 2],
}

thread_local! {
    static KNOWN: RefCell<HashMap<RawFd, Known>> = RefCell::new(HashMap::new());
}

/// Runs `f` on what this thread knows about `fd` (reset if out of date);
/// `None` if it cannot be cached (a high fd, a target without the flags
/// hooks, or thread exit).
fn known<R>(fd: RawFd, f: impl FnOnce(&mut Known) -> R) -> Option<R> {
    if !VARIADIC_HOOKS {
        return None;
    }
    let generation = generation(fd)?;
    // Read before the caller's system call: a change racing with it bumps
    // the epoch after, so a value read from the old state is never kept.
    let epoch = EPOCH.load(Ordering::SeqCst);
    KNOWN
        .try_with(|k| {
            let mut k = k.borrow_mut();
            let e = k.entry(fd).or_insert(Known {
                generation,
                epoch,
                nonblocking: None,
                timeouts: [None; 2],
            });
            if e.generation != generation || e.epoch != epoch {
                *e = Known {
                    generation,
                    epoch,
                    nonblocking: None,
                    timeouts: [None; 2],
                };
            }
            f(e)
        })
        .ok()
}

/// The code made `fd` non-blocking itself (or it is not an fd at all): its
/// calls must not wait. Cached (see the module docs).
pub(super) fn nonblocking(fd: RawFd) -> bool {
    if let Some(Some(nb)) = known(fd, |k| k.nonblocking) {
        return nb;
    }
    let epoch = EPOCH.load(Ordering::SeqCst);
    let nb = nonblocking_now(fd);
    if let Some(fl) = nb {
        let _ = known(fd, |k| {
            if k.epoch == epoch {
                k.nonblocking = Some(fl);
            }
        });
    }
    nb.unwrap_or(true)
}

/// Asks the kernel whether `fd` is non-blocking; `None` if it is no fd.
pub(super) fn nonblocking_now(fd: RawFd) -> Option<bool> {
    // SAFETY: F_GETFL takes no argument and only reads the fd's flags.
    let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    (fl >= 0).then_some(fl & libc::O_NONBLOCK != 0)
}

/// `fd`'s `SO_RCVTIMEO` (for reads) or `SO_SNDTIMEO` (for writes), if it
/// is a socket with one set. Cached (see the module docs).
pub(super) fn socket_timeout(fd: RawFd, interest: Interest) -> Option<Duration> {
    let i = match interest {
        Interest::Read => 0,
        Interest::Write => 1,
    };
    if let Some(Some(t)) = known(fd, |k| k.timeouts[i]) {
        return t;
    }
    let epoch = EPOCH.load(Ordering::SeqCst);
    let t = socket_timeout_now(fd, interest);
    let _ = known(fd, |k| {
        if k.epoch == epoch {
            k.timeouts[i] = Some(t);
        }
    });
    t
}

/// Asks the kernel for `fd`'s socket timeout in the `interest` direction.
fn socket_timeout_now(fd: RawFd, interest: Interest) -> Option<Duration> {
    let opt = match interest {
        Interest::Read => libc::SO_RCVTIMEO,
        Interest::Write => libc::SO_SNDTIMEO,
    };
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = size_of::<libc::timeval>() as socklen_t;
    // SAFETY: `tv` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&raw mut tv).cast(),
            &raw mut len,
        )
    };
    if r != 0 || (tv.tv_sec <= 0 && tv.tv_usec <= 0) {
        return None;
    }
    Some(Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64))
}

/// Hooked `close(2)`: the fd's generation moves on, then libc closes it.
///
/// # Safety
/// libc's contract for `close`.
#[unsafe(no_mangle)]
unsafe extern "C" fn close(fd: c_int) -> c_int {
    forget(fd);
    // SAFETY: the caller's argument, unchanged.
    unsafe { real::close(fd) }
}

/// Hooked `dup2(2)`: `new` is closed and replaced (unless it is `old`).
///
/// # Safety
/// libc's contract for `dup2`.
#[unsafe(no_mangle)]
unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        forget(new);
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::dup2(old, new) }
}

/// Hooked `dup3(2)`: `new` is closed and replaced.
///
/// # Safety
/// libc's contract for `dup3`.
#[unsafe(no_mangle)]
unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    forget(new);
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::dup3(old, new, flags) }
}

/// Hooked `close_range(2)`: every number in the range the hooks have seen
/// moves on (none with `CLOSE_RANGE_CLOEXEC`, which closes nothing now).
///
/// # Safety
/// libc's contract for `close_range`.
#[unsafe(no_mangle)]
unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        let highest = HIGHEST.load(Ordering::SeqCst);
        if let Ok(highest) = c_uint::try_from(highest) {
            for fd in first..=last.min(highest) {
                forget(fd as RawFd);
            }
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::close_range(first, last, flags) }
}

/// Hooked `fclose(3)`: libc closes the stream's fd internally, where no
/// hook sees it.
///
/// # Safety
/// libc's contract for `fclose`.
#[unsafe(no_mangle)]
unsafe extern "C" fn fclose(stream: *mut FILE) -> c_int {
    if !stream.is_null() {
        // SAFETY: the caller passes an open stream (libc's contract).
        forget(unsafe { libc::fileno(stream) });
    }
    // SAFETY: the caller's argument, unchanged.
    unsafe { real::fclose(stream) }
}

/// Hooked `setsockopt(2)`: a socket timeout set anywhere moves the flags
/// epoch on, after the change.
///
/// # Safety
/// libc's contract for `setsockopt`.
#[unsafe(no_mangle)]
unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the caller's arguments, unchanged.
    let r = unsafe { real::setsockopt(fd, level, name, value, len) };
    // The old and new (64-bit time) option numbers alike.
    if level == libc::SOL_SOCKET && matches!(name, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO | 66 | 67)
    {
        flags_changed();
    }
    r
}

/// The hooks whose libc prototype is variadic, on the targets where
/// [`VARIADIC_HOOKS`] holds (module docs: a fixed `usize` optional
/// argument).
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )
))]
mod variadic {
    use super::*;

    /// Keeps these hooks linked (see `keep`).
    pub(super) fn keep() {
        for f in [fcntl as *const (), fcntl64 as *const (), ioctl as *const ()] {
            super::super::keep_symbol(f);
        }
    }

    /// Hooked `fcntl(2)`: `F_SETFL` moves the flags epoch on, after the
    /// change. The optional argument is a fixed `usize` (module docs).
    ///
    /// # Safety
    /// libc's contract for `fcntl`, on a target where [`VARIADIC_HOOKS`] holds.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
        // SAFETY: the caller's arguments, unchanged (module docs: the third
        // one as the caller passed it, or an ignored value).
        let r = unsafe { real::fcntl(fd, cmd, arg) };
        after_fcntl(cmd);
        r
    }

    /// Hooked `fcntl64`, the name C code built with 64-bit file offsets calls:
    /// as [`fcntl`].
    ///
    /// # Safety
    /// As `fcntl`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
        // SAFETY: as in `fcntl`.
        let r = unsafe { real::fcntl64(fd, cmd, arg) };
        after_fcntl(cmd);
        r
    }

    /// What `fcntl` and `fcntl64` note after the call.
    fn after_fcntl(cmd: c_int) {
        if cmd == libc::F_SETFL {
            flags_changed();
        }
    }

    /// Hooked `ioctl(2)`: `FIONBIO` (std's `set_nonblocking`) moves the flags
    /// epoch on, after the change. The optional argument is a fixed `usize`
    /// (module docs).
    ///
    /// # Safety
    /// libc's contract for `ioctl`, on a target where [`VARIADIC_HOOKS`] holds.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: usize) -> c_int {
        // SAFETY: as in `fcntl`.
        let r = unsafe { real::ioctl(fd, request, arg) };
        if request == libc::FIONBIO {
            flags_changed();
        }
        r
    }
}
