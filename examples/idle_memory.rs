//! Memory of idle greenlets: spawns N greenlets that all park in `sleep`,
//! then prints the resident memory (RSS, from /proc/self/status) they added,
//! per greenlet, and the number of memory maps the process uses.
//!
//! Run with `cargo run --release --example idle_memory -- [N]`
//! (default 100,000; try 1000000).

use std::time::{Duration, Instant};

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("procfs");
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    // Warm up the hub, the allocator and one stack slab.
    greenhouse::spawn(|| ()).join().unwrap();
    let before = status_kib("VmRSS:");
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| greenhouse::spawn(|| greenhouse::sleep(Duration::from_secs(3600))))
        .collect();
    greenhouse::yield_now(); // every greenlet starts and parks in sleep
    let spawn_time = t0.elapsed();
    let after = status_kib("VmRSS:");
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let stats = greenhouse::stats();
    assert_eq!(stats.timers, n, "every greenlet is parked in sleep");
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!("idle greenlets:        {n}");
    println!(
        "RSS added:             {} KiB",
        after.saturating_sub(before)
    );
    println!("RSS per greenlet:      {per:.0} bytes");
    println!(
        "memory maps:           {maps} (stack guards: {})",
        stats.stack_guard
    );
    println!("spawn + park all:      {spawn_time:?}");
    let t1 = Instant::now();
    greenhouse::killall(&handles).unwrap();
    println!("kill all:              {:?}", t1.elapsed());
}
