//! File descriptors: kills release them, and running out of them (`EMFILE`)
//! does not kill a `StreamServer`. Each scenario runs in a child process
//! (this test binary re-run for one test), because fd counts and
//! `RLIMIT_NOFILE` are process-wide and other tests run in parallel.

use std::io::{self, Read, Write};
use std::process::Command;
use std::time::Duration;

use greenhouse::net::{StreamServer, TcpListener, TcpStream};
use greenhouse::{sleep, spawn, yield_now};

fn in_child(test: &str) -> bool {
    std::env::var("GREENHOUSE_CHILD").is_ok_and(|v| v == test)
}

fn run_child(test: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("GREENHOUSE_CHILD", test)
        // The children run out of fds on purpose; the blocked-hub
        // detector's first report would open the binary to symbolize.
        .env("GREENHOUSE_BLOCKED_MS", "0")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "child failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout + &stderr
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn kills_in_accept_and_recv_release_their_fds() {
    const NAME: &str = "kills_in_accept_and_recv_release_their_fds";
    if !in_child(NAME) {
        run_child(NAME);
        return;
    }
    // Warm up the hub (its poller holds fds of its own).
    spawn(|| ()).join().unwrap();
    let _ = greenhouse::Watcher::new(std::os::unix::net::UnixStream::pair().unwrap().0);
    let base = open_fds();

    let acceptor = spawn(|| -> io::Result<()> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.accept()?;
        Ok(())
    });
    yield_now();
    assert_eq!(open_fds(), base + 1, "the listener is open");
    acceptor.kill().unwrap();
    assert_eq!(
        open_fds(),
        base,
        "the killed acceptor's listener was closed"
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let with_pair = open_fds();
    let reader = spawn(move || -> io::Result<usize> {
        let mut conn = conn;
        conn.read(&mut [0u8; 8])
    });
    yield_now();
    reader.kill().unwrap();
    assert_eq!(
        open_fds(),
        with_pair - 1,
        "the killed reader's socket was closed"
    );
    drop((client, listener));
    assert_eq!(open_fds(), base);
    println!("CHILD-OK");
}

#[test]
fn emfile_on_accept_does_not_kill_the_server() {
    const NAME: &str = "emfile_on_accept_does_not_kill_the_server";
    if !in_child(NAME) {
        let out = run_child(NAME);
        assert!(out.contains("CHILD-OK"), "{out}");
        assert!(
            out.contains("Too many open files"),
            "the server reported EMFILE: {out}"
        );
        return;
    }
    let server = StreamServer::bind("127.0.0.1:0", |mut conn, _| {
        let mut b = [0u8; 2];
        if conn.read_exact(&mut b).is_ok() {
            let _ = conn.write_all(&b);
        }
    })
    .unwrap();
    server.start().unwrap();
    let addr = server.local_addr();
    yield_now(); // the accept loop is parked

    // Use up every fd but one with dummies.
    let mut dummies = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        dummies.push(f);
        assert!(dummies.len() < 1_000_000);
    }
    drop(dummies.pop());
    // The client gets the last fd; the server's accept then fails with EMFILE.
    let client = spawn(move || -> io::Result<[u8; 2]> {
        let mut c = TcpStream::connect(addr)?;
        c.write_all(b"hi")?;
        let mut b = [0u8; 2];
        c.read_exact(&mut b)?;
        Ok(b)
    });
    sleep(Duration::from_millis(100));
    assert!(!client.is_ready(), "nothing can be served while out of fds");
    assert!(server.is_running(), "EMFILE did not stop the accept loop");
    drop(dummies); // fds free up: the server resumes accepting
    assert_eq!(&client.join().unwrap().unwrap(), b"hi");
    assert!(server.is_running());
    assert_eq!(server.accepted(), 1);
    server.stop(Some(Duration::from_secs(1))).unwrap();
    println!("CHILD-OK");
}
