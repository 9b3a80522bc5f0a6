//! Echo benchmark: 64-byte round trips against five single-core servers,
//! in one run, reported as ratios to a raw epoll loop.
//!
//! Each server runs in a child process (this binary with `--serve KIND`)
//! pinned to core 1, so its CPU time and memory are its own. The load
//! generator (greenhouse client greenlets, one thread) is pinned to core 0.
//! On two cores the load generator saturates its own core against the
//! fastest servers, so **server CPU time per round trip** (from
//! `getrusage` in the server process) is the fair comparison; throughput
//! alone can hide a slower server.
//!
//! Servers: `raw-epoll` (a hand-written loop on `polling`, the ceiling for a
//! readiness-based single thread), `greenhouse` (`StreamServer`;
//! `greenhouse-nomon` is the same with the blocked-hub detector off,
//! `greenhouse-copy` the same with every connection on copy stacks),
//! `tokio` (`current_thread`), `may` (one worker), `threads` (one OS thread
//! per connection).
//!
//! Multi-core contenders (`--servers` names them; `--multi` runs this set:
//! `raw-epoll-2,greenhouse,greenhouse-2,tokio-mt2,may-2`): `raw-epoll-2`
//! (two raw loops on two `SO_REUSEPORT` listeners, sharing nothing: two
//! processes' worth in one, so one `getrusage` counts both),
//! `greenhouse-2` (a `Runtime` of 2 hubs and a `runtime::Server`),
//! `tokio-mt2` (`multi_thread`, 2 workers), `may-2` (2 workers). They are
//! not pinned: they run on both cores, alongside the load generator, so
//! CPU per round trip and total throughput are the figures to compare
//! (`--load-cores 0,1` lets the load generator use both cores too).
//!
//! Scaling 1 → 2 cores (`--scaling`: each runtime on one core and on two,
//! in one run) needs a load generator that is not the bottleneck, and on
//! two cores it cannot have a core of its own next to a 2-core server.
//! `--work-us N` makes it light instead: every server burns N µs of CPU
//! per 64-byte message (a fixed number of arithmetic rounds, calibrated
//! once per server process) before echoing it, so the client's few µs
//! per round trip are a small share of the machine, and the rt/s ratio of
//! the 2-core server to the 1-core one is the scaling.
//!
//! This machine is shared and noisy, so each configuration is measured
//! `--repeat` times (default 3), with all servers interleaved within a
//! round. The table shows each server's median run (by CPU per round trip).
//!
//! ```text
//! cargo run --release --example echo_bench -- [--conns 500,5000] [--secs 5] [--repeat 3]
//!     [--servers raw-epoll,greenhouse,tokio,may,threads] [--multi] [--scaling] [--work-us 0]
//! ```

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MSG: usize = 64;
/// The raw loop's poller key for the listener (`usize::MAX` is reserved).
const LISTENER_KEY: usize = usize::MAX - 1;
const SERVERS: [&str; 5] = ["raw-epoll", "greenhouse", "tokio", "may", "threads"];
/// The multi-core set (`--multi`), with greenhouse on one hub for scaling.
const MULTI: [&str; 5] = [
    "raw-epoll-2",
    "greenhouse",
    "greenhouse-2",
    "tokio-mt2",
    "may-2",
];

/// The scaling set (`--scaling`): each runtime on one core and on two.
const SCALING: [&str; 6] = [
    "raw-epoll",
    "raw-epoll-2",
    "greenhouse",
    "greenhouse-2",
    "tokio",
    "tokio-mt2",
];

/// Rounds of arithmetic per 64-byte message in the servers (`--work-us`,
/// calibrated by `calibrate_work`; 0 = pure echo).
static WORK_ROUNDS: AtomicU64 = AtomicU64::new(0);

