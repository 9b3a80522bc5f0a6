//! Copy-stack greenlets (`Builder::copy_stack`, `set_copy_stacks`): their
//! frames survive being moved out and back while other greenlets run on
//! the same run stacks.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use greenhouse::sync::{Event, Queue};
use greenhouse::{Builder, Error, Greenlet, JoinHandle};

fn copied() -> Builder {
    // SAFETY: the greenlets in these tests lend nothing on their stacks to
    // other threads or greenlets.
    unsafe { Builder::new().copy_stack() }
}

/// Recurses `depth` frames, each holding a buffer stamped with `(id,
/// level)`, parks at the bottom `parks` times, then checks every buffer
/// on the way back and returns their sum.
fn nest(id: u32, depth: u32, parks: u32) -> u64 {
    let mut buf = [0u32; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = id.wrapping_mul(31).wrapping_add(depth * 1000 + i as u32);
    }
    let below = if depth == 0 {
        for _ in 0..parks {
            greenhouse::sleep(Duration::from_micros(u64::from(id % 7) * 100));
        }
        0
    } else {
        nest(id, depth - 1, parks)
    };
    for (i, b) in std::hint::black_box(&buf).iter().enumerate() {
        assert_eq!(
            *b,
            id.wrapping_mul(31).wrapping_add(depth * 1000 + i as u32)
        );
    }
    below + buf.iter().map(|&b| u64::from(b)).sum::<u64>()
}

