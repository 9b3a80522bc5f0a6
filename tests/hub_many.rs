//! Scale: 100,000 greenlets alive at once, within the default
//! `vm.max_map_count`, all parked on one fd and then joined.

use std::cell::Cell;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use greenhouse::{Watcher, joinall, spawn, stats, yield_now};

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn hundred_thousand_greenlets_alive_at_once_then_joined() -> io::Result<()> {
    const N: u64 = 100_000;
    let (gate, mut opener) = UnixStream::pair()?;
    gate.set_nonblocking(true)?;
    let gate = Rc::new(Watcher::new(gate)?);
    let alive = Rc::new(Cell::new(0u64));
    let hs: Vec<_> = (0..N)
        .map(|i| {
            let (gate, alive) = (gate.clone(), alive.clone());
            spawn(move || {
                alive.set(alive.get() + 1);
                gate.readable(None).unwrap();
                alive.set(alive.get() - 1);
                i
            })
        })
        .collect();
    yield_now(); // every greenlet starts and parks on the gate
    assert_eq!(alive.get(), N);
    assert_eq!(stats().io_waiters, N as usize);
    let maps = map_count();
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map(|s| s.trim().parse().unwrap_or(65_530))
        .unwrap_or(65_530);
    println!(
        "{N} live greenlets use {maps} memory maps (limit {limit}, guards: {})",
        stats().stack_guard
    );
    assert!(maps < limit, "{maps} maps for {N} greenlets");
    if stats().stack_guard.starts_with("madvise") {
        // Guard pages do not split mappings: far fewer maps than greenlets.
        assert!(maps < 10_000, "{maps} maps for {N} greenlets");
    }
    opener.write_all(b"go")?;
    let sum: u64 = joinall(hs).into_iter().map(Result::unwrap).sum();
    assert_eq!(sum, N * (N - 1) / 2);
    assert_eq!(alive.get(), 0);
    assert_eq!(stats().io_waiters, 0);
    Ok(())
}
