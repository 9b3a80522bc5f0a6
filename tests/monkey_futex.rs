//! std's blocking synchronization under monkey patching (issue 20): a
//! greenlet waiting on a `Mutex`, `Condvar`, channel, `Barrier`,
//! `OnceLock` or `thread::park` parks only itself, whoever wakes it (a
//! greenlet of the same hub or an OS thread). Counts and states only, no
//! wall-clock thresholds; a watchdog turns a hang (a wait that blocked the
//! thread) into a failure.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use common::Ticker;
use greenhouse::monkey::{parked_calls, patch_all};
use greenhouse::{Error, Timeout, joinall, sleep, spawn};

/// Patches, and aborts the process if the test binary runs for more than
/// three minutes.
fn setup() {
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(180));
            eprintln!("monkey_futex tests: still running after 180 s; a wait blocked its thread");
            std::process::abort();
        });
    });
    patch_all();
}

#[test]
fn a_std_mutex_held_across_a_greenhouse_sleep() {
    setup();
    let state = Arc::new(Mutex::new(Vec::new()));
    let (s1, s2) = (state.clone(), state.clone());
    let a = spawn(move || {
        let mut g = s1.lock().unwrap();
        g.push("a locked");
        sleep(Duration::from_millis(30)); // holds the guard while parked
        g.push("a unlocks");
    });
    let b = spawn(move || {
        let before = parked_calls();
        let mut g = s2.lock().unwrap(); // contended: parks this greenlet
        g.push("b locked");
        parked_calls() - before
    });
    a.join().unwrap();
    let b_parks = b.join().unwrap();
    assert!(b_parks >= 1, "b's lock() did not park");
    assert_eq!(
        *state.lock().unwrap(),
        ["a locked", "a unlocks", "b locked"]
    );
}

#[test]
fn greenlets_and_threads_increment_under_one_mutex() {
    setup();
    let total = Arc::new(Mutex::new(0u64));
    let ticker = Ticker::start(Duration::from_millis(1));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let total = total.clone();
            std::thread::spawn(move || {
                for _ in 0..1_000 {
                    *total.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    let greenlets: Vec<_> = (0..1_000)
        .map(|i| {
            let total = total.clone();
            spawn(move || {
                for j in 0..1_000 {
                    let mut g = total.lock().unwrap();
                    *g += 1;
                    if (i + j) % 97 == 0 {
                        // Sometimes hold it across a switch: others block.
                        greenhouse::yield_now();
                    }
                }
            })
        })
        .collect();
    for r in joinall(greenlets) {
        r.unwrap();
    }
    sleep(Duration::from_millis(5));
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*total.lock().unwrap(), 1_004_000);
    assert!(ticker.ticks() > 0, "the hub stopped while greenlets waited");
    ticker.stop();
}

#[test]
fn greenlets_receive_from_threads_through_mpsc() {
    setup();
    let ticker = Ticker::start(Duration::from_millis(5));
    let got = Rc::new(Cell::new(0u64));
    let sum = Rc::new(Cell::new(0u64));
    let mut senders = Vec::new();
    let receivers: Vec<_> = (0..100u64)
        .map(|i| {
            let (tx, rx) = mpsc::channel::<u64>();
            senders.push((i, tx));
            let (got, sum) = (got.clone(), sum.clone());
            spawn(move || {
                while let Ok(v) = rx.recv() {
                    got.set(got.get() + 1);
                    sum.set(sum.get() + v);
                }
            })
        })
        .collect();
    // Four threads feed 25 channels each, 50 items per channel, after a
    // pause in which every receiver is parked.
    let feeders: Vec<_> = senders
        .chunks(25)
        .map(|chunk| {
            let chunk: Vec<_> = chunk.to_vec();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                for k in 0..50u64 {
                    for (i, tx) in &chunk {
                        tx.send(i * 1_000 + k).unwrap();
                    }
                }
            })
        })
        .collect();
    drop(senders);
    for r in joinall(receivers) {
        r.unwrap();
    }
    for f in feeders {
        f.join().unwrap();
    }
    assert_eq!(got.get(), 100 * 50);
    let expected: u64 = (0..100u64)
        .map(|i| (0..50).map(|k| i * 1_000 + k).sum::<u64>())
        .sum();
    assert_eq!(sum.get(), expected);
    assert!(ticker.ticks() > 0, "the hub stopped during the receives");
    ticker.stop();
}

