//! Generators: send/yield, return, iteration, throw, close, drop,
//! yield-from, depth, panics, misuse, and blocking IO inside generators.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Write};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use greenhouse::net::{TcpListener, TcpStream};
use greenhouse::{Generator, GeneratorError, GeneratorState, Yielder, joinall, spawn};

mod common;
use common::DropFlag;

#[derive(Debug)]
struct Oops(&'static str);
impl std::fmt::Display for Oops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Oops {}

#[test]
fn values_travel_both_ways_and_the_return_value_arrives() {
    let mut g = Generator::new(|y, first: u32| {
        let a = y.yield_(format!("got {first}"));
        let b = y.yield_(format!("got {a}"));
        a + b
    });
    assert_eq!(
        g.send(1).unwrap(),
        GeneratorState::Yielded("got 1".to_string())
    );
    assert_eq!(
        g.send(2).unwrap(),
        GeneratorState::Yielded("got 2".to_string())
    );
    assert_eq!(g.send(40).unwrap(), GeneratorState::Complete(42));
    assert!(g.is_finished());
    assert!(
        matches!(g.send(0), Err(GeneratorError::Finished)),
        "resuming after completion"
    );
}

#[test]
fn a_generator_does_not_run_until_resumed() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let mut g = Generator::new(move |_y: &Yielder<(), ()>, ()| r.set(true));
    assert!(!ran.get());
    assert_eq!(g.resume().unwrap(), GeneratorState::Complete(()));
    assert!(ran.get());
}

#[test]
fn iterator_adaptors_work_and_keep_the_return_value() {
    let mut g = Generator::new(|y, ()| {
        for w in ["alpha", "beta", "gamma", "delta"] {
            y.yield_(w);
        }
        "done"
    });
    let long: Vec<String> = g
        .by_ref()
        .filter(|w| w.len() > 4)
        .map(str::to_uppercase)
        .collect();
    assert_eq!(long, ["ALPHA", "GAMMA", "DELTA"]);
    assert_eq!(g.take_return(), Some("done"));
    assert_eq!(g.next(), None);
}

#[test]
fn yielding_from_deep_in_the_call_stack() {
    fn walk(y: &Yielder<(), u32>, depth: u32) {
        if depth == 0 {
            y.yield_(0);
            return;
        }
        y.yield_(depth);
        walk(y, depth - 1);
    }
    let g = Generator::new(|y, ()| walk(y, 5));
    assert_eq!(g.collect::<Vec<_>>(), [5, 4, 3, 2, 1, 0]);
}

#[test]
fn throw_handled_by_the_body() {
    let mut g = Generator::new(|y, ()| {
        let mut errors = Vec::new();
        loop {
            match y.try_yield(errors.len()) {
                Ok(()) => return errors,
                Err(e) => errors.push(e.to_string()),
            }
        }
    });
    assert_eq!(g.resume().unwrap(), GeneratorState::Yielded(0));
    assert_eq!(g.throw(Oops("first")).unwrap(), GeneratorState::Yielded(1));
    assert_eq!(g.throw("second").unwrap(), GeneratorState::Yielded(2));
    assert_eq!(
        g.resume().unwrap(),
        GeneratorState::Complete(vec!["first".to_string(), "second".to_string()])
    );
}

#[test]
fn throw_unhandled_comes_back_and_finishes_the_generator() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let mut g = Generator::new(move |y, ()| {
        let _guard = DropFlag(f);
        y.yield_(1);
        y.yield_(2);
    });
    assert_eq!(g.resume().unwrap(), GeneratorState::Yielded(1));
    match g.throw(Oops("boom")) {
        Err(GeneratorError::Thrown(e)) => {
            assert_eq!(e.to_string(), "boom");
            assert!(
                e.downcast_ref::<Oops>().is_some(),
                "the very error comes back"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(dropped.get(), "the body unwound");
    assert!(g.is_finished());
    // Throwing into a generator that never started finishes it unrun.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let mut fresh = Generator::new(move |_y: &Yielder<(), ()>, ()| r.set(true));
    assert!(matches!(
        fresh.throw("early"),
        Err(GeneratorError::Thrown(_))
    ));
    assert!(!ran.get() && fresh.is_finished());
}

#[test]
fn close_runs_destructors() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let mut g = Generator::new(move |y, ()| {
        let _guard = DropFlag(f);
        loop {
            y.yield_(());
        }
    });
    g.resume().unwrap();
    g.close().unwrap();
    assert!(dropped.get());
    assert!(g.is_finished());
    assert!(matches!(g.resume(), Err(GeneratorError::Finished)));
    g.close().unwrap(); // closing again is fine
}

#[test]
fn yielding_during_close_is_an_error_and_the_body_still_unwinds() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let mut g = Generator::new(move |y, ()| {
        let _guard = DropFlag(f);
        let r = panic::catch_unwind(AssertUnwindSafe(|| y.yield_(1)));
        assert!(r.is_err(), "closed");
        y.yield_(2); // not allowed while closing
    });
    assert_eq!(g.resume().unwrap(), GeneratorState::Yielded(1));
    assert!(matches!(g.close(), Err(GeneratorError::YieldedDuringClose)));
    assert!(dropped.get(), "destructors ran anyway");
    assert!(g.is_finished());
}

