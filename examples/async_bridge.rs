//! Async Rust and greenlets together (feature `tokio`).
//!
//! The demo: greenlets await a `futures` oneshot completed by another
//! thread, a tokio-only future (tokio's timer) through the tokio bridge,
//! and each other's `JoinHandle`s from async code; a tokio runtime awaits
//! a closure handed to a greenhouse hub (`HubHandle::spawn`).
//!
//! `--bench` measures what the bridge costs, each contender in the same
//! run (medians of `--repeat` runs, default 5), as ratios:
//!
//! - `wait_future` of a ready future, against tokio `current_thread`'s
//!   `block_on` and `futures::executor::block_on` of the same;
//! - a ping-pong between two greenlets through `futures::channel::mpsc`
//!   awaited with `wait_future` (each wake a same-hub waker: a
//!   ready-queue push), against the same over greenhouse's own `Queue`
//!   (a plain park/unpark) and two tokio `current_thread` tasks with the
//!   same channels;
//! - a `wait_tokio` call (a round trip to the bridge's tokio thread and
//!   back), against a plain thread awaiting a task spawned on a tokio
//!   runtime (`futures::executor::block_on(handle.spawn(..))`: the same two
//!   cross-thread handoffs, on tokio's own machinery).
//!
//! ```text
//! cargo run --release --features tokio --example async_bridge [-- --bench [--repeat 5]]
//! ```

use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use greenhouse::bridge::tokio::wait_tokio;
use greenhouse::{HubHandle, spawn, wait_future};

/// The demo; returns what it saw, for the test.
fn demo(greenlets: usize) -> Vec<String> {
    let mut lines = Vec::new();
    // 1. Greenlets await futures completed on another thread.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..greenlets).map(|_| oneshot::channel()).unzip();
    let waiters: Vec<_> = rxs
        .into_iter()
        .map(|rx| spawn(move || wait_future(rx).unwrap().unwrap()))
        .collect();
    let feeder = std::thread::spawn(move || {
        for (i, tx) in txs.into_iter().enumerate() {
            tx.send(i).unwrap();
        }
    });
    let sum: usize = waiters.into_iter().map(|h| h.join().unwrap()).sum();
    feeder.join().unwrap();
    lines.push(format!(
        "{greenlets} greenlets awaited oneshots from another thread: sum {sum}"
    ));

    // 2. A tokio-only future through the bridge.
    let slept = wait_tokio(async {
        let t0 = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        t0.elapsed() >= Duration::from_millis(10)
    })
    .unwrap();
    lines.push(format!("tokio's timer through the bridge: slept {slept}"));

    // 3. Async code awaits greenlets.
    let a = spawn(|| {
        greenhouse::sleep(Duration::from_millis(5));
        20
    });
    let b = spawn(|| 22);
    let (ra, rb) = wait_future(async { futures::join!(a, b) }).unwrap();
    lines.push(format!(
        "async code joined two greenlets: {}",
        ra.unwrap() + rb.unwrap()
    ));

    // 4. A tokio runtime hands blocking-style work to a greenhouse hub.
    let (htx, hrx) = std::sync::mpsc::channel();
    let hub_thread = std::thread::spawn(move || {
        htx.send(HubHandle::current().unwrap()).unwrap();
        greenhouse::sleep(Duration::from_millis(300));
    });
    let hub = hrx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let from_hub = rt
        .block_on(async move {
            hub.spawn(|| {
                greenhouse::sleep(Duration::from_millis(1));
                "done on the hub"
            })
            .unwrap()
            .await
        })
        .unwrap();
    hub_thread.join().unwrap();
    lines.push(format!(
        "tokio awaited a greenlet on another hub: {from_hub}"
    ));
    lines
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per operation of `f(n)`, which runs `n` operations.
fn per_op(n: u64, f: impl FnOnce(u64)) -> f64 {
    let t0 = Instant::now();
    f(n);
    t0.elapsed().as_nanos() as f64 / n as f64
}

fn ready_wait_future(n: u64) {
    for i in 0..n {
        let v = wait_future(std::future::ready(i)).unwrap();
        std::hint::black_box(v);
    }
}

fn ready_tokio(n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in 0..n {
        std::hint::black_box(rt.block_on(std::future::ready(i)));
    }
}

fn ready_futures(n: u64) {
    for i in 0..n {
        std::hint::black_box(futures::executor::block_on(std::future::ready(i)));
    }
}

fn pingpong_wait_future(n: u64) {
    let (mut to_b, mut b_rx) = mpsc::channel::<u64>(1);
    let (mut to_a, mut a_rx) = mpsc::channel::<u64>(1);
    let b = spawn(move || {
        while let Ok(Some(v)) = wait_future(b_rx.next()) {
            if wait_future(to_a.send(v + 1)).unwrap().is_err() {
                break;
            }
        }
    });
    for i in 0..n {
        wait_future(to_b.send(i)).unwrap().unwrap();
        assert_eq!(wait_future(a_rx.next()).unwrap(), Some(i + 1));
    }
    drop(to_b);
    b.join().unwrap();
}

fn pingpong_queue(n: u64) {
    let (to_b, to_a) = (
        greenhouse::sync::Queue::<u64>::bounded(1),
        greenhouse::sync::Queue::<u64>::bounded(1),
    );
    let (qb, qa) = (to_b.clone(), to_a.clone());
    let b = spawn(move || {
        loop {
            let v = qb.get().unwrap();
            if v == u64::MAX {
                return;
            }
            qa.put(v + 1).unwrap();
        }
    });
    for i in 0..n {
        to_b.put(i).unwrap();
        assert_eq!(to_a.get().unwrap(), i + 1);
    }
    to_b.put(u64::MAX).unwrap();
    b.join().unwrap();
}

fn pingpong_tokio(n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut to_b, mut b_rx) = mpsc::channel::<u64>(1);
        let (mut to_a, mut a_rx) = mpsc::channel::<u64>(1);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let b = tokio::task::spawn_local(async move {
                    while let Some(v) = b_rx.next().await {
                        if to_a.send(v + 1).await.is_err() {
                            break;
                        }
                    }
                });
                for i in 0..n {
                    to_b.send(i).await.unwrap();
                    assert_eq!(a_rx.next().await, Some(i + 1));
                }
                drop(to_b);
                b.await.unwrap();
            })
            .await;
    });
}