#[test]
fn sync_channel_rendezvous_between_a_greenlet_and_a_thread() {
    setup();
    let (to_thread, from_greenlet) = mpsc::sync_channel::<u32>(0);
    let (to_greenlet, from_thread) = mpsc::sync_channel::<u32>(0);
    let thread = std::thread::spawn(move || {
        for _ in 0..200 {
            let v = from_greenlet.recv().unwrap();
            to_greenlet.send(v + 1).unwrap();
        }
    });
    let ticker = Ticker::start(Duration::from_millis(1));
    let g = spawn(move || {
        let mut v = 0;
        for _ in 0..200 {
            to_thread.send(v).unwrap(); // blocks until the thread takes it
            v = from_thread.recv().unwrap();
        }
        v
    });
    assert_eq!(g.join().unwrap(), 200);
    thread.join().unwrap();
    ticker.stop();
}

#[test]
fn a_condvar_notified_from_a_thread() {
    setup();
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p = pair.clone();
    let ticker = Ticker::start(Duration::from_millis(2));
    let waiter = spawn(move || {
        let (lock, cv) = &*p;
        let mut ready = lock.lock().unwrap();
        while !*ready {
            ready = cv.wait(ready).unwrap();
        }
    });
    let p = pair.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        *p.0.lock().unwrap() = true;
        p.1.notify_all();
    });
    waiter.join().unwrap();
    t.join().unwrap();
    assert!(ticker.ticks() > 0, "the hub stopped during Condvar::wait");
    ticker.stop();
}

#[test]
fn condvar_wait_timeout_ends_at_its_timeout_and_at_a_greenhouse_timeout() {
    setup();
    let pair = Arc::new((Mutex::new(()), Condvar::new()));
    let p = pair.clone();
    let ticker = Ticker::start(Duration::from_millis(2));
    let own = spawn(move || {
        let g = p.0.lock().unwrap();
        let (_g, r) = p.1.wait_timeout(g, Duration::from_millis(30)).unwrap();
        r.timed_out()
    });
    assert!(own.join().unwrap());
    let p = pair.clone();
    let scoped = spawn(move || {
        let t = Timeout::start(Duration::from_millis(20));
        let g = p.0.lock().unwrap();
        let (_g, r) = p.1.wait_timeout(g, Duration::from_secs(60)).unwrap();
        (r.timed_out(), t.fired())
    });
    let (timed_out, fired) = scoped.join().unwrap();
    assert!(timed_out, "the Timeout did not end wait_timeout");
    assert!(fired, "the scope does not know it fired");
    assert!(ticker.ticks() > 0);
    ticker.stop();
}

#[test]
fn park_and_unpark_across_threads() {
    setup();
    let ticker = Ticker::start(Duration::from_millis(2));
    let (tx, rx) = mpsc::channel();
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let g = spawn(move || {
        tx.send(std::thread::current()).unwrap();
        while !f.load(Ordering::Acquire) {
            std::thread::park();
        }
    });
    let f = flag.clone();
    let t = std::thread::spawn(move || {
        let hub_thread: std::thread::Thread = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(40));
        f.store(true, Ordering::Release);
        hub_thread.unpark();
    });
    g.join().unwrap();
    t.join().unwrap();
    assert!(ticker.ticks() > 0, "the hub stopped during park()");
    ticker.stop();
}