#[test]
fn dropping_an_unfinished_generator_runs_its_destructors() {
    let dropped = Rc::new(Cell::new(false));
    let f = dropped.clone();
    let mut g = Generator::new(move |y, ()| {
        let _guard = DropFlag(f);
        y.yield_(1);
        y.yield_(2);
    });
    assert_eq!(g.next(), Some(1));
    drop(g);
    assert!(dropped.get());
}

#[test]
fn yield_from_forwards_sends_and_returns_the_inner_value() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let inner = Generator::new(move |y: &Yielder<i32, &'static str>, first: i32| {
        l.borrow_mut().push(first);
        let a = y.yield_("inner 1");
        l.borrow_mut().push(a);
        let b = y.yield_("inner 2");
        l.borrow_mut().push(b);
        a + b
    });
    let mut outer = Generator::new(move |y, first: i32| {
        let x = y.yield_("outer before");
        let r = y.yield_from(inner, first + x);
        y.yield_(if r == 30 {
            "outer saw 30"
        } else {
            "outer saw something else"
        });
        r * 2
    });
    assert_eq!(
        outer.send(1).unwrap(),
        GeneratorState::Yielded("outer before")
    );
    assert_eq!(outer.send(2).unwrap(), GeneratorState::Yielded("inner 1"));
    assert_eq!(outer.send(10).unwrap(), GeneratorState::Yielded("inner 2"));
    assert_eq!(
        outer.send(20).unwrap(),
        GeneratorState::Yielded("outer saw 30")
    );
    assert_eq!(outer.send(0).unwrap(), GeneratorState::Complete(60));
    assert_eq!(*log.borrow(), [3, 10, 20]);
}

#[test]
fn yield_from_forwards_throws() {
    let inner = Generator::new(
        |y: &Yielder<(), &'static str>, ()| match y.try_yield("inner") {
            Ok(()) => "no error",
            Err(_) => {
                y.yield_("inner handled it");
                "recovered"
            }
        },
    );
    let mut outer = Generator::new(move |y, ()| y.yield_from(inner, ()));
    assert_eq!(outer.resume().unwrap(), GeneratorState::Yielded("inner"));
    assert_eq!(
        outer.throw("x").unwrap(),
        GeneratorState::Yielded("inner handled it")
    );
    assert_eq!(
        outer.resume().unwrap(),
        GeneratorState::Complete("recovered")
    );
}

#[test]
fn generators_nest_a_hundred_deep() {
    fn layer(depth: u32) -> Generator<(), u32, u32> {
        Generator::with_stack_size(16 * 1024, move |y, ()| {
            if depth == 0 {
                y.yield_(0);
                return 0;
            }
            // Each layer re-yields what the layer below yields, plus one.
            let below = layer(depth - 1);
            let mut last = 0;
            for v in below {
                last = v + 1;
                y.yield_(last);
            }
            last
        })
        .unwrap()
    }
    let mut top = layer(100);
    assert_eq!(top.next(), Some(100));
    assert_eq!(top.next(), None);
}

#[test]
fn a_panic_in_the_body_propagates_and_finishes_it() {
    let mut g = Generator::new(|y, ()| {
        y.yield_(1);
        panic!("generator blew up");
    });
    assert_eq!(g.next(), Some(1));
    let r = panic::catch_unwind(AssertUnwindSafe(|| g.next()));
    let p = r.unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"generator blew up"));
    assert!(g.is_finished());
    assert!(matches!(g.resume(), Err(GeneratorError::Finished)));
}

