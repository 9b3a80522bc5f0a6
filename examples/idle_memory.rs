//! Memory of idle greenlets: spawns N greenlets that all park (in `sleep`,
//! on an `Event`, or as an idle connection: in `read` on a Unix socket
//! with a 4 KiB buffer on its stack, an echo handler's shape), then prints
//! the resident memory (RSS, from /proc/self/status) they added, per
//! greenlet, for each stack mode: page stacks (each greenlet's own) and
//! copy stacks (`Builder::copy_stack`). Each measurement runs in a fresh
//! process of its own. A `read` greenlet's figure includes its socket's
//! user-space state (the kernel's socket buffers are not in RSS); `read`
//! needs two descriptors per greenlet, so keep N below half of
//! `ulimit -n`.
//!
//! Run with `cargo run --release --example idle_memory -- [N ...]
//! [--modes page,copy] [--wait sleep,event,read]` (default N: 100000 and
//! 1000000). Prints one `RSS per greenlet: N bytes` line per measurement.

use std::io::Read;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhouse::sync::Event;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("procfs");
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn builder(mode: &str) -> greenhouse::Builder {
    match mode {
        // SAFETY: the greenlets share only an `Rc<Event>`; nothing lends
        // a stack.
        "copy" => unsafe { greenhouse::Builder::new().copy_stack() },
        "page" => greenhouse::Builder::new(),
        m => panic!("unknown mode {m:?} (page or copy)"),
    }
}

/// One measurement, in this process.
fn measure(mode: &str, wait: &str, n: usize) {
    // Spawning a million greenlets from main is one long turn of the hub,
    // by design here: no blocked-hub reports.
    greenhouse::set_blocked_threshold(None);
    let ev = Rc::new(Event::new());
    // Warm up the hub, the allocator, one stack slab and (copy mode) the
    // run stacks.
    let warm: Vec<_> = (0..8)
        .map(|_| {
            let ev = ev.clone();
            builder(mode).spawn(move || ev.wait().unwrap()).unwrap()
        })
        .collect();
    greenhouse::yield_now();
    ev.set();
    greenhouse::joinall(warm);
    let ev = Rc::new(Event::new());
    // For `read`: the peers' ends, made (and their memory counted) before
    // the measurement starts.
    let mut socks: Vec<_> = if wait == "read" {
        (0..n)
            .map(|_| greenhouse::net::UnixStream::pair().expect("a socket pair"))
            .collect()
    } else {
        Vec::new()
    };
    let mut peers = Vec::with_capacity(socks.len());
    let before = status_kib("VmRSS:");
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let b = builder(mode);
            match wait {
                "sleep" => b.spawn(|| greenhouse::sleep(Duration::from_secs(3600))),
                "event" => {
                    let ev = ev.clone();
                    b.spawn(move || ev.wait().unwrap())
                }
                "read" => {
                    let (mine, theirs) = socks.pop().expect("a pair per greenlet");
                    peers.push(theirs);
                    b.spawn(move || {
                        let mut buf = [0u8; 4096];
                        let n = (&mine).read(&mut buf).unwrap_or(0);
                        std::hint::black_box(&buf[..n]);
                    })
                }
                w => panic!("unknown wait {w:?} (sleep, event or read)"),
            }
            .unwrap()
        })
        .collect();
    greenhouse::yield_now(); // every greenlet starts and parks
    let spawn_time = t0.elapsed();
    let after = status_kib("VmRSS:");
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let stats = greenhouse::stats();
    if wait == "sleep" {
        assert_eq!(stats.timers, n, "every greenlet is parked in sleep");
    }
    let saved: usize = handles
        .iter()
        .map(|h| h.greenlet().stack_usage().map_or(0, |u| u.saved))
        .sum();
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    let t1 = Instant::now();
    greenhouse::killall(&handles).unwrap();
    let kill_time = t1.elapsed();
    println!(
        "{mode:>4} stacks, {n:>9} parked in {wait:<5}: RSS per greenlet: {per:.0} bytes \
         (saved stack bytes {:.0} per greenlet; {maps} memory maps; spawn + park {spawn_time:.2?}, kill {kill_time:.2?})",
        saved as f64 / n as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        measure(&args[1], &args[2], args[3].parse().expect("N"));
        return;
    }
    let mut ns = Vec::new();
    let mut modes = "page,copy".to_string();
    let mut waits = "sleep".to_string();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--modes" => modes = it.next().expect("--modes page,copy"),
            "--wait" => waits = it.next().expect("--wait sleep,event,read"),
            n => ns.push(n.parse::<usize>().expect("N, --modes or --wait")),
        }
    }
    if ns.is_empty() {
        ns = vec![100_000, 1_000_000];
    }
    let exe = std::env::current_exe().expect("own path");
    for &n in &ns {
        for wait in waits.split(',') {
            for mode in modes.split(',') {
                let st = Command::new(&exe)
                    .args(["--one", mode, wait, &n.to_string()])
                    .status()
                    .expect("run a measurement");
                assert!(st.success(), "{mode} {wait} {n}: {st}");
            }
        }
    }
}