fn expected(id: u32, depth: u32) -> u64 {
    (0..=depth)
        .map(|d| {
            (0..32u32)
                .map(|i| u64::from(id.wrapping_mul(31).wrapping_add(d * 1000 + i)))
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn frames_survive_being_moved_out_while_others_run() {
    let hs: Vec<(u32, JoinHandle<u64>)> = (0..300u32)
        .map(|id| {
            let depth = id % 17;
            (id, copied().spawn(move || nest(id, depth, 3)).unwrap())
        })
        .collect();
    for (id, h) in hs {
        assert_eq!(h.join().unwrap(), expected(id, id % 17), "greenlet {id}");
    }
}

#[test]
fn deep_stacks_park_and_come_back() {
    // Hundreds of KiB of live frames each (debug builds), on 2 MiB run
    // stacks: a size class of their own.
    let hs: Vec<_> = (0..8u32)
        .map(|id| {
            copied()
                .stack_size(2 << 20)
                .spawn(move || nest(id, 600, 2))
                .unwrap()
        })
        .collect();
    for (id, h) in (0..8u32).zip(hs) {
        assert_eq!(h.join().unwrap(), expected(id, 600));
    }
}

#[test]
fn ping_pong_through_queues_between_many_copy_greenlets() {
    // A ring of 20 greenlets (more than the run stacks) passing a counter.
    let n = 20;
    let qs: Vec<Rc<Queue<u64>>> = (0..n).map(|_| Rc::new(Queue::new())).collect();
    let mut hs = Vec::new();
    for i in 0..n {
        let inq = qs[i].clone();
        let outq = qs[(i + 1) % n].clone();
        hs.push(
            copied()
                .spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..50 {
                        let v = inq.get().unwrap();
                        seen.push(v);
                        outq.put(v + 1).unwrap();
                    }
                    seen
                })
                .unwrap(),
        );
    }
    qs[0].put(0).unwrap();
    for (i, h) in hs.into_iter().enumerate() {
        let seen = h.join().unwrap();
        let want: Vec<u64> = (0..50).map(|k| (k * n + i) as u64).collect();
        assert_eq!(seen, want, "greenlet {i}");
    }
}

#[test]
fn explicit_switch_values_from_copy_stack_greenlets() {
    let h = copied()
        .spawn(|| {
            let echo = Greenlet::new(|mut s: String| {
                loop {
                    s = Greenlet::current()
                        .parent()
                        .unwrap()
                        .switch::<String, String>(s + "!")
                        .unwrap();
                }
            });
            let mut out = Vec::new();
            for w in ["a", "bb", "ccc"] {
                out.push(echo.switch::<String, String>(w.to_string()).unwrap());
                greenhouse::sleep(Duration::from_millis(1));
            }
            out
        })
        .unwrap();
    let others: Vec<_> = (0..10u32)
        .map(|id| copied().spawn(move || nest(id, 5, 4)).unwrap())
        .collect();
    assert_eq!(h.join().unwrap(), ["a!", "bb!", "ccc!"]);
    for (id, o) in (0..10u32).zip(others) {
        assert_eq!(o.join().unwrap(), expected(id, 5));
    }
}

#[test]
fn explicit_greenlets_switching_inside_copy_stack_greenlets() {
    // Two copy-stack greenlets each switch with a child of their own
    // while the other runs in between.
    let hs: Vec<_> = (0..6u64)
        .map(|k| {
            copied()
                .spawn(move || {
                    let child = Greenlet::new(move |mut x: u64| {
                        loop {
                            greenhouse::yield_now();
                            x = Greenlet::current()
                                .parent()
                                .unwrap()
                                .switch::<u64, u64>(x * k)
                                .unwrap();
                        }
                    });
                    (1..=20u64)
                        .map(|i| child.switch::<u64, u64>(i).unwrap())
                        .sum::<u64>()
                })
                .unwrap()
        })
        .collect();
    for (k, h) in (0..6u64).zip(hs) {
        assert_eq!(h.join().unwrap(), k * 210);
    }
}

#[test]
fn kill_and_timeout_unwind_a_moved_out_stack() {
    struct Flag(Rc<Cell<u32>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let dropped = Rc::new(Cell::new(0));
    let ev = Rc::new(Event::new());
    let killed: Vec<_> = (0..10)
        .map(|_| {
            let f = Flag(dropped.clone());
            let ev = ev.clone();
            copied()
                .spawn(move || {
                    let _f = f;
                    let _ = ev.wait();
                })
                .unwrap()
        })
        .collect();
    let timed: Vec<_> = (0..10)
        .map(|_| {
            let f = Flag(dropped.clone());
            copied()
                .spawn(move || {
                    let _f = f;
                    greenhouse::with_timeout(Duration::from_millis(5), || {
                        greenhouse::sleep(Duration::from_secs(60))
                    })
                })
                .unwrap()
        })
        .collect();
    // Let all of them park (and be moved out by each other).
    greenhouse::sleep(Duration::from_millis(1));
    greenhouse::killall(&killed).unwrap();
    for h in killed {
        assert_eq!(h.join(), Err(Error::Killed));
    }
    for h in timed {
        assert_eq!(h.join().unwrap(), Err(Error::TimedOut));
    }
    assert_eq!(dropped.get(), 20);
}

#[test]
fn panics_come_out_of_join() {
    let h = copied()
        .spawn(|| {
            greenhouse::sleep(Duration::from_millis(1));
            panic!("boom in a copy stack");
        })
        .unwrap();
    let other = copied().spawn(|| nest(1, 3, 3)).unwrap();
    match h.join() {
        Err(Error::Panicked(p)) => assert!(p.message().contains("boom")),
        r => panic!("unexpected {r:?}"),
    }
    assert_eq!(other.join().unwrap(), expected(1, 3));
}

#[test]
fn generators_inside_copy_stack_greenlets_borrow_their_frames() {
    let hs: Vec<_> = (0..5u64)
        .map(|k| {
            copied()
                .spawn(move || {
                    let data: Vec<u64> = (0..50).map(|i| i * k).collect();
                    let total = RefCell::new(0);
                    // The generator blocks inside (the greenlet parks
                    // mid-generator, its frames on the generator's stack
                    // point into the greenlet's, and back).
                    let g = greenhouse::Generator::new(move |y, (): ()| {
                        let local = [7u8; 512];
                        for &v in &data {
                            assert!(local.iter().all(|&b| b == 7));
                            greenhouse::sleep(Duration::from_micros(50));
                            y.yield_(v);
                        }
                    });
                    for v in g {
                        *total.borrow_mut() += v;
                    }
                    total.into_inner()
                })
                .unwrap()
        })
        .collect();
    for (k, h) in (0..5u64).zip(hs) {
        assert_eq!(h.join().unwrap(), k * 1225);
    }
}

#[test]
fn mixed_with_page_stack_greenlets() {
    let hs: Vec<_> = (0..40u32)
        .map(|id| {
            let b = if id % 2 == 0 {
                copied()
            } else {
                Builder::new()
            };
            b.spawn(move || nest(id, id % 9, 2)).unwrap()
        })
        .collect();
    for (id, h) in (0..40u32).zip(hs) {
        assert_eq!(h.join().unwrap(), expected(id, id % 9));
    }
}

#[test]
fn hub_default_and_own_stack_override() {
    // SAFETY: as in `copied`.
    unsafe { greenhouse::set_copy_stacks(true) };
    let a = greenhouse::spawn(|| nest(3, 4, 2));
    let b = Builder::new().own_stack().spawn(|| nest(4, 4, 2)).unwrap();
    // SAFETY: turning the default off.
    unsafe { greenhouse::set_copy_stacks(false) };
    assert_eq!(a.join().unwrap(), expected(3, 4));
    assert_eq!(b.join().unwrap(), expected(4, 4));
}

/// Parks at the bottom of `depth` frames of 128-byte buffers until `go`.
fn nest_on(depth: u32, go: &Event) -> u32 {
    let buf = [depth; 32];
    let below = if depth == 0 {
        go.wait().unwrap();
        0
    } else {
        nest_on(depth - 1, go)
    };
    below + std::hint::black_box(&buf)[31]
}

#[test]
fn a_parked_greenlet_keeps_its_live_bytes_on_the_heap() {
    let go = Rc::new(Event::new());
    // Twice as many greenlets per size as run stacks: most are moved out.
    let hs: Vec<(u32, JoinHandle<u32>)> = (0..16u32)
        .map(|i| {
            let depth = if i % 2 == 0 { 0 } else { 100 };
            let go = go.clone();
            (depth, copied().spawn(move || nest_on(depth, &go)).unwrap())
        })
        .collect();
    greenhouse::sleep(Duration::from_millis(1));
    let mut out = 0;
    let (mut shallow, mut deep) = (0, usize::MAX);
    for (depth, h) in &hs {
        let usage = h.greenlet().stack_usage().unwrap();
        if usage.saved == 0 {
            continue; // resident: its bytes are in place
        }
        out += 1;
        if *depth == 100 {
            deep = deep.min(usage.saved);
        } else {
            shallow = shallow.max(usage.saved);
        }
        assert!(usage.saved < usage.size, "{usage:?}");
    }
    // The deep ones keep at least their 100 buffers more.
    assert!(
        deep >= shallow + 100 * 128,
        "deep {deep}, shallow {shallow}"
    );
    // Only one greenlet per run stack can be resident.
    assert!(out >= 16 - 4, "{out} moved out");
    go.set();
    for (depth, h) in hs {
        assert_eq!(h.join().unwrap(), depth * (depth + 1) / 2);
    }
}

/// Waits on `go` with a 4 KiB buffer on its stack: zeroed but for a short
/// message written in three places (`full`: all of it written), then
/// checks the whole buffer.
#[inline(never)]
fn park_with_buffer(id: u8, full: bool, go: &Event) -> bool {
    let written = |i: usize| full || [0, 1000, 4090].iter().any(|&at| (at..at + 6).contains(&i));
    let mut buf = [0u8; 4096];
    for (i, b) in buf.iter_mut().enumerate() {
        if written(i) {
            *b = id;
        }
    }
    std::hint::black_box(&mut buf);
    go.wait().unwrap();
    let buf = std::hint::black_box(&buf);
    buf.iter()
        .enumerate()
        .all(|(i, &b)| b == if written(i) { id } else { 0 })
}

#[test]
fn a_zeroed_buffer_is_not_stored_and_comes_back_intact() {
    let go = Rc::new(Event::new());
    // Odd ids fill their buffers, even ones leave them mostly zero.
    let hs: Vec<(bool, JoinHandle<bool>)> = (1..=16u8)
        .map(|id| {
            let go = go.clone();
            let full = id % 2 == 1;
            let h = copied()
                .spawn(move || park_with_buffer(id, full, &go))
                .unwrap();
            (full, h)
        })
        .collect();
    greenhouse::sleep(Duration::from_millis(1));
    let (mut zeroed, mut full) = (Vec::new(), Vec::new());
    for (is_full, h) in &hs {
        let saved = h.greenlet().stack_usage().unwrap().saved;
        if saved > 0 {
            if *is_full { &mut full } else { &mut zeroed }.push(saved);
        }
    }
    assert!(zeroed.len() + full.len() >= 16 - 4, "{zeroed:?} {full:?}");
    assert!(
        !zeroed.is_empty() && !full.is_empty(),
        "{zeroed:?} {full:?}"
    );
    // Under AddressSanitizer a local array may live on its fake stack (on
    // the heap), not on the greenlet's: nothing to compare there.
    if cfg!(all(target_arch = "x86_64", not(greenhouse_asan))) {
        // The zeroed buffers' runs are left out: they store at least 3.5
        // KiB fewer than the same frames with a full buffer.
        let least_full = full.iter().min().unwrap();
        assert!(
            zeroed.iter().all(|&z| z + 3584 <= *least_full),
            "{zeroed:?} {full:?}"
        );
    }
    go.set();
    for (_, h) in hs {
        assert!(h.join().unwrap(), "a buffer came back changed");
    }
}

#[inline(never)]
fn parked_in_copy_dump_test(go: &Event) -> u32 {
    let local = std::hint::black_box([3u32; 16]);
    go.wait().unwrap();
    local.iter().sum()
}

#[test]
fn the_dump_walks_moved_out_stacks_and_changes_nothing() {
    let go = Rc::new(Event::new());
    let hs: Vec<JoinHandle<u32>> = (0..12)
        .map(|_| {
            let go = go.clone();
            copied()
                .spawn(move || parked_in_copy_dump_test(&go))
                .unwrap()
        })
        .collect();
    greenhouse::sleep(Duration::from_millis(1));
    let moved_out = hs
        .iter()
        .filter(|h| h.greenlet().stack_usage().unwrap().saved > 0)
        .count();
    assert!(moved_out >= 8, "{moved_out}");
    // From main: every one's stack is walked, each put in place in turn.
    let d = greenhouse::dump();
    for h in &hs {
        let info = d.get(h.greenlet().id()).unwrap();
        assert_eq!(info.state, greenhouse::GreenletState::Parked);
        let frames: Vec<String> = info
            .backtrace
            .as_ref()
            .unwrap_or_else(|| panic!("no backtrace:\n{d}"))
            .frames()
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert!(
            frames
                .iter()
                .any(|f| f.contains("parked_in_copy_dump_test")),
            "{frames:?}"
        );
    }
    // From a copy-stack greenlet: the others on its run stack have none,
    // the rest do; nothing breaks.
    let ids: Vec<u64> = hs.iter().map(|h| h.greenlet().id()).collect();
    let from_inside = copied()
        .spawn(move || {
            let d = greenhouse::dump();
            ids.iter()
                .filter(|id| d.get(**id).unwrap().backtrace.is_some())
                .count()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!((12 - 4..12).contains(&from_inside), "{from_inside}");
    go.set();
    for h in hs {
        assert_eq!(h.join().unwrap(), 48);
    }
}

struct Flag(Rc<Cell<u32>>);

impl Drop for Flag {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A body waits in the buffer its stack is later saved into: captures of
/// every size (none, odd, larger than any save so far) come out intact,
/// a body that never runs is dropped once, and one that ran is dropped
/// once by itself.
#[test]
fn bodies_wait_in_their_buffer_and_are_dropped_once() {
    let drops = Rc::new(Cell::new(0));
    // Never started: dropping the handle drops the body unrun.
    let f = Flag(drops.clone());
    let h = copied()
        .create(move || {
            let _f = f;
            unreachable!("never started");
        })
        .unwrap();
    drop(h);
    assert_eq!(drops.get(), 1);
    // Killed before it started: dropped unrun, once.
    let f = Flag(drops.clone());
    let h = copied().spawn(move || drop(f)).unwrap();
    h.kill().unwrap();
    assert_eq!(drops.get(), 2);
    // Bodies of many sizes, parked and resumed while others ran.
    let odd = [7u8; 37];
    let big: Vec<u64> = (0..600).collect();
    let big_arr: [u64; 600] = big.try_into().unwrap();
    let f = Flag(drops.clone());
    let hs: Vec<JoinHandle<u64>> = vec![
        copied()
            .spawn(|| {
                greenhouse::sleep(Duration::from_millis(1));
                1
            })
            .unwrap(),
        copied()
            .spawn(move || {
                greenhouse::sleep(Duration::from_millis(1));
                odd.iter().map(|&b| u64::from(b)).sum()
            })
            .unwrap(),
        copied()
            .spawn(move || {
                let _f = f;
                greenhouse::sleep(Duration::from_millis(1));
                big_arr.iter().sum()
            })
            .unwrap(),
    ];
    let got: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, [1, 7 * 37, 599 * 600 / 2]);
    assert_eq!(drops.get(), 3);
}