#[test]
fn many_greenlets_park_on_one_thread_and_threads_unpark_them() {
    setup();
    // 50 greenlets each wait for their own flag in `park()`: every unpark
    // of the thread is for one of them, the rest wake spuriously.
    let flags: Arc<Vec<AtomicBool>> = Arc::new((0..50).map(|_| AtomicBool::new(false)).collect());
    let done = Rc::new(Cell::new(0));
    let greenlets: Vec<_> = (0..50)
        .map(|i| {
            let (flags, done) = (flags.clone(), done.clone());
            spawn(move || {
                while !flags[i].load(Ordering::Acquire) {
                    std::thread::park();
                }
                done.set(done.get() + 1);
            })
        })
        .collect();
    greenhouse::yield_now(); // all parked
    let me = std::thread::current();
    let f = flags.clone();
    let t = std::thread::spawn(move || {
        for (i, flag) in f.iter().enumerate() {
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            flag.store(true, Ordering::Release);
            me.unpark();
        }
    });
    for r in joinall(greenlets) {
        r.unwrap();
    }
    t.join().unwrap();
    assert_eq!(done.get(), 50);
}

#[test]
fn a_barrier_of_greenlets_and_threads() {
    setup();
    let barrier = Arc::new(Barrier::new(6));
    let passed = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (b, p) = (barrier.clone(), passed.clone());
            std::thread::spawn(move || {
                b.wait();
                p.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let greenlets: Vec<_> = (0..3)
        .map(|_| {
            let (b, p) = (barrier.clone(), passed.clone());
            spawn(move || {
                b.wait();
                p.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for r in joinall(greenlets) {
        r.unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(passed.load(Ordering::SeqCst), 6);
}

#[test]
fn a_once_lock_raced_by_a_greenlet_and_a_thread() {
    setup();
    let cell: Arc<OnceLock<u32>> = Arc::new(OnceLock::new());
    let inits = Arc::new(AtomicUsize::new(0));
    let (c, n) = (cell.clone(), inits.clone());
    // The greenlet initializes slowly (a greenhouse sleep inside the
    // initializer); the thread and a second greenlet wait for it.
    let slow = spawn(move || {
        *c.get_or_init(|| {
            n.fetch_add(1, Ordering::SeqCst);
            sleep(Duration::from_millis(40));
            7
        })
    });
    greenhouse::yield_now();
    let (c, n) = (cell.clone(), inits.clone());
    let t = std::thread::spawn(move || {
        *c.get_or_init(|| {
            n.fetch_add(1, Ordering::SeqCst);
            8
        })
    });
    let (c, n) = (cell.clone(), inits.clone());
    let other = spawn(move || {
        *c.get_or_init(|| {
            n.fetch_add(1, Ordering::SeqCst);
            9
        })
    });
    assert_eq!(slow.join().unwrap(), 7);
    assert_eq!(other.join().unwrap(), 7);
    assert_eq!(t.join().unwrap(), 7);
    assert_eq!(inits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_killed_lock_waiter_gets_the_lock_then_dies_without_it() {
    setup();
    let m = Arc::new(Mutex::new(0));
    let m1 = m.clone();
    let holder = spawn(move || {
        let mut g = m1.lock().unwrap();
        sleep(Duration::from_millis(40));
        *g += 1;
    });
    greenhouse::yield_now();
    let m2 = m.clone();
    let got = Rc::new(Cell::new(false));
    let g2 = got.clone();
    let waiter = spawn(move || {
        let mut g = m2.lock().unwrap(); // killed while waiting here
        *g += 10;
        g2.set(true);
        sleep(Duration::from_secs(60)); // GreenletExit raised here
        *g += 100;
    });
    greenhouse::yield_now();
    waiter.kill().unwrap();
    assert_eq!(waiter.join().unwrap_err(), Error::Killed);
    holder.join().unwrap();
    assert!(got.get(), "the waiter returned from lock() before dying");
    // Its guard was dropped by the unwind: the lock is free, not poisoned
    // (GreenletExit is not a panic of the guarded section... it is: std
    // poisons on any unwind).
    let v = match m.try_lock() {
        Ok(g) => *g,
        Err(std::sync::TryLockError::Poisoned(p)) => *p.into_inner(),
        Err(e) => panic!("the lock is still held: {e:?}"),
    };
    assert_eq!(v, 11);
}

#[test]
fn a_timeout_does_not_end_an_untimed_lock_wait() {
    setup();
    let m = Arc::new(Mutex::new(()));
    let m1 = m.clone();
    let holder = spawn(move || {
        let _g = m1.lock().unwrap();
        sleep(Duration::from_millis(60));
    });
    greenhouse::yield_now();
    let m2 = m.clone();
    let waiter = spawn(move || {
        let t = Timeout::start(Duration::from_millis(10));
        let started = Instant::now();
        let g = m2.lock().unwrap(); // outlives the scope
        drop(g);
        let fired_in_lock = t.fired();
        sleep(Duration::from_secs(5)); // the scope ends this at once
        (
            fired_in_lock,
            t.fired(),
            started.elapsed() < Duration::from_secs(5),
        )
    });
    assert_eq!(waiter.join().unwrap(), (false, true, true));
    holder.join().unwrap();
}

#[test]
fn joining_an_os_thread_parks_only_the_greenlet() {
    setup();
    let ticker = Ticker::start(Duration::from_millis(2));
    let t = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(50));
        41
    });
    let g = spawn(move || t.join().unwrap() + 1);
    assert_eq!(g.join().unwrap(), 42);
    assert!(
        ticker.ticks() > 0,
        "the hub stopped during JoinHandle::join"
    );
    // A panicking thread's join reports the panic, as unpatched.
    let t = std::thread::spawn(|| panic!("worker failed"));
    let g = spawn(move || t.join().is_err());
    assert!(g.join().unwrap());
    ticker.stop();
}

#[test]
fn a_killed_joiner_finishes_the_join_then_dies() {
    setup();
    let joined = Arc::new(AtomicBool::new(false));
    let j = joined.clone();
    let t = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(40)));
    let g = spawn(move || {
        t.join().unwrap(); // killed while waiting here
        j.store(true, Ordering::SeqCst);
        sleep(Duration::from_secs(60)); // GreenletExit raised here
    });
    greenhouse::yield_now();
    g.kill().unwrap();
    assert_eq!(g.join().unwrap_err(), Error::Killed);
    assert!(joined.load(Ordering::SeqCst), "the join was cut short");
}

// ---- C code's locks: glibc's pthread mutexes, conditions, semaphores ----

/// A pthread mutex, condition variable and counter, shared with threads.
struct PLock {
    mutex: std::cell::UnsafeCell<libc::pthread_mutex_t>,
    cond: std::cell::UnsafeCell<libc::pthread_cond_t>,
    value: std::cell::UnsafeCell<u64>,
}

// SAFETY: the pthread objects are made for sharing between threads, and
// `value` is only touched with the mutex held.
unsafe impl Sync for PLock {}
unsafe impl Send for PLock {}

impl PLock {
    fn new() -> Arc<PLock> {
        Arc::new(PLock {
            mutex: std::cell::UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
            cond: std::cell::UnsafeCell::new(libc::PTHREAD_COND_INITIALIZER),
            value: std::cell::UnsafeCell::new(0),
        })
    }

    fn lock(&self) {
        // SAFETY: an initialized mutex.
        assert_eq!(unsafe { libc::pthread_mutex_lock(self.mutex.get()) }, 0);
    }

    fn unlock(&self) {
        // SAFETY: locked by this thread.
        assert_eq!(unsafe { libc::pthread_mutex_unlock(self.mutex.get()) }, 0);
    }

    /// The value; call with the mutex held.
    fn get(&self) -> u64 {
        // SAFETY: the caller holds the mutex.
        unsafe { *self.value.get() }
    }

    /// Sets the value; call with the mutex held.
    fn set(&self, v: u64) {
        // SAFETY: the caller holds the mutex.
        unsafe { *self.value.get() = v }
    }

    /// Waits (mutex held) until the value reaches `at_least`; with a
    /// relative timeout, false if it passed first.
    fn wait_for(&self, at_least: u64, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid timespec to fill.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
            let total = now.tv_nsec as u128 + t.as_nanos();
            libc::timespec {
                tv_sec: now.tv_sec + (total / 1_000_000_000) as libc::time_t,
                tv_nsec: (total % 1_000_000_000) as libc::c_long,
            }
        });
        while self.get() < at_least {
            // SAFETY: initialized objects, the mutex held by this thread.
            let r = unsafe {
                match &deadline {
                    None => libc::pthread_cond_wait(self.cond.get(), self.mutex.get()),
                    Some(d) => libc::pthread_cond_timedwait(self.cond.get(), self.mutex.get(), d),
                }
            };
            if r == libc::ETIMEDOUT {
                return self.get() >= at_least;
            }
            assert_eq!(r, 0);
        }
        true
    }

    fn broadcast(&self) {
        // SAFETY: an initialized condition variable.
        unsafe { libc::pthread_cond_broadcast(self.cond.get()) };
    }
}

#[test]
fn a_pthread_mutex_held_across_a_sleep_and_shared_with_threads() {
    setup();
    let l = PLock::new();
    let ticker = Ticker::start(Duration::from_millis(1));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    l.lock();
                    l.set(l.get() + 1);
                    l.unlock();
                }
            })
        })
        .collect();
    let greenlets: Vec<_> = (0..100)
        .map(|i| {
            let l = l.clone();
            spawn(move || {
                for j in 0..200 {
                    l.lock();
                    l.set(l.get() + 1);
                    if (i + j) % 50 == 0 {
                        sleep(Duration::from_millis(1)); // parked, holding it
                    }
                    l.unlock();
                }
            })
        })
        .collect();
    for r in joinall(greenlets) {
        r.unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    l.lock();
    assert_eq!(l.get(), 4 * 2_000 + 100 * 200);
    l.unlock();
    assert!(
        ticker.ticks() > 0,
        "the hub stopped during pthread_mutex_lock"
    );
    ticker.stop();
}

