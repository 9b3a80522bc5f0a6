//! Spawn + join of a task that returns at once: greenhouse vs tokio
//! `current_thread`, may with one worker, and corosensei with a reused stack;
//! greenhouse with page stacks and with copy stacks.
//!
//! Run with `cargo bench --bench spawn_join`.

use std::time::{Duration, Instant};

use corosensei::Coroutine;
use corosensei::stack::DefaultStack;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join");

    group.bench_function("greenhouse", |b| {
        b.iter(|| greenhouse::spawn(|| 1u64).join().unwrap())
    });

    // SAFETY: the greenlets lend nothing on their stacks.
    let copy = unsafe { greenhouse::Builder::new().copy_stack() };
    group.bench_function("greenhouse_copy_stacks", |b| {
        b.iter(|| copy.clone().spawn(|| 1u64).unwrap().join().unwrap())
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    group.bench_function("tokio_current_thread", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    tokio::spawn(async { 1u64 }).await.unwrap();
                }
                t0.elapsed()
            })
        })
    });

    may::config().set_workers(1);
    group.bench_function("may_1_worker", |b| {
        b.iter(|| {
            // SAFETY: the closure uses no thread-local storage and does not
            // block the worker; this is may's documented contract for spawn.
            let h = unsafe { may::coroutine::spawn(|| 1u64) };
            h.join().unwrap()
        })
    });

    // The floor: one coroutine on a recycled stack, resumed to completion.
    let mut stack = Some(DefaultStack::new(256 * 1024).unwrap());
    group.bench_function("corosensei_reused_stack", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                let mut co: Coroutine<(), (), u64, DefaultStack> =
                    Coroutine::with_stack(stack.take().unwrap(), |_, ()| 1u64);
                let r = co.resume(());
                std::hint::black_box(r);
                stack = Some(co.into_stack());
            }
            t0.elapsed()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
