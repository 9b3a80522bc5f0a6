//! pthread waits that do not go through `syscall`: `pthread_join` (std's
//! `JoinHandle::join` of an OS thread, and C code's joins).
//!
//! Inside a greenlet the join runs on a helper thread (libc's own
//! `pthread_join`: any thread may join a joinable thread) while the
//! greenlet parks; the helper wakes it through its hub. The call cannot
//! fail half-way (std asserts that a join succeeds, and the helper writes
//! the thread's return value through the caller's pointer), so neither an
//! armed `Timeout` nor a kill ends it: both take effect at the greenlet's
//! next greenhouse call after the join, as for a futex wait without a
//! timeout (see `futex.rs`).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

use libc::{c_int, c_void, pthread_t};

use super::{cooperative, real};
use crate::hub::dump::WaitingOn;
use crate::hub::remote::remote_wait;
use crate::threadpool::ThreadPool;

pub(super) fn keep() {
    super::keep_symbol(pthread_join as *const ());
}

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
    // The pointer travels as an address: this call does not return before
    // the helper is done with it (the loop below).
    let retval_at = retval as usize;
    let job = Box::new(move || {
        // SAFETY: the caller's thread and return-value pointer; the caller
        // waits in this hook until the result is stored.
        let r = unsafe { real::pthread_join(thread, retval_at as *mut *mut c_void) };
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
            return r;
        }
        // A kill is kept for later by `guarded`; no scope applies.
        let _ = super::guarded(|| wait.wait_as(None, false, WaitingOn::Primitive("pthread_join")));
    }
}
