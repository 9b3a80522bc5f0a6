//! The rest of gevent's greenlet API: greenlets created unstarted
//! (`Greenlet(func)`, `start`, `start_later`), link callbacks that see the
//! greenlet (`link`, `link_value`, `link_exception`, `unlink`), `joinall`'s
//! options (`JoinAll`: count, raise_error, timeout), silent timeouts
//! (`with_timeout_silent`) and `Timeout::pending`, kills and throws with an
//! error (`kill_with`, `killall_with`, `Greenlet::throw_error`), and
//! `iwait` / `wait` over greenlets, events, results and queues.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::sync::{AsyncResult, Channel, Event, Queue};
use greenhouse::{
    Builder, Error, Greenlet, JoinAll, JoinHandle, ThrownError, Timeout, Waitable, iwait, sleep,
    spawn, with_timeout_silent, yield_now,
};

mod common;
use common::DropFlag;

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn a_created_greenlet_runs_only_once_started() {
    let l = log();
    let l2 = l.clone();
    let h = Builder::new()
        .name("lazy")
        .create(move || l2.borrow_mut().push("ran".into()))
        .unwrap();
    sleep(Duration::from_millis(5));
    assert!(l.borrow().is_empty(), "not started: never scheduled");
    assert!(!h.is_started() && !h.is_ready() && !h.is_dead());
    assert!(!h.greenlet().is_dead());
    h.start();
    assert!(h.is_started() && !h.is_ready());
    h.start(); // twice is once
    yield_now();
    assert_eq!(*l.borrow(), ["ran"]);
    assert!(h.is_ready() && h.is_dead());
    assert_eq!(h.join(), Ok(()));
}

#[test]
fn start_later_waits_and_start_after_it_does_nothing_more() {
    let count = Rc::new(RefCell::new(0));
    let c = count.clone();
    let h = Builder::new().create(move || *c.borrow_mut() += 1).unwrap();
    h.start_later(Duration::from_millis(10));
    assert!(h.is_started());
    h.start();
    h.start_later(Duration::from_millis(1));
    yield_now();
    assert_eq!(*count.borrow(), 0, "start after start_later is no-op");
    assert_eq!(h.join(), Ok(()));
    assert_eq!(*count.borrow(), 1);
}

#[test]
fn kill_before_start_means_never_runs_dead_and_links_fire_once() {
    let l = log();
    let ran = Rc::new(std::cell::Cell::new(false));
    let dropped = Rc::new(std::cell::Cell::new(false));
    let (r2, flag) = (ran.clone(), DropFlag(dropped.clone()));
    let h = Builder::new()
        .create(move || {
            let _keep = flag;
            r2.set(true);
        })
        .unwrap();
    let l2 = l.clone();
    h.link(move |d| l2.borrow_mut().push(format!("{:?}", d.result())));
    h.kill().unwrap();
    assert!(h.is_dead() && h.is_ready() && !h.is_started());
    assert!(!ran.get() && dropped.get(), "the closure was dropped unrun");
    h.start(); // too late: nothing happens
    yield_now();
    assert_eq!(*l.borrow(), ["Err(Killed)"]);
    assert_eq!(h.join(), Err(Error::Killed));
}