#[test]
fn a_pthread_condition_signalled_by_a_thread_and_by_a_greenlet() {
    setup();
    let l = PLock::new();
    let ticker = Ticker::start(Duration::from_millis(2));
    // Ten greenlets wait for the value to reach 1, then 2.
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let l = l.clone();
            spawn(move || {
                l.lock();
                assert!(l.wait_for(1, None));
                l.unlock();
                l.lock();
                assert!(l.wait_for(2, None));
                l.unlock();
            })
        })
        .collect();
    // A thread makes it 1.
    let lt = l.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        lt.lock();
        lt.set(1);
        lt.unlock();
        lt.broadcast();
    });
    // A greenlet makes it 2 once it is 1.
    let lg = l.clone();
    let setter = spawn(move || {
        lg.lock();
        assert!(lg.wait_for(1, None));
        lg.set(2);
        lg.broadcast();
        lg.unlock();
    });
    for r in joinall(waiters) {
        r.unwrap();
    }
    setter.join().unwrap();
    t.join().unwrap();
    assert!(
        ticker.ticks() > 0,
        "the hub stopped during pthread_cond_wait"
    );
    // A timed wait nobody signals times out, and a Timeout ends it early.
    let lt = l.clone();
    let timed = spawn(move || {
        lt.lock();
        let own = lt.wait_for(3, Some(Duration::from_millis(20)));
        let t = Timeout::start(Duration::from_millis(20));
        let scoped = lt.wait_for(3, Some(Duration::from_secs(60)));
        lt.unlock();
        (own, scoped, t.fired())
    });
    assert_eq!(timed.join().unwrap(), (false, false, true));
    ticker.stop();
}

