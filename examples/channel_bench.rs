//! Cross-thread channels: greenhouse's `sync::mpmc` between two hubs
//! against `crossbeam-channel` and `flume` between two plain threads and
//! tokio's `mpsc` between two tasks of a 2-worker `multi_thread` runtime
//! (where both tasks may end up on one worker) and between two
//! `current_thread` runtimes on two threads (always across threads), in
//! one run, reported as ratios to greenhouse.
//!
//! - **ping-pong**: one item there, one back, `--round-trips` times: every
//!   hand-off wakes the other side (a greenhouse hub asleep in
//!   `epoll_wait` is woken by its eventfd; the plain threads by a futex;
//!   tokio's worker by its driver's unpark).
//! - **stream**: one producer sends `--items` integers through a bounded
//!   channel of 1,024, one consumer sums them.
//!
//! Each figure is the median of `--repeat` runs (default 5), contenders
//! interleaved within a round.
//!
//! ```text
//! cargo run --release --example channel_bench -- [--round-trips 100000] [--items 2000000] [--repeat 5]
//! ```

use std::time::{Duration, Instant};

use greenhouse::Runtime;
use greenhouse::sync::mpmc;

const CAP: usize = 1024;

/// A greenhouse ping-pong between hub 0 and hub 1 of a runtime.
fn greenhouse_pingpong(n: u64) -> Duration {
    let rt = Runtime::builder().hubs(2).build().unwrap();
    let (to_b, b_rx) = mpmc::bounded::<u64>(1);
    let (to_a, a_rx) = mpmc::bounded::<u64>(1);
    let echo = rt.handle(1).unwrap().submit(move || {
        while let Ok(v) = b_rx.recv() {
            if to_a.send(v + 1).is_err() {
                break;
            }
        }
    });
    let t = rt
        .block_on(move || {
            let t0 = Instant::now();
            for i in 0..n {
                to_b.send(i).unwrap();
                assert_eq!(a_rx.recv().unwrap(), i + 1);
            }
            t0.elapsed()
        })
        .unwrap();
    echo.unwrap().join().unwrap();
    t
}

fn greenhouse_stream(n: u64) -> Duration {
    let rt = Runtime::builder().hubs(2).build().unwrap();
    let (tx, rx) = mpmc::bounded::<u64>(CAP);
    let t0 = Instant::now();
    let producer = rt.handle(1).unwrap().submit(move || {
        for i in 0..n {
            tx.send(i).unwrap();
        }
    });
    let sum = rt.block_on(move || rx.iter().sum::<u64>()).unwrap();
    producer.unwrap().join().unwrap();
    assert_eq!(sum, n * (n - 1) / 2);
    t0.elapsed()
}

