//! Queue handoff between two greenlets (tasks, coroutines): greenhouse's
//! `Queue` and `Channel` vs tokio `current_thread` mpsc and may's mpsc with
//! one worker.
//!
//! - `pingpong`: one round trip = a put and a get each way between two
//!   parties, so every message is a handoff to a parked receiver and a
//!   switch.
//! - `stream`: a producer puts 1,000 items, a consumer gets them; the
//!   figure is per item (batches amortise the switches).
//!
//! Run with `cargo bench --bench queue`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use greenhouse::sync::{Channel, Queue};

const STREAM: u64 = 1000;

/// The two greenhouse queue types the ping-pong runs over.
trait Handoff: Clone + 'static {
    fn make() -> Self;
    fn send(&self, v: u64);
    fn recv(&self) -> Option<u64>;
}

impl Handoff for Queue<u64> {
    fn make() -> Self {
        Queue::new()
    }
    fn send(&self, v: u64) {
        self.put(v).unwrap();
    }
    fn recv(&self) -> Option<u64> {
        self.get().ok()
    }
}

impl Handoff for Channel<u64> {
    fn make() -> Self {
        Channel::new()
    }
    fn send(&self, v: u64) {
        self.put(v).unwrap();
    }
    fn recv(&self) -> Option<u64> {
        self.get().ok()
    }
}

/// `iters` round trips between main and an echo greenlet over two `Q`s.
fn greenhouse_pingpong<Q: Handoff>(iters: u64) -> Duration {
    let (req, rep) = (Q::make(), Q::make());
    let (r2, p2) = (req.clone(), rep.clone());
    let echo = greenhouse::spawn(move || {
        while let Some(v) = r2.recv() {
            if v == u64::MAX {
                break;
            }
            p2.send(v + 1);
        }
    });
    let t0 = Instant::now();
    for i in 0..iters {
        req.send(i);
        let v = rep.recv();
        debug_assert_eq!(v, Some(i + 1));
    }
    let el = t0.elapsed();
    req.send(u64::MAX);
    echo.join().unwrap();
    el
}

fn pingpong(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_pingpong");

    group.bench_function("greenhouse_queue", |b| {
        b.iter_custom(greenhouse_pingpong::<Queue<u64>>)
    });
    group.bench_function("greenhouse_channel", |b| {
        b.iter_custom(greenhouse_pingpong::<Channel<u64>>)
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    group.bench_function("tokio_unbounded", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let (req_tx, mut req_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                let (rep_tx, mut rep_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                let echo = tokio::spawn(async move {
                    while let Some(v) = req_rx.recv().await {
                        rep_tx.send(v + 1).unwrap();
                    }
                });
                let t0 = Instant::now();
                for i in 0..iters {
                    req_tx.send(i).unwrap();
                    let v = rep_rx.recv().await.unwrap();
                    debug_assert_eq!(v, i + 1);
                }
                let el = t0.elapsed();
                drop(req_tx);
                echo.await.unwrap();
                el
            })
        })
    });

    group.bench_function("tokio_bounded_1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let (req_tx, mut req_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let (rep_tx, mut rep_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let echo = tokio::spawn(async move {
                    while let Some(v) = req_rx.recv().await {
                        rep_tx.send(v + 1).await.unwrap();
                    }
                });
                let t0 = Instant::now();
                for i in 0..iters {
                    req_tx.send(i).await.unwrap();
                    let v = rep_rx.recv().await.unwrap();
                    debug_assert_eq!(v, i + 1);
                }
                let el = t0.elapsed();
                drop(req_tx);
                echo.await.unwrap();
                el
            })
        })
    });

    may::config().set_workers(1);
    group.bench_function("may_1_worker", |b| {
        b.iter_custom(|iters| {
            // SAFETY (may's contract for spawn): the closures use no
            // thread-local storage and never block the worker thread.
            let h = unsafe {
                may::coroutine::spawn(move || {
                    let (req_tx, req_rx) = may::sync::mpsc::channel::<u64>();
                    let (rep_tx, rep_rx) = may::sync::mpsc::channel::<u64>();
                    let echo = may::coroutine::spawn(move || {
                        while let Ok(v) = req_rx.recv() {
                            rep_tx.send(v + 1).unwrap();
                        }
                    });
                    let t0 = Instant::now();
                    for i in 0..iters {
                        req_tx.send(i).unwrap();
                        let v = rep_rx.recv().unwrap();
                        debug_assert_eq!(v, i + 1);
                    }
                    let el = t0.elapsed();
                    drop(req_tx);
                    echo.join().unwrap();
                    el
                })
            };
            h.join().unwrap()
        })
    });
    group.finish();
}

fn stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_stream");
    group.throughput(Throughput::Elements(STREAM));

    group.bench_function(BenchmarkId::new("greenhouse_queue", STREAM), |b| {
        b.iter(|| {
            let q = Queue::new();
            let q2 = q.clone();
            let consumer = greenhouse::spawn(move || {
                let mut sum = 0;
                for _ in 0..STREAM {
                    sum += q2.get().unwrap();
                }
                sum
            });
            for i in 0..STREAM {
                q.put(i).unwrap();
            }
            consumer.join().unwrap()
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("tokio_unbounded", STREAM), |b| {
        b.iter(|| {
            rt.block_on(async {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                let consumer = tokio::spawn(async move {
                    let mut sum = 0;
                    for _ in 0..STREAM {
                        sum += rx.recv().await.unwrap();
                    }
                    sum
                });
                for i in 0..STREAM {
                    tx.send(i).unwrap();
                }
                consumer.await.unwrap()
            })
        })
    });

    may::config().set_workers(1);
    group.bench_function(BenchmarkId::new("may_1_worker", STREAM), |b| {
        b.iter(|| {
            // SAFETY: as above.
            let h = unsafe {
                may::coroutine::spawn(|| {
                    let (tx, rx) = may::sync::mpsc::channel::<u64>();
                    let consumer = may::coroutine::spawn(move || {
                        let mut sum = 0;
                        for _ in 0..STREAM {
                            sum += rx.recv().unwrap();
                        }
                        sum
                    });
                    for i in 0..STREAM {
                        tx.send(i).unwrap();
                    }
                    consumer.join().unwrap()
                })
            };
            h.join().unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = pingpong, stream
}
criterion_main!(benches);