/// A POSIX semaphore shared with threads (never moved once made).
struct PSem(std::cell::UnsafeCell<libc::sem_t>);

// SAFETY: POSIX semaphores are made for sharing between threads.
unsafe impl Sync for PSem {}
unsafe impl Send for PSem {}

impl PSem {
    fn new() -> Arc<PSem> {
        // SAFETY: zeroed storage, initialized in place right after, before
        // any other use, and never moved (it lives in the Arc).
        let s = Arc::new(PSem(std::cell::UnsafeCell::new(unsafe {
            std::mem::zeroed()
        })));
        assert_eq!(unsafe { libc::sem_init(s.0.get(), 0, 0) }, 0);
        s
    }

    fn post(&self) {
        // SAFETY: an initialized semaphore.
        assert_eq!(unsafe { libc::sem_post(self.0.get()) }, 0);
    }

    /// `sem_wait`, or `sem_timedwait` for a relative timeout: 0 or errno.
    fn wait(&self, timeout: Option<Duration>) -> i32 {
        // SAFETY: an initialized semaphore and a valid timespec.
        let r = unsafe {
            match timeout {
                None => libc::sem_wait(self.0.get()),
                Some(t) => {
                    let mut now = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
                    let total = now.tv_nsec as u128 + t.as_nanos();
                    let at = libc::timespec {
                        tv_sec: now.tv_sec + (total / 1_000_000_000) as libc::time_t,
                        tv_nsec: (total % 1_000_000_000) as libc::c_long,
                    };
                    libc::sem_timedwait(self.0.get(), &at)
                }
            }
        };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    }
}

