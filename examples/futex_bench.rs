//! What the futex hook costs and buys (issue 20): std `Mutex` + `Condvar`
//! handoffs between a greenlet and an OS thread, patched and unpatched,
//! against two OS threads doing the same; a handoff between two greenlets
//! of one hub (possible only patched); and the paths that must cost
//! nothing: an uncontended lock (std's, and C code's pthread mutex through
//! its hooks), a `FUTEX_WAKE` nobody waits for, and another system call
//! passing through the `syscall` hook.
//!
//! A handoff: one side sets the shared turn and notifies, the other waits
//! for it on the condvar and hands it back (a round trip = two handoffs).
//! Prints nanoseconds per round trip (or per call) and ratios, medians of
//! `--repeat` runs (default 5).
//!
//! ```sh
//! cargo run --release --features monkey --example futex_bench
//! ```

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const ROUND_TRIPS: u64 = 20_000;

/// The turn (who may go: `false` the first side, `true` the second) and
/// the round trips done.
type Shared = Arc<(Mutex<(bool, u64)>, Condvar)>;

/// Waits for `mine`, then hands the turn over; `n` times.
fn side(shared: &Shared, mine: bool, n: u64) {
    let (lock, cv) = &**shared;
    for _ in 0..n {
        let mut st = lock.lock().unwrap();
        while st.0 != mine {
            st = cv.wait(st).unwrap();
        }
        st.0 = !mine;
        st.1 += u64::from(mine);
        drop(st);
        cv.notify_one();
    }
}

fn shared() -> Shared {
    Arc::new((Mutex::new((false, 0)), Condvar::new()))
}

/// Two OS threads: the kernel's own handoff.
fn thread_thread() -> Duration {
    let s = shared();
    let t0 = Instant::now();
    let s2 = s.clone();
    let other = std::thread::spawn(move || side(&s2, true, ROUND_TRIPS));
    side(&s, false, ROUND_TRIPS);
    other.join().unwrap();
    assert_eq!(s.0.lock().unwrap().1, ROUND_TRIPS);
    t0.elapsed()
}

/// A greenlet (with a second greenlet ticking beside it, as a server's
/// others would) and an OS thread.
fn greenlet_thread() -> Duration {
    let s = shared();
    let s2 = s.clone();
    let t0 = Instant::now();
    let other = std::thread::spawn(move || side(&s2, true, ROUND_TRIPS));
    let s3 = s.clone();
    let g = greenhouse::spawn(move || side(&s3, false, ROUND_TRIPS));
    g.join().unwrap();
    other.join().unwrap();
    assert_eq!(s.0.lock().unwrap().1, ROUND_TRIPS);
    t0.elapsed()
}

/// Two greenlets of one hub: unpatched this deadlocks (the waiter blocks
/// the thread the other needs), so it is only measured patched.
fn greenlet_greenlet() -> Duration {
    let s = shared();
    let t0 = Instant::now();
    let (a, b) = (s.clone(), s.clone());
    let g1 = greenhouse::spawn(move || side(&a, true, ROUND_TRIPS));
    let g2 = greenhouse::spawn(move || side(&b, false, ROUND_TRIPS));
    g1.join().unwrap();
    g2.join().unwrap();
    assert_eq!(s.0.lock().unwrap().1, ROUND_TRIPS);
    t0.elapsed()
}

const CALLS: u32 = 2_000_000;

/// An uncontended lock and unlock in a greenlet: never reaches the kernel.
fn uncontended() -> Duration {
    let m = Mutex::new(0u64);
    let t0 = Instant::now();
    for _ in 0..CALLS {
        *std::hint::black_box(&m).lock().unwrap() += 1;
    }
    assert_eq!(*m.lock().unwrap(), u64::from(CALLS));
    t0.elapsed()
}

/// An uncontended pthread mutex lock and unlock (C code's), through the
/// hooks or through libc's own functions (found past them with `dlsym`).
fn pthread_uncontended(hooked: bool) -> Duration {
    type Op = unsafe extern "C" fn(*mut libc::pthread_mutex_t) -> libc::c_int;
    let (lock, unlock): (Op, Op) = if hooked {
        (libc::pthread_mutex_lock, libc::pthread_mutex_unlock)
    } else {
        let find = |name: &std::ffi::CStr| {
            // SAFETY: a NUL-terminated name; RTLD_NEXT from the executable
            // finds libc's definition, whose prototype is `Op`.
            unsafe {
                let f = libc::dlsym(libc::RTLD_NEXT, name.as_ptr());
                assert!(!f.is_null());
                std::mem::transmute::<*mut libc::c_void, Op>(f)
            }
        };
        (find(c"pthread_mutex_lock"), find(c"pthread_mutex_unlock"))
    };
    let m = std::cell::UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let t0 = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: an initialized mutex, locked then unlocked by this thread.
        unsafe {
            lock(m.get());
            unlock(m.get());
        }
    }
    t0.elapsed()
}

