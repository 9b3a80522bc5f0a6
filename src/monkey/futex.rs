//! Futex waits: the `syscall` hook through which std's `Mutex`, `RwLock`,
//! `Condvar`, `Once` (and so `OnceLock`, `LazyLock`), `Barrier`, `mpsc`
//! channels and `thread::park` reach the kernel on Linux, and parking_lot
//! (which calls it the same way).
//!
//! # Waits
//!
//! A greenlet's `FUTEX_WAIT`/`FUTEX_WAIT_BITSET` on a private futex (what
//! std and parking_lot use) registers the greenlet against the futex word
//! in a process-wide registry, re-reads the word, and parks only if it
//! still holds the expected value, so that no wake-up is lost:
//!
//! - the waiter files its entry, then increments [`WAITERS`] and re-reads
//!   the word, both `SeqCst`;
//! - the waker (any thread: it changed the word before its `FUTEX_WAKE`)
//!   issues a `SeqCst` fence in the hook, then reads [`WAITERS`].
//!
//! Either the waiter sees the new value (and does not park), or the waker
//! sees the count and finds the entry. With no greenlet waiting anywhere,
//! a `FUTEX_WAKE` costs the fence and one load on top of the system call.
//!
//! A waker wakes up to the requested number of greenlets (oldest first,
//! matching bitsets) through their hubs — a ready-queue push on the same
//! hub, the hub's inbox and notify from another thread — and passes what
//! is left of the number to the kernel for OS threads. `FUTEX_REQUEUE`,
//! `FUTEX_CMP_REQUEUE` and `FUTEX_WAKE_OP` wake every greenlet waiting on
//! either word (spuriously; futex users re-check) and then go to the
//! kernel. Timeouts are the kernel's: relative for `FUTEX_WAIT`, absolute
//! on `CLOCK_MONOTONIC` (or `CLOCK_REALTIME` with `FUTEX_CLOCK_REALTIME`)
//! for `FUTEX_WAIT_BITSET`. Shared (non-private) futexes, invalid
//! arguments, waits outside greenlets and every other system call number
//! go to libc's `syscall` untouched.
//!
//! # Timeout and kill
//!
//! A futex caller retries whenever a wait ends early, so these rules keep
//! a greenlet from spinning and never leave it holding what it did not
//! get:
//!
//! - a wait **without** a timeout (`lock()`, `recv()`, `Condvar::wait`,
//!   `park()`) is not ended by an armed `Timeout`: std would only wait
//!   again. The scope fires at the greenlet's next greenhouse call;
//! - a wait **with** a timeout (`Condvar::wait_timeout`,
//!   `park_timeout`, `recv_timeout`) ends with `ETIMEDOUT` when an armed
//!   `Timeout` expires, so the std call returns as timed out. A std call
//!   that loops until its own deadline (`recv_timeout`,
//!   `wait_timeout_while`) then waits on for the rest of its own time
//!   (its next waits ignore a scope that has already fired);
//! - a kill ends the wait as a spurious wake-up. std re-checks and, for a
//!   lock, waits again until it gets it, so the greenlet returns from the
//!   std call normally (holding the guard it asked for), and
//!   `GreenletExit` is raised at its next greenhouse call, unwinding it
//!   and dropping the guard. A killed greenlet never ends holding a lock.
//!
//! # `thread::park`
//!
//! std's thread parker is one futex word per OS thread (`EMPTY`,
//! `PARKED`, `NOTIFIED`), and every greenlet of a thread shares it: a
//! channel's sender unparks *the thread*. So greenlets waiting on it are
//! woken all at once (each `unpark` is a spurious wake-up for all but
//! one, and std's waiters loop), and the hook keeps the word at `PARKED`
//! while any greenlet waits on it, so that every `unpark` reaches the
//! hook. It finds the word by unparking its own thread once and noting
//! which futex that wakes.
//!
//! One case stays invisible: between a woken greenlet leaving `park` and
//! its next switch, the word is not `PARKED`, and an `unpark` in that
//! window can be consumed by that same greenlet's next `park`. So when
//! greenlets of one thread wait on the parker together, each wait is also
//! ended by a poll (1 ms, doubling to 64 ms while nothing wakes it): a
//! spurious wake-up after which a waiter whose `unpark` was consumed sees
//! its condition. With one greenlet per thread in `park`, no poll runs.
//!
//! std's channels skip waiters of the sending thread when they pick whom
//! to wake (they assume one waiter per thread): a `std::sync::mpsc`
//! channel between two greenlets of one thread hangs the receiver. Use
//! [`sync::Queue`](crate::sync::Queue) there; std channels between
//! greenlets and OS threads work.
//!
//! # When nothing can wake a waiter
//!
//! A futex waiter keeps its hub waiting, as a [`HubHandle`](crate::HubHandle)
//! does: any thread might wake it. If nothing else can run and the hub's
//! thread is the only thread of the process, the hub reports
//! [`Deadlock`](crate::Error::Deadlock) to main; a futex wait that receives
//! it (main itself waiting on a lock) blocks in the kernel, as unpatched.
//!
//! # ABI
//!
//! `syscall` is variadic in C, and stable Rust cannot define a variadic
//! function. On x86-64 the hook is a few instructions of assembly: a
//! compare of the number, a tail jump to libc's `syscall` for any other
//! (the caller's registers and stack untouched, so other system calls
//! cost what they cost unhooked), and a jump to the futex code for
//! `SYS_futex`. That code, and the whole hook on the other targets, takes
//! the number and six argument words as fixed `usize`s, as `fcntl`'s hook
//! does (see `fds.rs`): on the targets it is
//! compiled for, a variadic caller passes its integer and pointer
//! arguments where a fixed prototype expects them (on x86-64 the sixth
//! word is the caller's first stack slot, which is part of its frame
//! whether or not it passed one), and a system call ignores the words past
//! its own arguments. libc's `syscall` is then called as the variadic
//! function it is.