#[test]
fn a_semaphore_posted_by_threads_wakes_each_greenlet_once() {
    setup();
    let s = PSem::new();
    let ticker = Ticker::start(Duration::from_millis(2));
    let got = Rc::new(Cell::new(0));
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let (s, got) = (s.clone(), got.clone());
            spawn(move || {
                assert_eq!(s.wait(None), 0);
                got.set(got.get() + 1);
            })
        })
        .collect();
    let st = s.clone();
    let t = std::thread::spawn(move || {
        for i in 0..50 {
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            st.post();
        }
    });
    for r in joinall(waiters) {
        r.unwrap();
    }
    t.join().unwrap();
    assert_eq!(got.get(), 50);
    assert!(ticker.ticks() > 0, "the hub stopped during sem_wait");
    // Nothing left: a timed wait times out, a Timeout ends an untimed one
    // early only if it has a timeout of its own, and a kill is EINTR.
    let s2 = s.clone();
    assert_eq!(
        spawn(move || s2.wait(Some(Duration::from_millis(20))))
            .join()
            .unwrap(),
        libc::ETIMEDOUT
    );
    let s3 = s.clone();
    let killed = spawn(move || s3.wait(None));
    greenhouse::yield_now();
    killed.kill().unwrap();
    assert_eq!(killed.join().unwrap_err(), Error::Killed);
    // The kill took nothing: one post still wakes exactly one waiter.
    let s4 = s.clone();
    let last = spawn(move || s4.wait(None));
    greenhouse::yield_now();
    s.post();
    assert_eq!(last.join().unwrap(), 0);
    ticker.stop();
}

