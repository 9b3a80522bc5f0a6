//! The classic `threading.Timer` example with `spawn_later`: run a
//! function after a delay, and cancel another timer before it fires.
//!
//! ```sh
//! cargo run --example timer
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhouse::{Error, sleep, spawn_later};

/// Arms two timers (`delay` and `2 * delay`), cancels the second one
/// halfway, and returns the log with the time each line was written.
fn run(delay: Duration) -> Result<Vec<(Duration, String)>, Error> {
    let t0 = Instant::now();
    let log = Rc::new(RefCell::new(Vec::new()));
    let say = {
        let log = log.clone();
        move |s: String| log.borrow_mut().push((t0.elapsed(), s))
    };
    let s1 = say.clone();
    let hello = spawn_later(delay, move || s1("hello, world".to_string()));
    let s2 = say.clone();
    let never = spawn_later(delay * 2, move || {
        s2("this timer was cancelled: never printed".to_string())
    });
    say(format!("armed two timers: {delay:?} and {:?}", delay * 2));
    sleep(delay + delay / 2);
    never.kill()?; // cancel (gevent: `timer.kill()`; threading: `cancel()`)
    say("cancelled the second timer".to_string());
    hello.join()?;
    sleep(delay); // past the cancelled timer's deadline
    let out = log.borrow().clone();
    Ok(out)
}

fn main() -> Result<(), Error> {
    for (at, line) in run(Duration::from_secs(1))? {
        println!("[{:>6.3}s] {line}", at.as_secs_f64());
    }
    Ok(())
}

#[test]
fn the_timer_fires_after_its_delay_and_the_cancelled_one_never() {
    let delay = Duration::from_millis(30);
    let log = run(delay).unwrap();
    let lines: Vec<&str> = log.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        lines,
        [
            "armed two timers: 30ms and 60ms",
            "hello, world",
            "cancelled the second timer"
        ]
    );
    assert!(log[1].0 >= delay, "fired early: {:?}", log[1].0);
}
