//! Other threads and the hub: `HubHandle` handoffs and `spawn_blocking`.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use greenhouse::sync::Event;
use greenhouse::threadpool::{ThreadPool, spawn_blocking};
use greenhouse::{Error, HubHandle, Timeout};

thread_local! {
    static RAN: Cell<usize> = const { Cell::new(0) };
    static DONE: Event = Event::new();
}

#[test]
fn eight_threads_hand_over_ten_thousand_closures_and_none_is_lost() {
    const THREADS: usize = 8;
    const EACH: usize = 1250;
    let hub = HubHandle::current().unwrap();
    let seen = Arc::new(
        (0..THREADS * EACH)
            .map(|_| AtomicUsize::new(0))
            .collect::<Vec<_>>(),
    );
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let hub = hub.clone();
            let seen = seen.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for i in 0..EACH {
                    let seen = seen.clone();
                    let n = t * EACH + i;
                    hub.spawn(move || {
                        // Runs on the hub's thread, as a greenlet.
                        seen[n].fetch_add(1, Ordering::Relaxed);
                        let ran = RAN.with(|r| {
                            r.set(r.get() + 1);
                            r.get()
                        });
                        if ran == THREADS * EACH {
                            DONE.with(Event::set);
                        }
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    drop(hub);
    // Main parks in the hub; the hub sleeps in epoll until a thread
    // notifies it. When every handle is gone with work missing, this is a
    // Deadlock error rather than a hang.
    DONE.with(|d| d.wait()).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(RAN.with(Cell::get), THREADS * EACH);
    assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
}

#[test]
fn closures_run_in_handoff_order_as_greenlets() {
    let hub = HubHandle::current().unwrap();
    thread_local! {
        static ORDER: std::cell::RefCell<Vec<(u32, bool)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    std::thread::spawn(move || {
        for i in 0..100 {
            hub.spawn(move || {
                let in_greenlet = !greenhouse::current().is_main();
                ORDER.with(|o| o.borrow_mut().push((i, in_greenlet)));
            })
            .unwrap();
        }
    })
    .join()
    .unwrap();
    // Everything was handed over before the thread ended: one hub turn
    // runs it all.
    greenhouse::sleep(Duration::from_millis(1));
    let order = ORDER.with(|o| o.borrow().clone());
    assert_eq!(order, (0..100).map(|i| (i, true)).collect::<Vec<_>>());
}

#[test]
fn handoff_after_the_hub_thread_exited_is_an_error() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(HubHandle::current().unwrap()).unwrap();
    })
    .join()
    .unwrap();
    let hub = rx.recv().unwrap();
    assert!(hub.is_closed());
    assert_eq!(hub.spawn(|| {}).err(), Some(Error::HubClosed));
}

#[test]
fn waiting_with_no_handle_left_is_a_deadlock_not_a_hang() {
    let hub = HubHandle::current().unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(hub); // the last handle: the hub must notice and give up
    });
    let never = Event::new();
    assert_eq!(never.wait(), Err(Error::Deadlock));
    t.join().unwrap();
}

#[test]
fn spawn_blocking_runs_while_other_greenlets_make_progress() {
    // The ticker counts in an atomic that a blocking call (on a worker
    // thread) watches: it answers only after 5 ticks, which can only
    // happen if the hub keeps running greenlets meanwhile.
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = greenhouse::spawn(move || {
        loop {
            greenhouse::sleep(Duration::from_millis(1));
            t.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (tx, rx) = mpsc::channel::<()>();
    // Two blocking calls at once, each waiting for the other thread's
    // signal: only possible if they run on different workers while the hub
    // keeps going.
    let a = greenhouse::spawn(move || {
        spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)).is_ok())
    });
    let seen = ticks.clone();
    let b = greenhouse::spawn(move || {
        spawn_blocking(move || {
            let give_up = std::time::Instant::now() + Duration::from_secs(30);
            while seen.load(Ordering::SeqCst) < 5 {
                if std::time::Instant::now() > give_up {
                    return false; // the hub never ran the ticker
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.send(()).is_ok()
        })
    });
    assert_eq!(b.join().unwrap(), Ok(true), "the ticker ticked 5 times");
    assert_eq!(a.join().unwrap(), Ok(true));
    ticker.kill().unwrap();
}

#[test]
fn a_panic_in_a_blocking_call_comes_back_as_an_error() {
    let r: Result<(), Error> = spawn_blocking(|| panic!("disk on fire"));
    match r {
        Err(Error::Panicked(p)) => assert!(p.message().contains("disk on fire")),
        other => panic!("unexpected {other:?}"),
    }
    // The pool still works afterwards.
    assert_eq!(spawn_blocking(|| 7), Ok(7));
}

#[test]
fn a_timeout_interrupts_the_wait_and_the_pool_stays_usable() {
    let pool = ThreadPool::new(1);
    let t = Timeout::start(Duration::from_millis(20));
    let r = pool.spawn_blocking(|| std::thread::sleep(Duration::from_millis(200)));
    assert_eq!(r, Err(Error::TimedOut));
    assert!(t.fired());
    drop(t);
    // The single worker finishes the abandoned call first, then this one.
    assert_eq!(pool.spawn_blocking(|| 5), Ok(5));
    assert_eq!(pool.threads(), 1);
}

#[test]
fn killing_a_greenlet_in_spawn_blocking_unwinds_it() {
    let h = greenhouse::spawn(|| spawn_blocking(|| std::thread::sleep(Duration::from_millis(100))));
    greenhouse::yield_now();
    h.kill().unwrap();
    assert_eq!(h.join(), Err(Error::Killed));
}

#[test]
fn the_pool_bound_is_respected() {
    let pool = ThreadPool::new(3);
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..12)
        .map(|_| {
            let (pool, inside, peak) = (pool.clone(), inside.clone(), peak.clone());
            greenhouse::spawn(move || {
                pool.spawn_blocking(move || {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert!(pool.threads() <= 3);
}

#[test]
fn the_cross_thread_types_are_send_sync_and_clone() {
    fn cross_thread<T: Send + Sync + Clone + 'static>() {}
    cross_thread::<HubHandle>();
    cross_thread::<ThreadPool>();
}