#[test]
fn an_rwlock_shared_by_greenlets_and_a_thread() {
    setup();
    let lock = Arc::new(std::sync::RwLock::new(0u64));
    let ticker = Ticker::start(Duration::from_millis(1));
    // A writer greenlet holds the lock across a sleep: readers park.
    let w = lock.clone();
    let writer = spawn(move || {
        let mut g = w.write().unwrap();
        sleep(Duration::from_millis(30));
        *g += 1;
    });
    greenhouse::yield_now();
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let r = lock.clone();
            spawn(move || *r.read().unwrap())
        })
        .collect();
    let t = lock.clone();
    let thread = std::thread::spawn(move || {
        for _ in 0..100 {
            *t.write().unwrap() += 1;
        }
    });
    writer.join().unwrap();
    for r in joinall(readers) {
        // Each reader saw the first writer's update, then maybe some of
        // the thread's.
        assert!((1..=101).contains(&r.unwrap()));
    }
    thread.join().unwrap();
    assert_eq!(*lock.read().unwrap(), 101);
    assert!(ticker.ticks() > 0, "the hub stopped during RwLock waits");
    ticker.stop();
}

#[test]
fn park_timeout_ends_at_a_timeout_and_a_killed_park_loop_dies_after_it() {
    setup();
    // A Timeout ends `park_timeout` (a wait with a timeout of its own).
    // `park_timeout` may also return spuriously (a parker wait is polled),
    // so it is called until the scope has fired.
    let g = spawn(|| {
        let t = Timeout::start(Duration::from_millis(20));
        let started = Instant::now();
        while !t.fired() && started.elapsed() < Duration::from_secs(60) {
            std::thread::park_timeout(Duration::from_secs(60));
        }
        (started.elapsed() < Duration::from_secs(60), t.fired())
    });
    assert_eq!(g.join().unwrap(), (true, true));
    // A kill wakes `park()`, whose loop waits on for its flag; the greenlet
    // dies at its next greenhouse call.
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let (tx, rx) = mpsc::channel();
    let parked = spawn(move || {
        tx.send(std::thread::current()).unwrap();
        while !f.load(Ordering::Acquire) {
            std::thread::park();
        }
        sleep(Duration::from_secs(60)); // GreenletExit raised here
    });
    greenhouse::yield_now();
    let me: std::thread::Thread = rx.recv().unwrap();
    parked.kill_nowait();
    greenhouse::yield_now(); // the kill lands: a spurious wake-up
    assert!(!parked.is_ready(), "the park loop ended before its flag");
    flag.store(true, Ordering::Release);
    me.unpark();
    assert_eq!(parked.join().unwrap_err(), Error::Killed);
}

#[test]
fn a_killed_barrier_waiter_passes_the_barrier_then_dies() {
    setup();
    let barrier = Arc::new(Barrier::new(2));
    let passed = Arc::new(AtomicBool::new(false));
    let (b, p) = (barrier.clone(), passed.clone());
    let g = spawn(move || {
        b.wait(); // killed while waiting here
        p.store(true, Ordering::SeqCst);
        sleep(Duration::from_secs(60)); // GreenletExit raised here
    });
    greenhouse::yield_now();
    g.kill_nowait(); // kill() would wait for it to die: it cannot yet
    greenhouse::yield_now();
    let b = barrier.clone();
    let t = std::thread::spawn(move || b.wait().is_leader());
    assert_eq!(g.join().unwrap_err(), Error::Killed);
    t.join().unwrap();
    assert!(passed.load(Ordering::SeqCst), "the barrier was not passed");
}

#[test]
fn a_timeout_does_not_end_a_once_lock_wait() {
    setup();
    let cell: Arc<OnceLock<u32>> = Arc::new(OnceLock::new());
    let c = cell.clone();
    let init = spawn(move || {
        *c.get_or_init(|| {
            sleep(Duration::from_millis(40));
            5
        })
    });
    greenhouse::yield_now();
    let c = cell.clone();
    let waiter = spawn(move || {
        let t = Timeout::start(Duration::from_millis(10));
        let v = *c.get_or_init(|| 6); // waits for the other initializer
        let fired_in_wait = t.fired();
        sleep(Duration::from_secs(5)); // the scope ends this at once
        (v, fired_in_wait, t.fired())
    });
    assert_eq!(init.join().unwrap(), 5);
    assert_eq!(waiter.join().unwrap(), (5, false, true));
}