use std::cell::{Cell, UnsafeCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use libc::{c_int, c_long, timespec};

use super::{Waited, cooperative, real, set_errno};
use crate::greenlet::{self, Woke};
use crate::hub::dump::WaitingOn;
use crate::hub::remote::{self, Remote};

pub(super) fn keep() {
    #[cfg(target_arch = "x86_64")]
    super::keep_symbol(futex_entry as *const ());
    #[cfg(not(target_arch = "x86_64"))]
    super::keep_symbol(syscall as *const ());
}

/// Greenlets registered in a futex wait, process-wide (see the module
/// docs for the pairing with the waker's fence).
static WAITERS: AtomicUsize = AtomicUsize::new(0);

/// The registry: waiting greenlets by futex word, in 64 shards.
static SHARDS: [SpinVec<Entry>; 64] = [const { SpinVec::new() }; 64];

/// The futex value of std's parker for a parked thread.
const PARKED: u32 = u32::MAX;
/// The futex value of std's parker holding an `unpark` token.
const NOTIFIED: u32 = 1;
/// The futex value of std's parker with neither.
const EMPTY: u32 = 0;

thread_local! {
    /// This thread's own futex work is under way (delivering wakes, or
    /// finding the parker): nested futex waits block, as unpatched.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    /// Finding the parker's word: the next `FUTEX_WAKE` names it.
    static PROBING: Cell<bool> = const { Cell::new(false) };
    /// The address of this thread's std parker word (0: not known yet).
    static PARKER: Cell<usize> = const { Cell::new(0) };
    /// A word found not to be the parker (not probed again for it).
    static NOT_PARKER: Cell<usize> = const { Cell::new(0) };
    /// Greenlets of this thread waiting on its parker word.
    static PARKED_HERE: Cell<usize> = const { Cell::new(0) };
}

/// One waiting greenlet.
struct Entry {
    addr: usize,
    bitset: u32,
    /// Waits on its thread's parker word: woken with every other waiter.
    parker: bool,
    remote: Arc<Remote>,
    key: u64,
}

/// A vector behind a spin lock (a futex-based lock here would call this
/// very hook): a shard of the registry, or `pthread.rs`'s table of
/// condition variables' clocks.
pub(super) struct SpinVec<T> {
    locked: AtomicBool,
    items: UnsafeCell<Vec<T>>,
}

// SAFETY: `items` is only touched with `locked` held (`SpinVec::with`),
// which orders every access; the items move between threads, so they must
// be `Send`.
unsafe impl<T: Send> Sync for SpinVec<T> {}

impl<T> SpinVec<T> {
    pub(super) const fn new() -> SpinVec<T> {
        SpinVec {
            locked: AtomicBool::new(false),
            items: UnsafeCell::new(Vec::new()),
        }
    }

    /// Runs `f` on the items with the lock held. `f` only moves items (it
    /// never parks, and panics only on allocation failure, which aborts).
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins % 64 == 0 {
                std::thread::yield_now(); // sched_yield: not hooked
            } else {
                std::hint::spin_loop();
            }
        }
        struct Unlock<'a>(&'a AtomicBool);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _unlock = Unlock(&self.locked);
        // SAFETY: the lock is held until `_unlock` drops, so this is the
        // only reference to the items.
        f(unsafe { &mut *self.items.get() })
    }
}

