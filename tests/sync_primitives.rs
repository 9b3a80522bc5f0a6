//! `greenhouse::sync`: every primitive's blocking, timeout, kill and FIFO
//! behaviour, and no lost items under load.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::sync::{
    AsyncResult, BoundedSemaphore, Channel, Empty, Event, JoinableQueue, LifoQueue, Lock,
    PriorityQueue, Queue, RLock, Semaphore,
};
use greenhouse::{Error, Timeout, sleep, spawn, yield_now};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Spawns `n` greenlets that each call `f(i)` and log `i` when it returns,
/// one at a time (each starts after the previous one is parked).
fn in_order<F>(n: usize, f: F) -> (Rc<RefCell<Vec<usize>>>, Vec<greenhouse::JoinHandle<()>>)
where
    F: Fn(usize) + Clone + 'static,
{
    let log = Rc::new(RefCell::new(Vec::new()));
    let hs = (0..n)
        .map(|i| {
            let (f, log) = (f.clone(), log.clone());
            let h = spawn(move || {
                f(i);
                log.borrow_mut().push(i);
            });
            yield_now(); // let it reach its wait before the next one starts
            h
        })
        .collect();
    (log, hs)
}

// ---------------------------------------------------------------- Event

#[test]
fn event_wait_returns_when_set_and_at_once_when_already_set() {
    let e = Event::new();
    let e2 = e.clone();
    let h = spawn(move || e2.wait());
    yield_now();
    assert!(!h.is_ready());
    e.set();
    assert_eq!(h.join().unwrap(), Ok(()));
    assert!(e.is_set());
    assert_eq!(e.wait(), Ok(()));
    e.clear();
    assert!(!e.is_set());
    assert_eq!(e.wait_timeout(ms(5)), Ok(false));
}

#[test]
fn event_waiters_woken_by_set_return_true_even_if_cleared_before_they_run() {
    let e = Event::new();
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let e = e.clone();
            spawn(move || e.wait_timeout(Duration::from_secs(5)))
        })
        .collect();
    yield_now();
    e.set();
    e.clear();
    for h in hs {
        assert_eq!(h.join().unwrap(), Ok(true));
    }
}

#[test]
fn event_wait_under_timeout_and_with_nothing_to_set_it() {
    let e = Event::new();
    {
        let _t = Timeout::start(ms(5));
        assert_eq!(e.wait(), Err(Error::TimedOut));
    }
    assert_eq!(e.wait(), Err(Error::Deadlock));
}

#[test]
fn killing_an_event_waiter_leaves_others_waiting() {
    let e = Event::new();
    let (e1, e2) = (e.clone(), e.clone());
    let a = spawn(move || e1.wait());
    let b = spawn(move || e2.wait());
    yield_now();
    a.kill().unwrap();
    e.set();
    assert_eq!(a.join(), Err(Error::Killed));
    assert_eq!(b.join().unwrap(), Ok(()));
}

// ---------------------------------------------------------- AsyncResult

#[test]
fn async_result_reaches_every_waiter_and_is_set_once() {
    let r: AsyncResult<Result<String, String>> = AsyncResult::new();
    let hs: Vec<_> = (0..5)
        .map(|_| {
            let r = r.clone();
            spawn(move || r.get())
        })
        .collect();
    yield_now();
    assert!(!r.is_ready());
    r.set_error("no route".into()).unwrap();
    assert_eq!(
        r.set(Ok("late".into())),
        Err(Error::Invalid("the AsyncResult is already set"))
    );
    for h in hs {
        assert_eq!(h.join().unwrap(), Ok(Err("no route".to_string())));
    }
    assert_eq!(r.peek(), Some(Err("no route".to_string())));
}

#[test]
fn async_result_timeouts() {
    let r: AsyncResult<u8> = AsyncResult::new();
    assert_eq!(r.get_timeout(ms(5)), Err(Error::TimedOut));
    assert_eq!(r.wait_timeout(ms(5)), Ok(false));
    let r2 = r.clone();
    let _setter = greenhouse::spawn_later(ms(5), move || r2.set(9).unwrap());
    assert_eq!(r.get_timeout(Duration::from_secs(5)), Ok(9));
    assert_eq!(r.wait_timeout(ms(1)), Ok(true));
}

// ----------------------------------------------------------- Semaphores

