//! Ready-made pull-pipeline stages: each takes an iterator and returns a
//! generator (itself an iterator), so stages compose with each other, with
//! `for` loops and with iterator adaptors. Stages may block cooperatively:
//! [`follow`] parks the calling greenlet while waiting for more input.
//!
//! # Examples
//!
//! ```
//! use greenhouse::stages::{batch, grep, map, take};
//!
//! let lines = ["ok 1", "ERROR disk", "ok 2", "ERROR net", "ERROR cpu"].map(String::from);
//! let errors = grep("ERROR", lines.into_iter());
//! let upper = map(errors, |l| l.to_lowercase());
//! let first_two = take(upper, 2);
//! let batches: Vec<Vec<String>> = batch(first_two, 2).collect();
//! assert_eq!(batches, [vec!["error disk".to_string(), "error net".to_string()]]);
//! ```

use std::io::{self, BufRead};
use std::time::Duration;

use super::Generator;

/// Lines that contain `pattern`.
pub fn grep<I>(pattern: &str, lines: I) -> Generator<(), String, ()>
where
    I: Iterator<Item = String> + 'static,
{
    let pattern = pattern.to_owned();
    Generator::new(move |y, ()| {
        for line in lines {
            if line.contains(&pattern) {
                y.yield_(line);
            }
        }
    })
}

/// `f` applied to every item.
pub fn map<I, T, U, F>(items: I, mut f: F) -> Generator<(), U, ()>
where
    I: Iterator<Item = T> + 'static,
    F: FnMut(T) -> U + 'static,
    T: 'static,
    U: 'static,
{
    Generator::new(move |y, ()| {
        for item in items {
            y.yield_(f(item));
        }
    })
}

/// Items grouped in vectors of `size` (the last one may be shorter);
/// `size` 0 is treated as 1.
pub fn batch<I, T>(items: I, size: usize) -> Generator<(), Vec<T>, ()>
where
    I: Iterator<Item = T> + 'static,
    T: 'static,
{
    let size = size.max(1);
    Generator::new(move |y, ()| {
        let mut buf = Vec::with_capacity(size);
        for item in items {
            buf.push(item);
            if buf.len() == size {
                y.yield_(std::mem::replace(&mut buf, Vec::with_capacity(size)));
            }
        }
        if !buf.is_empty() {
            y.yield_(buf);
        }
    })
}

/// The first `n` items (the source is not pulled further).
pub fn take<I, T>(items: I, n: usize) -> Generator<(), T, ()>
where
    I: Iterator<Item = T> + 'static,
    T: 'static,
{
    Generator::new(move |y, ()| {
        for item in items.take(n) {
            y.yield_(item);
        }
    })
}

/// All items of `first`, then all of `second`.
pub fn chain<A, B, T>(first: A, second: B) -> Generator<(), T, ()>
where
    A: Iterator<Item = T> + 'static,
    B: Iterator<Item = T> + 'static,
    T: 'static,
{
    Generator::new(move |y, ()| {
        for item in first.chain(second) {
            y.yield_(item);
        }
    })
}

/// Lines read from `reader` (a greenhouse socket, for example), parking the
/// greenlet while none is available. At end of input: if `poll` is `None`
/// the generator finishes (a socket closed by its peer); otherwise it
/// sleeps `poll` and reads again, following a growing file like `tail -f`.
/// A read error ends it; the error is its return value.
pub fn follow<R>(reader: R, poll: Option<Duration>) -> Generator<(), String, io::Result<()>>
where
    R: BufRead + 'static,
{
    Generator::new(move |y, ()| {
        let mut reader = reader;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                // End of input (or a line still being written).
                let Some(p) = poll else {
                    if !line.is_empty() {
                        y.yield_(std::mem::take(&mut line));
                    }
                    return Ok(());
                };
                if !line.is_empty() {
                    // Keep the partial line and wait for the rest.
                    let mut rest = String::new();
                    while !rest.ends_with('\n') {
                        crate::hub::timeout::try_sleep(p).map_err(io::Error::from)?;
                        reader.read_line(&mut rest)?;
                    }
                    line.push_str(&rest);
                } else {
                    crate::hub::timeout::try_sleep(p).map_err(io::Error::from)?;
                    continue;
                }
            }
            let text = line.trim_end_matches(['\n', '\r']).to_owned();
            y.yield_(text);
        }
    })
}