fn shard(addr: usize) -> &'static SpinVec<Entry> {
    &SHARDS[(addr >> 2).wrapping_mul(0x9E37_79B9) % SHARDS.len()]
}

/// Files a waiter; it counts in [`WAITERS`] until removed.
fn register(entry: Entry) {
    shard(entry.addr).with(|v| v.push(entry));
    WAITERS.fetch_add(1, Ordering::SeqCst);
}

/// Takes the waiter `key` of `remote` out again, unless a waker already
/// did. Returns whether it was still there.
fn unregister(addr: usize, remote: &Arc<Remote>, key: u64) -> bool {
    let removed = shard(addr).with(|v| {
        let at = v
            .iter()
            .position(|e| e.key == key && Arc::ptr_eq(&e.remote, remote))?;
        Some(v.remove(at))
    });
    match removed {
        Some(e) => {
            WAITERS.fetch_sub(1, Ordering::SeqCst);
            e.remote.release_futex();
            true
        }
        None => false,
    }
}

/// Wakes up to `n` greenlets waiting on `addr` with a bitset that meets
/// `bitset` (all of them if one waits on its thread's parker), oldest
/// first. Returns how many.
fn wake_greenlets(addr: usize, n: usize, bitset: u32) -> usize {
    let taken = shard(addr).with(|v| {
        let matching = |e: &Entry| e.addr == addr && e.bitset & bitset != 0;
        let n = if v.iter().any(|e| matching(e) && e.parker) {
            usize::MAX
        } else {
            n
        };
        let mut taken = Vec::new();
        let mut i = 0;
        while i < v.len() && taken.len() < n {
            if matching(&v[i]) {
                taken.push(v.remove(i));
            } else {
                i += 1;
            }
        }
        taken
    });
    let woken = taken.len();
    if woken > 0 {
        let was = IN_HOOK.with(|f| f.replace(true));
        for e in taken {
            WAITERS.fetch_sub(1, Ordering::SeqCst);
            // The wake is queued before the waiter stops counting as live,
            // so its hub never sees neither.
            remote::wake_from_anywhere(&e.remote, e.key);
            e.remote.release_futex();
        }
        IN_HOOK.with(|f| f.set(was));
    }
    woken
}

// Hooked `syscall(2)` on x86-64: a trampoline that sends `SYS_futex` to
// `futex_entry` and every other number straight on to libc's `syscall`
// with a tail jump (the caller's registers and stack arguments untouched:
// a compare, a load and two branches more than unhooked), or, before
// `patch_all` has looked libc's up, to `other_entry`.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".globl syscall",
    ".type syscall, @function",
    ".p2align 4",
    "syscall:",
    "cmp rdi, {futex_nr}",
    "je {futex}",
    "mov rax, qword ptr [rip + {real}]",
    "test rax, rax",
    "jz {other}",
    "jmp rax",
    ".size syscall, . - syscall",
    futex_nr = const libc::SYS_futex,
    futex = sym futex_entry,
    real = sym real::SYSCALL,
    other = sym other_entry,
);

