//! `greenhouse::pool` (Pool, Group, map/imap, callbacks) and
//! `greenhouse::local`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use greenhouse::local::Local;
use greenhouse::pool::{Group, Pool};
use greenhouse::{Error, Timeout, sleep, spawn, yield_now};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_pool_bound_is_never_exceeded() {
    let pool = Pool::new(4);
    let inside = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let mut hs = Vec::new();
    for i in 0..40u64 {
        let (inside, peak) = (inside.clone(), peak.clone());
        hs.push(
            pool.spawn(move || {
                inside.set(inside.get() + 1);
                peak.set(peak.get().max(inside.get()));
                assert!(inside.get() <= 4);
                sleep(ms(i % 3));
                inside.set(inside.get() - 1);
                i
            })
            .unwrap(),
        );
        assert!(pool.len() <= 4);
    }
    let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, (0..40).sum());
    assert_eq!(peak.get(), 4);
    assert_eq!(pool.free_count(), 4);
    assert!(pool.is_empty());
}

#[test]
fn slots_come_back_however_a_member_ends() {
    let pool = Pool::new(2);
    let panics = pool.spawn(|| -> u8 { panic!("member failed") }).unwrap();
    let sleeper = pool.spawn(|| sleep(Duration::from_secs(60))).unwrap();
    assert!(pool.is_full());
    assert!(matches!(panics.join(), Err(Error::Panicked(_))));
    sleeper.kill().unwrap();
    assert_eq!(pool.free_count(), 2);
    // A member killed before it ever ran also gives its slot back.
    let never = pool.spawn(|| 1).unwrap();
    never.kill().unwrap();
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn map_keeps_input_order_and_reports_the_first_error() {
    let pool = Pool::new(3);
    let out = pool
        .map(
            |x: u64| {
                sleep(ms(10 - x)); // later inputs finish first
                x * x
            },
            0..10,
        )
        .unwrap();
    assert_eq!(out, (0..10).map(|x| x * x).collect::<Vec<_>>());
    let err = pool
        .map(
            |x: u32| {
                assert!(x != 2, "bad input {x}");
                x
            },
            0..5,
        )
        .unwrap_err();
    assert!(err.to_string().contains("bad input 2"), "{err}");
}

#[test]
fn imap_is_lazy_and_bounded_and_unordered_yields_as_tasks_finish() {
    let started = Rc::new(Cell::new(0));
    let s = started.clone();
    let pool = Pool::new(2);
    let mut it = pool.imap(
        move |x: u64| {
            s.set(s.get() + 1);
            sleep(ms(5));
            x
        },
        0..6,
    );
    assert_eq!(it.next(), Some(Ok(0)));
    assert!(started.get() <= 4, "at most the pool's size runs ahead");
    assert_eq!(it.collect::<Result<Vec<_>, _>>().unwrap(), [1, 2, 3, 4, 5]);

    let group = Group::new();
    let order: Vec<u64> = group
        .imap_unordered(
            |d: u64| {
                sleep(ms(d));
                d
            },
            [40, 1, 20],
        )
        .map(Result::unwrap)
        .collect();
    assert_eq!(order, [1, 20, 40]);
}

#[test]
fn dropping_an_imap_early_stops_feeding() {
    let started = Rc::new(Cell::new(0));
    let s = started.clone();
    let pool = Pool::new(1);
    let mut it = pool.imap(
        move |x: u32| {
            s.set(s.get() + 1);
            x
        },
        0..1000,
    );
    assert_eq!(it.next(), Some(Ok(0)));
    drop(it);
    pool.join().unwrap();
    sleep(ms(2));
    assert!(
        started.get() < 10,
        "the feeder kept going: {}",
        started.get()
    );
}

#[test]
fn apply_join_kill_and_wait_available() {
    let pool = Pool::new(1);
    assert_eq!(pool.apply(|| 5), Ok(5));
    // A member applying to its own full pool runs the function itself.
    let p2 = pool.clone();
    let h = pool.spawn(move || p2.apply(|| 6)).unwrap();
    assert_eq!(h.join().unwrap(), Ok(6));

    let sleeper = pool.spawn(|| sleep(Duration::from_secs(60))).unwrap();
    assert_eq!(pool.join_timeout(ms(2)), Ok(false));
    {
        let _t = Timeout::start(ms(2));
        assert_eq!(pool.wait_available(), Err(Error::TimedOut));
    }
    pool.kill().unwrap();
    assert_eq!(sleeper.join(), Err(Error::Killed));
    assert_eq!(pool.wait_available(), Ok(1));
    assert_eq!(pool.join_timeout(ms(2)), Ok(true));
}

#[test]
fn spawn_waits_fifo_for_a_slot() {
    let pool = Pool::new(1);
    let log = Rc::new(RefCell::new(Vec::new()));
    let first = pool.spawn(|| sleep(ms(5))).unwrap();
    let spawners: Vec<_> = (0..3)
        .map(|i| {
            let (pool, log) = (pool.clone(), log.clone());
            let h = spawn(move || {
                let h = pool.spawn(move || i).unwrap();
                log.borrow_mut().push(i);
                h.join().unwrap()
            });
            yield_now();
            h
        })
        .collect();
    first.join().unwrap();
    for h in spawners {
        h.join().unwrap();
    }
    assert_eq!(*log.borrow(), [0, 1, 2]);
}

#[test]
fn completion_callbacks_run_in_order_with_the_result() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let h = spawn(|| {
        sleep(ms(1));
        7
    });
    for tag in ["a", "b"] {
        let log = log.clone();
        h.link(move |d| log.borrow_mut().push(format!("{tag}:{:?}", d.result())));
    }
    assert_eq!(h.join(), Ok(7), "the result stays for join");
    assert_eq!(*log.borrow(), ["a:Ok(7)", "b:Ok(7)"]);

    // Linking to a finished greenlet runs at once; failures are delivered.
    let failed = spawn(|| -> u8 { panic!("nope") });
    yield_now();
    let l2 = log.clone();
    failed.link(move |d| {
        l2.borrow_mut()
            .push(format!("failed:{}", d.result().is_err()))
    });
    assert_eq!(log.borrow().last().unwrap(), "failed:true");
    let killed = spawn(|| sleep(Duration::from_secs(60)));
    let l3 = log.clone();
    killed.link(move |d| l3.borrow_mut().push(format!("{:?}", d.result())));
    killed.kill().unwrap();
    assert_eq!(log.borrow().last().unwrap(), "Err(Killed)");
}

