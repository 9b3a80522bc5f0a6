//! The 500-client stress test (the classic gevent demo), greenhouse's main
//! demo.
//!
//! Starts an echo `StreamServer` on its own thread (one thread, one greenlet
//! per connection) unless `--addr` names a running server. Then it runs N
//! concurrent clients as greenlets on this thread's hub. With `--hubs H`
//! the server is a `runtime::Server` on H hubs (`SO_REUSEPORT`), and the
//! clients are spread over H hubs of a second `Runtime`. Each client sends
//! numbered messages and checks every echoed byte. It shows live progress,
//! then a table: clients, round trips, round trips/s, p50/p99/p999 latency,
//! connect errors, and lost or corrupted messages. It exits non-zero on any
//! error.
//!
//! ```text
//! cargo run --release --example stress -- [--clients 500] [--size 64]
//!     [--duration 5 | --rounds N] [--addr HOST:PORT] [--hubs H]
//! ```

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use greenhouse::Runtime;
use greenhouse::net::{StreamServer, TcpStream};
use hdrhistogram::Histogram;

/// What to run.
#[derive(Debug, Clone)]
struct Config {
    clients: usize,
    size: usize,
    duration: Option<Duration>,
    rounds: Option<u64>,
    addr: Option<String>,
    progress: bool,
    /// Hubs for the server and for the clients (1: one thread each).
    hubs: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clients: 500,
            size: 64,
            duration: Some(Duration::from_secs(5)),
            rounds: None,
            addr: None,
            progress: true,
            hubs: 1,
        }
    }
}

fn parse_args() -> Result<Config, String> {
    let mut c = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--clients" => {
                c.clients = value("--clients")?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?
            }
            "--size" => {
                c.size = value("--size")?
                    .parse()
                    .map_err(|e| format!("--size: {e}"))?
            }
            "--duration" => {
                let s: f64 = value("--duration")?
                    .parse()
                    .map_err(|e| format!("--duration: {e}"))?;
                c.duration = Some(Duration::from_secs_f64(s));
                c.rounds = None;
            }
            "--rounds" => {
                c.rounds = Some(
                    value("--rounds")?
                        .parse()
                        .map_err(|e| format!("--rounds: {e}"))?,
                );
                c.duration = None;
            }
            "--addr" => c.addr = Some(value("--addr")?),
            "--hubs" => {
                c.hubs = value("--hubs")?
                    .parse()
                    .map_err(|e| format!("--hubs: {e}"))?
            }
            "--no-progress" => c.progress = false,
            "-h" | "--help" => {
                return Err("usage: stress [--clients N] [--size BYTES] [--duration SECS | --rounds N] [--addr HOST:PORT] [--hubs H] [--no-progress]".into());
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if c.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if c.hubs == 0 {
        return Err("--hubs must be at least 1".into());
    }
    c.size = c.size.max(16);
    Ok(c)
}

/// What the run measured.
#[derive(Debug, Default)]
struct Report {
    clients: usize,
    round_trips: u64,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    connect_errors: u64,
    io_errors: u64,
    lost: u64,
    corrupted: u64,
}

impl Report {
    fn ok(&self) -> bool {
        self.connect_errors == 0 && self.io_errors == 0 && self.lost == 0 && self.corrupted == 0
    }

    fn print(&self) {
        let rate = self.round_trips as f64 / self.elapsed.as_secs_f64().max(1e-9);
        println!();
        println!("  {:<22} {:>14}", "clients", self.clients);
        println!("  {:<22} {:>14}", "round trips", self.round_trips);
        println!("  {:<22} {:>14.0}", "round trips/s", rate);
        println!("  {:<22} {:>11} µs", "latency p50", self.p50_us);
        println!("  {:<22} {:>11} µs", "latency p99", self.p99_us);
        println!("  {:<22} {:>11} µs", "latency p999", self.p999_us);
        println!("  {:<22} {:>14}", "connect errors", self.connect_errors);
        println!("  {:<22} {:>14}", "io errors", self.io_errors);
        println!("  {:<22} {:>14}", "lost messages", self.lost);
        println!("  {:<22} {:>14}", "corrupted messages", self.corrupted);
        println!(
            "  {:<22} {:>14}",
            "result",
            if self.ok() { "OK" } else { "FAILED" }
        );
    }
}

