//! Generators: send/resume round trip vs raw corosensei and the `generator`
//! crate; and a 3-stage pipeline of 1,000,000 items vs the same stages as a
//! plain iterator chain.
//!
//! Run with `cargo bench --bench generator`.

use corosensei::Coroutine;
use criterion::{Criterion, criterion_group, criterion_main};
use greenhouse::{Generator, GeneratorState};

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("generator_round_trip");

    let mut raw: Coroutine<u64, u64, ()> = Coroutine::new(|y, mut x| {
        loop {
            x = y.suspend(x + 1);
        }
    });
    group.bench_function("corosensei_resume_suspend", |b| {
        b.iter(|| raw.resume(std::hint::black_box(1)))
    });

    let mut ours: Generator<u64, u64, ()> = Generator::new(|y, mut x| {
        loop {
            x = y.yield_(x + 1);
        }
    });
    group.bench_function("greenhouse_send", |b| {
        b.iter(|| match ours.send(std::hint::black_box(1)) {
            Ok(GeneratorState::Yielded(v)) => v,
            _ => unreachable!(),
        })
    });

    let mut theirs = generator::Gn::<u64>::new_scoped(|mut s| {
        let mut x = 0u64;
        loop {
            x = s.yield_(x + 1).unwrap_or(0);
        }
    });
    theirs.send(0); // start it
    group.bench_function("generator_crate_send", |b| {
        b.iter(|| theirs.send(std::hint::black_box(1)))
    });
    group.finish();
}

const N: u64 = 1_000_000;

fn stages(src: impl Iterator<Item = u64> + 'static) -> Generator<(), u64, ()> {
    // map → filter → map, each a generator stage.
    let doubled = Generator::new(move |y, ()| {
        for x in src {
            y.yield_(x * 2);
        }
    });
    let kept = Generator::new(move |y, ()| {
        for x in doubled {
            if x % 3 != 0 {
                y.yield_(x);
            }
        }
    });
    Generator::new(move |y, ()| {
        for x in kept {
            y.yield_(x + 7);
        }
    })
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline_3_stages_1m_items");
    group.sample_size(10);
    group.bench_function("iterator_chain", |b| {
        b.iter(|| {
            (0..std::hint::black_box(N))
                .map(|x| x * 2)
                .filter(|x| x % 3 != 0)
                .map(|x| x + 7)
                .fold(0u64, |a, x| a.wrapping_add(x))
        })
    });
    group.bench_function("greenhouse_generators", |b| {
        b.iter(|| stages(0..std::hint::black_box(N)).fold(0u64, |a, x| a.wrapping_add(x)))
    });
    group.finish();
}

criterion_group!(benches, round_trip, pipeline);
criterion_main!(benches);
