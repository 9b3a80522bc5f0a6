//! Timers, sleep ordering, `Timeout` and `with_timeout`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhouse::{Error, Timeout, joinall, sleep, sleep_until, spawn, with_timeout};

/// xorshift64*: deterministic test randomness without a dependency.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn ten_thousand_sleepers_wake_in_deadline_order() {
    const N: usize = 10_000;
    // Deadlines are fixed up front, far enough ahead that every greenlet
    // is parked before the first one is due.
    let base = Instant::now() + Duration::from_millis(500);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let deadlines: Vec<Instant> = (0..N)
        .map(|_| base + Duration::from_micros(rng(&mut seed) % 50_000))
        .collect();
    let woke = Rc::new(RefCell::new(Vec::with_capacity(N)));
    let hs: Vec<_> = deadlines
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let w = woke.clone();
            spawn(move || {
                // Under a slow build (a sanitizer) a greenlet may only get
                // to park after its deadline: it then returns at once, which
                // says nothing about timer order. Such wakes are left out.
                let late = Instant::now() >= d;
                sleep_until(d);
                w.borrow_mut().push((i, late, Instant::now()));
            })
        })
        .collect();
    for r in joinall(hs) {
        r.unwrap();
    }
    let woke = woke.borrow();
    assert_eq!(woke.len(), N);
    let woke: Vec<_> = woke.iter().filter(|w| !w.1).map(|w| (w.0, w.2)).collect();
    for pair in woke.windows(2) {
        let (a, b) = (pair[0].0, pair[1].0);
        assert!(
            (deadlines[a], a) <= (deadlines[b], b),
            "greenlet {a} (due {:?}) woke before {b} (due {:?})",
            deadlines[a],
            deadlines[b]
        );
    }
    assert!(
        woke.iter().all(|&(i, at)| at >= deadlines[i]),
        "nobody woke early"
    );
}

#[test]
fn timeout_interrupts_sleep_in_main() {
    let t0 = Instant::now();
    let t = Timeout::start(Duration::from_millis(20));
    sleep(Duration::from_secs(30)); // ends early
    assert!(t0.elapsed() >= Duration::from_millis(20));
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(t.fired());
    // Still armed and expired: the next sleep ends at once, the next
    // blocking call that returns a Result fails.
    let t1 = Instant::now();
    sleep(Duration::from_secs(30));
    assert!(t1.elapsed() < Duration::from_secs(20));
    assert_eq!(spawn(|| 1).join(), Err(Error::TimedOut));
    drop(t);
    let t2 = Instant::now();
    sleep(Duration::from_millis(1));
    assert!(
        t2.elapsed() >= Duration::from_millis(1),
        "a full sleep again"
    );
    assert_eq!(greenhouse::stats().timers, 0);
}

#[test]
fn timeout_interrupts_sleep_in_a_spawned_greenlet_only() {
    let a = spawn(|| {
        let t = Timeout::start(Duration::from_millis(10));
        sleep(Duration::from_secs(30));
        t.fired()
    });
    let b = spawn(|| {
        let t0 = Instant::now();
        sleep(Duration::from_millis(30));
        t0.elapsed() >= Duration::from_millis(30)
    });
    assert_eq!(a.join(), Ok(true));
    assert_eq!(
        b.join(),
        Ok(true),
        "the other greenlet's sleep was not interrupted"
    );
}

#[test]
fn timeout_interrupts_join() {
    let h = spawn(|| {
        sleep(Duration::from_millis(200));
        9
    });
    let t = Timeout::start(Duration::from_millis(10));
    let mut h = h;
    assert_eq!(
        h.join_timeout(Duration::from_secs(30)),
        Err(Error::TimedOut)
    );
    assert!(t.fired());
    drop(t);
    assert_eq!(h.join(), Ok(9));
}

#[test]
fn a_timeout_that_does_not_expire_changes_nothing() {
    let t = Timeout::start(Duration::from_secs(30));
    let t0 = Instant::now();
    sleep(Duration::from_millis(5));
    assert!(t0.elapsed() >= Duration::from_millis(5));
    assert!(!t.fired());
}

#[test]
fn nested_timeouts_the_earliest_wins() {
    let outer = Timeout::start(Duration::from_millis(10));
    let inner = Timeout::start(Duration::from_secs(30));
    sleep(Duration::from_secs(30));
    assert!(outer.fired());
    assert!(!inner.fired());
}

#[test]
fn with_timeout_returns_the_value_or_timed_out() {
    assert_eq!(with_timeout(Duration::from_secs(10), || 5), Ok(5));
    let r = with_timeout(Duration::from_millis(5), || {
        sleep(Duration::from_secs(10));
        "cut short"
    });
    assert_eq!(r, Err(Error::TimedOut));
    // Disarmed afterwards.
    assert_eq!(
        with_timeout(Duration::from_secs(10), || sleep(Duration::from_millis(1))),
        Ok(())
    );
}

#[test]
fn sleep_zero_yields() {
    let h = spawn(|| 1);
    sleep(Duration::ZERO);
    assert!(h.is_ready());
}

#[test]
fn huge_durations_do_not_overflow() {
    // Instant + Duration::MAX would panic; such a deadline never passes.
    let never = Timeout::start(Duration::MAX);
    let t = Timeout::start(Duration::from_millis(5));
    sleep(Duration::MAX);
    assert!(t.fired());
    assert!(!never.fired());
    drop(t);
    let late = greenhouse::spawn_later(Duration::MAX, || ());
    assert!(!late.is_ready());
    late.kill().unwrap();
}
