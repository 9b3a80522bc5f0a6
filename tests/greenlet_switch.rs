//! Python greenlet semantics: switch values, parents, throw, dead, errors.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use greenhouse::{Error, Greenlet, GreenletExit};

mod common;
use common::DropFlag;

#[test]
fn values_travel_both_ways() {
    let g = Greenlet::new(|a: i32| {
        let s: String = Greenlet::main().switch(a + 1).unwrap();
        let v: Vec<u8> = Greenlet::main().switch(s.len()).unwrap();
        v.into_iter().map(u32::from).sum::<u32>()
    });
    assert!(!g.is_active());
    assert_eq!(g.switch::<i32, i32>(41), Ok(42));
    assert!(g.is_active());
    assert_eq!(g.switch::<String, usize>("hello".into()), Ok(5));
    assert_eq!(g.switch::<Vec<u8>, u32>(vec![1, 2, 3]), Ok(6));
    assert!(g.is_dead());
    assert!(!g.is_active());
}

#[test]
fn return_value_goes_to_parent_not_switcher() {
    // g2's parent is g1 (its creator), so g2's return lands in g1's switch.
    let g1 = Greenlet::new(|(): ()| {
        let g2 = Greenlet::new(|x: u32| x * 3);
        assert_eq!(g2.parent().unwrap(), Greenlet::current());
        let r: u32 = g2.switch(5u32).unwrap();
        r + 1
    });
    assert_eq!(g1.switch::<(), u32>(()), Ok(16));
}

#[test]
fn set_parent_redirects_the_return_value() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let catcher = Greenlet::new(move |v: &'static str| {
        l.borrow_mut().push(format!("catcher got {v}"));
        "catcher done"
    });
    let child = Greenlet::new(|(): ()| "child result");
    child.set_parent(&catcher).unwrap();
    assert_eq!(child.parent(), Some(catcher.clone()));
    // The child's return starts the catcher (a not-started parent receives
    // it as its argument); the catcher's return comes back to main.
    assert_eq!(child.switch::<(), &str>(()), Ok("catcher done"));
    assert_eq!(*log.borrow(), ["catcher got child result"]);
}

#[test]
fn dead_parent_passes_the_value_to_the_grandparent() {
    let mid = Greenlet::new(|(): ()| ());
    let leaf = Greenlet::new(|(): ()| 99u8);
    leaf.set_parent(&mid).unwrap();
    mid.switch::<(), ()>(()).unwrap();
    assert!(mid.is_dead());
    assert_eq!(leaf.switch::<(), u8>(()), Ok(99));
}

#[test]
fn panic_is_raised_in_the_parent() {
    let g = Greenlet::new(|(): ()| -> () { panic!("inner boom") });
    let r = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), ()>(())));
    let payload = r.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"inner boom"));
    assert!(g.is_dead());
    // The thread's greenlet machinery still works afterwards.
    let h = Greenlet::new(|x: u8| x);
    assert_eq!(h.switch::<u8, u8>(3), Ok(3));
}

#[test]
fn throw_uncaught_runs_destructors_and_kills() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let g = Greenlet::new(move |(): ()| {
        let _guard = DropFlag(f);
        Greenlet::main().switch::<(), ()>(()).unwrap();
        unreachable!("GreenletExit unwinds past here");
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(!dropped.get());
    assert_eq!(g.throw::<()>(), Err(Error::Killed));
    assert!(dropped.get());
    assert!(g.is_dead());
    assert_eq!(g.throw::<()>(), Err(Error::Dead));
}

#[test]
fn throw_caught_lets_the_greenlet_continue() {
    let g = Greenlet::new(|(): ()| {
        let r = panic::catch_unwind(|| Greenlet::main().switch::<&str, ()>("first").unwrap());
        let caught = r.unwrap_err().is::<GreenletExit>();
        let again: u32 = Greenlet::main()
            .switch(if caught { "survived" } else { "?" })
            .unwrap();
        again * 2
    });
    assert_eq!(g.switch::<(), &str>(()), Ok("first"));
    assert_eq!(g.throw::<&str>(), Ok("survived"));
    assert!(!g.is_dead());
    assert_eq!(g.switch::<u32, u32>(21), Ok(42));
    assert!(g.is_dead());
}

#[test]
fn throw_into_unstarted_greenlet_never_runs_it() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let g = Greenlet::new(move |(): ()| r.set(true));
    assert_eq!(g.throw::<()>(), Err(Error::Killed));
    assert!(g.is_dead());
    assert!(!ran.get());
}

#[test]
fn switching_to_a_dead_greenlet_is_an_error() {
    let g = Greenlet::new(|(): ()| 1u8);
    assert_eq!(g.switch::<(), u8>(()), Ok(1));
    assert_eq!(g.switch::<(), u8>(()), Err(Error::Dead));
}

