//! Who keeps a greenlet's record alive: regression tests for the
//! use-after-free in the old orphan path, and for kills that must not be
//! lost when the last handle of a suspended greenlet goes away.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use greenhouse::{Greenlet, GreenletExit};

mod common;
use common::DropFlag;

/// A suspended greenlet whose only remaining reference is its
/// never-started child's parent link. Dropping the child must kill the
/// parent (its destructors run) without freeing the record its own
/// suspended frame still uses. Before the redesign this was a
/// heap-use-after-free (SIGSEGV when the hub resumed the parent).
#[test]
fn dropping_a_never_started_child_kills_its_otherwise_unreferenced_parent() {
    greenhouse::yield_now(); // the hub exists, as in any real program
    let dropped = Rc::new(Cell::new(false));
    let flag = dropped.clone();
    let parent = Greenlet::new(move |(): ()| {
        let _guard = DropFlag(flag);
        let child = Greenlet::new(|(): ()| ());
        // Hand the child to main and wait for a value that never comes.
        let _: () = Greenlet::main().switch(child).unwrap();
        unreachable!("nobody can switch back to an unreferenced greenlet");
    });
    let child: Greenlet = parent.switch(()).unwrap();
    assert_eq!(child.parent().as_ref(), Some(&parent));
    drop(parent); // the child's parent link still refers to it
    assert!(!dropped.get());
    drop(child); // now nothing does
    // The hub runs (a scheduling point): the kill has been delivered.
    greenhouse::sleep(std::time::Duration::from_millis(1));
    assert!(
        dropped.get(),
        "the parent was unwound and its destructors ran"
    );
    // The thread is still healthy: greenlets keep working.
    let g = Greenlet::new(|x: u32| x + 1);
    assert_eq!(g.switch::<u32, u32>(1), Ok(2));
}

/// A greenlet that catches the `GreenletExit` raised because it became
/// unreachable, and suspends in a switch again, is still unreachable: the
/// kill is raised again at the next scheduling point, until it dies. The
/// kill is never lost, and its destructors run.
#[test]
fn a_greenlet_that_catches_the_unreachable_kill_is_killed_again() {
    greenhouse::yield_now(); // the hub exists, as in any real program
    let dropped = Rc::new(Cell::new(false));
    let caught = Rc::new(Cell::new(0u32));
    let (flag, seen) = (dropped.clone(), caught.clone());
    let g = Greenlet::new(move |(): ()| {
        let _guard = DropFlag(flag);
        let first = panic::catch_unwind(AssertUnwindSafe(|| {
            Greenlet::main().switch::<(), ()>(()).unwrap();
        }));
        assert!(first.unwrap_err().is::<GreenletExit>());
        seen.set(seen.get() + 1);
        // Keep running: suspend again in a switch (main is waiting in one).
        let r = Greenlet::main().switch::<&str, ()>("from g");
        panic!("the second kill was lost: the switch returned {r:?}");
    });
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert_eq!(caught.get(), 0, "the kill waits for a scheduling point");
    // Main waits in a switch to a greenlet that parks: the hub gets
    // control, kills g, and g (catching it) answers main's switch.
    let parker = Greenlet::new(|(): ()| greenhouse::yield_now());
    assert_eq!(parker.switch::<(), &str>(()), Ok("from g"));
    assert_eq!(caught.get(), 1, "the first kill was raised");
    assert!(!dropped.get());
    greenhouse::sleep(std::time::Duration::from_millis(1));
    assert!(dropped.get(), "the greenlet died of the second kill");
    assert_eq!(caught.get(), 1);
}
