//! Unmodified blocking crates that wait on their own worker threads, made
//! concurrent by monkey patching (issue 20): `tiny_http`'s `Server::recv`
//! (a condition variable fed by its connection threads), `reqwest`'s
//! blocking client (a thread park woken by its runtime thread), and the
//! sync `postgres` client against a real PostgreSQL (its own small tokio
//! runtime's `epoll_wait`, and thread parks).
//!
//! Every count is taken where the overlap happens (the server side), and
//! every wait for it has a generous bound, so a call that blocked the
//! thread shows as a failed count rather than a hang.

mod common;

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use greenhouse::{joinall, sleep, spawn};

/// Patches, and aborts the process if the test binary runs for more than
/// four minutes.
fn setup() {
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(240));
            eprintln!("monkey_crates tests: still running after 240 s; a call blocked its thread");
            std::process::abort();
        });
    });
    common::raise_fd_limit();
    greenhouse::monkey::patch_all();
}

#[test]
fn tiny_http_recv_serves_200_clients_from_greenlets() {
    setup();
    const CLIENTS: usize = 200;
    const BATCH: usize = 50;
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let addr = server.server_addr().to_ip().unwrap();
    // Handlers in progress now, the most at once, all so far, and when
    // the latest came.
    let (inflight, most, started) = (
        Rc::new(Cell::new(0)),
        Rc::new(Cell::new(0)),
        Rc::new(Cell::new(0)),
    );
    let latest = Rc::new(Cell::new(Instant::now()));
    let (i, m, s, l) = (
        inflight.clone(),
        most.clone(),
        started.clone(),
        latest.clone(),
    );
    let acceptor = spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..CLIENTS {
            // tiny_http's own blocking wait for its connection threads.
            let request = server.recv().unwrap();
            let (i, m, s, l) = (i.clone(), m.clone(), s.clone(), l.clone());
            handlers.push(spawn(move || {
                i.set(i.get() + 1);
                m.set(m.get().max(i.get()));
                s.set(s.get() + 1);
                l.set(Instant::now());
                // Hold the request while its batch comes in. tiny_http's
                // thread pool can strand a new connection until one of its
                // threads frees up (a race of its own: a task pushed for a
                // thread that was already woken), so a batch also answers
                // once no request came for half a second.
                while i.get() < BATCH && l.get().elapsed() < Duration::from_millis(500) {
                    sleep(Duration::from_millis(1));
                }
                request
                    .respond(tiny_http::Response::from_string("ok"))
                    .unwrap();
                i.set(i.get() - 1);
            }));
        }
        for r in joinall(handlers) {
            r.unwrap();
        }
    });
    // Clients connect a batch at a time, each once the previous one is
    // answered: the listen backlog (128) never overflows, so no
    // connection waits for the kernel's SYN retries on a loaded machine.
    let mut bodies = Vec::new();
    for _ in 0..CLIENTS / BATCH {
        let batch: Vec<_> = (0..BATCH)
            .map(|_| {
                spawn(move || {
                    ureq::get(&format!("http://{addr}/"))
                        .call()
                        .unwrap()
                        .body_mut()
                        .read_to_string()
                        .unwrap()
                })
            })
            .collect();
        bodies.extend(joinall(batch).into_iter().map(Result::unwrap));
    }
    acceptor.join().unwrap();
    assert_eq!(started.get(), CLIENTS);
    assert!(bodies.iter().all(|b| b == "ok"));
    // Unpatched, `recv` would hold the thread: no two handlers at once.
    assert!(
        most.get() >= BATCH / 2,
        "at most {} requests were in handlers at once",
        most.get()
    );
}

/// A thread-per-connection HTTP server that holds every request until
/// `expect` are in at once (or 30 s pass), and reports the most it saw.
fn counting_server(expect: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let inflight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let m = most.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (inflight, most) = (inflight.clone(), m.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let now = inflight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let t0 = Instant::now();
                while inflight.load(Ordering::SeqCst) < expect
                    && most.load(Ordering::SeqCst) < expect
                    && t0.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(200)); // the slow handler
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                inflight.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, most)
}

#[test]
fn reqwest_blocking_requests_from_20_greenlets_overlap() {
    setup();
    const CLIENTS: usize = 20;
    let (url, most) = counting_server(CLIENTS);
    // One client (its runtime thread) shared by every greenlet, as a
    // program would.
    let client = reqwest::blocking::Client::new();
    let greenlets: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            spawn(move || client.get(&url).send().unwrap().text().unwrap())
        })
        .collect();
    for r in joinall(greenlets) {
        assert_eq!(r.unwrap(), "ok");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        CLIENTS,
        "the requests did not overlap at the server"
    );
    drop(client); // joins its runtime thread (the pthread_join hook)
}

