//! Profiling helper: generator send round trips.
//!
//! Run with `cargo run --release --example gen_loop [iterations]`.

use greenhouse::{Generator, GeneratorState};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let mut g: Generator<u64, u64, ()> = Generator::new(|y, mut x| {
        loop {
            x = y.yield_(x + 1);
        }
    });
    let t0 = std::time::Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        if let Ok(GeneratorState::Yielded(v)) = g.send(i) {
            acc = acc.wrapping_add(v);
        }
    }
    println!(
        "{:.1} ns per send (checksum {acc})",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
}
