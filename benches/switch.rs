//! Switch round trips: greenhouse greenlets vs raw corosensei; park +
//! resume through the hub with page stacks and with copy stacks.
//!
//! Run with `cargo bench --bench switch`. A "round trip" is a switch there
//! and back (two context switches), the same unit for every contender.
//! `park_resume/*` is the cost per greenlet of one park (`yield_now`) and
//! its resume, with 2 or 100 greenlets taking turns: on copy stacks, 2
//! greenlets have run stacks of their own (nothing is copied), 100 share 4
//! (every resume copies one greenlet's bytes out and another's in).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corosensei::Coroutine;
use criterion::{Criterion, criterion_group, criterion_main};
use greenhouse::Greenlet;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch_round_trip");

    // Raw corosensei: resume + suspend.
    let mut coro: Coroutine<(), (), ()> = Coroutine::new(|y, ()| {
        loop {
            y.suspend(());
        }
    });
    group.bench_function("corosensei_resume_suspend", |b| b.iter(|| coro.resume(())));

    // greenhouse: main → greenlet → main.
    let g = Greenlet::new(|(): ()| {
        let main = Greenlet::main();
        loop {
            main.switch::<(), ()>(()).unwrap();
        }
    });
    group.bench_function("greenhouse_main_to_greenlet", |b| {
        b.iter(|| g.switch::<(), ()>(()).unwrap())
    });

    // greenhouse: greenlet A → greenlet B → A (both off the main stack).
    let b_side = Greenlet::new(|mut from: Greenlet| {
        loop {
            from = from.switch::<(), Greenlet>(()).unwrap();
        }
    });
    let a_side = Greenlet::new(move |mut iters: u64| {
        let main = Greenlet::main();
        loop {
            let me = Greenlet::current();
            let t0 = Instant::now();
            for _ in 0..iters {
                b_side.switch::<Greenlet, ()>(me.clone()).unwrap();
            }
            iters = main.switch::<Duration, u64>(t0.elapsed()).unwrap();
        }
    });
    group.bench_function("greenhouse_greenlet_to_greenlet", |b| {
        b.iter_custom(|iters| a_side.switch::<u64, Duration>(iters).unwrap())
    });

    // greenhouse: a value that needs a heap allocation when boxed.
    let echo = Greenlet::new(|mut v: String| {
        let main = Greenlet::main();
        loop {
            v = main.switch::<String, String>(v).unwrap();
        }
    });
    let mut s = String::from("payload");
    group.bench_function("greenhouse_main_to_greenlet_string", |b| {
        b.iter(|| {
            s = echo
                .switch::<String, String>(std::mem::take(&mut s))
                .unwrap();
        })
    });
    // The same greenlet-to-greenlet round trip on copy stacks (values are
    // boxed by a copy-stack sender).
    // SAFETY: these greenlets lend nothing on their stacks.
    unsafe { greenhouse::set_copy_stacks(true) };
    let b_copy = Greenlet::new(|mut from: Greenlet| {
        loop {
            from = from.switch::<(), Greenlet>(()).unwrap();
        }
    });
    let a_copy = Greenlet::new(move |mut iters: u64| {
        let main = Greenlet::main();
        loop {
            let me = Greenlet::current();
            let t0 = Instant::now();
            for _ in 0..iters {
                b_copy.switch::<Greenlet, ()>(me.clone()).unwrap();
            }
            iters = main.switch::<Duration, u64>(t0.elapsed()).unwrap();
        }
    });
    // SAFETY: turning the default off.
    unsafe { greenhouse::set_copy_stacks(false) };
    group.bench_function("greenhouse_greenlet_to_greenlet_copy_stacks", |b| {
        b.iter_custom(|iters| a_copy.switch::<u64, Duration>(iters).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("park_resume");
    for n in [2usize, 100] {
        for copy in [false, true] {
            let name = format!(
                "{}_stacks_{n}_greenlets",
                if copy { "copy" } else { "page" }
            );
            group.bench_function(name, |b| b.iter_custom(|iters| turns(n, copy, iters)));
        }
    }
    group.finish();
}

/// `n` greenlets that park and are resumed `iters` times each; returns the
/// time per greenlet turn (times `iters`).
fn turns(n: usize, copy: bool, iters: u64) -> Duration {
    let stop = Rc::new(Cell::new(false));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let stop = stop.clone();
            let b = if copy {
                // SAFETY: these greenlets lend nothing on their stacks.
                unsafe { greenhouse::Builder::new().copy_stack() }
            } else {
                greenhouse::Builder::new()
            };
            b.spawn(move || {
                while !stop.get() {
                    greenhouse::yield_now();
                }
            })
            .unwrap()
        })
        .collect();
    greenhouse::yield_now(); // all started and parked
    let t0 = Instant::now();
    for _ in 0..iters {
        greenhouse::yield_now(); // every greenlet runs once
    }
    let elapsed = t0.elapsed();
    stop.set(true);
    greenhouse::joinall(hs);
    elapsed / n as u32
}

criterion_group!(benches, bench);
criterion_main!(benches);