/// One round of the servers' synthetic work.
#[inline(always)]
fn work_round(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

/// Sets `WORK_ROUNDS` to about `us` µs of this core's time.
fn calibrate_work(us: f64) {
    if us <= 0.0 {
        return;
    }
    const PROBE: u64 = 20_000_000;
    let t0 = Instant::now();
    let mut x = 1u64;
    for _ in 0..PROBE {
        x = work_round(std::hint::black_box(x));
    }
    std::hint::black_box(x);
    let per_us = PROBE as f64 / t0.elapsed().as_secs_f64() / 1e6;
    WORK_ROUNDS.store((per_us * us).max(1.0) as u64, Ordering::Relaxed);
}

/// Burns the configured work for `bytes` bytes of echoed data (per
/// started 64-byte message).
#[inline]
fn burn(bytes: usize) {
    let rounds = WORK_ROUNDS.load(Ordering::Relaxed);
    if rounds == 0 {
        return;
    }
    let mut x = bytes as u64;
    for _ in 0..rounds * bytes.div_ceil(MSG) as u64 {
        x = work_round(std::hint::black_box(x));
    }
    std::hint::black_box(x);
}

/// Pins the calling thread (and threads it spawns later) to one core.
fn pin_to(core: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it, and
    // sched_setaffinity(0, ..) only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Lets the calling thread (and threads it spawns later) run on `cores`.
fn pin_to_cores(cores: &[usize]) {
    // SAFETY: as in `pin_to`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// User + system CPU time of this whole process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

// ---------------------------------------------------------------- servers

/// A listener with a large backlog (and `SO_REUSEPORT` if asked).
fn bench_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Whether `kind` is a contender that uses both cores.
fn multi_core(kind: &str) -> bool {
    kind.ends_with("-2") || kind.ends_with("-mt2")
}

/// Child side: serve, print the address, and on "stop" report CPU and RSS.
fn serve(kind: &str) -> io::Result<()> {
    if multi_core(kind) {
        pin_to_cores(&[0, 1]);
    } else {
        pin_to(1);
    }
    raise_nofile();
    if let Some(us) = std::env::var("ECHO_BENCH_WORK_US")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        calibrate_work(us);
    }
    // Every server gets the same listener with a large backlog, so the
    // burst of 5,000 simultaneous connects does not overflow it (std's
    // `bind` uses 128, and overflowed connections get reset later).
    let any: SocketAddr = "127.0.0.1:0".parse().map_err(io::Error::other)?;
    // greenhouse-2's hubs bind their own listeners: started before the
    // address is announced, so no connection lands on a listener that is
    // not served yet.
    let hubs = if kind == "greenhouse-2" {
        let rt = greenhouse::Runtime::builder().hubs(2).build()?;
        let server = greenhouse::runtime::Server::builder(any)
            .start(&rt, |_| |conn, _| echo_greenhouse(conn))?;
        Some((rt, server))
    } else {
        None
    };
    let listener = match &hubs {
        Some(_) => None,
        None => Some(bench_listener(any, multi_core(kind))?),
    };
    let addr = match (&hubs, &listener) {
        (Some((_, server)), _) => server.local_addr(),
        (None, Some(l)) => l.local_addr()?,
        (None, None) => unreachable!("one of them is made above"),
    };
    // The control thread: "start" and "mark" snapshot CPU time (and RSS at
    // "mark", while every connection is open); "report" prints and exits.
    std::thread::spawn(move || {
        let mut start = process_cpu();
        let mut marked = (Duration::ZERO, 0);
        for line in io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("start") => start = process_cpu(),
                Ok("mark") => marked = (process_cpu() - start, rss_kib()),
                Ok("report") => {
                    println!("CPU {} RSS {}", marked.0.as_micros(), marked.1);
                    std::process::exit(0);
                }
                _ => std::process::exit(1),
            }
        }
        std::process::exit(0);
    });
    println!("ADDR {addr}");
    io::stdout().flush()?;
    if let Some((_rt, server)) = hubs {
        return server.wait().map_err(io::Error::from);
    }
    let Some(listener) = listener else {
        return Err(io::Error::other("no listener"));
    };
    match kind {
        "raw-epoll" => serve_raw(listener),
        "greenhouse" => serve_greenhouse(listener),
        // Every connection's greenlet on copy stacks.
        "greenhouse-copy" => {
            // SAFETY: the handlers lend nothing on their stacks.
            unsafe { greenhouse::set_copy_stacks(true) };
            serve_greenhouse(listener)
        }
        // The same server with the blocked-hub detector off, to measure
        // what the detector costs.
        "greenhouse-nomon" => {
            greenhouse::set_blocked_threshold(None);
            serve_greenhouse(listener)
        }
        "tokio" => serve_tokio(listener),
        "may" => serve_may(listener),
        "raw-epoll-2" => {
            let second = bench_listener(addr, true)?;
            std::thread::spawn(move || serve_raw(second));
            serve_raw(listener)
        }
        "tokio-mt2" => serve_tokio_mt(listener, 2),
        "may-2" => {
            may::config().set_workers(2);
            serve_may(listener)
        }
        "threads" => serve_threads(listener),
        other => Err(io::Error::other(format!("unknown server {other}"))),
    }
}

