//! The rest of gevent's greenlet API: greenlets created unstarted
//! (`Greenlet(func)`, `start`, `start_later`), link callbacks that see the
//! greenlet (`link`, `link_value`, `link_exception`, `unlink`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::{Builder, Error, sleep, spawn, yield_now};

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
        a.borrow_mut()
            .push(format!("{} {:?} {:?} {}", d.name(), d.value(), d.error(), d.is_successful()))
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
        b.borrow_mut()
            .push(format!("{} failed: {}", d.greenlet().name(), e.to_string().contains("boom")))
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
