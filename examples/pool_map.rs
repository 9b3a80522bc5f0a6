//! A pool of 4 greenlets squaring 0..9, results in input order (like
//! `multiprocessing.Pool.map` / `gevent.pool.Pool.map`); then the same
//! work spawned one by one with a done-callback per task.
//!
//! ```sh
//! cargo run --example pool_map
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::pool::Pool;
use greenhouse::{Error, sleep};

fn square(x: u64) -> u64 {
    // Later inputs finish sooner, so the order of results is not an accident.
    sleep(Duration::from_millis(10 - x));
    x * x
}

fn run() -> Result<Vec<String>, Error> {
    let pool = Pool::new(4);
    let mut out = Vec::new();
    let squares = pool.map(square, 0..10)?;
    out.push(format!("map: {squares:?}"));

    let done = Rc::new(RefCell::new(Vec::new()));
    let mut handles = Vec::new();
    for x in 0..10 {
        let h = pool.spawn(move || square(x))?;
        let done = done.clone();
        h.link(move |d| match d.result() {
            Ok(v) => done.borrow_mut().push(format!("callback: {x}^2 = {v}")),
            Err(e) => done.borrow_mut().push(format!("callback: {x} failed: {e}")),
        });
        handles.push(h);
    }
    pool.join()?;
    out.append(&mut done.borrow_mut());
    let joined: Vec<u64> = handles
        .into_iter()
        .map(|h| h.join())
        .collect::<Result<_, _>>()?;
    out.push(format!("joined: {joined:?}"));
    Ok(out)
}

fn main() -> Result<(), Error> {
    for line in run()? {
        println!("{line}");
    }
    Ok(())
}

#[test]
fn results_come_in_order_and_every_callback_runs_once() {
    let out = run().unwrap();
    assert_eq!(out[0], "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]");
    let mut callbacks: Vec<&String> = out[1..11].iter().collect();
    assert!(callbacks.iter().all(|l| l.starts_with("callback: ")));
    callbacks.sort();
    callbacks.dedup();
    assert_eq!(callbacks.len(), 10);
    assert!(out.contains(&"callback: 9^2 = 81".to_string()));
    assert_eq!(out[11], "joined: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]");
}
