//! Profiling helper: spawn + join of a greenlet that returns at once, or
//! (`kill`) spawn a greenlet that parks in a sleep, then kill it: the
//! kill unwinds its stack from the park.
//!
//! Run with `cargo run --release --example spawn_loop [join|kill] [iterations]`.

use std::time::Duration;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let kill = args.first().is_some_and(|a| a == "kill");
    if args.first().is_some_and(|a| a == "kill" || a == "join") {
        args.remove(0);
    }
    let n: u64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let t0 = std::time::Instant::now();
    let mut sum = 0;
    for i in 0..n {
        if kill {
            let h = greenhouse::spawn(move || {
                greenhouse::sleep(Duration::from_secs(3600));
                i
            });
            greenhouse::yield_now(); // it parks
            h.kill().unwrap();
            sum += u64::from(h.join().is_err());
        } else {
            sum += greenhouse::spawn(move || i).join().unwrap();
        }
    }
    let per = t0.elapsed().as_nanos() as f64 / n as f64;
    let what = if kill {
        "spawn + park + kill"
    } else {
        "spawn + join"
    };
    println!("{per:.1} ns per {what} (checksum {sum})");
}
