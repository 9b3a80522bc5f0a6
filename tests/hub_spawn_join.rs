//! gevent hub semantics: spawn, join, kill, joinall, killall, panics.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhouse::{
    Builder, Error, Joined, joinall, joinall_timeout, killall, sleep, spawn, yield_now,
};

mod common;
use common::DropFlag;

#[test]
fn spawn_and_join_return_values() {
    let h = spawn(|| "result".to_string());
    assert!(!h.is_ready());
    assert_eq!(h.join(), Ok("result".to_string()));
}

#[test]
fn spawned_greenlets_start_in_fifo_order_when_the_hub_runs() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..5)
        .map(|i| {
            let l = log.clone();
            spawn(move || l.borrow_mut().push(i))
        })
        .collect();
    assert!(log.borrow().is_empty(), "nothing runs until main blocks");
    for r in joinall(hs) {
        r.unwrap();
    }
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 4]);
}

#[test]
fn yield_now_interleaves_ready_greenlets() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..3)
        .map(|i| {
            let l = log.clone();
            spawn(move || {
                for _ in 0..3 {
                    l.borrow_mut().push(i);
                    yield_now();
                }
            })
        })
        .collect();
    joinall(hs);
    assert_eq!(*log.borrow(), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[test]
fn kill_unwinds_a_sleeping_greenlet_and_runs_its_destructors() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let h = spawn(move || {
        let _guard = DropFlag(f);
        sleep(Duration::from_secs(60));
        unreachable!();
    });
    yield_now();
    assert_eq!(greenhouse::stats().timers, 1);
    let t0 = Instant::now();
    h.kill().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "kill did not wait for the sleep"
    );
    assert!(dropped.get());
    assert!(h.is_ready());
    assert_eq!(
        greenhouse::stats().timers,
        0,
        "the sleep's timer was cancelled"
    );
    assert_eq!(h.join(), Err(Error::Killed));
}

#[test]
fn kill_before_start_never_runs_the_closure() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = spawn(move || r.set(true));
    h.kill().unwrap();
    assert!(!ran.get());
    assert_eq!(h.join(), Err(Error::Killed));
}

#[test]
fn kill_of_a_finished_greenlet_is_a_no_op() {
    let h = spawn(|| 5);
    yield_now();
    assert!(h.is_ready());
    h.kill().unwrap();
    assert_eq!(h.join(), Ok(5));
}

#[test]
fn a_greenlet_can_kill_itself() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let slot = Rc::new(RefCell::new(None::<greenhouse::JoinHandle<()>>));
    let s = slot.clone();
    let h = spawn(move || {
        let _guard = DropFlag(f);
        let me = s.borrow_mut().take().unwrap();
        let _ = me.kill();
        unreachable!("kill of self unwinds at once");
    });
    *slot.borrow_mut() = Some(h);
    yield_now();
    assert!(dropped.get());
}

#[test]
fn joinall_returns_results_in_the_order_given() {
    // They finish in reverse order.
    let hs: Vec<_> = (0..4u64)
        .map(|i| {
            spawn(move || {
                sleep(Duration::from_millis((4 - i) * 5));
                i
            })
        })
        .collect();
    let rs: Vec<u64> = joinall(hs).into_iter().map(Result::unwrap).collect();
    assert_eq!(rs, [0, 1, 2, 3]);
}

#[test]
fn joinall_timeout_reports_what_finished() {
    let fast = spawn(|| 1);
    let slow = spawn(|| {
        sleep(Duration::from_millis(200));
        2
    });
    let also_fast = spawn(|| 3);
    let r = joinall_timeout(vec![fast, slow, also_fast], Duration::from_millis(20));
    assert!(matches!(r[0], Joined::Done(Ok(1))));
    assert!(matches!(r[2], Joined::Done(Ok(3))));
    let Joined::Pending(slow) = r.into_iter().nth(1).unwrap() else {
        panic!("slow finished")
    };
    assert_eq!(slow.join(), Ok(2));
}

#[test]
fn join_timeout_leaves_the_handle_usable() {
    let mut h = spawn(|| {
        sleep(Duration::from_millis(30));
        "late"
    });
    assert_eq!(
        h.join_timeout(Duration::from_millis(1)),
        Err(Error::TimedOut)
    );
    assert!(!h.is_ready());
    assert_eq!(h.join_timeout(Duration::from_secs(10)), Ok("late"));
    assert_eq!(h.join(), Err(Error::ResultTaken));
}

