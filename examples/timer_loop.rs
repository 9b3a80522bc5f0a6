//! Profiling helper for the hub's timers. 100,000 greenlets park on far
//! deadlines first (so the timer structure is large), then `N` timer
//! operations run:
//!
//! - `fire`: 1,000 greenlets sleep a pseudo-random 0–2 ms each, `N` sleeps
//!   in all: every sleep inserts a timer that fires.
//! - `cancel`: two greenlets ping-pong `N` items through a `Queue` with
//!   `get_timeout`: every get arms a timer that the put cancels.
//!
//! Instructions per operation: run it under callgrind at two values of `N`
//! and divide the difference. Run with
//! `cargo run --release --example timer_loop -- fire|cancel [N]`.

use std::time::Duration;

use greenhouse::sync::Queue;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "fire".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let parked: Vec<_> = (0..100_000u64)
        .map(|i| greenhouse::spawn(move || greenhouse::sleep(Duration::from_secs(3600 + i))))
        .collect();
    greenhouse::yield_now();
    let t0 = std::time::Instant::now();
    match mode.as_str() {
        "fire" => {
            let workers = 1_000;
            let hs: Vec<_> = (0..workers)
                .map(|w| {
                    greenhouse::spawn(move || {
                        let mut x = w + 1;
                        for _ in 0..n / workers {
                            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            greenhouse::sleep(Duration::from_micros((x >> 33) % 2_001));
                        }
                    })
                })
                .collect();
            for r in greenhouse::joinall(hs) {
                r.unwrap();
            }
        }
        "cancel" => {
            let (ping, pong) = (Queue::new(), Queue::new());
            let (p2, q2) = (ping.clone(), pong.clone());
            let echo = greenhouse::spawn(move || {
                for _ in 0..n {
                    let v: u64 = p2.get_timeout(Duration::from_secs(60)).unwrap();
                    q2.put(v).unwrap();
                }
            });
            for i in 0..n {
                ping.put(i).unwrap();
                assert_eq!(pong.get_timeout(Duration::from_secs(60)).unwrap(), i);
            }
            echo.join().unwrap();
        }
        other => panic!("unknown mode {other:?}: fire or cancel"),
    }
    let per = t0.elapsed().as_nanos() as f64 / n as f64;
    println!("{mode}: {n} operations, {per:.0} ns each (100,000 far timers pending)");
    greenhouse::killall(&parked).unwrap();
}