#[test]
fn generators_in_two_greenlets_sleep_concurrently() {
    // Each generator sleeps 50 ms per item, 5 items. Run by two greenlets,
    // the sleeps overlap: both generators are parked at the same time.
    let sleeping = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let t0 = std::time::Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|k| {
            let (sleeping, peak) = (sleeping.clone(), peak.clone());
            spawn(move || {
                let g = Generator::new(move |y, ()| {
                    for i in 0..5 {
                        sleeping.set(sleeping.get() + 1);
                        peak.set(peak.get().max(sleeping.get()));
                        greenhouse::sleep(Duration::from_millis(50));
                        sleeping.set(sleeping.get() - 1);
                        y.yield_(k * 10 + i);
                    }
                });
                g.collect::<Vec<u32>>()
            })
        })
        .collect();
    let out: Vec<Vec<u32>> = joinall(hs).into_iter().map(Result::unwrap).collect();
    assert_eq!(out, [vec![0, 1, 2, 3, 4], vec![10, 11, 12, 13, 14]]);
    assert_eq!(
        peak.get(),
        2,
        "both generators were parked in sleep at once"
    );
    println!("two greenlets x 5 sleeps of 50 ms took {:?}", t0.elapsed());
}

#[test]
fn a_generator_reads_lines_from_a_greenhouse_socket() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let _server = spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        for i in 0..4 {
            writeln!(conn, "line {i}")?;
            greenhouse::sleep(Duration::from_millis(2));
        }
        Ok(())
    });
    let lines = Generator::new(move |y, ()| -> std::io::Result<()> {
        let reader = BufReader::new(TcpStream::connect(addr)?);
        for line in reader.lines() {
            y.yield_(line?);
        }
        Ok(())
    });
    let got: Vec<String> = lines.collect();
    assert_eq!(got, ["line 0", "line 1", "line 2", "line 3"]);
    Ok(())
}

#[test]
fn killing_a_greenlet_parked_inside_a_generator_unwinds_both() {
    let gen_dropped = Rc::new(Cell::new(false));
    let f = gen_dropped.clone();
    let h = spawn(move || {
        let mut g = Generator::new(move |y: &Yielder<(), ()>, ()| {
            let _guard = DropFlag(f);
            greenhouse::sleep(Duration::from_secs(60));
            y.yield_(());
        });
        let _ = g.resume();
    });
    greenhouse::yield_now();
    assert_eq!(greenhouse::stats().timers, 1);
    h.kill().unwrap();
    assert!(gen_dropped.get(), "the generator's frames unwound");
    assert_eq!(greenhouse::stats().timers, 0);
    assert_eq!(h.join(), Err(greenhouse::Error::Killed));
}

#[test]
fn stages_compose_and_follow_tails_a_growing_file() -> std::io::Result<()> {
    use greenhouse::stages::{batch, chain, follow, grep, map, take};
    let a = ["x1", "keep 1", "x2"].map(String::from).into_iter();
    let b = ["keep 2", "keep 3", "x3", "keep 4"]
        .map(String::from)
        .into_iter();
    let kept = grep("keep", chain(a, b));
    let numbers = map(kept, |l| l[5..].parse::<u32>().unwrap());
    let got: Vec<Vec<u32>> = batch(take(numbers, 3), 2).collect();
    assert_eq!(got, [vec![1, 2], vec![3]]);

    // follow: a writer greenlet appends to a file while a reader tails it.
    let path = std::env::temp_dir().join(format!("greenhouse-follow-{}", std::process::id()));
    std::fs::write(&path, "first\n")?;
    let p2 = path.clone();
    let writer = spawn(move || -> std::io::Result<()> {
        for i in 0..3 {
            greenhouse::sleep(Duration::from_millis(5));
            let mut f = std::fs::OpenOptions::new().append(true).open(&p2)?;
            write!(f, "part{i}")?; // a line written in two pieces
            f.flush()?;
            greenhouse::sleep(Duration::from_millis(2));
            writeln!(f, " done")?;
        }
        Ok(())
    });
    let reader = std::io::BufReader::new(std::fs::File::open(&path)?);
    let lines: Vec<String> = take(follow(reader, Some(Duration::from_millis(1))), 4).collect();
    writer.join().unwrap()?;
    assert_eq!(lines, ["first", "part0 done", "part1 done", "part2 done"]);
    std::fs::remove_file(&path)?;
    Ok(())
}

