//! The cross-hub channel (`sync::mpmc`) and `HubHandle::submit`/`call`:
//! items between OS threads and hubs, none lost or duplicated while
//! receivers are killed, FIFO per producer, closing from either side, and
//! waits that park only their greenlet.

mod common;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use greenhouse::sync::mpmc::{self, TryRecvError, TrySendError};
use greenhouse::{Error, HubHandle, JoinHandle, sleep, spawn, yield_now};

const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 100_000;

/// Receivers on this thread's hub taking items into `seen` (one counter
/// per item), one of them killed and replaced every few milliseconds
/// until the channel closes. Returns how many were killed.
fn consume_with_kills(
    rx: mpmc::Receiver<usize>,
    seen: Arc<Vec<AtomicU8>>,
    receivers: usize,
) -> usize {
    let closed = Rc::new(Cell::new(false));
    let start = |rx: mpmc::Receiver<usize>, seen: Arc<Vec<AtomicU8>>, closed: Rc<Cell<bool>>| {
        spawn(move || {
            while let Ok(i) = rx.recv() {
                seen[i].fetch_add(1, Ordering::Relaxed);
                if i % 64 == 0 {
                    yield_now(); // let the others and the killer in
                }
            }
            closed.set(true);
        })
    };
    let mut live: Vec<JoinHandle<()>> = (0..receivers)
        .map(|_| start(rx.clone(), seen.clone(), closed.clone()))
        .collect();
    let mut killed = 0;
    let mut k = 0;
    while !closed.get() {
        sleep(Duration::from_millis(2));
        if closed.get() {
            break;
        }
        k = (k + 1) % live.len();
        let victim = std::mem::replace(
            &mut live[k],
            start(rx.clone(), seen.clone(), closed.clone()),
        );
        if victim.kill().is_ok() {
            killed += 1;
        }
    }
    drop(rx);
    for g in live {
        g.join().unwrap();
    }
    killed
}

fn many_producers_with_receivers_killed(capacity: Option<usize>) {
    let (tx, rx) = match capacity {
        Some(c) => mpmc::bounded(c),
        None => mpmc::unbounded(),
    };
    let seen: Arc<Vec<AtomicU8>> = Arc::new(
        (0..PRODUCERS * PER_PRODUCER)
            .map(|_| AtomicU8::new(0))
            .collect(),
    );
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    tx.send(p * PER_PRODUCER + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    // Receivers on a second hub (another thread) too, also being killed.
    let (rx2, seen2) = (rx.clone(), seen.clone());
    let other = thread::spawn(move || consume_with_kills(rx2, seen2, 3));
    let killed_here = consume_with_kills(rx, seen.clone(), 3);
    let killed_there = other.join().unwrap();
    for p in producers {
        p.join().unwrap();
    }
    let wrong: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].load(Ordering::Relaxed) != 1)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "items not received exactly once: {wrong:?} (first 5)"
    );
    assert!(killed_here + killed_there > 0, "no receiver was killed");
}

#[test]
fn unbounded_8_producers_x_100k_none_lost_or_duplicated_while_receivers_die() {
    many_producers_with_receivers_killed(None);
}

#[test]
fn bounded_8_producers_x_100k_none_lost_or_duplicated_while_receivers_die() {
    many_producers_with_receivers_killed(Some(64));
}

#[test]
fn items_of_one_producer_arrive_in_order() {
    let (tx, rx) = mpmc::bounded(16);
    let p = thread::spawn(move || {
        for i in 0..20_000u32 {
            tx.send(i).unwrap();
        }
    });
    let got: Vec<u32> = rx.iter().collect();
    assert_eq!(got, (0..20_000).collect::<Vec<_>>());
    p.join().unwrap();
}

