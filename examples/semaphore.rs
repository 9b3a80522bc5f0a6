//! The classic `Semaphore` example: 20 workers share 5 slots; at most 5
//! are ever inside at once.
//!
//! ```sh
//! cargo run --example semaphore
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::sync::Semaphore;
use greenhouse::{Error, sleep, spawn};

/// Runs `workers` workers through `slots` slots; returns the log and the
/// most workers ever inside at once.
fn run(workers: u64, slots: usize) -> Result<(Vec<String>, usize), Error> {
    let sem = Semaphore::new(slots);
    let inside = Rc::new(Cell::new(0usize));
    let peak = Rc::new(Cell::new(0usize));
    let log = Rc::new(std::cell::RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..workers)
        .map(|i| {
            let (sem, inside, peak, log) = (sem.clone(), inside.clone(), peak.clone(), log.clone());
            spawn(move || -> Result<(), Error> {
                let _slot = sem.access()?;
                inside.set(inside.get() + 1);
                peak.set(peak.get().max(inside.get()));
                log.borrow_mut()
                    .push(format!("worker {i:2} in  ({} inside)", inside.get()));
                sleep(Duration::from_millis(5 + i % 4));
                inside.set(inside.get() - 1);
                log.borrow_mut().push(format!("worker {i:2} out"));
                Ok(())
            })
        })
        .collect();
    for h in hs {
        h.join()??;
    }
    let out = log.borrow().clone();
    Ok((out, peak.get()))
}

fn main() -> Result<(), Error> {
    let (log, peak) = run(20, 5)?;
    for line in log {
        println!("{line}");
    }
    println!("at most {peak} workers were inside at once");
    Ok(())
}

#[test]
fn at_most_five_of_twenty_are_inside_and_all_finish() {
    let (log, peak) = run(20, 5).unwrap();
    assert_eq!(peak, 5);
    assert_eq!(log.iter().filter(|l| l.ends_with(" out")).count(), 20);
    let mut inside = 0i32;
    for l in &log {
        if l.contains(" in ") {
            inside += 1;
        } else {
            inside -= 1;
        }
        assert!((0..=5).contains(&inside), "{log:#?}");
    }
}
