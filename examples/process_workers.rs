//! Child processes as workers (gevent's `subprocess` examples):
//!
//! 1. start several worker processes at once, join them all and collect
//!    their results;
//! 2. a pool of at most 3 workers for 8 jobs, each reporting through a
//!    completion callback as it finishes.
//!
//! Every wait parks only its greenlet, so the workers run side by side on
//! one thread.
//!
//! ```text
//! cargo run --example process_workers
//! ```

use std::io;

use greenhouse::pool::Pool;
use greenhouse::process::Command;

/// One worker process: squares `n` (after a short nap, as real work would).
fn worker(n: u64) -> io::Result<u64> {
    let out = Command::new("sh")
        .args(["-c", &format!("sleep 0.1; echo $(({n} * {n}))")])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("worker {n}: {}", out.status)));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(io::Error::other)
}

/// Starts one worker per input at once and collects the results in order.
fn all_at_once(inputs: &[u64]) -> io::Result<Vec<u64>> {
    let handles: Vec<_> = inputs
        .iter()
        .map(|&n| greenhouse::spawn(move || worker(n)))
        .collect();
    greenhouse::joinall(handles)
        .into_iter()
        .map(|r| r.map_err(io::Error::from)?)
        .collect()
}

/// At most `size` workers at a time; `done` hears about each as it ends.
fn pooled(
    inputs: &[u64],
    size: usize,
    done: impl Fn(u64, u64) + Clone + 'static,
) -> io::Result<()> {
    let pool = Pool::new(size);
    for &n in inputs {
        let h = pool.spawn(move || worker(n)).map_err(io::Error::from)?;
        let done = done.clone();
        h.link_value(move |f| {
            if let Some(Ok(v)) = f.value() {
                done(n, *v);
            }
        });
    }
    pool.join().map_err(io::Error::from)
}

fn main() -> io::Result<()> {
    let t0 = std::time::Instant::now();
    let squares = all_at_once(&[1, 2, 3, 4, 5])?;
    println!("5 workers at once: {squares:?} in {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    pooled(&[1, 2, 3, 4, 5, 6, 7, 8], 3, |n, v| {
        println!("  job {n} done: {v}")
    })?;
    println!("8 jobs, 3 at a time, in {:?}", t0.elapsed());
    Ok(())
}

#[test]
fn workers_run_side_by_side_and_report() {
    use std::cell::RefCell;
    use std::rc::Rc;
    assert_eq!(
        all_at_once(&[1, 2, 3, 4, 5]).unwrap(),
        vec![1, 4, 9, 16, 25]
    );
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    pooled(&[1, 2, 3, 4, 5, 6, 7, 8], 3, move |n, v| {
        s.borrow_mut().push((n, v))
    })
    .unwrap();
    let mut seen = seen.take();
    seen.sort_unstable();
    assert_eq!(seen, (1..=8).map(|n| (n, n * n)).collect::<Vec<_>>());
}
