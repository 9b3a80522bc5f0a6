//! Debugging a hub: the blocked-hub detector at work.
//!
//! A ticker greenlet should tick every 10 ms; a careless greenlet calls
//! the unpatched `std::thread::sleep` and freezes the whole hub. The
//! detector names it, shows where it is, and reports again when it lets
//! the hub go. (The greenlet dump of issue 15's second part will join this
//! example.)
//!
//! ```text
//! cargo run --example debug_hub
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use greenhouse::{BlockedReport, Builder, sleep, spawn};

/// Runs the scenario with the detector at `threshold`; returns the
/// reports about this thread's hub and how many ticks happened.
fn run(threshold: Duration) -> (Vec<BlockedReport>, u32) {
    let reports: Arc<Mutex<Vec<BlockedReport>>> = Arc::default();
    let r = reports.clone();
    greenhouse::set_blocked_hook(move |report| r.lock().unwrap().push(report.clone()));
    greenhouse::set_blocked_threshold(Some(threshold));

    let ticker = spawn(|| {
        let mut ticks = 0;
        for _ in 0..30 {
            sleep(Duration::from_millis(10));
            ticks += 1;
        }
        ticks
    });
    let careless = Builder::new()
        .name("careless")
        .spawn(load_settings_the_blocking_way)
        .unwrap();
    careless.join().unwrap();
    let ticks = ticker.join().unwrap();
    // The monitor reports from its own thread: wait for the second report.
    let me = std::thread::current().name().unwrap_or("").to_string();
    let t0 = std::time::Instant::now();
    let mine = || -> Vec<BlockedReport> {
        let all = reports.lock().unwrap();
        all.iter().filter(|r| r.thread == me).cloned().collect()
    };
    while !mine().iter().any(|r| r.finished) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    greenhouse::clear_blocked_hook();
    (mine(), ticks)
}

/// Blocks the thread for 300 ms: nothing else on the hub runs meanwhile.
#[inline(never)]
fn load_settings_the_blocking_way() -> u128 {
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    std::hint::black_box(t0.elapsed().as_nanos())
}

fn main() {
    let (reports, ticks) = run(Duration::from_millis(100));
    println!("the ticker ticked {ticks} times; the detector said:\n");
    for r in reports {
        println!("{r}\n");
    }
}

#[test]
fn the_careless_greenlet_is_named_with_its_stack_and_its_total_time() {
    let (reports, ticks) = run(Duration::from_millis(50));
    assert_eq!(ticks, 30);
    let first = reports.iter().find(|r| !r.finished).expect("a report");
    assert_eq!(first.greenlet, "careless");
    assert!(
        first.backtrace.contains("load_settings_the_blocking_way"),
        "{}",
        first.backtrace
    );
    let last = reports.iter().find(|r| r.finished).expect("a final report");
    assert!(last.running_for >= Duration::from_millis(200), "{last:?}");
}
