//! Switch round trips: greenhouse greenlets vs raw corosensei.
//!
//! Run with `cargo bench --bench switch`. A "round trip" is a switch there
//! and back (two context switches), the same unit for every contender.

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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
