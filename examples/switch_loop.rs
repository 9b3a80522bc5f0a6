//! Profiling helper: ten million main ↔ greenlet switch round trips.
//!
//! Run with `cargo run --release --example switch_loop`.

use greenhouse::Greenlet;

fn main() {
    let g = Greenlet::new(|(): ()| {
        let main = Greenlet::main();
        loop {
            main.switch::<(), ()>(()).unwrap();
        }
    });
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        g.switch::<(), ()>(()).unwrap();
    }
    let ours = t0.elapsed().as_nanos() as f64 / n as f64;
    let mut raw: corosensei::Coroutine<(), (), ()> = corosensei::Coroutine::new(|y, ()| {
        loop {
            y.suspend(());
        }
    });
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        raw.resume(());
    }
    let base = t0.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "greenhouse {ours:.1} ns, raw corosensei {base:.1} ns per round trip ({:.1}x)",
        ours / base
    );
}