fn bridge_wait_tokio(n: u64) {
    for i in 0..n {
        assert_eq!(wait_tokio(async move { i }).unwrap(), i);
    }
}

fn bridge_tokio_reference(n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let runner = std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    for i in 0..n {
        let v = futures::executor::block_on(handle.spawn(async move { i })).unwrap();
        assert_eq!(v, i);
    }
    drop(runner); // detached: the process exits with it parked
}

fn bench(repeat: usize) {
    type Row = (&'static str, u64, fn(u64));
    let groups: [(&str, Vec<Row>); 3] = [
        (
            "a ready future",
            vec![
                ("greenhouse wait_future", 2_000_000, ready_wait_future),
                ("tokio current_thread block_on", 2_000_000, ready_tokio),
                ("futures::executor::block_on", 2_000_000, ready_futures),
            ],
        ),
        (
            "ping-pong between two greenlets / tasks (round trip)",
            vec![
                ("wait_future, futures mpsc", 200_000, pingpong_wait_future),
                ("greenhouse Queue (park/unpark)", 200_000, pingpong_queue),
                (
                    "tokio current_thread, futures mpsc",
                    200_000,
                    pingpong_tokio,
                ),
            ],
        ),
        (
            "a call to a tokio runtime on another thread (round trip)",
            vec![
                ("greenhouse wait_tokio", 20_000, bridge_wait_tokio),
                (
                    "plain thread, block_on(handle.spawn)",
                    20_000,
                    bridge_tokio_reference,
                ),
            ],
        ),
    ];
    for (title, rows) in groups {
        let mut runs: Vec<Vec<f64>> = rows.iter().map(|_| Vec::new()).collect();
        for _ in 0..repeat {
            for (i, (_, n, f)) in rows.iter().enumerate() {
                runs[i].push(per_op(*n, *f));
            }
        }
        let medians: Vec<f64> = runs.into_iter().map(median).collect();
        println!("\n{title}: median of {repeat}");
        println!("  {:<42} {:>10} {:>12}", "", "ns/op", "× first");
        for ((name, _, _), m) in rows.iter().zip(&medians) {
            println!("  {name:<42} {m:>10.1} {:>12.2}", m / medians[0]);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") {
        let repeat = args
            .iter()
            .position(|a| a == "--repeat")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        bench(repeat);
        return;
    }
    for line in demo(1000) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_sees_every_result() {
        let lines = std::thread::spawn(|| super::demo(100)).join().unwrap();
        assert_eq!(
            lines,
            [
                "100 greenlets awaited oneshots from another thread: sum 4950",
                "tokio's timer through the bridge: slept true",
                "async code joined two greenlets: 42",
                "tokio awaited a greenlet on another hub: done on the hub",
            ]
        );
    }

    #[test]
    fn every_benchmark_contender_runs() {
        std::thread::spawn(|| {
            super::ready_wait_future(10);
            super::ready_tokio(10);
            super::ready_futures(10);
            super::pingpong_wait_future(10);
            super::pingpong_queue(10);
            super::pingpong_tokio(10);
            super::bridge_wait_tokio(10);
            super::bridge_tokio_reference(10);
        })
        .join()
        .unwrap();
    }
}