#[test]
fn locals_are_per_greenlet_and_dropped_when_it_ends() {
    struct Noisy(Rc<Cell<u32>>);
    impl Drop for Noisy {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let local = Local::new(move || (Noisy(d.clone()), Cell::new(0u32)));
    let hs: Vec<_> = (1..=3u32)
        .map(|i| {
            let local = local.clone();
            spawn(move || {
                local.with(|(_, v)| v.set(i));
                yield_now();
                local.with(|(_, v)| v.get())
            })
        })
        .collect();
    let killed = {
        let local = local.clone();
        spawn(move || {
            local.with(|_| ());
            sleep(Duration::from_secs(60));
        })
    };
    let seen: Vec<u32> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(drops.get(), 3);
    killed.kill().unwrap();
    assert_eq!(drops.get(), 4, "a killed greenlet's locals are dropped too");
    assert!(!local.is_set(), "main has no value until it asks");
    local.with(|(_, v)| v.set(9));
    assert!(local.is_set());
    assert_eq!(local.take().map(|(_, v)| v.get()), Some(9));
    assert_eq!(drops.get(), 5);
}

#[test]
fn a_full_pool_says_pool_full_instead_of_waiting() {
    let pool = Pool::new(2);
    let a = pool.try_spawn(|| sleep(ms(20))).unwrap();
    let b = pool.try_spawn(|| sleep(ms(20))).unwrap();
    assert!(pool.is_full());
    assert_eq!(pool.try_spawn(|| ()).unwrap_err(), Error::PoolFull);
    assert_eq!(
        pool.spawn_timeout(|| (), ms(2)).unwrap_err(),
        Error::PoolFull
    );
    assert_eq!(pool.wait_available_timeout(ms(2)), Ok(0));
    assert!(
        pool.wait_available_timeout(Duration::from_secs(10))
            .unwrap()
            >= 1
    );
    let c = pool.spawn_timeout(|| 3, Duration::from_secs(10)).unwrap();
    assert_eq!(c.join(), Ok(3));
    assert_eq!((a.join(), b.join()), (Ok(()), Ok(())));
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn add_tracks_greenlets_spawned_elsewhere_and_releases_their_slot() {
    let pool = Pool::new(1);
    let h = greenhouse::Builder::new().create(|| 7).unwrap();
    pool.add(&h).unwrap();
    pool.add(&h).unwrap(); // already a member: nothing more taken
    assert_eq!((pool.len(), pool.free_count()), (1, 0));
    let other = spawn(|| 8);
    assert_eq!(pool.try_add(&other).unwrap_err(), Error::PoolFull);
    assert_eq!(
        pool.add_timeout(&other, ms(1)).unwrap_err(),
        Error::PoolFull
    );
    h.start();
    pool.join().unwrap();
    assert_eq!((pool.len(), pool.free_count()), (0, 1));
    assert_eq!(h.join(), Ok(7));
    // A finished greenlet is not added.
    pool.add(&other).unwrap();
    assert_eq!(pool.len(), 0);
    // The group holds what it tracks: one never started keeps its slot
    // (its handle gone or not) until it is started or killed, as in gevent.
    let never = greenhouse::Builder::new().create(|| ()).unwrap();
    pool.add(&never).unwrap();
    let g = never.greenlet();
    drop(never);
    yield_now();
    assert_eq!((pool.len(), pool.free_count()), (1, 0));
    pool.kill().unwrap();
    assert!(g.is_dead());
    assert_eq!((pool.len(), pool.free_count()), (0, 1));
}
