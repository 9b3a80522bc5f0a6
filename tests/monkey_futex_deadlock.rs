//! A std lock that only a parked greenlet could release, in a process with
//! no other thread: the hub reports `Deadlock` instead of hanging (issue
//! 20). Its own test binary without the test harness, whose threads would
//! count as possible wakers: here the hub's thread is the only thread.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use greenhouse::sync::Event;
use greenhouse::{Error, sleep, spawn};

fn main() {
    greenhouse::monkey::patch_all();

    // First the lock is only held across a sleep: the waiter gets it.
    let m = Arc::new(Mutex::new(0));
    let m1 = m.clone();
    let holder = spawn(move || {
        let mut g = m1.lock().unwrap();
        sleep(Duration::from_millis(20));
        *g += 1;
    });
    let m2 = m.clone();
    let waiter = spawn(move || *m2.lock().unwrap() + 1);
    holder.join().unwrap();
    assert_eq!(waiter.join().unwrap(), 2);

    // Now its holder waits for an event nobody will ever set.
    let never = Event::new();
    let m1 = m.clone();
    let n = never.clone();
    let _holder = spawn(move || {
        let _g = m1.lock().unwrap();
        let _ = n.wait();
    });
    greenhouse::yield_now();
    let m2 = m.clone();
    let waiter = spawn(move || *m2.lock().unwrap());
    assert_eq!(waiter.join().unwrap_err(), Error::Deadlock);
    println!("monkey_futex_deadlock: ok (the lock wait was reported as a deadlock)");
}