/// Hooked `syscall(2)` elsewhere: futex operations as the module docs say;
/// every other number goes to libc's `syscall` with the caller's words.
///
/// # Safety
/// The contract of system call `number` for the words it takes.
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
unsafe extern "C" fn syscall(
    number: c_long,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> c_long {
    let a = [a1, a2, a3, a4, a5, a6];
    if number == libc::SYS_futex {
        // SAFETY: the caller's futex arguments, unchanged.
        return unsafe { futex(a) };
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::syscall(number, a) }
}

/// `syscall(SYS_futex, ...)`, from the x86-64 trampoline.
///
/// # Safety
/// The futex contract for the words it takes.
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn futex_entry(
    _number: c_long,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> c_long {
    // SAFETY: the caller's futex arguments, unchanged.
    unsafe { futex([a1, a2, a3, a4, a5, a6]) }
}

/// Any other number, from the x86-64 trampoline, before libc's `syscall`
/// was looked up.
///
/// # Safety
/// The contract of system call `number` for the words it takes.
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn other_entry(
    number: c_long,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> c_long {
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::syscall(number, [a1, a2, a3, a4, a5, a6]) }
}

/// The futex system call (`a`: uaddr, op, val, timeout or val2, uaddr2,
/// val3).
///
/// # Safety
/// The futex contract for `a`.
unsafe fn futex(a: [usize; 6]) -> c_long {
    let op = a[1] as c_int;
    let cmd = op & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
    match cmd {
        libc::FUTEX_WAKE | libc::FUTEX_WAKE_BITSET => {
            // SAFETY: the caller's arguments.
            return unsafe { wake(a, cmd) };
        }
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET
            if op & libc::FUTEX_PRIVATE_FLAG != 0 && cooperative() && !IN_HOOK.with(Cell::get) =>
        {
            // SAFETY: the caller's arguments.
            if let Some(r) = unsafe { wait(a, cmd, op) } {
                return r;
            }
        }
        libc::FUTEX_REQUEUE | libc::FUTEX_CMP_REQUEUE | libc::FUTEX_WAKE_OP => {
            fence(Ordering::SeqCst);
            if WAITERS.load(Ordering::SeqCst) > 0 {
                wake_greenlets(a[0], usize::MAX, !0);
                wake_greenlets(a[4], usize::MAX, !0);
            }
        }
        _ => {}
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real::syscall(libc::SYS_futex, a) }
}

/// `FUTEX_WAKE`/`FUTEX_WAKE_BITSET`: greenlets first, the rest of the
/// number to the kernel. Returns how many were woken in all.
///
/// # Safety
/// The futex contract for `a`.
unsafe fn wake(a: [usize; 6], cmd: c_int) -> c_long {
    if PROBING.with(Cell::get) {
        PARKER.with(|p| p.set(a[0]));
    }
    // Pairs with the waiter's registration (module docs).
    fence(Ordering::SeqCst);
    let bitset = if cmd == libc::FUTEX_WAKE_BITSET {
        a[5] as u32
    } else {
        !0
    };
    if WAITERS.load(Ordering::SeqCst) == 0 || bitset == 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::syscall(libc::SYS_futex, a) };
    }
    // The kernel wakes at least one for any count.
    let n = (a[2] as c_int).max(1) as usize;
    let woken = wake_greenlets(a[0], n, bitset);
    if woken >= n {
        return woken as c_long;
    }
    let mut rest = a;
    rest[2] = n - woken;
    // SAFETY: the caller's arguments with a smaller count.
    let r = unsafe { real::syscall(libc::SYS_futex, rest) };
    if r < 0 {
        if woken > 0 { woken as c_long } else { r }
    } else {
        r + woken as c_long
    }
}

