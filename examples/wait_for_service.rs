//! Waiting for a service with a timeout and retries: a client waits on an
//! `Event` up to a deadline per try, and gives up with an error after 3
//! tries.
//!
//! ```sh
//! cargo run --example wait_for_service            # the service comes up
//! cargo run --example wait_for_service -- --never # it never does
//! ```

use std::time::Duration;

use greenhouse::sync::Event;
use greenhouse::{spawn, spawn_later};

const TRIES: u32 = 3;

#[derive(Debug, PartialEq, Eq)]
struct ServiceUnavailable {
    tries: u32,
}

impl std::fmt::Display for ServiceUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the service did not come up after {} tries", self.tries)
    }
}

impl std::error::Error for ServiceUnavailable {}

/// The client: waits for `up`, `per_try` at a time. Logs each try.
fn wait_for(
    up: &Event,
    per_try: Duration,
    log: &mut Vec<String>,
) -> Result<u32, Box<dyn std::error::Error>> {
    for attempt in 1..=TRIES {
        log.push(format!(
            "client: waiting for the service (try {attempt}/{TRIES})"
        ));
        if up.wait_timeout(per_try)? {
            log.push(format!("client: the service is up, after {attempt} tries"));
            return Ok(attempt);
        }
        log.push(format!("client: not up yet after {per_try:?}"));
    }
    Err(Box::new(ServiceUnavailable { tries: TRIES }))
}

/// Starts a service that comes up after `startup` (never if `None`) and
/// runs the client against it.
fn run(startup: Option<Duration>, per_try: Duration) -> (Result<u32, String>, Vec<String>) {
    let up = Event::new();
    let service = startup.map(|d| {
        let up = up.clone();
        spawn_later(d, move || up.set())
    });
    let client = spawn(move || {
        let mut log = Vec::new();
        let r = wait_for(&up, per_try, &mut log).map_err(|e| e.to_string());
        (r, log)
    });
    let out = client.join().expect("the client never panics");
    if let Some(s) = service {
        let _ = s.kill();
    }
    out
}

fn main() {
    let never = std::env::args().any(|a| a == "--never");
    let startup = (!never).then_some(Duration::from_millis(1500));
    let (r, log) = run(startup, Duration::from_secs(1));
    for line in log {
        println!("{line}");
    }
    match r {
        Ok(n) => println!("connected on try {n}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[test]
fn succeeds_on_the_second_try_when_the_service_is_slow() {
    let (r, log) = run(Some(Duration::from_millis(60)), Duration::from_millis(40));
    assert_eq!(r, Ok(2), "{log:#?}");
    assert_eq!(log.len(), 4);
    assert_eq!(log[3], "client: the service is up, after 2 tries");
}

#[test]
fn gives_up_after_three_tries_with_an_error() {
    let (r, log) = run(None, Duration::from_millis(5));
    assert_eq!(
        r,
        Err("the service did not come up after 3 tries".to_string())
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("waiting for the service"))
            .count(),
        3
    );
}
