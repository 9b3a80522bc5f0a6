//! The async bridge: futures awaited from greenlets (`wait_future`), and
//! greenlets awaited from async code (`JoinHandle`, `RemoteTask`).
//! Every test runs on a fresh thread, so each has a hub of its own.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use greenhouse::{Error, HubHandle, Timeout, spawn, wait_future, wait_future_timeout};

fn on_fresh_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

/// Sets its flag when dropped: shows a future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A pending future that owns a `DropFlag` and keeps its waker (so the
/// hub does not report a deadlock while it waits).
fn pending_with_flag(dropped: Arc<AtomicBool>) -> impl Future<Output = ()> {
    let flag = DropFlag(dropped);
    let kept: Mutex<Option<Waker>> = Mutex::new(None);
    std::future::poll_fn(move |cx| {
        let _keep = &flag;
        *kept.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    })
}

#[test]
fn a_thousand_greenlets_await_oneshots_completed_from_another_thread() {
    const N: usize = 1000;
    on_fresh_thread(|| {
        let (senders_tx, senders_rx) = mpsc::channel();
        let done = Rc::new(Cell::new(0usize));
        let waiting = Rc::new(Cell::new(0usize));
        let greenlets: Vec<_> = (0..N)
            .map(|i| {
                let (tx, rx) = oneshot::channel::<usize>();
                senders_tx.send((i, tx)).unwrap();
                let (done, waiting) = (done.clone(), waiting.clone());
                spawn(move || {
                    waiting.set(waiting.get() + 1);
                    let v = wait_future(rx).unwrap().unwrap();
                    waiting.set(waiting.get() - 1);
                    assert_eq!(v, i * 2);
                    done.set(done.get() + 1);
                })
            })
            .collect();
        drop(senders_tx);
        // A ticker: the hub keeps running other greenlets meanwhile.
        let ticks = Rc::new(Cell::new(0u32));
        let t = ticks.clone();
        let all_done = done.clone();
        let ticker = spawn(move || {
            while all_done.get() < N {
                t.set(t.get() + 1);
                greenhouse::sleep(Duration::from_millis(1));
            }
        });
        // Let every greenlet park in its wait before the thread sends.
        greenhouse::sleep(Duration::from_millis(20));
        assert_eq!(waiting.get(), N, "every greenlet waits at once");
        let sender = std::thread::spawn(move || {
            // Out of order, from another thread.
            let mut all: Vec<_> = senders_rx.iter().collect();
            all.reverse();
            for (i, tx) in all {
                tx.send(i * 2).unwrap();
            }
        });
        greenhouse::joinall(greenlets);
        sender.join().unwrap();
        assert_eq!(done.get(), N);
        ticker.join().unwrap();
        assert!(ticks.get() > 0, "the ticker ticked while they waited");
    });
}

#[test]
fn a_kill_drops_the_pending_future_on_the_greenlets_stack() {
    on_fresh_thread(|| {
        let dropped = Arc::new(AtomicBool::new(false));
        let d = dropped.clone();
        let h = spawn(move || wait_future(pending_with_flag(d)));
        greenhouse::sleep(Duration::from_millis(5));
        assert!(!dropped.load(Ordering::SeqCst), "still waiting");
        h.kill().unwrap();
        assert!(
            dropped.load(Ordering::SeqCst),
            "the kill dropped the future"
        );
        assert_eq!(h.join().err(), Some(Error::Killed));
    });
}

#[test]
fn a_timeout_drops_the_pending_future() {
    on_fresh_thread(|| {
        let dropped = Arc::new(AtomicBool::new(false));
        let d = dropped.clone();
        let r = spawn(move || {
            let _t = Timeout::start(Duration::from_millis(10));
            wait_future(pending_with_flag(d))
        })
        .join()
        .unwrap();
        assert_eq!(r, Err(Error::TimedOut));
        assert!(dropped.load(Ordering::SeqCst));

        let dropped = Arc::new(AtomicBool::new(false));
        let r = wait_future_timeout(
            pending_with_flag(dropped.clone()),
            Duration::from_millis(10),
        );
        assert_eq!(r, Err(Error::TimedOut));
        assert!(dropped.load(Ordering::SeqCst));
    });
}

#[test]
fn a_future_woken_by_a_greenlet_of_the_same_hub() {
    on_fresh_thread(|| {
        let (tx, rx) = oneshot::channel::<&'static str>();
        let waiter = spawn(move || wait_future(rx));
        let _sender = spawn(move || {
            greenhouse::sleep(Duration::from_millis(2));
            tx.send("same hub").unwrap();
        });
        assert_eq!(waiter.join().unwrap(), Ok(Ok("same hub")));
    });
}

/// Wakes itself `n` times (a `yield_now` of async code), counting polls.
struct SelfWaking {
    left: u32,
    polls: Rc<Cell<u32>>,
}