#[test]
fn semaphore_wakes_waiters_in_fifo_order() {
    let s = Semaphore::new(0);
    let s2 = s.clone();
    let (log, hs) = in_order(5, move |_| s2.acquire().unwrap());
    for _ in 0..5 {
        s.release();
        yield_now();
    }
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 4]);
}

#[test]
fn semaphore_permits_are_not_taken_by_newcomers_while_others_wait() {
    let s = Semaphore::new(0);
    let s2 = s.clone();
    let waiter = spawn(move || s2.acquire());
    yield_now();
    s.release(); // handed to the waiter before it runs
    assert!(!s.try_acquire(), "a newcomer must not overtake the waiter");
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(s.available(), 0);
}

#[test]
fn a_killed_or_timed_out_semaphore_waiter_never_swallows_a_permit() {
    let s = Semaphore::new(0);
    let (s1, s2, s3) = (s.clone(), s.clone(), s.clone());
    let doomed = spawn(move || s1.acquire());
    let patient = spawn(move || s2.acquire());
    let hasty = spawn(move || s3.acquire_timeout(ms(1)));
    yield_now();
    assert_eq!(hasty.join().unwrap(), Ok(false));
    s.release(); // handed to `doomed`, which is killed before it runs
    doomed.kill().unwrap();
    // The permit went on to the next waiter.
    assert_eq!(patient.join().unwrap(), Ok(()));
    assert_eq!(s.available(), 0);
    s.release();
    assert_eq!(s.available(), 1);
}

#[test]
fn semaphore_bounds_concurrency_and_guards_release_on_kill() {
    let s = Semaphore::new(3);
    let inside = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let hs: Vec<_> = (0..20)
        .map(|_| {
            let (s, inside, peak) = (s.clone(), inside.clone(), peak.clone());
            spawn(move || {
                struct Inside(Rc<Cell<usize>>);
                impl Drop for Inside {
                    fn drop(&mut self) {
                        self.0.set(self.0.get() - 1);
                    }
                }
                let _permit = s.access().unwrap();
                inside.set(inside.get() + 1);
                let _inside = Inside(inside.clone());
                peak.set(peak.get().max(inside.get()));
                sleep(ms(1));
            })
        })
        .collect();
    yield_now();
    hs[0].kill().unwrap(); // holds a permit while sleeping: the guard returns it
    for h in hs.into_iter().skip(1) {
        h.join().unwrap();
    }
    assert_eq!(peak.get(), 3);
    assert_eq!(s.available(), 3);
}

#[test]
fn bounded_semaphore_refuses_over_release() {
    let s = BoundedSemaphore::new(2);
    assert_eq!(
        s.release(),
        Err(Error::Invalid(
            "BoundedSemaphore released more times than it was acquired"
        ))
    );
    s.acquire().unwrap();
    s.acquire().unwrap();
    assert!(s.is_locked());
    assert_eq!(s.acquire_timeout(ms(2)), Ok(false));
    s.release().unwrap();
    s.release().unwrap();
    assert!(s.release().is_err());
    assert_eq!(s.available(), 2);
}

// ---------------------------------------------------------------- Locks

#[test]
fn lock_excludes_serves_fifo_and_refuses_reentry() {
    let lock = Lock::new(Vec::new());
    let held = lock.lock().unwrap();
    assert!(matches!(lock.lock(), Err(Error::Invalid(_))));
    assert!(lock.try_lock().is_none());
    let l2 = lock.clone();
    let (_, hs) = in_order(4, move |i| l2.lock().unwrap().push(i));
    drop(held);
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(*lock.lock().unwrap(), [0, 1, 2, 3]);
    assert!(!lock.is_locked());
}

#[test]
fn a_lock_holder_killed_mid_section_releases_it() {
    let lock = Lock::new(0);
    let l1 = lock.clone();
    let holder = spawn(move || {
        let mut g = l1.lock().unwrap();
        *g += 1;
        sleep(Duration::from_secs(60));
    });
    yield_now();
    assert!(lock.is_locked());
    assert!(lock.lock_timeout(ms(2)).unwrap().is_none());
    holder.kill().unwrap();
    assert_eq!(*lock.lock_timeout(ms(100)).unwrap().unwrap(), 1);
}