/// `FUTEX_WAKE` on a word nobody waits on, through the hook.
fn idle_wake() -> Duration {
    let word = std::sync::atomic::AtomicU32::new(0);
    let t0 = Instant::now();
    for _ in 0..CALLS / 10 {
        // SAFETY: a futex wake on a live, aligned word.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                &raw const word,
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
            );
        }
    }
    t0.elapsed() * 10
}

/// `getpid` through the `syscall` hook, and through libc's own `getpid`.
fn getpid_via_hook() -> Duration {
    let t0 = Instant::now();
    for _ in 0..CALLS / 10 {
        // SAFETY: getpid takes no arguments.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
    t0.elapsed() * 10
}

/// `getpid` through libc's own `syscall` (found past the hook with
/// `dlsym(RTLD_NEXT)`): what the same call costs unhooked.
fn getpid_unhooked() -> Duration {
    // SAFETY: a NUL-terminated name; RTLD_NEXT from the executable finds
    // libc's definition.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) };
    assert!(!f.is_null(), "libc has no syscall");
    // SAFETY: libc's `long syscall(long number, ...)`.
    let f: unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long =
        unsafe { std::mem::transmute(f) };
    let t0 = Instant::now();
    for _ in 0..CALLS / 10 {
        // SAFETY: getpid takes no arguments.
        std::hint::black_box(unsafe { f(libc::SYS_getpid) });
    }
    t0.elapsed() * 10
}

fn getpid_direct() -> Duration {
    let t0 = Instant::now();
    for _ in 0..CALLS / 10 {
        // SAFETY: getpid has no preconditions.
        std::hint::black_box(unsafe { libc::getpid() });
    }
    t0.elapsed() * 10
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let repeat: usize = std::env::args()
        .skip_while(|a| a != "--repeat")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(1);
    // Debug builds (`cargo test` runs examples) do less.
    let repeat = if cfg!(debug_assertions) { 1 } else { repeat };
    let mut rt: [Vec<Duration>; 4] = Default::default();
    let mut per_call: [Vec<Duration>; 8] = Default::default();
    // The unpatched runs block the hub on purpose: no detector reports.
    greenhouse::set_blocked_threshold(None);
    for _ in 0..repeat {
        rt[0].push(thread_thread());
        greenhouse::monkey::unpatch_all();
        rt[1].push(greenlet_thread());
        per_call[0].push(uncontended());
        greenhouse::monkey::patch_all();
        rt[2].push(greenlet_thread());
        rt[3].push(greenlet_greenlet());
        per_call[1].push(uncontended());
        per_call[2].push(idle_wake());
        per_call[3].push(getpid_via_hook());
        per_call[4].push(getpid_direct());
        per_call[5].push(getpid_unhooked());
        per_call[6].push(pthread_uncontended(true));
        per_call[7].push(pthread_uncontended(false));
    }
    let ns = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
    let rt: Vec<f64> = rt.into_iter().map(|v| ns(median(v), ROUND_TRIPS)).collect();
    let pc: Vec<f64> = per_call
        .into_iter()
        .map(|v| ns(median(v), u64::from(CALLS)))
        .collect();
    println!("std Mutex+Condvar round trip (median of {repeat}):");
    println!("  thread <-> thread            {:>9.0} ns", rt[0]);
    println!(
        "  greenlet <-> thread, before  {:>9.0} ns  ({:.2}x thread-thread; blocks the hub)",
        rt[1],
        rt[1] / rt[0]
    );
    println!(
        "  greenlet <-> thread, patched {:>9.0} ns  ({:.2}x thread-thread)",
        rt[2],
        rt[2] / rt[0]
    );
    println!(
        "  greenlet <-> greenlet, patched {:>7.0} ns  ({:.2}x thread-thread; deadlocks unpatched)",
        rt[3],
        rt[3] / rt[0]
    );
    println!("per call:");
    println!(
        "  uncontended lock+unlock: before {:.1} ns, patched {:.1} ns ({:.2}x)",
        pc[0],
        pc[1],
        pc[1] / pc[0]
    );
    println!(
        "  FUTEX_WAKE, nobody waiting, through the hook: {:.0} ns",
        pc[2]
    );
    println!(
        "  getpid: syscall() through the hook {:.0} ns, libc's syscall() {:.0} ns (hook {:+.1} ns), libc getpid() {:.0} ns",
        pc[3],
        pc[5],
        pc[3] - pc[5],
        pc[4]
    );
    println!(
        "  pthread_mutex_lock+unlock, uncontended: through the hooks {:.1} ns, libc's own {:.1} ns (hooks {:+.1} ns)",
        pc[6],
        pc[7],
        pc[6] - pc[7]
    );
}