/// A throwaway PostgreSQL server (Debian's package) on a free loopback
/// port, run as the unprivileged `postgres` user when the test runs as
/// root; stopped and removed on drop.
struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_root: bool,
}

impl Postgres {
    fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "greenhouse-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pg = Postgres {
            dir,
            bin,
            port,
            as_root,
        };
        if as_root {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand the data directory to the postgres user");
        }
        let data = pg.dir.join("data");
        let initdb = pg
            .run("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(initdb.success(), "initdb failed");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=120",
            pg.port,
            pg.dir.display()
        );
        let started = pg
            .run("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(pg.dir.join("log"))
            .args(["-o", &opts, "-D"])
            .arg(&data)
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(started.success(), "pg_ctl start failed");
        Some(pg)
    }

    /// The PostgreSQL program `name`, as the postgres user if root.
    fn run(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn config(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .run("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Counts the active queries of `pg` matching `like` (a `LIKE` pattern),
/// through a client of the caller's.
fn active(c: &mut postgres::Client, like: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
        &[&like],
    )
    .unwrap()
    .get(0)
}

/// Starts PostgreSQL, or says why the test cannot run.
fn postgres_or_skip() -> Option<Postgres> {
    let pg = Postgres::start();
    if pg.is_none() {
        eprintln!(
            "SKIPPED: PostgreSQL is not installed (apt-get install postgresql); \
             the postgres client tests did not run"
        );
    }
    pg
}

#[test]
fn the_sync_postgres_client_parks_its_greenlet_not_the_hub() {
    setup();
    let Some(pg) = postgres_or_skip() else { return };
    let config = pg.config();
    // The sync client drives its own small tokio runtime on the calling
    // thread (`block_on`): its `epoll_wait` and thread parks are patched,
    // so the hub runs other greenlets meanwhile.
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let ticker = spawn(move || {
        loop {
            sleep(Duration::from_millis(5));
            t.set(t.get() + 1);
        }
    });
    let c = config.clone();
    let query = spawn(move || {
        let mut client = postgres::Client::connect(&c, postgres::NoTls).unwrap();
        client.execute("SELECT pg_sleep(0.2)", &[]).unwrap();
        let n: i32 = client.query_one("SELECT 41 + 1", &[]).unwrap().get(0);
        n
    });
    let n = query.join().unwrap();
    assert_eq!(n, 42);
    assert!(
        ticks.get() > 0,
        "the hub stopped during the sync client's query"
    );
    let _ = ticker.kill();
    drop(pg);
}

#[cfg(feature = "tokio")]
#[test]
fn fifty_greenlets_overlap_on_postgres_through_the_tokio_bridge() {
    setup();
    const WORKERS: usize = 50;
    let Some(pg) = postgres_or_skip() else { return };
    let config = pg.config();
    let mut gate = postgres::Client::connect(&config, postgres::NoTls).unwrap();
    // Every worker queues behind this lock in the server: a count the
    // server reports, independent of timing.
    gate.execute("SELECT pg_advisory_lock(20)", &[]).unwrap();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let config = config.clone();
            spawn(move || {
                greenhouse::bridge::tokio::wait_tokio(async move {
                    let (c, conn) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    c.execute("SELECT pg_advisory_lock_shared(20)", &[])
                        .await
                        .unwrap();
                    c.execute("SELECT pg_sleep(0.2)", &[]).await.unwrap();
                })
                .unwrap();
            })
        })
        .collect();
    // The watcher is the sync client, in this greenlet (the only one on
    // this thread inside a tokio runtime at a time).
    let mut watcher = postgres::Client::connect(&config, postgres::NoTls).unwrap();
    let t0 = Instant::now();
    let mut waiting = 0;
    while waiting < WORKERS as i64 && t0.elapsed() < Duration::from_secs(60) {
        sleep(Duration::from_millis(10));
        waiting = active(&mut watcher, "SELECT pg_advisory_lock_shared%");
    }
    gate.execute("SELECT pg_advisory_unlock(20)", &[]).unwrap();
    let mut sleeping = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let n = active(&mut watcher, "SELECT pg_sleep%");
        sleeping = sleeping.max(n);
        if n == 0 && sleeping > 0 {
            break;
        }
        sleep(Duration::from_millis(10));
    }
    for r in joinall(workers) {
        r.unwrap();
    }
    assert_eq!(waiting, WORKERS as i64, "the lock waits did not overlap");
    assert!(
        sleeping > 1,
        "the pg_sleep calls did not overlap ({sleeping} at most)"
    );
    eprintln!("postgres: {waiting} lock waits at once, {sleeping} pg_sleep(0.2) at once");
    drop(pg);
}
