//! A blocking database client from crates.io (`redis`, sync API,
//! unmodified) against a real Redis server that the test starts itself.
//!
//! N greenlets on one thread each open a connection and block in `BLPOP`.
//! The server's own count of blocked clients reaching N proves the calls
//! overlapped: unpatched, the first `BLPOP` would hold the thread and the
//! server would never see more than one.
//!
//! Needs `redis-server` (Debian's `redis-server` package, which `.ci/run`
//! installs). Where it is missing the test says so and passes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use greenhouse::{joinall, spawn};

/// A `redis-server` child process, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// Starts a throwaway server on a free loopback port (no persistence) and
/// waits until it answers `PING`.
fn start_redis() -> Option<RedisServer> {
    let Some(bin) = find_redis_server() else {
        eprintln!(
            "SKIPPED: redis-server is not installed (apt-get install redis-server); \
             the monkey-patched database client test did not run"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start redis-server");
    let server = RedisServer { child, port };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let t0 = Instant::now();
    loop {
        // Outside any greenlet: plain blocking calls.
        let pong = client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if pong.is_ok() {
            return Some(server);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "redis-server did not come up: {pong:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `blocked_clients` from the server's `INFO clients`.
fn blocked_clients(con: &mut redis::Connection) -> redis::RedisResult<usize> {
    let info: String = redis::cmd("INFO").arg("clients").query(con)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

#[test]
fn greenlets_run_blocking_redis_queries_concurrently() -> redis::RedisResult<()> {
    const N: usize = 20;
    let Some(server) = start_redis() else {
        return Ok(());
    };
    greenhouse::monkey::patch_all();
    let url = format!("redis://127.0.0.1:{}/", server.port);

    let waiters: Vec<_> = (0..N)
        .map(|i| {
            let url = url.clone();
            spawn(move || -> redis::RedisResult<Option<(String, String)>> {
                let mut con = redis::Client::open(url)?.get_connection()?;
                // Blocks in the server until somebody pushes (or 10 s pass).
                redis::cmd("BLPOP")
                    .arg(format!("list{i}"))
                    .arg(10)
                    .query(&mut con)
            })
        })
        .collect();

    let checker = spawn(move || -> redis::RedisResult<usize> {
        let mut con = redis::Client::open(url)?.get_connection()?;
        let mut most = 0;
        for _ in 0..1000 {
            most = most.max(blocked_clients(&mut con)?);
            if most == N {
                break;
            }
            std::thread::sleep(Duration::from_millis(5)); // patched: parks
        }
        for i in 0..N {
            redis::cmd("RPUSH")
                .arg(format!("list{i}"))
                .arg(format!("value{i}"))
                .query::<usize>(&mut con)?;
        }
        Ok(most)
    });

    let most = checker.join().unwrap()?;
    let got = joinall(waiters);
    assert_eq!(
        most, N,
        "the server never saw all {N} queries blocked at once"
    );
    for (i, r) in got.into_iter().enumerate() {
        assert_eq!(
            r.unwrap()?,
            Some((format!("list{i}"), format!("value{i}"))),
            "greenlet {i}"
        );
    }
    Ok(())
}
