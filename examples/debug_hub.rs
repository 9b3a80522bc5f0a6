//! Debugging a hub: the blocked-hub detector and the greenlet dump.
//!
//! First, a ticker greenlet should tick every 10 ms; a careless greenlet
//! calls the unpatched `std::thread::sleep` and freezes the whole hub. The
//! detector names it, shows where it is, and reports again when it lets
//! the hub go.
//!
//! Then a small service (a connection handler waiting for its client,
//! workers waiting on a job queue, one of them busy in a sleep, a
//! supervisor joining them) is shown with `greenhouse::run_info()`: every
//! greenlet, what it waits for, where it was spawned and its stack, as a
//! tree under whoever spawned it.
//!
//! ```text
//! cargo run --example debug_hub
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use greenhouse::net::{TcpListener, TcpStream};
use greenhouse::sync::Queue;
use greenhouse::{BlockedReport, Builder, sleep, spawn};

/// Runs the scenario with the detector at `threshold`; returns the
/// reports about this thread's hub and how many ticks happened.
fn run(threshold: Duration) -> (Vec<BlockedReport>, u32) {
    let reports: Arc<Mutex<Vec<BlockedReport>>> = Arc::default();
    let r = reports.clone();
    greenhouse::set_blocked_hook(move |report| r.lock().unwrap().push(report.clone()));
    greenhouse::set_blocked_threshold(Some(threshold));

    let ticker = spawn(|| {
        let mut ticks = 0;
        for _ in 0..30 {
            sleep(Duration::from_millis(10));
            ticks += 1;
        }
        ticks
    });
    let careless = Builder::new()
        .name("careless")
        .spawn(load_settings_the_blocking_way)
        .unwrap();
    careless.join().unwrap();
    let ticks = ticker.join().unwrap();
    // The monitor reports from its own thread: wait for the second report.
    let me = std::thread::current().name().unwrap_or("").to_string();
    let t0 = std::time::Instant::now();
    let mine = || -> Vec<BlockedReport> {
        let all = reports.lock().unwrap();
        all.iter().filter(|r| r.thread == me).cloned().collect()
    };
    while !mine().iter().any(|r| r.finished) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    greenhouse::clear_blocked_hook();
    (mine(), ticks)
}

/// Blocks the thread for 300 ms: nothing else on the hub runs meanwhile.
#[inline(never)]
fn load_settings_the_blocking_way() -> u128 {
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    std::hint::black_box(t0.elapsed().as_nanos())
}

/// A worker: takes jobs off the queue; job 0 takes a long time.
#[inline(never)]
fn worker(jobs: Queue<u32>) -> u32 {
    let mut done = 0;
    while let Ok(job) = jobs.get() {
        if job == 0 {
            crunch_a_slow_job();
        }
        done += 1;
    }
    done
}

#[inline(never)]
fn crunch_a_slow_job() -> u128 {
    let t0 = std::time::Instant::now();
    sleep(Duration::from_secs(60));
    std::hint::black_box(t0.elapsed().as_nanos())
}

/// Waits for its client's request.
#[inline(never)]
fn handle_connection(mut conn: TcpStream) -> usize {
    use std::io::Read;
    let mut buf = [0u8; 64];
    conn.read(&mut buf).unwrap_or(0)
}

/// Builds the service, lets it settle, and returns its run info.
fn service_snapshot() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let handler = Builder::new()
        .name("conn-handler")
        .spawn(move || handle_connection(conn))
        .unwrap();
    let jobs = Queue::new();
    let supervisor = Builder::new()
        .name("supervisor")
        .spawn({
            let jobs = jobs.clone();
            move || {
                let crew = Crew(
                    (0..3)
                        .map(|i| {
                            let jobs = jobs.clone();
                            Builder::new()
                                .name(format!("worker-{i}"))
                                .spawn(move || worker(jobs))
                                .unwrap()
                        })
                        .collect(),
                );
                greenhouse::JoinAll::new()
                    .wait(&crew.0)
                    .map(|done| done.len())
            }
        })
        .unwrap();
    jobs.put(0).unwrap();
    sleep(Duration::from_millis(20));
    let info = greenhouse::run_info();
    drop(client);
    handler.join().unwrap();
    supervisor.kill().unwrap();
    info
}

/// The supervisor's workers: killed with it.
struct Crew(Vec<greenhouse::JoinHandle<u32>>);

impl Drop for Crew {
    fn drop(&mut self) {
        for w in &self.0 {
            w.kill_nowait();
        }
    }
}

fn main() {
    let (reports, ticks) = run(Duration::from_millis(100));
    println!("the ticker ticked {ticks} times; the detector said:\n");
    for r in reports {
        println!("{r}\n");
    }
    println!("and a running service, as greenhouse::run_info() shows it:\n");
    println!("{}", service_snapshot());
}

#[test]
fn run_info_shows_the_service_as_a_tree_with_waits_and_stacks() {
    let info = service_snapshot();
    let line = |needle: &str| {
        info.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{info}"))
            .to_string()
    };
    assert!(line("conn-handler (id").contains("parked on readable fd"));
    assert!(line("supervisor (id").contains("parked on joinall"));
    assert!(line("worker-0 (id").contains("parked on sleep"));
    assert!(line("worker-1 (id").contains("parked on Queue::get"));
    // Workers hang under the supervisor that spawned them.
    let indent = |l: String| l.find("+---").unwrap();
    assert!(indent(line("worker-1 (id")) > indent(line("supervisor (id")));
    assert!(info.contains("crunch_a_slow_job"), "{info}");
    assert!(info.contains("handle_connection"), "{info}");
    // Everything it started is gone again.
    greenhouse::yield_now();
    assert_eq!(greenhouse::dump_brief().len(), 1);
}

#[test]
fn the_careless_greenlet_is_named_with_its_stack_and_its_total_time() {
    let (reports, ticks) = run(Duration::from_millis(50));
    assert_eq!(ticks, 30);
    let first = reports.iter().find(|r| !r.finished).expect("a report");
    assert_eq!(first.greenlet, "careless");
    assert!(
        first.backtrace.contains("load_settings_the_blocking_way"),
        "{}",
        first.backtrace
    );
    let last = reports.iter().find(|r| r.finished).expect("a final report");
    assert!(last.running_for >= Duration::from_millis(200), "{last:?}");
}