/// When a wait with this timeout argument ends: `Some(None)` for never,
/// `None` if the timeout is invalid (the kernel reports it).
///
/// # Safety
/// `t` is null or points at a readable `timespec` (the futex contract).
unsafe fn deadline(cmd: c_int, op: c_int, t: *const timespec) -> Option<Option<Instant>> {
    if t.is_null() {
        return Some(None);
    }
    // SAFETY: non-null and readable (caller).
    let d = unsafe { super::sleep::duration(t) }?;
    let left = if cmd == libc::FUTEX_WAIT {
        d
    } else {
        let clock = if op & libc::FUTEX_CLOCK_REALTIME != 0 {
            libc::CLOCK_REALTIME
        } else {
            libc::CLOCK_MONOTONIC
        };
        super::sleep::until_absolute(clock, d)?
    };
    Some(Instant::now().checked_add(left))
}

/// Whether `addr` (a wait expecting `PARKED`) is this thread's parker
/// word; finds the word the first time (module docs).
fn is_parker(addr: usize) -> bool {
    let known = PARKER.with(Cell::get);
    if known != 0 || NOT_PARKER.with(Cell::get) == addr {
        return known == addr;
    }
    // Unparking this thread wakes its parker's word if some greenlet of it
    // is parked there (this one, if `addr` is it); otherwise it leaves a
    // token, which makes the thread's next `park` return at once: a
    // spurious wake-up, which `park` allows.
    PROBING.with(|p| p.set(true));
    std::thread::current().unpark();
    PROBING.with(|p| p.set(false));
    let found = PARKER.with(Cell::get);
    if found != addr {
        NOT_PARKER.with(|n| n.set(addr));
    }
    found == addr
}