#[test]
fn parent_cycles_are_refused() {
    let a = Greenlet::new(|(): ()| ());
    let b = Greenlet::new(|(): ()| ());
    let c = Greenlet::new(|(): ()| ());
    b.set_parent(&a).unwrap();
    c.set_parent(&b).unwrap();
    assert_eq!(a.set_parent(&c), Err(Error::ParentCycle));
    assert_eq!(a.set_parent(&a), Err(Error::ParentCycle));
    assert!(matches!(
        Greenlet::main().set_parent(&a),
        Err(Error::Invalid(_))
    ));
    // The refused changes left the chain as it was.
    assert_eq!(a.parent(), Some(Greenlet::main()));
}

#[test]
fn wrong_value_type_is_refused_before_switching() {
    let g = Greenlet::new(|x: u64| x + 1);
    let e = g.switch::<&str, u64>("not a number").unwrap_err();
    match e {
        Error::WrongType { expected, found } => {
            assert_eq!(expected, "u64");
            assert_eq!(found, "&str");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Nothing was lost or started: the right type still works.
    assert!(!g.is_active());
    assert_eq!(g.switch::<u64, u64>(1), Ok(2));
}

#[test]
fn wrong_return_type_is_an_error_at_the_receiver() {
    let g = Greenlet::new(|(): ()| 5i32);
    let e = g.switch::<(), String>(()).unwrap_err();
    assert!(matches!(e, Error::WrongType { expected, .. } if expected.contains("String")));
    assert!(g.is_dead());
}

#[test]
fn switch_to_self_returns_the_value() {
    let me = Greenlet::current();
    assert_eq!(me.switch::<u8, u8>(7), Ok(7));
    assert!(matches!(
        me.switch::<u8, u16>(7),
        Err(Error::WrongType { .. })
    ));
}

#[test]
fn any_greenlet_can_switch_to_any_other() {
    // a → b → c → a → main, passing a growing string around.
    let slots: Rc<RefCell<Vec<Greenlet>>> = Rc::new(RefCell::new(Vec::new()));
    let s = slots.clone();
    let a = Greenlet::new(move |msg: String| {
        let b = s.borrow()[1].clone();
        let back: String = b.switch(msg + "a").unwrap();
        Greenlet::main().switch::<String, ()>(back + "A").unwrap();
    });
    let s = slots.clone();
    let b = Greenlet::new(move |msg: String| {
        let c = s.borrow()[2].clone();
        c.switch::<String, ()>(msg + "b").unwrap();
    });
    let s = slots.clone();
    let c = Greenlet::new(move |msg: String| {
        let a = s.borrow()[0].clone();
        a.switch::<String, ()>(msg + "c").unwrap();
    });
    slots.borrow_mut().extend([a.clone(), b, c]);
    assert_eq!(
        a.switch::<String, String>("main".into()),
        Ok("mainabcA".into())
    );
    slots.borrow_mut().clear();
}

#[test]
fn dropping_the_last_handle_unwinds_a_suspended_greenlet() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let g = Greenlet::new(move |(): ()| {
        let _guard = DropFlag(f);
        Greenlet::main().switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(!dropped.get());
    drop(g);
    greenhouse::yield_now(); // the hub's next turn kills it
    assert!(
        dropped.get(),
        "destructors ran at the next scheduling point"
    );
}

#[test]
fn a_spawned_greenlet_cannot_be_switched_to_while_blocked() {
    let h = greenhouse::spawn(|| greenhouse::sleep(std::time::Duration::from_millis(20)));
    greenhouse::yield_now();
    assert_eq!(h.greenlet().switch::<(), ()>(()), Err(Error::Blocked));
    h.join().unwrap();
}

#[test]
fn greenlets_can_block_in_the_hub_and_come_back() {
    // A raw greenlet sleeps (parks in the hub); main's switch waits for it.
    let g = Greenlet::new(|ms: u64| {
        greenhouse::sleep(std::time::Duration::from_millis(ms));
        ms * 2
    });
    assert_eq!(g.switch::<u64, u64>(5), Ok(10));
}

/// A spawned greenlet left waiting in a switch that nobody will ever
/// answer: `r`'s parent is main, which is blocked in the hub when `r`
/// finishes, so `r`'s result goes to the hub and `s` waits forever.
fn stuck_forever() -> greenhouse::JoinHandle<Result<(), Error>> {
    let r = Greenlet::new(|(): ()| ());
    greenhouse::spawn(move || r.switch::<(), ()>(()))
}

#[test]
fn deadlock_while_main_waits_in_a_switch_is_reported() {
    let g = Greenlet::new(|(): ()| stuck_forever().join().map(|_| ()));
    assert_eq!(g.switch::<(), Result<(), Error>>(()), Err(Error::Deadlock));
}

#[test]
fn deadlock_while_main_joins_is_reported() {
    assert_eq!(stuck_forever().join(), Err(Error::Deadlock));
}