#[test]
fn killall_kills_every_greenlet() {
    let drops = Rc::new(Cell::new(0));
    let hs: Vec<_> = (0..10)
        .map(|_| {
            let d = drops.clone();
            spawn(move || {
                struct Count(Rc<Cell<i32>>);
                impl Drop for Count {
                    fn drop(&mut self) {
                        self.0.set(self.0.get() + 1);
                    }
                }
                let _c = Count(d);
                sleep(Duration::from_secs(60));
            })
        })
        .collect();
    yield_now();
    killall(&hs).unwrap();
    assert_eq!(drops.get(), 10);
    assert!(joinall(hs).into_iter().all(|r| r == Err(Error::Killed)));
}

#[test]
fn a_panic_is_isolated_and_returned_by_join() {
    let ok_before = spawn(|| {
        sleep(Duration::from_millis(5));
        1
    });
    let bad = Builder::new()
        .name("the-bad-one")
        .spawn(|| -> u32 {
            sleep(Duration::from_millis(1));
            panic!("boom {}", 42)
        })
        .unwrap();
    let ok_after = spawn(|| {
        sleep(Duration::from_millis(10));
        3
    });
    match bad.join() {
        Err(Error::Panicked(p)) => {
            let message = p.message();
            assert_eq!(p.name(), "the-bad-one");
            assert!(message.contains("boom 42"), "{message}");
            assert!(
                message.contains("hub_spawn_join.rs"),
                "location missing: {message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ok_before.join(), Ok(1));
    assert_eq!(ok_after.join(), Ok(3));
}

#[test]
fn nested_spawns_work() {
    fn tree(depth: u32) -> u64 {
        if depth == 0 {
            return 1;
        }
        let kids: Vec<_> = (0..3).map(|_| spawn(move || tree(depth - 1))).collect();
        joinall(kids).into_iter().map(Result::unwrap).sum::<u64>() + 1
    }
    let root = spawn(|| tree(4));
    assert_eq!(root.join(), Ok(1 + 3 + 9 + 27 + 81));
}

#[test]
fn spawn_later_starts_after_its_delay_in_deadline_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let t0 = Instant::now();
    let (l1, l2) = (log.clone(), log.clone());
    let late = greenhouse::spawn_later(Duration::from_millis(30), move || {
        l1.borrow_mut().push("late")
    });
    let early = greenhouse::spawn_later(Duration::from_millis(10), move || {
        l2.borrow_mut().push("early")
    });
    late.join().unwrap();
    early.join().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert_eq!(*log.borrow(), ["early", "late"]);
}

#[test]
fn kill_before_a_delayed_start_never_runs_it() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = greenhouse::spawn_later(Duration::from_millis(5), move || r.set(true));
    h.kill().unwrap();
    sleep(Duration::from_millis(10));
    assert!(!ran.get());
    assert_eq!(h.join(), Err(Error::Killed));
}

#[test]
fn a_greenlet_cannot_join_itself() {
    let slot = Rc::new(RefCell::new(None::<greenhouse::JoinHandle<()>>));
    let seen = Rc::new(RefCell::new(None));
    let (s, out) = (slot.clone(), seen.clone());
    let h = spawn(move || {
        let me = s.borrow_mut().take().unwrap();
        *out.borrow_mut() = Some(me.join());
    });
    *slot.borrow_mut() = Some(h);
    yield_now();
    assert!(matches!(*seen.borrow(), Some(Err(Error::Invalid(_)))));
}

#[test]
fn builder_names_and_stack_sizes() {
    let h = Builder::new()
        .name("named")
        .stack_size(20_000)
        .spawn(|| greenhouse::current().name());
    assert_eq!(h.unwrap().join(), Ok("named".to_string()));
    let anon = spawn(|| greenhouse::current().name());
    let name = anon.name();
    assert!(name.starts_with("Greenlet-"), "{name}");
    assert_eq!(anon.join(), Ok(name));
}

#[test]
fn main_can_spawn_across_many_hub_turns() {
    // 1,000 rounds of spawn + join reuse pooled stacks.
    for i in 0..1000u32 {
        assert_eq!(spawn(move || i * 2).join(), Ok(i * 2));
    }
}

#[test]
fn a_destructor_may_block_while_its_greenlet_unwinds_and_others_panic() {
    // A killed greenlet's destructor sleeps (parks in the middle of the
    // GreenletExit unwind). Meanwhile another greenlet panics and a third
    // runs normally: the suspended unwind must not turn the new panic into
    // a process abort, and the destructor must finish afterwards.
    struct SlowDrop(Rc<Cell<bool>>);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            sleep(Duration::from_millis(20));
            self.0.set(true);
        }
    }
    let finished = Rc::new(Cell::new(false));
    let f = finished.clone();
    let victim = spawn(move || {
        let _slow = SlowDrop(f);
        sleep(Duration::from_secs(60));
    });
    yield_now();
    victim.kill_nowait();
    let panicker = spawn(|| -> u8 {
        sleep(Duration::from_millis(5));
        panic!("while another greenlet is mid-unwind")
    });
    let normal = spawn(|| {
        sleep(Duration::from_millis(10));
        7
    });
    assert!(matches!(panicker.join(), Err(Error::Panicked(_))));
    assert_eq!(normal.join(), Ok(7));
    assert_eq!(victim.join(), Err(Error::Killed));
    assert!(finished.get(), "the blocking destructor completed");
}

