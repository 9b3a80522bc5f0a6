//! What monkey patching costs: a 64-byte ping-pong over a Unix socket
//! pair between two greenlets on one thread, with
//!
//! - greenhouse's own `net::UnixStream` (the native path),
//! - std's `UnixStream` under `monkey::patch_all()` (every would-block
//!   goes through the hooks, which remember the fd's flags, socket
//!   timeouts and poller registration from the previous wait),
//! - tokio `current_thread` with its `UnixStream`, as the peer.
//!
//! Every round trip parks both sides once, so this is the worst case for
//! the hooks. Prints nanoseconds per round trip and ratios to the native
//! path (median of `--repeat` runs, default 5).
//!
//! ```sh
//! cargo run --release --features monkey --example monkey_bench
//! ```

use std::io::{Read, Write};
use std::time::{Duration, Instant};

const ROUND_TRIPS: usize = 50_000;
const MSG: usize = 64;

/// One ping-pong over a pair of streams, each end in its own greenlet.
fn greenhouse_pingpong<S: Read + Write + 'static>(a: S, b: S) -> Duration {
    let t0 = Instant::now();
    let echo = greenhouse::spawn(move || {
        let mut b = b;
        let mut buf = [0u8; MSG];
        for _ in 0..ROUND_TRIPS {
            b.read_exact(&mut buf).unwrap();
            b.write_all(&buf).unwrap();
        }
    });
    let mut a = a;
    let mut buf = [0u8; MSG];
    for i in 0..ROUND_TRIPS {
        let ping = [(i % 251) as u8; MSG];
        a.write_all(&ping).unwrap();
        a.read_exact(&mut buf).unwrap();
        assert_eq!(buf, ping, "round trip {i} came back wrong");
    }
    echo.join().unwrap();
    t0.elapsed()
}

fn native() -> Duration {
    let (a, b) = greenhouse::net::UnixStream::pair().unwrap();
    greenhouse_pingpong(a, b)
}

fn patched_std() -> Duration {
    greenhouse::monkey::patch_all();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let t = greenhouse_pingpong(a, b);
    greenhouse::monkey::unpatch_all();
    t
}

fn tokio_current_thread() -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, async {
        let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let t0 = Instant::now();
        let echo = tokio::task::spawn_local(async move {
            let mut buf = [0u8; MSG];
            for _ in 0..ROUND_TRIPS {
                b.read_exact(&mut buf).await.unwrap();
                b.write_all(&buf).await.unwrap();
            }
        });
        let mut buf = [0u8; MSG];
        for i in 0..ROUND_TRIPS {
            let ping = [(i % 251) as u8; MSG];
            a.write_all(&ping).await.unwrap();
            a.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, ping, "round trip {i} came back wrong");
        }
        echo.await.unwrap();
        t0.elapsed()
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The number after `flag`, if given; exits with a message if it is not one.
fn number_flag(args: &[String], flag: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == flag)?;
    match args.get(i + 1).map(|v| v.parse()) {
        Some(Ok(n)) => Some(n),
        _ => {
            eprintln!("{flag} needs a number");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repeat = number_flag(&args, "--repeat").unwrap_or(5).max(1);
    let mut rows: Vec<(&str, Duration)> = Vec::new();
    type Contender = (&'static str, fn() -> Duration);
    let contenders: [Contender; 3] = [
        ("greenhouse net::UnixStream (native)", native),
        ("std UnixStream, monkey-patched", patched_std),
        ("tokio current_thread UnixStream", tokio_current_thread),
    ];
    // `--only <i>` runs one contender (for strace or perf).
    let only = number_flag(&args, "--only");
    if only.is_some_and(|o| o >= contenders.len()) {
        eprintln!("--only takes 0 to {}", contenders.len() - 1);
        std::process::exit(2);
    }
    for (i, (name, run)) in contenders.into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        run(); // warm up
        let t = median((0..repeat).map(|_| run()).collect());
        rows.push((name, t));
    }
    // Ratios are to the native path, when it ran.
    let base = (only.unwrap_or(0) == 0).then(|| rows[0].1.as_nanos() as f64 / ROUND_TRIPS as f64);
    println!(
        "{ROUND_TRIPS} round trips of {MSG} B between two tasks on one thread, median of {repeat}"
    );
    println!("{:<40} {:>12} {:>10}", "", "ns/round trip", "× native");
    for (name, t) in rows {
        let ns = t.as_nanos() as f64 / ROUND_TRIPS as f64;
        let ratio = base.map_or("-".to_string(), |b| format!("{:.2}", ns / b));
        println!("{name:<40} {ns:>12.0} {ratio:>10}");
    }
}

#[test]
fn every_contender_echoes_every_round_trip() {
    // Each checks every echoed message and panics on a wrong one.
    native();
    patched_std();
    tokio_current_thread();
}