/// A greenlet's futex wait; `None` to let libc's call do it (invalid
/// arguments, nothing else could run).
///
/// # Safety
/// The futex contract for `a`.
unsafe fn wait(a: [usize; 6], cmd: c_int, op: c_int) -> Option<c_long> {
    let addr = a[0];
    let bitset = if cmd == libc::FUTEX_WAIT_BITSET {
        a[5] as u32
    } else {
        !0
    };
    if addr == 0 || addr % 4 != 0 || bitset == 0 {
        return None; // EFAULT or EINVAL from the kernel
    }
    // SAFETY: the timeout argument of a wait (futex contract).
    let until = unsafe { deadline(cmd, op, a[3] as *const timespec) }?;
    let expected = a[2] as u32;
    // SAFETY: the caller hands the kernel this aligned word to read
    // atomically (the futex contract): it is a live 32-bit atomic for the
    // length of the call, which this wait is part of.
    let word = unsafe { &*(addr as *const AtomicU32) };
    let parker = expected == PARKED && is_parker(addr);
    if parker {
        // The word goes back to EMPTY while greenlets wait (module docs);
        // a token nobody saw wakes every waiter, and this one leaves
        // `park` through its own exit.
        let mut v = word.load(Ordering::SeqCst);
        loop {
            if v == NOTIFIED {
                wake_greenlets(addr, usize::MAX, !0);
                return Some(fail(libc::EAGAIN));
            }
            match word.compare_exchange(v, EMPTY, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
    }
    let (remote, waiter) = remote::futex_wait().ok()?;
    let key = waiter.key();
    register(Entry {
        addr,
        bitset,
        parker,
        remote: remote.clone(),
        key,
    });
    // Re-read after registering (module docs). The parker's word needs
    // none: an unpark from now on is seen by the hub (`idle`).
    if !parker && word.load(Ordering::SeqCst) != expected {
        unregister(addr, &remote, key);
        return Some(fail(libc::EAGAIN));
    }
    super::count_park();
    if parker && PARKED_HERE.with(|p| p.replace(p.get() + 1)) == 0 {
        crate::hub::with(|h| h.set_idle_hook(idle));
    }
    let poll_until = parker.then(|| {
        let n = greenlet::with_current(|c| c.ext.futex_polls.get());
        Instant::now() + Duration::from_millis(1 << n.min(8))
    });
    let park_until = match (until, poll_until) {
        (Some(u), Some(p)) => Some(u.min(p)),
        (u, p) => u.or(p),
    };
    let on = if parker {
        WaitingOn::Primitive("thread park")
    } else {
        WaitingOn::Primitive("futex")
    };
    let waited = super::guarded(|| {
        // A wait with a timeout ends when an armed Timeout expires, unless
        // the scope has fired already (std would then wait again at once).
        waiter.wait_as(park_until, honours_scope(until), on)
    })
    .map_or_else(|w| w, Waited::Woke);
    let was_filed = unregister(addr, &remote, key);
    drop(waiter);
    let by_poll = matches!(waited, Waited::Woke(Woke::Deadline))
        && poll_until.is_some()
        && until.is_none_or(|u| Instant::now() < u);
    if parker {
        PARKED_HERE.with(|p| p.set(p.get() - 1));
        greenlet::with_current(|c| {
            let n = &c.ext.futex_polls;
            n.set(if by_poll {
                n.get().saturating_add(1)
            } else {
                0
            });
        });
        // A token that came while greenlets ran is taken by this one's
        // exit from `park`: it may have been for another waiter.
        if word.load(Ordering::SeqCst) == NOTIFIED {
            wake_greenlets(addr, usize::MAX, !0);
        }
    }
    let r = match waited {
        Waited::Woke(Woke::Deadline) if !by_poll => Err(libc::ETIMEDOUT),
        Waited::Woke(Woke::TimedOut) => Err(libc::ETIMEDOUT),
        // Nothing else can ever run: block in the kernel, as unpatched.
        Waited::Woke(Woke::Deadlock) | Waited::Unsupported if was_filed => return None,
        // Woken, polled, killed (a spurious wake-up: module docs).
        _ => Ok(()),
    };
    if parker && r.is_ok() {
        // Leave `park` through its own exit: it takes this token.
        word.store(NOTIFIED, Ordering::SeqCst);
    }
    Some(match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    })
}

/// The hub's idle hook on a thread whose greenlets wait on its parker
/// word: while the hub blocks in its poller the word is `PARKED`, so an
/// `unpark` from another thread reaches the hook and wakes them; while
/// greenlets run it is `EMPTY` (so that their own `park` calls work), and
/// a token that came meanwhile wakes every waiter at the next tick.
fn idle(at: crate::hub::Idle) -> bool {
    let addr = PARKER.with(Cell::get);
    if addr == 0 || PARKED_HERE.with(Cell::get) == 0 {
        return true;
    }
    // SAFETY: the address of this thread's own parker word, found by
    // `is_parker`: std's thread record holds it for the thread's life.
    let word = unsafe { &*(addr as *const AtomicU32) };
    let took_token = match at {
        crate::hub::Idle::Sleep => word
            .compare_exchange(EMPTY, PARKED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err_and(|v| v == NOTIFIED && word.swap(EMPTY, Ordering::SeqCst) == NOTIFIED),
        crate::hub::Idle::Woke => word.swap(EMPTY, Ordering::SeqCst) == NOTIFIED,
        crate::hub::Idle::Tick => {
            word.load(Ordering::Relaxed) == NOTIFIED
                && word.swap(EMPTY, Ordering::SeqCst) == NOTIFIED
        }
    };
    if took_token {
        wake_greenlets(addr, usize::MAX, !0);
    }
    !(took_token && at == crate::hub::Idle::Sleep)
}

/// Whether a wait until `until` should end when an armed `Timeout`
/// expires: only a wait with a timeout of its own, and only while the
/// scope has not fired yet (its caller would otherwise retry at once).
fn honours_scope(until: Option<Instant>) -> bool {
    until.is_some()
        && greenlet::with_current(|c| {
            crate::hub::timeout::scope_deadline(c).is_some_and(|d| d > Instant::now())
        })
}

/// How [`wait_for`] ended.
pub(super) enum Gave<T> {
    /// `attempt` succeeded with this.
    Done(T),
    /// `until` passed, or an armed `Timeout` expired.
    TimedOut,
    /// Killed (only for a `killable` wait).
    Killed,
    /// Nothing else can run (or no hub): do the blocking call instead.
    Impossible,
}

/// For waits whose wake-up comes from a hooked call rather than the futex
/// system call (`pthread.rs`: a mutex unlock, a semaphore post, a
/// condition signal, each followed by [`wake_address`]): parks the current
/// greenlet, registered on `addr`, until `attempt` succeeds.
///
/// `attempt` runs before parking, again after registering (so a wake
/// between the two is never lost), and after every wake-up. A woken
/// waiter that leaves without success (timed out, killed) passes its
/// wake-up on to the next waiter.
pub(super) fn wait_for<T>(
    addr: usize,
    until: Option<Instant>,
    killable: bool,
    on: WaitingOn,
    mut attempt: impl FnMut() -> Option<T>,
) -> Gave<T> {
    loop {
        if let Some(v) = attempt() {
            return Gave::Done(v);
        }
        let Ok((remote, waiter)) = remote::futex_wait() else {
            return Gave::Impossible;
        };
        let key = waiter.key();
        register(Entry {
            addr,
            bitset: !0,
            parker: false,
            remote: remote.clone(),
            key,
        });
        if let Some(v) = attempt() {
            unregister(addr, &remote, key);
            return Gave::Done(v);
        }
        super::count_park();
        let waited = super::guarded(|| waiter.wait_as(until, honours_scope(until), on))
            .map_or_else(|w| w, Waited::Woke);
        let was_filed = unregister(addr, &remote, key);
        drop(waiter);
        let ended = match waited {
            Waited::Woke(Woke::Ready) => None,
            Waited::Killed if !killable => None,
            Waited::Killed => Some(Gave::Killed),
            Waited::Woke(Woke::Deadline | Woke::TimedOut) => Some(Gave::TimedOut),
            Waited::Woke(Woke::Deadlock) | Waited::Unsupported => Some(Gave::Impossible),
        };
        if let Some(gave) = ended {
            if !was_filed {
                // Woken, but leaving: the wake-up was someone's.
                wake_greenlets(addr, 1, !0);
            }
            return gave;
        }
    }
}

/// A wait that ends at the first wake-up (a condition variable's):
/// registers on `addr`, runs `then` (which lets the wake-up happen: the
/// mutex unlock; an error from it ends the wait at once, unparked), and
/// parks once. A kill is a spurious wake-up (`Done`).
pub(super) fn park_once<E>(
    addr: usize,
    until: Option<Instant>,
    on: WaitingOn,
    then: impl FnOnce() -> Result<(), E>,
) -> Result<Gave<()>, E> {
    let Ok((remote, waiter)) = remote::futex_wait() else {
        return Ok(Gave::Impossible);
    };
    let key = waiter.key();
    register(Entry {
        addr,
        bitset: !0,
        parker: false,
        remote: remote.clone(),
        key,
    });
    if let Err(e) = then() {
        unregister(addr, &remote, key);
        return Err(e);
    }
    super::count_park();
    let waited = super::guarded(|| waiter.wait_as(until, honours_scope(until), on))
        .map_or_else(|w| w, Waited::Woke);
    unregister(addr, &remote, key);
    Ok(match waited {
        Waited::Woke(Woke::Ready) | Waited::Killed => Gave::Done(()),
        Waited::Woke(Woke::Deadline | Woke::TimedOut) => Gave::TimedOut,
        Waited::Woke(Woke::Deadlock) | Waited::Unsupported => Gave::Impossible,
    })
}

/// Wakes up to `n` greenlets in [`wait_for`] on `addr` (after the hooked
/// call that may let them through); one fence and one load when no
/// greenlet waits anywhere.
pub(super) fn wake_address(addr: usize, n: usize) {
    fence(Ordering::SeqCst);
    if WAITERS.load(Ordering::SeqCst) > 0 {
        wake_greenlets(addr, n, !0);
    }
}

/// Whether nested calls must not park (the hooks' own work, see
/// [`IN_HOOK`]).
pub(super) fn in_hook() -> bool {
    IN_HOOK.with(Cell::get)
}

/// -1 with `errno` set to `e`.
fn fail(e: c_int) -> c_long {
    set_errno(e);
    -1
}