/// A ping-pong and a stream between two plain threads over a channel
/// crate whose `bounded`, `send`, `recv` and `iter` look like
/// crossbeam's (crossbeam-channel and flume).
macro_rules! thread_channel_benches {
    ($pingpong:ident, $stream:ident, $bounded:path) => {
        fn $pingpong(n: u64) -> Duration {
            let (to_b, b_rx) = $bounded(1);
            let (to_a, a_rx) = $bounded(1);
            let echo = std::thread::spawn(move || {
                while let Ok(v) = b_rx.recv() {
                    if to_a.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            let t0 = Instant::now();
            for i in 0..n {
                to_b.send(i).unwrap();
                assert_eq!(a_rx.recv().unwrap(), i + 1);
            }
            let t = t0.elapsed();
            drop(to_b);
            echo.join().unwrap();
            t
        }

        fn $stream(n: u64) -> Duration {
            let (tx, rx) = $bounded(CAP);
            let t0 = Instant::now();
            let p = std::thread::spawn(move || {
                for i in 0..n {
                    tx.send(i).unwrap();
                }
            });
            let sum: u64 = rx.iter().sum();
            p.join().unwrap();
            assert_eq!(sum, n * (n - 1) / 2);
            t0.elapsed()
        }
    };
}

thread_channel_benches!(
    crossbeam_pingpong,
    crossbeam_stream,
    crossbeam_channel::bounded::<u64>
);
thread_channel_benches!(flume_pingpong, flume_stream, flume::bounded::<u64>);

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

fn tokio_pingpong(n: u64) -> Duration {
    let rt = tokio_rt();
    rt.block_on(async move {
        let (to_b, mut b_rx) = tokio::sync::mpsc::channel::<u64>(1);
        let (to_a, mut a_rx) = tokio::sync::mpsc::channel::<u64>(1);
        let echo = tokio::spawn(async move {
            while let Some(v) = b_rx.recv().await {
                if to_a.send(v + 1).await.is_err() {
                    break;
                }
            }
        });
        // The pinging side is a task too, so both ends run on workers.
        let ping = tokio::spawn(async move {
            let t0 = Instant::now();
            for i in 0..n {
                to_b.send(i).await.unwrap();
                assert_eq!(a_rx.recv().await.unwrap(), i + 1);
            }
            t0.elapsed()
        });
        let t = ping.await.unwrap();
        echo.await.unwrap();
        t
    })
}

/// Two `current_thread` runtimes on two threads: every hand-off really
/// crosses threads (in `multi_thread` the two tasks may share a worker).
fn tokio_threads_pingpong(n: u64) -> Duration {
    let (to_b, mut b_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let (to_a, mut a_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let echo = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            while let Some(v) = b_rx.recv().await {
                if to_a.send(v + 1).await.is_err() {
                    break;
                }
            }
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = rt.block_on(async move {
        let t0 = Instant::now();
        for i in 0..n {
            to_b.send(i).await.unwrap();
            assert_eq!(a_rx.recv().await.unwrap(), i + 1);
        }
        t0.elapsed()
    });
    echo.join().unwrap();
    t
}

fn tokio_threads_stream(n: u64) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAP);
    let t0 = Instant::now();
    let p = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            for i in 0..n {
                tx.send(i).await.unwrap();
            }
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sum = rt.block_on(async move {
        let mut sum = 0u64;
        while let Some(v) = rx.recv().await {
            sum += v;
        }
        sum
    });
    p.join().unwrap();
    assert_eq!(sum, n * (n - 1) / 2);
    t0.elapsed()
}

fn tokio_stream(n: u64) -> Duration {
    let rt = tokio_rt();
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAP);
        let t0 = Instant::now();
        let p = tokio::spawn(async move {
            for i in 0..n {
                tx.send(i).await.unwrap();
            }
        });
        let c = tokio::spawn(async move {
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum += v;
            }
            sum
        });
        p.await.unwrap();
        let sum = c.await.unwrap();
        assert_eq!(sum, n * (n - 1) / 2);
        t0.elapsed()
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The number after `flag`, if given; exits with a message if it is not one.
fn number_flag(args: &[String], flag: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == flag)?;
    match args.get(i + 1).map(|v| v.parse()) {
        Some(Ok(n)) if n > 0 => Some(n),
        _ => {
            eprintln!("{flag} needs a positive number");
            std::process::exit(2);
        }
    }
}

type Contender = (&'static str, fn(u64) -> Duration);

/// Runs every contender `repeat` times, interleaved; prints a table of
/// medians in `unit` per operation with ratios to the first.
fn compare(title: &str, ops: u64, repeat: usize, contenders: &[Contender]) {
    let mut runs: Vec<Vec<Duration>> = contenders.iter().map(|_| Vec::new()).collect();
    for (_, run) in contenders {
        run(ops / 10); // warm up
    }
    for _ in 0..repeat {
        for (i, (_, run)) in contenders.iter().enumerate() {
            runs[i].push(run(ops));
        }
    }
    println!("\n{title}: {ops} operations, median of {repeat}");
    println!(
        "  {:<36} {:>10} {:>14} {:>12}",
        "", "ns/op", "ops/s", "× greenhouse"
    );
    let medians: Vec<Duration> = runs.into_iter().map(median).collect();
    let base = medians[0].as_nanos() as f64 / ops as f64;
    for ((name, _), t) in contenders.iter().zip(medians) {
        let ns = t.as_nanos() as f64 / ops as f64;
        println!(
            "  {name:<36} {ns:>10.0} {:>14.0} {:>12.2}",
            1e9 / ns.max(1e-9),
            ns / base
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let round_trips = number_flag(&args, "--round-trips").unwrap_or(100_000);
    let items = number_flag(&args, "--items").unwrap_or(2_000_000);
    let repeat = number_flag(&args, "--repeat").unwrap_or(5) as usize;
    compare(
        "ping-pong between two threads (a round trip per op)",
        round_trips,
        repeat,
        &[
            ("greenhouse mpmc, two hubs", greenhouse_pingpong),
            ("crossbeam-channel, two threads", crossbeam_pingpong),
            ("flume, two threads", flume_pingpong),
            ("tokio mpsc, multi_thread (2)", tokio_pingpong),
            ("tokio mpsc, two current_thread rts", tokio_threads_pingpong),
        ],
    );
    compare(
        "stream from one thread to another (an item per op)",
        items,
        repeat,
        &[
            ("greenhouse mpmc, two hubs", greenhouse_stream),
            ("crossbeam-channel, two threads", crossbeam_stream),
            ("flume, two threads", flume_stream),
            ("tokio mpsc, multi_thread (2)", tokio_stream),
            ("tokio mpsc, two current_thread rts", tokio_threads_stream),
        ],
    );
}

#[test]
fn every_contender_delivers_everything() {
    // Each asserts every echo and the stream's sum.
    for run in [
        greenhouse_pingpong,
        crossbeam_pingpong,
        flume_pingpong,
        tokio_pingpong,
        tokio_threads_pingpong,
    ] {
        run(500);
    }
    for run in [
        greenhouse_stream,
        crossbeam_stream,
        flume_stream,
        tokio_stream,
        tokio_threads_stream,
    ] {
        run(20_000);
    }
}