#[test]
fn rlock_is_reentrant_for_its_holder_only() {
    let lock = RLock::new(Cell::new(0));
    let g1 = lock.lock().unwrap();
    let g2 = lock.lock().unwrap();
    g2.set(g2.get() + 1);
    assert_eq!(lock.depth(), 2);
    let l2 = lock.clone();
    let other = spawn(move || {
        let g = l2.lock().unwrap();
        g.set(g.get() + 10);
        g.get()
    });
    yield_now();
    assert!(!other.is_ready());
    drop(g2);
    yield_now();
    assert!(!other.is_ready(), "one level is still held");
    drop(g1);
    assert_eq!(other.join(), Ok(11));
    assert_eq!(lock.depth(), 0);
    assert!(lock.try_lock().is_some());
}

// ---------------------------------------------------------------- Queues

#[test]
fn queue_getters_are_served_in_fifo_order() {
    let q = Queue::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let q2 = q.clone();
    let g2 = got.clone();
    let (_, hs) = in_order(4, move |i| {
        let item: u32 = q2.get().unwrap();
        g2.borrow_mut().push((i, item));
    });
    for item in 10..14 {
        q.put(item).unwrap();
    }
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(*got.borrow(), [(0, 10), (1, 11), (2, 12), (3, 13)]);
}

#[test]
fn nowait_and_timeouts_give_the_item_back() {
    let q = Queue::bounded(1);
    assert_eq!(q.get_nowait(), Err(Empty));
    q.put_nowait("a").unwrap();
    assert!(q.is_full());
    assert_eq!(q.put_nowait("b").unwrap_err().0, "b");
    let e = q.put_timeout("c", ms(2)).unwrap_err();
    assert_eq!((e.item, e.error), ("c", Error::TimedOut));
    assert_eq!(q.get_nowait(), Ok("a"));
    assert_eq!(q.get_timeout(ms(2)), Err(Error::TimedOut));
    assert_eq!(q.get(), Err(Error::Deadlock));
}

#[test]
fn blocked_putters_are_served_fifo_and_refill_the_queue() {
    let q = Queue::bounded(1);
    q.put(0).unwrap();
    let q2 = q.clone();
    let (_, hs) = in_order(3, move |i| q2.put(i + 1).unwrap());
    // A newcomer cannot slip in while putters wait.
    assert!(q.put_nowait(99).is_err());
    let got: Vec<usize> = (0..4).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, [0, 1, 2, 3]);
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn an_item_handed_to_a_getter_that_is_killed_goes_to_the_next_getter() {
    let q = Queue::new();
    let (q1, q2) = (q.clone(), q.clone());
    let doomed = spawn(move || q1.get());
    let next = spawn(move || q2.get());
    yield_now();
    q.put("only").unwrap(); // handed to `doomed`
    doomed.kill().unwrap();
    assert_eq!(next.join().unwrap(), Ok("only"));
}

#[test]
fn an_item_handed_to_a_getter_that_is_killed_stays_in_the_queue() {
    let q = Queue::new();
    let q1 = q.clone();
    let doomed = spawn(move || q1.get());
    yield_now();
    q.put(1).unwrap();
    q.put(2).unwrap(); // no getter left: buffered
    doomed.kill().unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q.get_nowait(), Ok(1), "the returned item keeps its place");
    assert_eq!(q.get_nowait(), Ok(2));
}

#[test]
fn a_timed_out_getter_is_skipped() {
    let q = Queue::new();
    let (q1, q2) = (q.clone(), q.clone());
    let hasty = spawn(move || q1.get_timeout(ms(1)));
    let patient = spawn(move || q2.get());
    yield_now();
    assert_eq!(hasty.join().unwrap(), Err(Error::TimedOut));
    q.put(5).unwrap();
    assert_eq!(patient.join().unwrap(), Ok(5));
}

