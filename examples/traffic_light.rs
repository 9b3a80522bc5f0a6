//! The classic threading `Event` example, with greenlets: a light greenlet
//! turns green and red; car greenlets drive while it is green and wait on
//! the event while it is red.
//!
//! ```sh
//! cargo run --example traffic_light -- --ticks 30
//! ```

use std::time::Duration;

use greenhouse::sync::Event;
use greenhouse::{Error, sleep, spawn};

/// Runs the crossing for `ticks` ticks of `tick` each; returns the log.
fn run(ticks: u32, tick: Duration, cars: &[&'static str]) -> Result<Vec<String>, Error> {
    let green = Event::new();
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let light = {
        let (green, log) = (green.clone(), log.clone());
        spawn(move || -> Result<(), Error> {
            // Green for 5 ticks, red for 3, repeat.
            for t in 0..ticks {
                if t % 8 == 0 {
                    green.set();
                    log.borrow_mut().push("light: GREEN".to_string());
                } else if t % 8 == 5 {
                    green.clear();
                    log.borrow_mut().push("light: RED".to_string());
                }
                sleep(tick);
            }
            Ok(())
        })
    };
    let drivers: Vec<_> = cars
        .iter()
        .map(|&car| {
            let (green, log) = (green.clone(), log.clone());
            spawn(move || -> Result<(), Error> {
                loop {
                    if green.is_set() {
                        log.borrow_mut().push(format!("{car}: driving"));
                        sleep(tick);
                    } else {
                        log.borrow_mut().push(format!("{car}: red light, waiting"));
                        green.wait()?;
                        log.borrow_mut().push(format!("{car}: green, going"));
                    }
                }
            })
        })
        .collect();
    light.join()??;
    greenhouse::killall(&drivers)?;
    let out = log.borrow().clone();
    Ok(out)
}

fn main() -> Result<(), Error> {
    let ticks = std::env::args()
        .skip_while(|a| a != "--ticks")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    for line in run(ticks, Duration::from_millis(100), &["car-1", "car-2"])? {
        println!("{line}");
    }
    Ok(())
}

#[test]
fn cars_drive_only_on_green_and_resume_after_waiting() {
    let log = run(20, Duration::from_millis(3), &["a", "b"]).unwrap();
    let mut green = false;
    let mut waited = std::collections::HashSet::new();
    let mut resumed = std::collections::HashSet::new();
    for line in &log {
        match line.as_str() {
            "light: GREEN" => green = true,
            "light: RED" => green = false,
            l if l.ends_with(": driving") || l.ends_with(": green, going") => {
                assert!(green, "{l} while the light is red:\n{log:#?}");
                if l.ends_with("going") {
                    resumed.insert(l.split(':').next().unwrap().to_string());
                }
            }
            l if l.ends_with(": red light, waiting") => {
                assert!(!green, "{l} while green");
                waited.insert(l.split(':').next().unwrap().to_string());
            }
            l => panic!("unexpected line {l}"),
        }
    }
    // 20 ticks cover two red phases: every car waited and went on.
    for car in ["a", "b"] {
        assert!(waited.contains(car) && resumed.contains(car), "{log:#?}");
    }
}
