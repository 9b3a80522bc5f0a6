//! Profiling helper: spawn + join of a greenlet that returns at once.
//!
//! Run with `cargo run --release --example spawn_loop [iterations]`.

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let t0 = std::time::Instant::now();
    let mut sum = 0;
    for i in 0..n {
        sum += greenhouse::spawn(move || i).join().unwrap();
    }
    let per = t0.elapsed().as_nanos() as f64 / n as f64;
    println!("{per:.1} ns per spawn + join (checksum {sum})");
}