impl Future for SelfWaking {
    type Output = u32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        self.polls.set(self.polls.get() + 1);
        if self.left == 0 {
            return Poll::Ready(self.polls.get());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn a_future_that_wakes_itself_lets_other_greenlets_run_between_polls() {
    on_fresh_thread(|| {
        let polls = Rc::new(Cell::new(0));
        let other_ran = Rc::new(Cell::new(0));
        let o = other_ran.clone();
        let other = spawn(move || {
            for _ in 0..5 {
                o.set(o.get() + 1);
                greenhouse::yield_now();
            }
        });
        let n = wait_future(SelfWaking {
            left: 5,
            polls: polls.clone(),
        })
        .unwrap();
        assert_eq!(n, 6);
        assert!(other_ran.get() >= 5, "the other greenlet ran in between");
        other.join().unwrap();
    });
}

#[test]
fn a_clone_woken_and_dropped_within_one_poll_is_not_lost() {
    on_fresh_thread(|| {
        let mut polls = 0;
        let fut = std::future::poll_fn(move |cx| {
            polls += 1;
            if polls < 3 {
                // Woken (by value) and gone before the poll returns.
                #[allow(clippy::waker_clone_wake)] // the clone is the point
                cx.waker().clone().wake();
                return Poll::Pending;
            }
            Poll::Ready(polls)
        });
        assert_eq!(wait_future(fut), Ok(3));
        // The same from another thread, within the poll.
        let mut polls = 0;
        let fut = std::future::poll_fn(move |cx| {
            polls += 1;
            if polls == 1 {
                let w = cx.waker().clone();
                std::thread::spawn(move || w.wake()).join().unwrap();
                return Poll::Pending;
            }
            Poll::Ready(polls)
        });
        assert_eq!(wait_future(fut), Ok(2));
    });
}

#[test]
fn a_pending_future_that_keeps_no_waker_is_a_deadlock() {
    on_fresh_thread(|| {
        assert_eq!(
            wait_future(std::future::pending::<()>()),
            Err(Error::Deadlock)
        );
        // Keeping the waker (another thread might wake it) is not one; the
        // waker dropped later, on another thread, ends the wait as one.
        let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
        let s = slot.clone();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(s.lock().unwrap().take());
        });
        let fut = std::future::poll_fn(move |cx| {
            if slot.lock().unwrap().is_none() {
                *slot.lock().unwrap() = Some(cx.waker().clone());
            }
            Poll::<()>::Pending
        });
        assert_eq!(wait_future(fut), Err(Error::Deadlock));
        dropper.join().unwrap();
    });
}

#[test]
fn a_waker_that_fires_after_the_wait_ended_is_ignored() {
    on_fresh_thread(|| {
        let keep: Arc<Mutex<Option<Waker>>> = Arc::default();
        let k = keep.clone();
        let mut first = true;
        let fut = std::future::poll_fn(move |cx| {
            if first {
                first = false;
                *k.lock().unwrap() = Some(cx.waker().clone());
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(7)
        });
        assert_eq!(wait_future(fut), Ok(7));
        // Long after: from this thread and from another one.
        let w = keep.lock().unwrap().take().unwrap();
        w.wake_by_ref();
        std::thread::spawn(move || w.wake()).join().unwrap();
        // The next wait is not disturbed by the stale wakes.
        let (tx, rx) = oneshot::channel();
        let _s = spawn(move || {
            greenhouse::sleep(Duration::from_millis(5));
            tx.send(1).unwrap();
        });
        assert_eq!(wait_future(rx), Ok(Ok(1)));
    });
}

#[test]
fn the_root_waker_may_be_used_from_a_scoped_thread_during_poll() {
    on_fresh_thread(|| {
        let woken_elsewhere = Arc::new(AtomicUsize::new(0));
        let w = woken_elsewhere.clone();
        let mut step = 0;
        let fut = std::future::poll_fn(move |cx| {
            step += 1;
            match step {
                1 => {
                    // wake_by_ref on the root, from another thread.
                    let root = cx.waker();
                    std::thread::scope(|s| {
                        s.spawn(|| root.wake_by_ref());
                    });
                    Poll::Pending
                }
                2 => {
                    // A clone made on another thread, woken later there.
                    let root = cx.waker();
                    let waker = std::thread::scope(|s| s.spawn(|| root.clone()).join()).unwrap();
                    let w = w.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(5));
                        w.fetch_add(1, Ordering::SeqCst);
                        waker.wake();
                    });
                    Poll::Pending
                }
                _ => Poll::Ready(step),
            }
        });
        assert_eq!(wait_future(fut), Ok(3));
        assert_eq!(woken_elsewhere.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn join_handles_are_futures() {
    on_fresh_thread(|| {
        let a = spawn(|| {
            greenhouse::sleep(Duration::from_millis(5));
            1
        });
        let b = spawn(|| 2);
        let c = spawn(|| -> u32 { panic!("boom") });
        let (ra, rb, rc) = wait_future(async { futures::join!(a, b, c) }).unwrap();
        assert_eq!((ra, rb), (Ok(1), Ok(2)));
        assert!(matches!(rc, Err(Error::Panicked(_))));
    });
}

#[test]
fn remote_tasks_are_awaited_from_another_thread() {
    let (tx, rx) = mpsc::channel();
    let hub_thread = std::thread::spawn(move || {
        tx.send(HubHandle::current().unwrap()).unwrap();
        // Its hub runs while this greenlet sleeps.
        greenhouse::sleep(Duration::from_millis(300));
    });
    let hub = rx.recv().unwrap();
    let ok = hub
        .spawn(|| {
            greenhouse::sleep(Duration::from_millis(2));
            std::thread::current().name().map(str::to_string)
        })
        .unwrap();
    let panics = hub.spawn(|| -> u8 { panic!("remote boom") }).unwrap();
    let killed = hub
        .spawn(|| {
            // Kills itself: its task reports it.
            let me = greenhouse::current();
            let _ = me.throw::<()>();
        })
        .unwrap();
    let tasks = futures::executor::block_on(async { futures::join!(ok, panics, killed) });
    assert_eq!(tasks.0, Ok(None));
    assert!(matches!(tasks.1, Err(Error::Panicked(_))));
    assert_eq!(tasks.2, Err(Error::Killed));
    hub_thread.join().unwrap();
    // The hub's thread has exited: a later spawn fails at once.
    assert_eq!(hub.spawn(|| ()).err(), Some(Error::HubClosed));
}

#[test]
fn a_remote_task_whose_hub_exits_before_running_it_reports_hub_closed() {
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let hub_thread = std::thread::spawn(move || {
        tx.send(HubHandle::current().unwrap()).unwrap();
        // Blocks the thread without running the hub, then exits.
        go_rx.recv().unwrap();
    });
    let hub = rx.recv().unwrap();
    let task = hub.spawn(|| 1).unwrap();
    assert!(!task.is_finished());
    go_tx.send(()).unwrap();
    hub_thread.join().unwrap();
    assert_eq!(futures::executor::block_on(task), Err(Error::HubClosed));
}

#[test]
fn wait_future_from_main_runs_the_hub_meanwhile() {
    on_fresh_thread(|| {
        // This thread's main greenlet waits; a spawned greenlet still runs.
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let _g = spawn(move || r.set(true));
        let (tx, rx) = oneshot::channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            tx.send(5).unwrap();
        });
        assert_eq!(wait_future(rx), Ok(Ok(5)));
        assert!(ran.get());
        t.join().unwrap();
    });
}