/// A generator nested three deep inside a greenlet parks in the hub from
/// the innermost stack: the park is forwarded out through every level
/// (each coroutine suspends only through its own yielder), another
/// greenlet runs meanwhile, and the wake-up travels back in.
#[test]
fn nested_generators_park_the_greenlet_from_the_innermost_stack() {
    let ticks = Rc::new(Cell::new(0u32));
    let go = greenhouse::sync::Event::new();
    let (t, set) = (ticks.clone(), go.clone());
    let ticker = spawn(move || {
        for _ in 0..3 {
            greenhouse::yield_now();
            t.set(t.get() + 1);
        }
        set.set();
    });
    let seen = ticks.clone();
    let h = spawn(move || {
        let inner = move |y: &Yielder<(), u32>, ()| {
            let before = seen.get();
            go.wait().unwrap(); // parks until the ticker is done
            y.yield_(seen.get() - before); // how many ticks ran meanwhile
        };
        let middle = Generator::new(move |y: &Yielder<(), u32>, ()| {
            y.yield_from(Generator::new(inner), ());
        });
        let outer = Generator::new(move |y: &Yielder<(), u32>, ()| {
            y.yield_from(middle, ());
        });
        outer.collect::<Vec<u32>>()
    });
    assert_eq!(
        h.join(),
        Ok(vec![3]),
        "the ticker ran while the inner generator waited"
    );
    ticker.join().unwrap();
}

/// Killing a greenlet whose park was forwarded out of two nested
/// generators unwinds all three stacks, innermost first.
#[test]
fn killing_a_greenlet_parked_in_nested_generators_unwinds_every_stack() {
    let order = Rc::new(RefCell::new(Vec::new()));
    struct Note(Rc<RefCell<Vec<&'static str>>>, &'static str);
    impl Drop for Note {
        fn drop(&mut self) {
            self.0.borrow_mut().push(self.1);
        }
    }
    let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
    let h = spawn(move || {
        let _g = Note(o1, "greenlet");
        let mut outer = Generator::new(move |y: &Yielder<(), ()>, ()| {
            let _g = Note(o2, "outer");
            let mut inner = Generator::new(move |_: &Yielder<(), ()>, ()| {
                let _g = Note(o3, "inner");
                greenhouse::sleep(Duration::from_secs(60));
            });
            let _ = inner.resume();
            y.yield_(());
        });
        let _ = outer.resume();
    });
    greenhouse::yield_now();
    h.kill().unwrap();
    assert_eq!(*order.borrow(), ["inner", "outer", "greenlet"]);
    assert_eq!(greenhouse::stats().timers, 0);
}

/// The one case where greenlet code suspends from a generator's stack
/// without forwarding: a body that caught `GeneratorExit` and yielded while
/// being closed is force-unwound by corosensei, and a destructor blocks
/// during that unwind (a forward would be turned into another unwind
/// there). This relies on corosensei 0.3.4's behaviour (pinned in
/// Cargo.toml; see ARCHITECTURE.md): the test catches a change.
#[test]
fn a_destructor_may_block_while_a_closed_generator_is_force_unwound() {
    struct WaitOnDrop(Rc<Cell<bool>>, greenhouse::sync::Event);
    impl Drop for WaitOnDrop {
        fn drop(&mut self) {
            self.1.wait().unwrap(); // parks until the other greenlet ran
            self.0.set(true);
        }
    }
    let slept = Rc::new(Cell::new(false));
    let ticks = Rc::new(Cell::new(0u32));
    let go = greenhouse::sync::Event::new();
    let (s, t, set) = (slept.clone(), ticks.clone(), go.clone());
    let ticker = spawn(move || {
        for _ in 0..2 {
            greenhouse::yield_now();
            t.set(t.get() + 1);
        }
        set.set();
    });
    let h = spawn(move || {
        let mut g = Generator::new(move |y: &Yielder<(), u8>, ()| {
            let _guard = WaitOnDrop(s, go);
            let r = panic::catch_unwind(AssertUnwindSafe(|| y.yield_(1)));
            assert!(r.is_err(), "closed");
            y.yield_(2); // not allowed while closing: force-unwound
        });
        assert_eq!(g.next(), Some(1));
        matches!(g.close(), Err(GeneratorError::YieldedDuringClose))
    });
    assert_eq!(h.join(), Ok(true));
    assert!(slept.get(), "the destructor waited and finished");
    ticker.join().unwrap();
    assert_eq!(ticks.get(), 2);
}