#[test]
fn ten_thousand_producers_and_consumers_on_one_bounded_queue_lose_nothing() {
    const N: usize = 10_000;
    let q = Queue::bounded(16);
    let consumed = Rc::new(RefCell::new(Vec::with_capacity(N)));
    let mut hs = Vec::new();
    for i in 0..N {
        let (qc, qp, c) = (q.clone(), q.clone(), consumed.clone());
        hs.push(spawn(move || {
            // Some consumers give up and retry, some time out: still nothing
            // may be lost or duplicated.
            loop {
                match qc.get_timeout(ms(if i % 7 == 0 { 1 } else { 1000 })) {
                    Ok(item) => break c.borrow_mut().push(item),
                    Err(Error::TimedOut) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
        hs.push(spawn(move || {
            if i % 3 == 0 {
                yield_now();
            }
            qp.put(i).unwrap();
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    let got = consumed.borrow();
    assert_eq!(got.len(), N);
    assert_eq!(got.iter().copied().collect::<HashSet<_>>().len(), N);
    assert!(q.is_empty());
}

#[test]
fn lifo_and_priority_orders() {
    let l = LifoQueue::new();
    let p = PriorityQueue::bounded(10);
    for i in [3, 1, 4, 1, 5] {
        l.put(i).unwrap();
        p.put(i).unwrap();
    }
    let lifo: Vec<i32> = (0..5).map(|_| l.get().unwrap()).collect();
    let prio: Vec<i32> = (0..5).map(|_| p.get().unwrap()).collect();
    assert_eq!(lifo, [5, 1, 4, 1, 3]);
    assert_eq!(prio, [1, 1, 3, 4, 5]);
}

#[test]
fn joinable_queue_join_waits_for_every_task_done() {
    let q = JoinableQueue::new();
    let done = Rc::new(Cell::new(0));
    for w in 0..3u64 {
        let (q, done) = (q.clone(), done.clone());
        spawn(move || {
            while let Ok(ms_) = q.get() {
                sleep(ms(ms_ + w));
                done.set(done.get() + 1);
                q.task_done().unwrap();
            }
        });
    }
    for i in 0..9 {
        q.put(i % 3u64).unwrap();
    }
    assert_eq!(q.join_timeout(ms(0)), Ok(false));
    q.join().unwrap();
    assert_eq!(done.get(), 9);
    assert_eq!(q.unfinished(), 0);
    assert_eq!(
        q.task_done(),
        Err(Error::Invalid(
            "task_done called more times than items were put"
        ))
    );
}

#[test]
fn channel_put_waits_for_a_getter() {
    let ch = Channel::new();
    let ch2 = ch.clone();
    let put_returned = Rc::new(Cell::new(false));
    let pr = put_returned.clone();
    let putter = spawn(move || {
        ch2.put(7).unwrap();
        pr.set(true);
    });
    sleep(ms(5));
    assert!(!put_returned.get(), "put must wait for a get");
    assert_eq!(ch.len(), 0);
    assert_eq!(ch.get(), Ok(7));
    putter.join().unwrap();
    assert!(put_returned.get());
    let e = ch.put_timeout(8, ms(2)).unwrap_err();
    assert_eq!(e.item, 8);
}

#[test]
fn a_putter_killed_while_waiting_takes_its_item_with_it() {
    let ch = Channel::new();
    let ch2 = ch.clone();
    let putter = spawn(move || ch2.put(1));
    yield_now();
    putter.kill().unwrap();
    assert_eq!(ch.get_nowait(), Err(Empty));
}

#[test]
fn wait_on_a_set_event_lets_the_waiters_being_notified_run_first() {
    let e = Event::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..3)
        .map(|i| {
            let (e, log) = (e.clone(), log.clone());
            greenhouse::spawn(move || {
                e.wait().unwrap();
                log.borrow_mut().push(format!("w{i}"));
            })
        })
        .collect();
    greenhouse::yield_now(); // all three wait
    e.set();
    e.wait().unwrap(); // gevent: after the three being notified
    log.borrow_mut().push("main".into());
    assert_eq!(*log.borrow(), ["w0", "w1", "w2", "main"]);
    // Nobody being notified: a wait on the set event returns at once.
    let l = log.clone();
    let later = greenhouse::spawn(move || l.borrow_mut().push("later".into()));
    e.wait().unwrap();
    assert_eq!(log.borrow().last().unwrap(), "main", "did not yield");
    later.join().unwrap();
    greenhouse::joinall(hs);
}

#[test]
fn channel_put_lets_the_waiting_getter_run_with_the_item_first() {
    let ch = Channel::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (c2, l2) = (ch.clone(), log.clone());
    let getter = greenhouse::spawn(move || {
        let v: u32 = c2.get().unwrap();
        l2.borrow_mut().push(format!("got {v}"));
    });
    greenhouse::yield_now(); // the getter waits
    ch.put(1).unwrap();
    log.borrow_mut().push("put returned".into());
    assert_eq!(*log.borrow(), ["got 1", "put returned"]);
    getter.join().unwrap();
}