#[test]
fn a_woken_receiver_killed_before_it_runs_passes_the_item_on() {
    let (tx, rx) = mpmc::unbounded::<u32>();
    let got = Rc::new(Cell::new(None));
    let (rx1, rx2, g2) = (rx.clone(), rx.clone(), got.clone());
    let first = spawn(move || rx1.recv());
    let mut second = spawn(move || g2.set(Some(rx2.recv().unwrap())));
    yield_now(); // both parked, `first` at the front of the line
    tx.send(7).unwrap(); // wakes `first` (queued, not run yet)
    first.kill().unwrap(); // dies without taking it
    // Without the hand-over `second` would sleep on with the item queued.
    second
        .join_timeout(Duration::from_secs(10))
        .expect("the woken receiver's item was never passed on");
    assert_eq!(got.get(), Some(7));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn closing_from_either_side() {
    // Senders gone: what is queued is still received, then Closed.
    let (tx, rx) = mpmc::unbounded();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    let waiting = {
        let rx = rx.clone();
        spawn(move || (rx.recv(), rx.recv(), rx.recv()))
    };
    yield_now();
    drop(tx);
    let (a, b, c) = waiting.join().unwrap();
    assert_eq!((a, b, c), (Ok(1), Ok(2), Err(Error::Closed)));
    assert!(rx.is_closed());
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));

    // Receivers gone: a sender waiting for room wakes with its item back.
    let (tx, rx) = mpmc::bounded(1);
    tx.send("kept").unwrap();
    let blocked = {
        let tx = tx.clone();
        spawn(move || tx.send("refused"))
    };
    yield_now(); // parked: the channel is full
    drop(rx);
    let e = blocked.join().unwrap().unwrap_err();
    assert_eq!((e.item, e.error), ("refused", Error::Closed));
    assert!(matches!(
        tx.try_send("late"),
        Err(TrySendError::Closed("late"))
    ));
}

#[test]
fn waits_time_out_and_park_only_their_greenlet() {
    let (tx, rx) = mpmc::bounded::<u8>(1);
    let ticker = common::Ticker::start(Duration::from_millis(1));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(30)),
        Err(Error::TimedOut)
    );
    tx.send(1).unwrap();
    let e = tx.send_timeout(2, Duration::from_millis(30)).unwrap_err();
    assert_eq!((e.item, e.error), (2, Error::TimedOut));
    // An armed Timeout scope interrupts a blocked send too.
    let r = greenhouse::with_timeout(Duration::from_millis(30), || {
        tx.send(3).map_err(|e| e.error)
    });
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(
        ticker.ticks() > 0,
        "the ticker never ran while the channel waited"
    );
    ticker.stop();
    // The timed-out waiters left no trace: the item is still the first.
    assert_eq!(rx.try_recv(), Ok(1));
}

/// A thread running a hub until told to stop; its handle.
fn hub_thread() -> (HubHandle, mpmc::Sender<()>, thread::JoinHandle<()>) {
    let (htx, hrx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpmc::bounded::<()>(1);
    let t = thread::spawn(move || {
        htx.send(HubHandle::current().unwrap()).unwrap();
        let _ = stop_rx.recv(); // runs the hub until stopped
    });
    (hrx.recv().unwrap(), stop_tx, t)
}

#[test]
fn call_runs_on_the_other_hub_and_parks_only_the_caller() {
    let (hub, stop, t) = hub_thread();
    let ticker = common::Ticker::start(Duration::from_millis(1));
    let me = thread::current().id();
    let there = hub
        .call(|| {
            sleep(Duration::from_millis(30)); // a greenlet over there
            thread::current().id()
        })
        .unwrap();
    assert_ne!(there, me);
    assert!(
        ticker.ticks() > 0,
        "the caller's hub stopped while it waited"
    );
    ticker.stop();

    // Many at once from greenlets here, each parked on its own.
    let done = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let (hub, done) = (HubHandle::clone(&hub), done.clone());
            spawn(move || {
                let r = hub.call(move || {
                    sleep(Duration::from_millis(5));
                    i * 2
                });
                done.fetch_add(1, Ordering::Relaxed);
                r
            })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), Ok(i * 2));
    }
    assert_eq!(done.load(Ordering::Relaxed), 100);

    // A panic over there is the caller's error; the hub lives on.
    let e = hub
        .call(|| -> u8 { panic!("boom over there") })
        .unwrap_err();
    assert!(
        matches!(&e, Error::Panicked(p) if p.message().contains("boom over there")),
        "{e:?}"
    );
    assert_eq!(hub.call(|| 5), Ok(5));

    drop(stop);
    t.join().unwrap();
    assert!(hub.is_closed());
    assert_eq!(hub.call(|| 1), Err(Error::HubClosed));
}

#[test]
fn a_submitted_job_killed_on_its_hub_reports_killed() {
    let (hub, stop, t) = hub_thread();
    // The job's greenlet ends as a kill does, by unwinding with
    // `GreenletExit` (here raised by itself).
    let job = hub
        .submit(|| -> u8 { std::panic::panic_any(greenhouse::GreenletExit) })
        .unwrap();
    assert_eq!(job.join(), Err(Error::Killed));
    drop(stop);
    t.join().unwrap();
}