fn serve_greenhouse(l: std::net::TcpListener) -> io::Result<()> {
    let server =
        greenhouse::net::StreamServer::from_listener(l.into(), |conn, _| echo_greenhouse(conn))?;
    server.serve_forever()
}

/// One greenhouse echo connection.
fn echo_greenhouse(conn: greenhouse::net::TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 4096];
    loop {
        match (&conn).read(&mut buf) {
            Ok(0) => return,
            Err(e) => return eprintln!("  greenhouse server read: {e}"),
            Ok(n) => {
                burn(n);
                if let Err(e) = (&conn).write_all(&buf[..n]) {
                    return eprintln!("  greenhouse server write: {e}");
                }
            }
        }
    }
}

/// tokio's `multi_thread` runtime with `workers` workers.
fn serve_tokio_mt(l: std::net::TcpListener, workers: usize) -> io::Result<()> {
    l.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_io()
        .build()?;
    rt.block_on(tokio_accept_loop(l))
}

/// The tokio server's accept loop (both runtimes).
async fn tokio_accept_loop(l: std::net::TcpListener) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::from_std(l)?;
    loop {
        let (mut s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        burn(n);
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

fn serve_tokio(l: std::net::TcpListener) -> io::Result<()> {
    l.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(tokio_accept_loop(l))
}

fn serve_may(l: std::net::TcpListener) -> io::Result<()> {
    may::config().set_workers(1);
    let addr = l.local_addr()?;
    drop(l);
    let l = may::net::TcpListener::bind(addr)?;
    for s in l.incoming() {
        let mut s = s?;
        let _ = s.set_nodelay(true);
        // SAFETY: the closure uses no thread-local storage and never blocks
        // the worker thread outside may's own IO; may's contract for spawn.
        unsafe {
            may::coroutine::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            burn(n);
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    }
    Ok(())
}

fn serve_threads(l: std::net::TcpListener) -> io::Result<()> {
    for s in l.incoming() {
        let mut s = s?;
        let _ = s.set_nodelay(true);
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            burn(n);
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            })?;
    }
    Ok(())
}

/// The ceiling: one thread, level-triggered epoll through `polling`.
fn serve_raw(l: std::net::TcpListener) -> io::Result<()> {
    use polling::{Event, Events, PollMode, Poller};
    l.set_nonblocking(true)?;
    let poller = Poller::new()?;
    // SAFETY: the listener outlives its registration (never deleted; the
    // process exits while serving).
    unsafe { poller.add_with_mode(&l, Event::readable(LISTENER_KEY), PollMode::Level)? };
    let mut conns: Vec<Option<std::net::TcpStream>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::new();
    let mut buf = [0u8; 4096];
    loop {
        events.clear();
        poller.wait(&mut events, None)?;
        for ev in events.iter() {
            if ev.key == LISTENER_KEY {
                while let Ok((s, _)) = l.accept() {
                    s.set_nonblocking(true)?;
                    let _ = s.set_nodelay(true);
                    let key = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    // SAFETY: deleted from the poller before it is dropped below.
                    unsafe { poller.add_with_mode(&s, Event::readable(key), PollMode::Level)? };
                    conns[key] = Some(s);
                }
                continue;
            }
            let key = ev.key;
            let mut close = false;
            if let Some(s) = conns[key].as_mut() {
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            close = true;
                            break;
                        }
                        Ok(n) => {
                            burn(n);
                            if s.write_all(&buf[..n]).is_err() {
                                close = true;
                                break;
                            }
                            // A short read emptied the socket, and the fd is
                            // level-triggered, so anything that arrives later
                            // is reported again: no read just to see EAGAIN.
                            if n < buf.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
            }
            if close {
                if let Some(s) = conns[key].take() {
                    let _ = poller.delete(&s);
                    free.push(key);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ load

/// Counts an error; prints the first few, so a failing run says why.
fn report_error(errors: &Cell<u64>, what: &str, e: &io::Error) {
    if errors.get() < 3 {
        eprintln!("  client {what} error: {e}");
    }
    errors.set(errors.get() + 1);
}

struct Stats {
    round_trips: u64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

/// Runs `conns` greenlet clients against `addr` for `secs` after a warm-up;
/// `on_start`/`on_stop` bracket the measured window. The clients finish
/// their last round trip and close before `load` returns.
fn load(
    addr: SocketAddr,
    conns: usize,
    secs: f64,
    mut on_start: impl FnMut(),
    mut on_stop: impl FnMut(),
) -> Stats {
    use greenhouse::net::TcpStream;
    let hist = Rc::new(RefCell::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let count = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    let measuring = Rc::new(Cell::new(false));
    let stop = Rc::new(Cell::new(false));
    let clients: Vec<_> = (0..conns)
        .map(|_| {
            let (hist, count, errors, measuring, stop) = (
                hist.clone(),
                count.clone(),
                errors.clone(),
                measuring.clone(),
                stop.clone(),
            );
            greenhouse::spawn(move || {
                let mut c = match TcpStream::connect(addr) {
                    Ok(c) => c,
                    Err(e) => return report_error(&errors, "connect", &e),
                };
                let _ = c.set_nodelay(true);
                let out = [7u8; MSG];
                let mut back = [0u8; MSG];
                while !stop.get() {
                    let t0 = Instant::now();
                    if let Err(e) = c.write_all(&out) {
                        return report_error(&errors, "write", &e);
                    }
                    if let Err(e) = c.read_exact(&mut back) {
                        return report_error(&errors, "read", &e);
                    }
                    if back != out {
                        return report_error(
                            &errors,
                            "compare",
                            &io::Error::other("corrupted echo"),
                        );
                    }
                    if measuring.get() {
                        count.set(count.get() + 1);
                        let _ = hist
                            .borrow_mut()
                            .record((t0.elapsed().as_micros() as u64).max(1));
                    }
                }
            })
        })
        .collect();
    greenhouse::sleep(Duration::from_secs(1)); // connect + warm up
    on_start();
    measuring.set(true);
    greenhouse::sleep(Duration::from_secs_f64(secs));
    measuring.set(false);
    on_stop();
    stop.set(true);
    greenhouse::joinall(clients);
    let h = hist.borrow();
    Stats {
        round_trips: count.get(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        errors: errors.get(),
    }
}

struct Row {
    server: String,
    rps: f64,
    p50: u64,
    p99: u64,
    cpu_ns_per_rt: f64,
    rss_mib: f64,
    errors: u64,
}

fn bench_one(kind: &str, conns: usize, secs: f64, work_us: f64) -> io::Result<Row> {
    let mut child: Child = Command::new(std::env::current_exe()?)
        .args(["--serve", kind])
        .env("ECHO_BENCH_WORK_US", work_us.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let ctl = Rc::new(RefCell::new(child.stdin.take().expect("piped")));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let addr: SocketAddr = line
        .strip_prefix("ADDR ")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("{kind}: bad hello {line:?}")))?;
    let started = Rc::new(Cell::new(Instant::now()));
    let window = Rc::new(Cell::new(Duration::ZERO));
    let (s1, s2, w, c1, c2) = (
        started.clone(),
        started.clone(),
        window.clone(),
        ctl.clone(),
        ctl.clone(),
    );
    let stats = load(
        addr,
        conns,
        secs,
        move || {
            let _ = writeln!(c1.borrow_mut(), "start");
            s1.set(Instant::now());
        },
        move || {
            w.set(s2.get().elapsed());
            let _ = writeln!(c2.borrow_mut(), "mark");
        },
    );
    writeln!(ctl.borrow_mut(), "report")?;
    line.clear();
    stdout.read_line(&mut line)?;
    let _ = child.kill();
    let _ = child.wait();
    let mut parts = line.split_whitespace();
    let (cpu_us, rss_kib) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("CPU"), Some(c), Some("RSS"), Some(r)) => (
            c.parse::<f64>().unwrap_or(0.0),
            r.parse::<f64>().unwrap_or(0.0),
        ),
        _ => return Err(io::Error::other(format!("{kind}: bad report {line:?}"))),
    };
    let rt = stats.round_trips.max(1) as f64;
    Ok(Row {
        server: kind.to_string(),
        rps: rt / window.get().as_secs_f64(),
        p50: stats.p50_us,
        p99: stats.p99_us,
        cpu_ns_per_rt: cpu_us * 1000.0 / rt,
        rss_mib: rss_kib / 1024.0,
        errors: stats.errors,
    })
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        return serve(args.get(1).map(String::as_str).unwrap_or(""));
    }
    let mut conn_counts = vec![500usize, 5000];
    let mut secs = 5.0;
    let mut repeat = 3usize;
    let mut servers: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
    let mut load_cores = vec![0usize];
    let mut work_us = 0.0f64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--multi" {
            servers = MULTI.iter().map(|s| s.to_string()).collect();
            continue;
        }
        if a == "--scaling" {
            servers = SCALING.iter().map(|s| s.to_string()).collect();
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| io::Error::other(format!("{a} needs a value")))?;
        match a.as_str() {
            "--load-cores" => {
                load_cores = v
                    .split(',')
                    .map(|x| x.parse().map_err(io::Error::other))
                    .collect::<io::Result<_>>()?
            }
            "--conns" => {
                conn_counts = v
                    .split(',')
                    .map(|x| x.parse().map_err(io::Error::other))
                    .collect::<io::Result<_>>()?
            }
            "--work-us" => work_us = v.parse().map_err(io::Error::other)?,
            "--secs" => secs = v.parse().map_err(io::Error::other)?,
            "--repeat" => repeat = v.parse::<usize>().map_err(io::Error::other)?.max(1),
            "--servers" => servers = v.split(',').map(str::to_string).collect(),
            other => return Err(io::Error::other(format!("unknown flag {other}"))),
        }
    }
    pin_to_cores(&load_cores);
    raise_nofile();
    println!(
        "echo benchmark: {MSG}-byte round trips, {secs} s per run, median of {repeat}; \
         single-core servers on core 1, multi-core ones on 0 and 1, load on {load_cores:?}; \
         server work {work_us} µs per message"
    );
    for &conns in &conn_counts {
        let mut runs: Vec<Vec<Row>> = servers.iter().map(|_| Vec::new()).collect();
        for _ in 0..repeat {
            for (i, s) in servers.iter().enumerate() {
                runs[i].push(bench_one(s, conns, secs, work_us)?);
            }
        }
        let rows: Vec<Row> = runs
            .into_iter()
            .map(|mut v| {
                v.sort_by(|a, b| a.cpu_ns_per_rt.total_cmp(&b.cpu_ns_per_rt));
                let errors = v.iter().map(|r| r.errors).sum();
                let mut median = v.swap_remove(v.len() / 2);
                median.errors = errors; // errors of every run count
                median
            })
            .collect();
        let base = rows
            .iter()
            .find(|r| r.server == "raw-epoll")
            .or_else(|| rows.iter().find(|r| r.server == "raw-epoll-2"));
        println!("\n{conns} connections");
        println!(
            "  {:<13} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>7}",
            "server",
            "rt/s",
            "p50 µs",
            "p99 µs",
            "cpu ns/rt",
            "cpu ×raw",
            "rt/s ×raw",
            "RSS MiB",
            "errors"
        );
        for r in &rows {
            let (cpu_x, rps_x) = match base {
                Some(b) => (r.cpu_ns_per_rt / b.cpu_ns_per_rt, r.rps / b.rps),
                None => (f64::NAN, f64::NAN),
            };
            println!(
                "  {:<13} {:>10.0} {:>7} {:>7} {:>9.0} {:>9.2} {:>9.2} {:>8.1} {:>7}",
                r.server, r.rps, r.p50, r.p99, r.cpu_ns_per_rt, cpu_x, rps_x, r.rss_mib, r.errors
            );
        }
        // Scaling: each runtime's 2-core rt/s over its 1-core rt/s.
        for (one, two) in [
            ("raw-epoll", "raw-epoll-2"),
            ("greenhouse", "greenhouse-2"),
            ("tokio", "tokio-mt2"),
            ("may", "may-2"),
        ] {
            let find = |k: &str| rows.iter().find(|r| r.server == k);
            if let (Some(a), Some(b)) = (find(one), find(two)) {
                println!("  scaling 1 → 2 cores, {one}: {:.2}×", b.rps / a.rps);
            }
        }
    }
    Ok(())
}
