//! The classic generator producer/consumer, ported from Python:
//!
//! ```python
//! def consumer():
//!     r = ''
//!     while True:
//!         n = yield r
//!         if not n:
//!             return
//!         print('[CONSUMER] Consuming %s...' % n)
//!         r = '200 OK'
//!
//! def produce(c):
//!     c.send(None)
//!     n = 0
//!     while n < 5:
//!         n = n + 1
//!         print('[PRODUCER] Producing %s...' % n)
//!         r = c.send(n)
//!         print('[PRODUCER] Consumer return: %s' % r)
//!     c.close()
//! ```
//!
//! Run with `cargo run --example producer_consumer [-- --sleep]`; `--sleep`
//! adds the original's one-second pauses (cooperatively, with
//! `greenhouse::sleep`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::{Generator, GeneratorError, GeneratorState, Yielder};

type Out = Rc<RefCell<Vec<String>>>;

fn consumer(out: Out, pause: bool) -> Generator<Option<u32>, &'static str, ()> {
    Generator::new(move |y: &Yielder<Option<u32>, &'static str>, _prime| {
        let mut r = "";
        loop {
            let n = y.yield_(r);
            let Some(n) = n else { return };
            out.borrow_mut()
                .push(format!("[CONSUMER] Consuming {n}..."));
            if pause {
                greenhouse::sleep(Duration::from_secs(1));
            }
            r = "200 OK";
        }
    })
}

fn produce(
    c: &mut Generator<Option<u32>, &'static str, ()>,
    out: &Out,
) -> Result<(), GeneratorError> {
    c.send(None)?; // prime: run to the first `yield`
    let mut n = 0;
    while n < 5 {
        n += 1;
        out.borrow_mut()
            .push(format!("[PRODUCER] Producing {n}..."));
        let r = match c.send(Some(n))? {
            GeneratorState::Yielded(r) => r,
            GeneratorState::Complete(()) => "(consumer finished)",
        };
        out.borrow_mut()
            .push(format!("[PRODUCER] Consumer return: {r}"));
    }
    c.close()
}

/// Runs the example and returns the lines it prints.
fn run(pause: bool) -> Result<Vec<String>, GeneratorError> {
    let out: Out = Rc::new(RefCell::new(Vec::new()));
    let mut c = consumer(out.clone(), pause);
    produce(&mut c, &out)?;
    let lines = out.borrow().clone();
    Ok(lines)
}

fn main() -> Result<(), GeneratorError> {
    let pause = std::env::args().any(|a| a == "--sleep");
    for line in run(pause)? {
        println!("{line}");
    }
    Ok(())
}

#[test]
fn output_matches_the_python_original() {
    let expected: Vec<String> = (1..=5)
        .flat_map(|n| {
            [
                format!("[PRODUCER] Producing {n}..."),
                format!("[CONSUMER] Consuming {n}..."),
                "[PRODUCER] Consumer return: 200 OK".to_string(),
            ]
        })
        .collect();
    assert_eq!(run(false).unwrap(), expected);
}