#[test]
fn dropping_an_unstarted_greenlet_drops_its_closure_unrun() {
    let dropped = Rc::new(std::cell::Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let h = Builder::new().create(move || drop(flag)).unwrap();
    drop(h);
    assert!(dropped.get());
    assert_eq!(greenhouse::stats().ready, 0);
}

#[test]
fn joining_a_greenlet_nobody_starts_is_a_deadlock() {
    let h = Builder::new().create(|| 1).unwrap();
    assert_eq!(h.join(), Err(Error::Deadlock));
}

#[test]
fn links_see_the_greenlet_its_value_or_its_error() {
    let l = log();
    let (a, b, c) = (l.clone(), l.clone(), l.clone());
    let good = Builder::new().name("good").spawn(|| 5).unwrap();
    good.link(move |d| {
        a.borrow_mut().push(format!(
            "{} {:?} {:?} {}",
            d.name(),
            d.value(),
            d.error(),
            d.is_successful()
        ))
    });
    good.link_value(move |d| b.borrow_mut().push(format!("value {}", d.value().unwrap())));
    good.link_exception(move |_| c.borrow_mut().push("never".into()));
    assert_eq!(good.join(), Ok(5));

    let bad = Builder::new()
        .name("bad")
        .spawn(|| -> i32 { panic!("boom") })
        .unwrap();
    let (a, b) = (l.clone(), l.clone());
    bad.link_value(move |_| a.borrow_mut().push("never".into()));
    bad.link_exception(move |d| {
        let e = d.error().unwrap();
        b.borrow_mut().push(format!(
            "{} failed: {}",
            d.greenlet().name(),
            e.to_string().contains("boom")
        ))
    });
    assert!(bad.join().is_err());
    assert_eq!(
        *l.borrow(),
        ["good Some(5) None true", "value 5", "bad failed: true"]
    );
}

#[test]
fn unlink_removes_only_that_callback() {
    let l = log();
    let h = spawn(|| ());
    let keys: Vec<_> = (0..3)
        .map(|i| {
            let l = l.clone();
            h.link(move |_| l.borrow_mut().push(i.to_string()))
        })
        .collect();
    assert!(h.unlink(keys[1]));
    assert!(!h.unlink(keys[1]));
    yield_now();
    assert!(h.is_ready());
    assert_eq!(*l.borrow(), ["0", "2"]);
    assert!(!h.unlink(keys[0]), "already ran");
    h.join().unwrap();
}

/// A greenlet that sleeps `ms` and then returns `v` or panics.
fn after(ms: u64, v: Result<u32, &'static str>) -> JoinHandle<u32> {
    spawn(move || {
        sleep(Duration::from_millis(ms));
        match v {
            Ok(v) => v,
            Err(why) => panic!("{why}"),
        }
    })
}

#[test]
fn joinall_reports_positions_in_finishing_order() {
    let (a, b, c) = (after(30, Ok(1)), after(10, Ok(2)), after(20, Ok(3)));
    assert_eq!(JoinAll::new().wait([&a, &b, &c]), Ok(vec![1, 2, 0]));
    // Already finished ones come first, in list order; results stay.
    let d = after(5, Ok(4));
    assert_eq!(JoinAll::new().wait([&d, &c, &a]), Ok(vec![1, 2, 0]));
    assert_eq!(
        (a.join(), b.join(), c.join(), d.join()),
        (Ok(1), Ok(2), Ok(3), Ok(4))
    );
}

#[test]
fn joinall_count_returns_early_and_the_rest_keep_running() {
    let (a, b, c) = (after(40, Ok(1)), after(5, Ok(2)), after(10, Ok(3)));
    assert_eq!(JoinAll::new().count(2).wait([&a, &b, &c]), Ok(vec![1, 2]));
    assert!(!a.is_ready(), "still running");
    assert_eq!(a.join(), Ok(1));
    assert_eq!(
        JoinAll::new().count(9).wait([&b]),
        Ok(vec![0]),
        "count is capped"
    );
}

#[test]
fn joinall_raise_error_fails_fast_with_the_earliest_failure() {
    // List order puts the late failure first; the early one wins.
    let late = after(200, Err("late"));
    let slow = after(10_000, Ok(1));
    let early = after(10, Err("early"));
    let err = JoinAll::new()
        .raise_error(true)
        .wait([&late, &slow, &early])
        .unwrap_err();
    assert!(err.to_string().contains("early"), "{err}");
    assert!(
        !slow.is_ready() && !late.is_ready(),
        "returned as soon as it happened"
    );
    // The error is still the handle's result.
    assert!(early.join().unwrap_err().to_string().contains("early"));
    // A failure that already happened is found in list order.
    let ok = after(0, Ok(5));
    let bad = after(0, Err("before"));
    yield_now();
    yield_now();
    let err = JoinAll::new()
        .raise_error(true)
        .wait([&ok, &bad])
        .unwrap_err();
    assert!(err.to_string().contains("before"));
    // Without raise_error a failure is just a finish.
    assert_eq!(JoinAll::new().wait([&bad, &ok]), Ok(vec![0, 1]));
    greenhouse::killall([&late, &slow]).unwrap();
}

#[test]
fn joinall_timeout_returns_what_finished_and_unlinks_the_rest() {
    let (a, b) = (after(5, Ok(1)), after(10_000, Ok(2)));
    let done = JoinAll::new()
        .timeout(Duration::from_millis(30))
        .wait([&a, &b, &a]);
    assert_eq!(
        done,
        Ok(vec![0, 2]),
        "the same handle twice: both positions"
    );
    // Nothing it registered is left behind: b's finish reaches no waiter.
    b.kill().unwrap();
    assert_eq!(b.join(), Err(Error::Killed));
    // An armed Timeout scope is an error, as for every wait.
    let c = after(10_000, Ok(3));
    let t = Timeout::start(Duration::from_millis(5));
    assert_eq!(JoinAll::new().wait([&c]), Err(Error::TimedOut));
    drop(t);
    c.kill().unwrap();
}

#[test]
fn joinall_on_greenlets_nobody_starts_is_a_deadlock() {
    let h = Builder::new().create(|| 1u32).unwrap();
    assert_eq!(JoinAll::new().wait([&h]), Err(Error::Deadlock));
    h.start();
    assert_eq!(JoinAll::new().wait([&h]), Ok(vec![0]));
}

#[test]
fn a_silent_timeout_ends_the_block_at_its_wait_and_runs_destructors() {
    let dropped = Rc::new(std::cell::Cell::new(false));
    let l = log();
    let (flag, l2) = (DropFlag(dropped.clone()), l.clone());
    let r = with_timeout_silent(Duration::from_millis(15), move || {
        let _guard = flag;
        for i in 0.. {
            sleep(Duration::from_millis(4)); // returns nothing: cannot see the expiry
            l2.borrow_mut().push(i.to_string());
        }
        unreachable!()
    });
    assert_eq!(r, None::<()>);
    assert!(dropped.get());
    assert!(!l.borrow().is_empty());
    // After the block, waits are not timed out any more.
    let e = Event::new();
    assert_eq!(e.wait_timeout(Duration::from_millis(1)), Ok(false));
    assert_eq!(with_timeout_silent(Duration::from_secs(5), || 3), Some(3));
}

#[test]
fn silent_scopes_nest_and_the_outermost_expired_one_ends() {
    let l = log();
    let l2 = l.clone();
    let outer = with_timeout_silent(Duration::from_millis(10), move || {
        let inner = with_timeout_silent(Duration::from_secs(30), || {
            sleep(Duration::from_secs(30));
            "inner finished"
        });
        l2.borrow_mut().push(format!("inner returned {inner:?}"));
        "outer finished"
    });
    assert_eq!(outer, None);
    assert!(
        l.borrow().is_empty(),
        "the outer expiry unwound through the inner scope"
    );
    // An inner silent scope that expires first ends only itself.
    let outer = with_timeout_silent(Duration::from_secs(30), || {
        with_timeout_silent(Duration::from_millis(5), || sleep(Duration::from_secs(30)))
    });
    assert_eq!(outer, Some(None));
}

#[test]
fn a_silent_timeout_inside_a_spawned_greenlet_and_a_blocking_destructor() {
    struct Slow(Rc<std::cell::Cell<bool>>);
    impl Drop for Slow {
        fn drop(&mut self) {
            // Parks while the silent unwind is under way: ends at once (the
            // scope has expired) instead of raising again.
            sleep(Duration::from_millis(1));
            self.0.set(true);
        }
    }
    let done = Rc::new(std::cell::Cell::new(false));
    let d = done.clone();
    let h = spawn(move || {
        let e = Event::new();
        with_timeout_silent(Duration::from_millis(5), move || {
            let _slow = Slow(d);
            e.wait().unwrap(); // nobody sets it
        })
    });
    assert_eq!(h.join(), Ok(None));
    assert!(done.get());
}

#[test]
fn timeout_pending_until_it_expires_or_fires() {
    let t = Timeout::start(Duration::from_millis(5));
    assert!(t.pending() && !t.fired());
    sleep(Duration::from_secs(5)); // cut short
    assert!(!t.pending() && t.fired());
    drop(t);
    // Expired without interrupting anything: not pending, not fired.
    let t = Timeout::start(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(3));
    assert!(!t.pending() && !t.fired());
}

#[derive(Debug)]
struct Shutdown(&'static str);
impl std::fmt::Display for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shutdown: {}", self.0)
    }
}
impl std::error::Error for Shutdown {}