#[test]
fn runtime_agnostic_crates_work_directly() {
    on_fresh_thread(|| {
        // async-channel: greenlets on both ends, and a thread sending.
        let (tx, rx) = async_channel::bounded::<u32>(4);
        let consumer = {
            let rx = rx.clone();
            spawn(move || {
                let mut sum = 0;
                while let Ok(v) = wait_future(rx.recv()).unwrap() {
                    sum += v;
                }
                sum
            })
        };
        let thread_tx = tx.clone();
        let producer_thread = std::thread::spawn(move || {
            for i in 0..100 {
                thread_tx.send_blocking(i).unwrap();
            }
        });
        let producer = spawn(move || {
            for i in 100..200 {
                wait_future(tx.send(i)).unwrap().unwrap();
            }
        });
        producer.join().unwrap();
        drop(rx);
        // The channel closes when the thread's sender goes too. (Joining
        // the thread first would block the hub, and the consumer with it,
        // while the thread waits for room in the channel.)
        assert_eq!(consumer.join().unwrap(), (0..200).sum::<u32>());
        producer_thread.join().unwrap();

        // async-lock: a mutex held across a park by one greenlet.
        let lock = Rc::new(async_lock::Mutex::new(0u32));
        let holders: Vec<_> = (0..10)
            .map(|_| {
                let lock = lock.clone();
                spawn(move || {
                    let mut g = wait_future(lock.lock()).unwrap();
                    let seen = *g;
                    greenhouse::sleep(Duration::from_millis(1)); // others queue
                    *g = seen + 1;
                })
            })
            .collect();
        greenhouse::joinall(holders);
        assert_eq!(*wait_future(lock.lock()).unwrap(), 10);

        // event-listener: notified from another thread.
        let event = Arc::new(event_listener::Event::new());
        let listener = event.listen();
        let e = event.clone();
        let notifier = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            e.notify(1);
        });
        wait_future(listener).unwrap();
        notifier.join().unwrap();

        // futures-timer: a timer thread of its own wakes the greenlet.
        let ticks = Rc::new(Cell::new(0));
        let t = ticks.clone();
        let ticker = spawn(move || {
            for _ in 0..3 {
                t.set(t.get() + 1);
                greenhouse::sleep(Duration::from_millis(1));
            }
        });
        wait_future(futures_timer::Delay::new(Duration::from_millis(20))).unwrap();
        assert_eq!(ticks.get(), 3, "the hub ran others during the delay");
        ticker.join().unwrap();
    });
}