/// Fills `buf` with a message only (client, seq) produces.
fn fill(buf: &mut [u8], client: u64, seq: u64) {
    buf[..8].copy_from_slice(&client.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[16..].iter_mut().enumerate() {
        *b = (client.wrapping_mul(31) ^ seq.wrapping_mul(131) ^ i as u64) as u8;
    }
}

/// Echoes `conn` until EOF or an error.
fn echo(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match (&conn).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if (&conn).write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// What keeps a multi-hub server running until the end of the test.
type ServerRuntime = Option<(Runtime, greenhouse::runtime::Server)>;

/// Starts the echo server: on a thread of its own, or on `hubs` hubs;
/// returns its address.
fn start_server(hubs: usize) -> io::Result<(SocketAddr, ServerRuntime)> {
    if hubs > 1 {
        let rt = Runtime::builder()
            .hubs(hubs)
            .thread_name("echo-server")
            .build()?;
        let server = greenhouse::runtime::Server::builder("127.0.0.1:0")
            .start(&rt, |_| |conn, _| echo(conn))?;
        return Ok((server.local_addr(), Some((rt, server))));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(
            move || match StreamServer::bind("127.0.0.1:0", |conn, _| echo(conn)) {
                Ok(s) => {
                    let _ = tx.send(Ok(s.local_addr()));
                    if let Err(e) = s.serve_forever() {
                        eprintln!("echo server: {e}");
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
        )?;
    let addr = rx
        .recv()
        .map_err(|_| io::Error::other("the server thread died"))??;
    Ok((addr, None))
}

/// Shared by the clients of every hub (and the progress bar).
#[derive(Default)]
struct Counters {
    round_trips: AtomicU64,
    connect_errors: AtomicU64,
    io_errors: AtomicU64,
    lost: AtomicU64,
    corrupted: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One client: connect, then send numbered messages and check each echo.
fn client(
    id: u64,
    addr: SocketAddr,
    cfg: &Config,
    deadline: Option<Instant>,
    n: &Counters,
    hist: &std::cell::RefCell<Histogram<u64>>,
) {
    let mut conn = match TcpStream::connect(addr) {
        Ok(c) => c,
        Err(_) => return bump(&n.connect_errors),
    };
    let _ = conn.set_nodelay(true);
    let mut out = vec![0u8; cfg.size];
    let mut back = vec![0u8; cfg.size];
    let mut seq = 0u64;
    loop {
        if cfg.rounds.is_some_and(|r| seq >= r) || deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        fill(&mut out, id, seq);
        let t0 = Instant::now();
        if conn.write_all(&out).is_err() {
            return bump(&n.io_errors);
        }
        match conn.read_exact(&mut back) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return bump(&n.lost),
            Err(_) => return bump(&n.io_errors),
        }
        let us = t0.elapsed().as_micros() as u64;
        if back != out {
            bump(&n.corrupted);
        }
        let _ = hist.borrow_mut().record(us.max(1));
        bump(&n.round_trips);
        seq += 1;
    }
}

/// Runs clients `ids` as greenlets on this thread's hub; their latencies.
fn run_clients(
    ids: impl Iterator<Item = u64>,
    addr: SocketAddr,
    cfg: &Config,
    deadline: Option<Instant>,
    counters: &Arc<Counters>,
) -> io::Result<Histogram<u64>> {
    let hist = Rc::new(std::cell::RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(io::Error::other)?,
    ));
    let clients: Vec<_> = ids
        .map(|id| {
            let (cfg, n, h) = (cfg.clone(), counters.clone(), hist.clone());
            greenhouse::spawn(move || client(id, addr, &cfg, deadline, &n, &h))
        })
        .collect();
    for r in greenhouse::joinall(clients) {
        if r.is_err() {
            bump(&counters.io_errors);
        }
    }
    let h = hist.borrow().clone();
    Ok(h)
}

/// Runs the stress test and returns its report.
fn run(cfg: &Config) -> io::Result<Report> {
    let (addr, _server): (SocketAddr, ServerRuntime) = match &cfg.addr {
        Some(a) => {
            use greenhouse::net::ToSocketAddrs;
            let addr = *a
                .to_addrs()?
                .first()
                .ok_or_else(|| io::Error::other("no address"))?;
            (addr, None)
        }
        None => start_server(cfg.hubs)?,
    };
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let done = Rc::new(Cell::new(false));
    let progress = cfg.progress.then(|| {
        let (n, done) = (counters.clone(), done.clone());
        let total = cfg.rounds.map(|r| r * cfg.clients as u64);
        greenhouse::spawn(move || {
            let bar = match total {
                Some(t) => indicatif::ProgressBar::new(t),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            while !done.get() {
                let rt = get(&n.round_trips);
                let rate = rt as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_position(rt);
                bar.set_message(format!(
                    "{rt} round trips, {rate:.0}/s, errors {}",
                    get(&n.connect_errors) + get(&n.io_errors) + get(&n.lost) + get(&n.corrupted)
                ));
                greenhouse::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        })
    });
    let hist = if cfg.hubs > 1 {
        // The clients spread over the hubs of a runtime of their own; this
        // thread's hub runs the progress bar while it waits.
        let rt = Runtime::builder()
            .hubs(cfg.hubs)
            .thread_name("stress-client")
            .build()?;
        let (cfg2, n) = (cfg.clone(), counters.clone());
        let hubs = cfg.hubs as u64;
        let hists = rt
            .run_on_each(move |i| {
                let ids = (0..cfg2.clients as u64).filter(|id| id % hubs == i as u64);
                run_clients(ids, addr, &cfg2, deadline, &n)
            })
            .map_err(io::Error::from)?;
        let mut all =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(io::Error::other)?;
        for h in hists {
            all.add(h?).map_err(io::Error::other)?;
        }
        all
    } else {
        run_clients(0..cfg.clients as u64, addr, cfg, deadline, &counters)?
    };
    let elapsed = started.elapsed();
    done.set(true);
    if let Some(p) = progress {
        let _ = p.join();
    }
    Ok(Report {
        clients: cfg.clients,
        round_trips: get(&counters.round_trips),
        elapsed,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        connect_errors: get(&counters.connect_errors),
        io_errors: get(&counters.io_errors),
        lost: get(&counters.lost),
        corrupted: get(&counters.corrupted),
    })
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "greenhouse stress: {} clients, {} byte messages, {} hub{}, {}",
        cfg.clients,
        cfg.size,
        cfg.hubs,
        if cfg.hubs == 1 { "" } else { "s" },
        match (cfg.rounds, cfg.duration) {
            (Some(r), _) => format!("{r} rounds each"),
            (_, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
            _ => String::new(),
        }
    );
    match run(&cfg) {
        Ok(report) => {
            report.print();
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("stress: {e}");
            ExitCode::FAILURE
        }
    }
}

#[test]
fn stress_small_run_has_no_errors() {
    let cfg = Config {
        clients: 50,
        size: 100,
        duration: None,
        rounds: Some(20),
        addr: None,
        progress: false,
        hubs: 1,
    };
    let r = run(&cfg).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.round_trips, 50 * 20);
    assert!(r.p50_us >= 1 && r.p50_us <= r.p99_us && r.p99_us <= r.p999_us);
}

#[test]
fn stress_on_two_hubs_has_no_errors() {
    let cfg = Config {
        clients: 60,
        size: 100,
        duration: None,
        rounds: Some(20),
        addr: None,
        progress: false,
        hubs: 2,
    };
    let r = run(&cfg).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.round_trips, 60 * 20);
}