#[test]
fn kill_with_ends_the_greenlet_with_that_error_and_runs_destructors() {
    let dropped = Rc::new(std::cell::Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let h = spawn(move || {
        let _f = flag;
        sleep(Duration::from_secs(60));
    });
    let l = log();
    let l2 = l.clone();
    h.link_exception(move |d| l2.borrow_mut().push(d.error().unwrap().to_string()));
    yield_now();
    h.kill_with(Error::custom(Shutdown("now"))).unwrap();
    assert!(dropped.get());
    assert_eq!(*l.borrow(), ["shutdown: now"]);
    let err = h.join().unwrap_err();
    assert_ne!(
        err,
        Error::Killed,
        "not a plain kill: unsuccessful with the error"
    );
    assert_eq!(err.downcast_ref::<Shutdown>().map(|s| s.0), Some("now"));
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn kill_with_before_start_and_a_greenlet_that_catches_it() {
    let h = Builder::new().create(|| 1).unwrap();
    h.kill_with(Error::custom(Shutdown("early"))).unwrap();
    assert_eq!(h.join(), Err(Error::custom(Shutdown("early"))));

    // Catching the unwind is allowed; the greenlet then decides its result.
    let h = spawn(|| {
        let caught = std::panic::catch_unwind(|| sleep(Duration::from_secs(60)));
        let t = caught.unwrap_err().downcast::<ThrownError>().unwrap();
        format!("caught {}", t.0)
    });
    yield_now();
    h.kill_with(Error::custom(Shutdown("x"))).unwrap();
    assert_eq!(h.join(), Ok("caught shutdown: x".to_string()));
}

#[test]
fn killall_with_and_a_kill_with_into_yourself() {
    let hs: Vec<_> = (0..3)
        .map(|_| spawn(|| sleep(Duration::from_secs(60))))
        .collect();
    yield_now();
    let e = Error::custom(Shutdown("all"));
    greenhouse::killall_with(&hs, e.clone()).unwrap();
    for h in hs {
        assert_eq!(h.join(), Err(e.clone()));
    }
    // A greenlet killing itself with an error unwinds at once.
    let cell: Rc<RefCell<Option<JoinHandle<()>>>> = Rc::new(RefCell::new(None));
    let c2 = cell.clone();
    let h = spawn(move || {
        yield_now();
        let me = c2.borrow_mut().take().unwrap();
        let _ = me.kill_with(Error::custom(Shutdown("self")));
        unreachable!("killing yourself unwinds");
    });
    let g = h.greenlet();
    *cell.borrow_mut() = Some(h);
    while !g.is_dead() {
        yield_now();
    }
}

#[test]
fn throw_error_into_an_explicit_greenlet_reaches_its_parent_uncaught() {
    let dropped = Rc::new(std::cell::Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let g = Greenlet::new(move |(): ()| {
        let _f = flag;
        Greenlet::main().switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    let err = g
        .throw_error::<()>(Error::custom(Shutdown("uncaught")))
        .unwrap_err();
    assert_eq!(err.to_string(), "shutdown: uncaught");
    assert!(g.is_dead() && dropped.get());
    // Into a dead greenlet: Err(Dead), as for switch and throw.
    assert_eq!(
        g.throw_error::<()>(Error::custom(Shutdown("late"))),
        Err(Error::Dead)
    );
    // Into one that never started: it dies with the error without running.
    let ran = Rc::new(std::cell::Cell::new(false));
    let r2 = ran.clone();
    let fresh = Greenlet::new(move |(): ()| r2.set(true));
    let err = fresh
        .throw_error::<()>(Error::custom(Shutdown("fresh")))
        .unwrap_err();
    assert_eq!(err.to_string(), "shutdown: fresh");
    assert!(fresh.is_dead() && !ran.get());
}

#[test]
fn iwait_yields_mixed_objects_as_each_becomes_ready() {
    let (event, result, queue) = (Event::new(), AsyncResult::<u8>::new(), Queue::<u8>::new());
    let greenlet = after(20, Ok(1));
    let (e, r, q) = (event.clone(), result.clone(), queue.clone());
    let _driver = spawn(move || {
        sleep(Duration::from_millis(10));
        q.put(1).unwrap();
        sleep(Duration::from_millis(20)); // the greenlet finishes meanwhile
        r.set(2).unwrap();
        sleep(Duration::from_millis(10));
        e.set();
    });
    let objects: [&dyn Waitable; 4] = [&event, &result, &queue, &greenlet];
    let order: Vec<usize> = iwait(&objects).map(Result::unwrap).collect();
    assert_eq!(order, [2, 3, 1, 0]);
    // Already ready: all at once, in list order.
    assert_eq!(greenhouse::wait(&objects), Ok(vec![0, 1, 2, 3]));
    assert_eq!(format!("{event:?}"), "Event { set: true, waiters: 0 }");
}

#[test]
fn iwait_count_timeout_and_abandoning_leave_nothing_registered() {
    let (a, b) = (Event::new(), Event::new());
    let slow = after(10_000, Ok(1));
    let b2 = b.clone();
    let _s = spawn(move || {
        sleep(Duration::from_millis(5));
        b2.set();
    });
    let objects: [&dyn Waitable; 3] = [&a, &b, &slow];
    // count: the first one only.
    assert_eq!(iwait(&objects).count(1).wait(), Ok(vec![1]));
    // timeout: what was ready by then, then the end.
    let mut it = iwait(&objects).timeout(Duration::from_millis(10));
    assert_eq!(it.next(), Some(Ok(1)));
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    // An armed Timeout scope ends it with one error.
    let t = Timeout::start(Duration::from_millis(5));
    let mut it = iwait(&objects[..1]);
    assert_eq!(it.next(), Some(Err(Error::TimedOut)));
    assert_eq!(it.next(), None);
    drop(t);
    // A greenlet killed inside an iwait leaves nothing behind either.
    let a2 = a.clone();
    let waiter = spawn(move || {
        let objects: [&dyn Waitable; 1] = [&a2];
        iwait(&objects).wait()
    });
    yield_now();
    assert_eq!(format!("{a:?}"), "Event { set: false, waiters: 1 }");
    waiter.kill().unwrap();
    assert_eq!(format!("{a:?}"), "Event { set: false, waiters: 0 }");
    slow.kill().unwrap();
}

#[test]
fn iwait_sees_a_waiting_putter_on_a_channel_and_deadlock() {
    let ch = Channel::<u8>::new();
    let c2 = ch.clone();
    let putter = spawn(move || c2.put(9).unwrap());
    let objects: [&dyn Waitable; 1] = [&ch];
    assert_eq!(iwait(&objects).wait(), Ok(vec![0]));
    assert_eq!(ch.get(), Ok(9));
    putter.join().unwrap();
    // Nothing can ever make it ready.
    let lonely = Event::new();
    let objects: [&dyn Waitable; 1] = [&lonely];
    assert_eq!(greenhouse::wait(&objects), Err(Error::Deadlock));
}
