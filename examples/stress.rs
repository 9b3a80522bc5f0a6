//! The 500-client stress test (the classic gevent demo), greenhouse's main
//! demo.
//!
//! Starts an echo `StreamServer` on its own thread (one thread, one greenlet
//! per connection) unless `--addr` names a running server. Then it runs N
//! concurrent clients as greenlets on this thread's hub. Each client sends
//! numbered messages and checks every echoed byte. It shows live progress,
//! then a table: clients, round trips, round trips/s, p50/p99/p999 latency,
//! connect errors, and lost or corrupted messages. It exits non-zero on any
//! error.
//!
//! ```text
//! cargo run --release --example stress -- [--clients 500] [--size 64]
//!     [--duration 5 | --rounds N] [--addr HOST:PORT]
//! ```

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

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
            "--no-progress" => c.progress = false,
            "-h" | "--help" => {
                return Err("usage: stress [--clients N] [--size BYTES] [--duration SECS | --rounds N] [--addr HOST:PORT] [--no-progress]".into());
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if c.clients == 0 {
        return Err("--clients must be at least 1".into());
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

/// Starts an echo server on a thread of its own; returns its address.
fn start_server() -> io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let server = StreamServer::bind("127.0.0.1:0", |conn, _| {
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
            });
            match server {
                Ok(s) => {
                    let _ = tx.send(Ok(s.local_addr()));
                    if let Err(e) = s.serve_forever() {
                        eprintln!("echo server: {e}");
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| io::Error::other("the server thread died"))?
}

#[derive(Default)]
struct Counters {
    round_trips: Cell<u64>,
    connect_errors: Cell<u64>,
    io_errors: Cell<u64>,
    lost: Cell<u64>,
    corrupted: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// One client: connect, then send numbered messages and check each echo.
fn client(
    id: u64,
    addr: SocketAddr,
    cfg: &Config,
    deadline: Option<Instant>,
    n: &Counters,
    hist: &RefCell<Histogram<u64>>,
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

/// Runs the stress test and returns its report.
fn run(cfg: &Config) -> io::Result<Report> {
    let addr: SocketAddr = match &cfg.addr {
        Some(a) => {
            use greenhouse::net::ToSocketAddrs;
            *a.to_addrs()?
                .first()
                .ok_or_else(|| io::Error::other("no address"))?
        }
        None => start_server()?,
    };
    let counters = Rc::new(Counters::default());
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(io::Error::other)?,
    ));
    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let clients: Vec<_> = (0..cfg.clients as u64)
        .map(|id| {
            let (cfg, n, h) = (cfg.clone(), counters.clone(), hist.clone());
            greenhouse::spawn(move || client(id, addr, &cfg, deadline, &n, &h))
        })
        .collect();
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
                let rt = n.round_trips.get();
                let rate = rt as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_position(rt);
                bar.set_message(format!(
                    "{rt} round trips, {rate:.0}/s, errors {}",
                    n.connect_errors.get() + n.io_errors.get() + n.lost.get() + n.corrupted.get()
                ));
                greenhouse::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        })
    });
    for r in greenhouse::joinall(clients) {
        if r.is_err() {
            bump(&counters.io_errors);
        }
    }
    let elapsed = started.elapsed();
    done.set(true);
    if let Some(p) = progress {
        let _ = p.join();
    }
    let h = hist.borrow();
    Ok(Report {
        clients: cfg.clients,
        round_trips: counters.round_trips.get(),
        elapsed,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        connect_errors: counters.connect_errors.get(),
        io_errors: counters.io_errors.get(),
        lost: counters.lost.get(),
        corrupted: counters.corrupted.get(),
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
        "greenhouse stress: {} clients, {} byte messages, {}",
        cfg.clients,
        cfg.size,
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
    };
    let r = run(&cfg).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.round_trips, 50 * 20);
    assert!(r.p50_us >= 1 && r.p50_us <= r.p99_us && r.p99_us <= r.p999_us);
}
