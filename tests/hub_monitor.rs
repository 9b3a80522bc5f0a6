//! The blocked-hub detector: a greenlet that blocks the hub in an
//! unpatched call is reported with its name, its backtrace and, when it
//! gives the hub back, the total time; a hub that only parks, or a busy but
//! cooperative one, is never reported.
//!
//! The threshold and the hook are process-wide, and the tests run in
//! parallel threads, so each test keeps only the reports of its own thread.

use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use greenhouse::{BlockedReport, Builder, sleep, spawn, yield_now};

type Reports = Arc<Mutex<Vec<BlockedReport>>>;

/// Installs a 50 ms threshold and a hook that keeps every report.
fn reports() -> Reports {
    static ALL: Mutex<Option<Reports>> = Mutex::new(None);
    // A failed test must not poison the others.
    ALL.clear_poison();
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let all: Reports = Arc::default();
        *ALL.lock().unwrap() = Some(all.clone());
        greenhouse::set_blocked_hook(move |r| all.lock().unwrap().push(r.clone()));
        greenhouse::set_blocked_threshold(Some(Duration::from_millis(50)));
    });
    ALL.lock().unwrap().clone().unwrap()
}

fn mine(all: &Reports) -> Vec<BlockedReport> {
    let me = std::thread::current().name().unwrap_or("").to_string();
    all.lock()
        .unwrap()
        .iter()
        .filter(|r| r.thread == me)
        .cloned()
        .collect()
}

/// Not inlined, and not a tail call (it works after the sleep), so that
/// it is a frame of its own in release builds too.
#[inline(never)]
fn block_the_thread_in_std_sleep() -> u128 {
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(400));
    std::hint::black_box(t0.elapsed().as_nanos())
}

#[test]
fn a_greenlet_blocking_in_std_sleep_is_reported_by_name_with_its_stack() {
    let all = reports();
    let bystander = spawn(|| sleep(Duration::from_secs(2)));
    let blocker = Builder::new()
        .name("the-blocker")
        .spawn(block_the_thread_in_std_sleep)
        .unwrap();
    let blocker_id = blocker.greenlet().id();
    blocker.join().unwrap();
    yield_now(); // the hub turns: the incident is over
    // The first report symbolizes the stack (slow the first time: the
    // debug info is read); wait for both reports, up to a minute.
    let t0 = std::time::Instant::now();
    while mine(&all).iter().all(|r| !r.finished) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let rs = mine(&all);
    let first = rs.iter().find(|r| !r.finished).unwrap_or_else(|| {
        panic!(
            "a report while blocked: {rs:?} of {:?}",
            all.lock().unwrap()
        )
    });
    assert_eq!(first.greenlet, "the-blocker");
    assert_eq!(first.id, blocker_id);
    assert!(first.running_for >= Duration::from_millis(50));
    assert!(
        first.backtrace.contains("block_the_thread_in_std_sleep"),
        "{}",
        first.backtrace
    );
    let last = rs
        .iter()
        .find(|r| r.finished)
        .expect("a report when it yields");
    assert_eq!(last.greenlet, "the-blocker");
    assert!(last.running_for >= Duration::from_millis(300), "{last:?}");
    assert_eq!(
        rs.iter().filter(|r| !r.finished).count(),
        1,
        "once per incident"
    );
    bystander.kill().unwrap();
}

#[test]
fn a_hub_that_only_parks_is_never_reported() {
    let all = reports();
    let hs: Vec<_> = (0..100)
        .map(|i| spawn(move || sleep(Duration::from_millis(100 + i * 3))))
        .collect();
    greenhouse::joinall(hs);
    sleep(Duration::from_millis(200)); // main parks too
    assert!(mine(&all).is_empty(), "{:?}", mine(&all));
}

#[test]
fn a_busy_cooperative_hub_is_never_reported() {
    let all = reports();
    let t0 = std::time::Instant::now();
    let mut hs = Vec::new();
    for i in 0..10_000 {
        hs.push(spawn(move || {
            while t0.elapsed() < Duration::from_secs(2) {
                yield_now();
            }
        }));
        if i % 100 == 99 {
            yield_now(); // spawning is work too: let the hub turn
        }
    }
    greenhouse::joinall(hs);
    assert!(mine(&all).is_empty(), "{:?}", mine(&all));
}

#[test]
fn a_thread_that_exits_with_greenlets_alive_is_no_longer_watched() {
    let all = reports();
    // Each thread leaves a greenlet parked for an hour behind, so its hub
    // had work when it went: a probe left registered would look blocked
    // (and the monitor would signal a thread that is gone).
    let names: Vec<String> = (0..8).map(|i| format!("short-lived-{i}")).collect();
    for name in &names {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(|| {
                let _left = spawn(|| sleep(Duration::from_secs(3600)));
                yield_now();
            })
            .unwrap()
            .join()
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300)); // six thresholds
    let stale: Vec<_> = all
        .lock()
        .unwrap()
        .iter()
        .filter(|r| names.contains(&r.thread))
        .cloned()
        .collect();
    assert!(stale.is_empty(), "{stale:?}");
}