#[test]
fn errors_keep_what_they_carry() {
    use std::error::Error as _;
    // A kill is not `Interrupted`: std's `read_exact`, `write_all` and
    // `io::copy` retry that kind, and a killed operation must not be retried.
    let killed = std::io::Error::from(Error::Killed);
    assert_ne!(killed.kind(), std::io::ErrorKind::Interrupted);
    // A panic's own payload comes back, to `resume_unwind` it.
    let h = spawn(|| -> u8 { std::panic::panic_any(7u64) });
    let e = h.join().unwrap_err();
    assert!(matches!(e, Error::Panicked(_)));
    let again = e.clone();
    assert_eq!(e.into_panic().unwrap().downcast_ref::<u64>(), Some(&7));
    // A clone whose payload was already taken gets the message instead.
    assert!(
        again
            .into_panic()
            .unwrap()
            .downcast_ref::<String>()
            .is_some()
    );
    assert!(Error::Killed.into_panic().is_none());
    // A failed spawn keeps the OS error as its source.
    let err = greenhouse::Builder::new()
        .stack_size(usize::MAX - 4096)
        .spawn(|| ())
        .unwrap_err();
    let source = err.source().expect("the io::Error");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
    let kind = std::io::Error::from(err.clone()).kind();
    assert!(
        matches!(&err, Error::Spawn(io) if io.kind() == kind),
        "{err:?}"
    );
}

/// A greenlet's result lives in its record only while someone can read
/// it: it is dropped with the handle, or at once when the greenlet
/// finishes with no handle, even while other references to the greenlet
/// keep its record alive.
#[test]
fn a_result_is_dropped_when_nobody_can_read_it() {
    // Finished, then the handle dropped.
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let h = spawn(move || DropFlag(d));
    let g = h.greenlet();
    yield_now();
    assert!(h.is_ready() && !dropped.get());
    drop(h);
    assert!(dropped.get(), "dropping the handle drops the result");
    assert!(g.is_dead());

    // The handle dropped first: the result is dropped as it finishes.
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let h = spawn(move || DropFlag(d));
    let g = h.greenlet();
    drop(h);
    assert!(!dropped.get());
    yield_now();
    assert!(g.is_dead());
    assert!(dropped.get(), "a detached greenlet's result is not kept");

    // A callback sees it, then nobody can: dropped after the callbacks.
    let dropped = Rc::new(Cell::new(false));
    let seen = Rc::new(Cell::new(false));
    let (d, s) = (dropped.clone(), seen.clone());
    let h = spawn(move || DropFlag(d));
    h.link(move |done| s.set(done.is_successful()));
    drop(h);
    yield_now();
    assert!(seen.get() && dropped.get());

    // A joined result is the caller's.
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let v = spawn(move || DropFlag(d)).join().unwrap();
    assert!(!dropped.get());
    drop(v);
    assert!(dropped.get());
}

/// A link added after a join took the result sees `ResultTaken`; one added
/// after the greenlet finished, the result (and leaves it for `join`).
#[test]
fn links_after_the_end_see_the_result_or_that_it_was_taken() {
    let mut h = spawn(|| 5u8);
    yield_now();
    let got = Rc::new(RefCell::new(None));
    let g2 = got.clone();
    h.link(move |d| *g2.borrow_mut() = Some(d.result().clone()));
    assert_eq!(*got.borrow(), Some(Ok(5)));
    assert_eq!(h.join_timeout(Duration::from_secs(1)), Ok(5));
    let g3 = got.clone();
    h.link(move |d| *g3.borrow_mut() = Some(d.result().clone()));
    assert_eq!(*got.borrow(), Some(Err(Error::ResultTaken)));
}

/// A link callback that panics loses nothing: the panic is reported, and
/// the result stays for the join and for the callbacks after it.
#[test]
fn a_panicking_link_callback_leaves_the_result_in_place() {
    let h = spawn(|| 9u8);
    h.link(|_| panic!("callback trouble"));
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    h.link(move |d| s.set(d.value().copied()));
    assert_eq!(h.join(), Ok(9));
    assert_eq!(seen.get(), Some(9));
}
