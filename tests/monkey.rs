//! Monkey patching with plain std code: sockets, sleeps, name lookups,
//! fortified calls, and what must stay untouched (plain threads, files,
//! pipes, non-blocking fds). Every test calls `patch_all()` (it is
//! process-wide, and every test here wants it on).
//!
//! A broken hook would block the whole thread instead of one greenlet,
//! which shows up as a hang rather than a failure; a watchdog turns that
//! into a failure with a message.

mod common;

use std::cell::Cell;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use greenhouse::monkey::{parked_calls, patch_all};
use greenhouse::{Error, Timeout, joinall, spawn, with_timeout, with_timeout_silent, yield_now};

/// Patches, and aborts the process if the test binary runs for more than
/// two minutes (a hook that blocks the thread would hang forever).
fn setup() {
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(120));
            eprintln!("monkey tests: still running after 120 s; a patched call blocked its thread");
            std::process::abort();
        });
    });
    patch_all();
}

/// Counts greenlets inside a section, remembering the most at once.
#[derive(Clone, Default)]
struct Overlap {
    now: Rc<Cell<usize>>,
    peak: Rc<Cell<usize>>,
}

impl Overlap {
    fn enter(&self) {
        self.now.set(self.now.get() + 1);
        self.peak.set(self.peak.get().max(self.now.get()));
    }
    fn leave(&self) {
        self.now.set(self.now.get() - 1);
    }
}

#[test]
fn thread_sleep_in_1000_greenlets_overlaps() {
    setup();
    let sleeping = Overlap::default();
    let before = parked_calls();
    let sleepers: Vec<_> = (0..1000)
        .map(|_| {
            let s = sleeping.clone();
            spawn(move || {
                s.enter();
                std::thread::sleep(Duration::from_millis(100));
                s.leave();
            })
        })
        .collect();
    for r in joinall(sleepers) {
        r.unwrap();
    }
    // Unpatched, each sleep would block the thread: never two at once.
    assert_eq!(sleeping.peak.get(), 1000);
    assert_eq!(parked_calls() - before, 1000);
}

#[test]
fn std_tcp_echo_from_1000_greenlets() -> io::Result<()> {
    const CLIENTS: usize = 1000;
    setup();
    common::raise_fd_limit();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let connected = Overlap::default();
    let server = spawn(move || -> io::Result<()> {
        for _ in 0..CLIENTS {
            let (mut conn, _) = listener.accept()?;
            spawn(move || {
                let mut buf = [0u8; 256];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        Ok(())
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let c = connected.clone();
            spawn(move || -> io::Result<()> {
                let mut s = TcpStream::connect(addr)?;
                c.enter();
                for round in 0..3 {
                    let msg = format!("client {id} round {round}\n");
                    s.write_all(msg.as_bytes())?;
                    let mut back = vec![0u8; msg.len()];
                    s.read_exact(&mut back)?;
                    assert_eq!(back, msg.as_bytes());
                    // Let every other client connect before the next round.
                    greenhouse::sleep(Duration::from_millis(1));
                }
                c.leave();
                Ok(())
            })
        })
        .collect();
    for r in joinall(clients) {
        r.unwrap()?;
    }
    server.join().unwrap()?;
    assert!(
        connected.peak.get() > 1,
        "the std clients never overlapped: {}",
        connected.peak.get()
    );
    Ok(())
}

#[test]
fn a_plain_os_thread_keeps_blocking_semantics() {
    setup();
    let t = std::thread::spawn(|| -> io::Result<(Vec<u8>, ErrorKind, u64)> {
        // No hub on this thread: the hooks forward to libc untouched.
        let (mut a, b) = UnixStream::pair()?;
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let mut b = b;
            b.write_all(b"late").unwrap();
            b
        });
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf)?; // really blocks until the writer wrote
        let _b = writer.join().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(20)))?;
        let kind = a.read(&mut buf).unwrap_err().kind();
        std::thread::sleep(Duration::from_millis(5));
        Ok((buf.to_vec(), kind, parked_calls()))
    });
    let (data, kind, parked) = t.join().unwrap().unwrap();
    assert_eq!(data, b"late");
    assert_eq!(kind, ErrorKind::WouldBlock);
    assert_eq!(parked, 0, "a thread without a hub must never park");
}

#[test]
fn regular_file_and_pipe_io_is_untouched() -> io::Result<()> {
    setup();
    let path = std::env::temp_dir().join(format!("greenhouse-monkey-{}", std::process::id()));
    std::fs::write(&path, b"file contents")?;
    let (mut rx, mut tx) = io::pipe()?;
    let p = path.clone();
    let g = spawn(move || -> io::Result<(String, Vec<u8>, u64)> {
        let before = parked_calls();
        let text = std::fs::read_to_string(&p)?;
        tx.write_all(b"through a pipe")?;
        drop(tx);
        let mut piped = Vec::new();
        rx.read_to_end(&mut piped)?;
        Ok((text, piped, parked_calls() - before))
    });
    let (text, piped, parked) = g.join().unwrap()?;
    std::fs::remove_file(&path)?;
    assert_eq!(text, "file contents");
    assert_eq!(piped, b"through a pipe");
    assert_eq!(parked, 0, "file and pipe IO must go straight to libc");
    Ok(())
}

#[test]
fn so_rcvtimeo_gives_would_block_and_others_run_meanwhile() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?;
    a.set_read_timeout(Some(Duration::from_millis(50)))?;
    let ticker = common::Ticker::start(Duration::from_millis(2));
    let before = parked_calls();
    let err = a.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(parked_calls() > before);
    assert!(ticker.ticks() > 0, "the ticker never ran during the wait");
    ticker.stop();
    Ok(())
}

#[test]
fn user_non_blocking_sockets_are_untouched() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    let g = spawn(move || {
        let before = parked_calls();
        let kind = a.read(&mut [0u8; 8]).unwrap_err().kind();
        (kind, parked_calls() - before)
    });
    let (kind, parked) = g.join().unwrap();
    assert_eq!(kind, ErrorKind::WouldBlock);
    assert_eq!(parked, 0);
    Ok(())
}

#[test]
fn timeout_interrupts_a_patched_read_and_sleep() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?;
    let g = spawn(move || {
        let t = Timeout::start(Duration::from_millis(20));
        let err = a.read(&mut [0u8; 8]).unwrap_err();
        (err.kind(), t.fired())
    });
    assert_eq!(g.join().unwrap(), (ErrorKind::TimedOut, true));
    // A sleep of an hour, cut short by the scope (this would hang otherwise).
    let slept = spawn(|| {
        with_timeout(Duration::from_millis(20), || {
            std::thread::sleep(Duration::from_secs(3600))
        })
    });
    assert_eq!(slept.join().unwrap(), Err(Error::TimedOut));
    Ok(())
}

#[test]
fn a_silent_timeout_times_out_a_patched_read_then_ends_at_the_next_wait() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?;
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let g = spawn(move || {
        with_timeout_silent(Duration::from_millis(20), move || {
            // C frames cannot be unwound: the read itself times out...
            let r = a.read(&mut [0u8; 8]);
            s.set(Some(r.map_err(|e| e.kind())));
            // ...and the block ends at the next greenhouse wait.
            greenhouse::sleep(Duration::from_secs(3600));
            unreachable!("the silent timeout did not end the block");
        })
    });
    assert_eq!(g.join(), Ok(None::<()>));
    assert_eq!(seen.get(), Some(Err(ErrorKind::TimedOut)));
    Ok(())
}

#[test]
fn kill_interrupts_a_patched_read_and_unwinds_later() -> io::Result<()> {
    setup();
    let (mut a, mut b) = UnixStream::pair()?;
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let g = spawn(move || {
        let r = a.read(&mut [0u8; 8]);
        s.set(Some(r.map_err(|e| e.raw_os_error())));
        // The kill is raised here, at the next greenhouse blocking call.
        greenhouse::sleep(Duration::from_secs(3600));
        unreachable!("the deferred kill did not unwind");
    });
    yield_now(); // let it block in read
    g.kill().unwrap();
    assert_eq!(g.join().unwrap_err(), Error::Killed);
    assert_eq!(seen.get(), Some(Err(Some(libc::ECANCELED))));
    // `a` was dropped by the unwind: the peer sees end of stream.
    b.set_read_timeout(Some(Duration::from_secs(10)))?;
    assert_eq!(b.read(&mut [0u8; 8])?, 0);
    Ok(())
}

/// Sets its flag when dropped: proves an unwind ran the destructors.
struct Dropped(Rc<Cell<bool>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn a_killed_greenlet_in_a_thread_sleep_loop_unwinds_at_once() {
    setup();
    let (ticks, dropped) = (Rc::new(Cell::new(0u32)), Rc::new(Cell::new(false)));
    let (t, d) = (ticks.clone(), Dropped(dropped.clone()));
    let g = spawn(move || {
        let _d = d;
        loop {
            std::thread::sleep(Duration::from_millis(2)); // plain std
            t.set(t.get() + 1);
        }
    });
    while ticks.get() < 3 {
        greenhouse::sleep(Duration::from_millis(1));
    }
    g.kill().unwrap();
    assert!(dropped.get(), "the loop's frame was unwound");
    let at_kill = ticks.get();
    assert_eq!(g.join().unwrap_err(), Error::Killed);
    greenhouse::sleep(Duration::from_millis(20));
    assert_eq!(ticks.get(), at_kill, "it stopped ticking");
}

#[test]
fn a_kill_that_landed_in_a_read_ends_the_loop_at_its_next_thread_sleep() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?;
    let (errors, dropped) = (Rc::new(Cell::new(0u32)), Rc::new(Cell::new(false)));
    let (e, d) = (errors.clone(), Dropped(dropped.clone()));
    let g = spawn(move || {
        let _d = d;
        loop {
            // A careless loop that ignores the read's error...
            if a.read(&mut [0u8; 8]).is_err() {
                e.set(e.get() + 1);
            }
            // ...still ends here, at the next sleep.
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    yield_now(); // let it block in read
    g.kill().unwrap();
    assert_eq!(g.join().unwrap_err(), Error::Killed);
    assert_eq!(errors.get(), 1, "one ECANCELED, then the sleep unwound");
    assert!(dropped.get());
    Ok(())
}

#[test]
fn a_listener_shared_with_another_thread_never_blocks_the_hub() -> io::Result<()> {
    setup();
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    const N: usize = 200;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    // A plain OS thread accepts on the same listener the moment it sees a
    // connection, as the greenlet does: both wake for each connection and
    // race for it; one of them loses every time.
    let other = listener.try_clone()?;
    let (a, stop) = (accepted.clone(), Arc::new(AtomicBool::new(false)));
    let st = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut theirs = 0;
        while !st.load(Ordering::SeqCst) {
            let mut p = libc::pollfd {
                fd: other.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd (a plain thread: libc's own poll).
            if unsafe { libc::poll(&raw mut p, 1, 10) } == 1 {
                // Blocking: after losing a race it waits for the next one.
                if let Ok((c, _)) = other.accept() {
                    if st.load(Ordering::SeqCst) {
                        break; // the wake-up connection below
                    }
                    theirs += 1;
                    a.fetch_add(1, Ordering::SeqCst);
                    drop(c);
                }
            }
        }
        theirs
    });
    let ours = Rc::new(Cell::new(0usize));
    let (o, a) = (ours.clone(), accepted.clone());
    let acceptor = spawn(move || {
        while let Ok((c, _)) = listener.accept() {
            o.set(o.get() + 1);
            a.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    // The hub's heartbeat, visible to the client thread.
    let beats = Arc::new(AtomicU64::new(0));
    let b = beats.clone();
    let ticker = spawn(move || {
        loop {
            greenhouse::sleep(Duration::from_millis(1));
            b.fetch_add(1, Ordering::SeqCst);
        }
    });
    // One connection at a time; the next only after someone accepted it
    // and the hub has turned since. An acceptor that lost the race and
    // blocked the hub's thread in `accept` stops the heartbeat for good.
    let (acc, b) = (accepted.clone(), beats.clone());
    let clients = std::thread::spawn(move || -> Result<(), String> {
        for i in 0..N {
            let before = b.load(Ordering::SeqCst);
            let c = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
            let t0 = std::time::Instant::now();
            while acc.load(Ordering::SeqCst) <= i || b.load(Ordering::SeqCst) < before + 2 {
                if t0.elapsed() > Duration::from_secs(10) {
                    return Err(format!("connection {i}: the hub stopped turning"));
                }
                std::thread::yield_now();
            }
            drop(c);
        }
        Ok(())
    });
    // Main waits on the same hub (a plain sleep loop: it needs the hub).
    while !clients.is_finished() {
        greenhouse::sleep(Duration::from_millis(1));
    }
    clients.join().unwrap().unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), N);
    acceptor.kill().unwrap();
    ticker.kill().unwrap();
    stop.store(true, Ordering::SeqCst);
    drop(std::net::TcpStream::connect(addr)); // in case it waits in accept
    let theirs = thread.join().unwrap();
    assert_eq!(ours.get() + theirs, N);
    Ok(())
}

#[test]
fn kill_with_inside_a_patched_read_keeps_its_error() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?;
    let g = spawn(move || {
        let r = a.read(&mut [0u8; 8]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        greenhouse::sleep(Duration::from_secs(3600)); // raised here
        unreachable!("the deferred kill did not unwind");
    });
    yield_now(); // let it block in read
    let stop = Error::custom(io::Error::other("stop"));
    g.kill_with(stop.clone()).unwrap();
    assert_eq!(g.join(), Err(stop));
    Ok(())
}

#[test]
fn a_killed_greenlet_that_returns_still_reports_killed() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?;
    let seen = Rc::new(Cell::new((None, None)));
    let s = seen.clone();
    let g = spawn(move || {
        let first = a.read(&mut [0u8; 8]).unwrap_err().raw_os_error();
        // A later patched call works normally (here: its own timeout).
        a.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let second = a.read(&mut [0u8; 8]).unwrap_err().kind();
        s.set((first, Some(second)));
        "returned normally"
    });
    yield_now();
    g.kill().unwrap();
    assert_eq!(g.join().unwrap_err(), Error::Killed);
    assert_eq!(
        seen.get(),
        (Some(libc::ECANCELED), Some(ErrorKind::WouldBlock))
    );
    Ok(())
}

#[test]
fn std_connect_accept_and_connect_timeout() -> io::Result<()> {
    setup();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = spawn(move || -> io::Result<Vec<String>> {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (mut c, _) = listener.accept()?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            got.push(s);
        }
        Ok(got)
    });
    let a = spawn(move || -> io::Result<()> {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(b"connect")?;
        Ok(())
    });
    let b = spawn(move || -> io::Result<()> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.write_all(b"connect_timeout")?;
        s.shutdown(Shutdown::Write)
    });
    a.join().unwrap()?;
    b.join().unwrap()?;
    let mut got = server.join().unwrap()?;
    got.sort();
    assert_eq!(got, ["connect", "connect_timeout"]);

    // A refused connection is the same error as unpatched.
    let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let refused = spawn(move || TcpStream::connect(closed).unwrap_err().kind());
    assert_eq!(refused.join().unwrap(), ErrorKind::ConnectionRefused);
    Ok(())
}

#[test]
fn udp_and_unix_datagrams_between_greenlets() -> io::Result<()> {
    setup();
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let addr = server.local_addr()?;
    let echo = spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            let (n, from) = server.recv_from(&mut buf)?;
            server.send_to(&buf[..n], from)?;
        }
        Ok(())
    });
    let client = spawn(move || -> io::Result<()> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(addr)?;
        let mut buf = [0u8; 64];
        for i in 0..10u8 {
            s.send(&[i; 16])?;
            let n = s.recv(&mut buf)?;
            assert_eq!(&buf[..n], &[i; 16]);
        }
        Ok(())
    });
    client.join().unwrap()?;
    echo.join().unwrap()?;

    let (a, b) = UnixDatagram::pair()?;
    let before = parked_calls();
    let reader = spawn(move || -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 16];
        let n = a.recv(&mut buf)?; // parks: nothing sent yet
        Ok(buf[..n].to_vec())
    });
    let writer = spawn(move || b.send(b"datagram"));
    assert_eq!(writer.join().unwrap()?, 8);
    assert_eq!(reader.join().unwrap()?, b"datagram");
    assert!(parked_calls() > before);
    Ok(())
}

#[test]
fn vectored_io_and_peek_on_std_sockets() -> io::Result<()> {
    setup();
    let (mut a, mut b) = UnixStream::pair()?;
    let reader = spawn(move || -> io::Result<Vec<u8>> {
        let mut peeked = [0u8; 3];
        let mut first = [0u8; 3];
        let mut second = [0u8; 8];
        // `UnixStream` has no peek; use the fd with recv(MSG_PEEK).
        // SAFETY: a valid buffer and fd.
        let n = unsafe { libc::recv(a.as_raw_fd(), peeked.as_mut_ptr().cast(), 3, libc::MSG_PEEK) };
        assert_eq!(n, 3);
        let n = a.read_vectored(&mut [
            io::IoSliceMut::new(&mut first),
            io::IoSliceMut::new(&mut second),
        ])?;
        let mut out = peeked.to_vec();
        out.extend_from_slice(&first);
        out.extend_from_slice(&second[..n - 3]);
        Ok(out)
    });
    let writer =
        spawn(move || b.write_vectored(&[io::IoSlice::new(b"abc"), io::IoSlice::new(b"defg")]));
    assert_eq!(writer.join().unwrap()?, 7);
    assert_eq!(reader.join().unwrap()?, b"abcabcdefg");
    Ok(())
}

#[test]
fn a_big_blocking_write_parks_until_all_is_sent() -> io::Result<()> {
    setup();
    let (a, mut b) = UnixStream::pair()?;
    let data: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    let expect = data.clone();
    // One `write` call far bigger than the socket buffer: a blocking write
    // returns only when all of it is queued, and here it must park meanwhile.
    let writer = spawn(move || {
        // SAFETY: a valid buffer and fd.
        let n = unsafe { libc::write(a.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        drop(a);
        n
    });
    let reader = spawn(move || -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        b.read_to_end(&mut got)?;
        Ok(got)
    });
    assert_eq!(writer.join().unwrap(), 4 << 20);
    assert_eq!(reader.join().unwrap()?, expect);
    Ok(())
}

#[test]
fn host_names_resolve_on_the_thread_pool() -> io::Result<()> {
    setup();
    let lookups: Vec<_> = (0..8)
        .map(|_| spawn(|| ("localhost", 80).to_socket_addrs().map(|a| a.count())))
        .collect();
    let before = parked_calls();
    for r in joinall(lookups) {
        assert!(r.unwrap()? > 0);
    }
    assert!(parked_calls() >= before + 8, "lookups did not park");
    assert!(greenhouse::threadpool::default_pool().threads() > 0);
    // An IP literal resolves in place.
    let literal = spawn(|| ("127.0.0.1", 80).to_socket_addrs().map(|a| a.count()));
    assert_eq!(literal.join().unwrap()?, 1);
    Ok(())
}

#[test]
fn fortified_recv_chk_is_cooperative_too() -> io::Result<()> {
    unsafe extern "C" {
        fn __recv_chk(
            fd: libc::c_int,
            buf: *mut libc::c_void,
            len: libc::size_t,
            buflen: libc::size_t,
            flags: libc::c_int,
        ) -> libc::ssize_t;
    }
    setup();
    let (a, mut b) = UnixStream::pair()?;
    let reader = spawn(move || {
        let mut buf = [0u8; 16];
        let before = parked_calls();
        // SAFETY: a valid buffer of the declared size and an open fd.
        let n = unsafe { __recv_chk(a.as_raw_fd(), buf.as_mut_ptr().cast(), 16, 16, 0) };
        (buf[..n.max(0) as usize].to_vec(), parked_calls() - before)
    });
    let writer = spawn(move || b.write_all(b"fortified"));
    writer.join().unwrap()?;
    let (got, parked) = reader.join().unwrap();
    assert_eq!(got, b"fortified");
    assert_eq!(parked, 1);
    Ok(())
}

/// C source for [`c_library_calls_are_cooperative_too`]: a blocking client
/// routine as a C library would write it, built with `_FORTIFY_SOURCE` so
/// that `recv` into a sized buffer becomes `__recv_chk`.
const C_CLIENT: &str = r#"
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Waits up to 10 s for the fd to be readable, then reads what is there.
   Lengths known only at run time make the fortified `__poll_chk` and
   `__recv_chk` calls. */
long c_wait_and_recv(int fd, char *out, unsigned long want, unsigned long nfds) {
    char buf[64];
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, nfds, 10000) != 1) return -2;
    long n = recv(fd, buf, want, 0);
    for (long i = 0; i < n; i++) out[i] = buf[i];
    return n;
}

/* A blocking sleep, as C code does it. */
void c_sleep_ms(unsigned ms) { usleep(ms * 1000); }
"#;

#[test]
fn c_library_calls_are_cooperative_too() -> io::Result<()> {
    setup();
    let dir = std::env::temp_dir().join(format!("greenhouse-monkey-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (src, lib) = (dir.join("client.c"), dir.join("libclient.so"));
    std::fs::write(&src, C_CLIENT)?;
    let built = std::process::Command::new("gcc")
        .args(["-O2", "-D_FORTIFY_SOURCE=2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        eprintln!("SKIPPED: no working gcc ({built:?}); the C library test did not run");
        return Ok(());
    }
    let path = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
    // SAFETY: loading the library just built; it has no constructors.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    assert!(!handle.is_null(), "dlopen failed");
    type Recv =
        unsafe extern "C" fn(libc::c_int, *mut u8, libc::c_ulong, libc::c_ulong) -> libc::c_long;
    type Sleep = unsafe extern "C" fn(libc::c_uint);
    // SAFETY: the symbols exist in the library above with these C types.
    let (c_recv, c_sleep): (Recv, Sleep) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, Recv>(libc::dlsym(
                handle,
                c"c_wait_and_recv".as_ptr(),
            )),
            std::mem::transmute::<*mut libc::c_void, Sleep>(libc::dlsym(
                handle,
                c"c_sleep_ms".as_ptr(),
            )),
        )
    };
    let (a, mut b) = UnixStream::pair()?;
    let sleeping = Overlap::default();
    let before = parked_calls();
    let sleepers: Vec<_> = (0..10)
        .map(|_| {
            let s = sleeping.clone();
            spawn(move || {
                s.enter();
                // SAFETY: a plain C function taking milliseconds.
                unsafe { c_sleep(20) };
                s.leave();
            })
        })
        .collect();
    let reader = spawn(move || {
        let mut out = [0u8; 64];
        // SAFETY: a valid fd and a 64-byte buffer.
        let n = unsafe { c_recv(a.as_raw_fd(), out.as_mut_ptr(), 64, 1) };
        out[..n.max(0) as usize].to_vec()
    });
    let writer = spawn(move || b.write_all(b"from C"));
    writer.join().unwrap()?;
    assert_eq!(reader.join().unwrap(), b"from C");
    for r in joinall(sleepers) {
        r.unwrap();
    }
    assert_eq!(sleeping.peak.get(), 10, "the C sleeps did not overlap");
    // 10 sleeps, and the C reader's poll parked at least once.
    assert!(parked_calls() - before >= 11);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn poll_on_several_fds_parks_until_one_is_ready() -> io::Result<()> {
    setup();
    let (a, _a_peer) = UnixStream::pair()?;
    let (b, mut b_peer) = UnixStream::pair()?;
    let before = parked_calls();
    let poller = spawn(move || {
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: -1, // ignored, as poll(2) says
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN | libc::POLLPRI,
                revents: 0,
            },
        ];
        // SAFETY: three valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, 10_000) };
        (n, fds.map(|p| p.revents))
    });
    // The writer hands its end back: dropping it would add POLLHUP.
    let writer = spawn(move || b_peer.write_all(b"!").map(|()| b_peer));
    let _b_peer = writer.join().unwrap()?;
    let (n, revents) = poller.join().unwrap();
    assert_eq!(n, 1);
    assert_eq!(revents, [0, 0, libc::POLLIN]);
    assert!(parked_calls() > before);
    // With no fds at all, poll is a (cooperative) sleep that returns 0.
    // SAFETY: zero fds.
    let slept = spawn(|| unsafe { libc::poll(std::ptr::null_mut(), 0, 5) });
    assert_eq!(slept.join().unwrap(), 0);
    Ok(())
}

#[test]
fn so_sndtimeo_gives_would_block_on_a_full_socket() -> io::Result<()> {
    setup();
    let (mut a, _b) = UnixStream::pair()?; // nobody reads `_b`
    a.set_write_timeout(Some(Duration::from_millis(20)))?;
    let g = spawn(move || {
        let before = parked_calls();
        let kind = a.write_all(&vec![7u8; 8 << 20]).unwrap_err().kind();
        (kind, parked_calls() - before)
    });
    let (kind, parked) = g.join().unwrap();
    assert_eq!(kind, ErrorKind::WouldBlock);
    assert!(parked > 0);
    Ok(())
}

#[test]
fn std_unix_listener_accepts_cooperatively() -> io::Result<()> {
    setup();
    let dir = std::env::temp_dir().join(format!("greenhouse-monkey-uds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let before = parked_calls();
    let server = spawn(move || -> io::Result<String> {
        let (mut conn, _) = listener.accept()?; // parks: nobody connected yet
        let mut s = String::new();
        conn.read_to_string(&mut s)?;
        Ok(s)
    });
    let p = path.clone();
    let client = spawn(move || -> io::Result<()> {
        let mut c = UnixStream::connect(&p)?;
        c.write_all(b"over a unix socket")
    });
    client.join().unwrap()?;
    assert_eq!(server.join().unwrap()?, "over a unix socket");
    assert!(parked_calls() > before);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// C source for [`c_select_and_epoll_loops_park_only_their_greenlet`]: a
/// library that waits with `select`, and one that runs its own epoll loop.
const C_WAITERS: &str = r#"
#include <sys/epoll.h>
#include <sys/select.h>
#include <unistd.h>

/* Waits up to `ms` for `fd` with select; then reads a byte. */
int c_select_read(int fd, int ms) {
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    int n = select(fd + 1, &r, 0, 0, &tv);
    if (n != 1 || !FD_ISSET(fd, &r)) return -10 - n;
    char c;
    return read(fd, &c, 1) == 1 ? c : -3;
}

/* Its own event loop: an epoll set with the fd, waited on until it is
   readable (short waits in a loop, as event loops do); reads a byte. */
int c_epoll_read(int fd, int ms) {
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    struct epoll_event out[4];
    int waited = 0, n = 0;
    while (waited < ms && (n = epoll_wait(ep, out, 4, 50)) == 0) waited += 50;
    close(ep);
    if (n != 1 || out[0].data.fd != fd) return -20 - n;
    char c;
    return read(fd, &c, 1) == 1 ? c : -3;
}
"#;

/// Builds `src` into a shared library and loads it; `None` (after saying
/// so) where there is no C compiler.
fn load_c_library(name: &str, src: &str) -> Option<*mut libc::c_void> {
    let dir = std::env::temp_dir().join(format!("greenhouse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let (c, lib) = (dir.join("lib.c"), dir.join("lib.so"));
    std::fs::write(&c, src).ok()?;
    let built = std::process::Command::new("gcc")
        .args(["-O2", "-D_FORTIFY_SOURCE=2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&c)
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        eprintln!("SKIPPED: no working gcc ({built:?}); the C library test did not run");
        return None;
    }
    let path = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
    // SAFETY: loading the library just built; it has no constructors.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    assert!(!handle.is_null(), "dlopen failed");
    let _ = std::fs::remove_dir_all(&dir);
    Some(handle)
}

#[test]
fn c_select_and_epoll_loops_park_only_their_greenlet() -> io::Result<()> {
    setup();
    let Some(handle) = load_c_library("waiters", C_WAITERS) else {
        return Ok(());
    };
    type Wait = unsafe extern "C" fn(libc::c_int, libc::c_int) -> libc::c_int;
    // SAFETY: the symbols exist in the library above with this C type.
    let (c_select, c_epoll): (Wait, Wait) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, Wait>(libc::dlsym(
                handle,
                c"c_select_read".as_ptr(),
            )),
            std::mem::transmute::<*mut libc::c_void, Wait>(libc::dlsym(
                handle,
                c"c_epoll_read".as_ptr(),
            )),
        )
    };
    let inside = Overlap::default();
    let mut peers = Vec::new();
    let waiters: Vec<_> = (0..100)
        .map(|i| {
            let (a, b) = UnixStream::pair().unwrap();
            peers.push(b);
            let s = inside.clone();
            spawn(move || {
                s.enter();
                let f = if i % 2 == 0 { c_select } else { c_epoll };
                // SAFETY: a valid fd and a timeout in milliseconds.
                let r = unsafe { f(a.as_raw_fd(), 60_000) };
                s.leave();
                r
            })
        })
        .collect();
    let ticker = common::Ticker::start(Duration::from_millis(1));
    // Every waiter is inside its C call, and the hub keeps ticking.
    while inside.now.get() < 100 || ticker.ticks() < 20 {
        greenhouse::sleep(Duration::from_millis(1));
    }
    assert_eq!(inside.now.get(), 100, "all 100 still inside their C calls");
    for (i, mut p) in peers.into_iter().enumerate() {
        p.write_all(&[b'a' + (i % 26) as u8])?;
    }
    for (i, r) in joinall(waiters).into_iter().enumerate() {
        assert_eq!(r.unwrap(), i32::from(b'a' + (i % 26) as u8), "waiter {i}");
    }
    assert_eq!(inside.peak.get(), 100);
    ticker.stop();
    Ok(())
}

#[test]
fn select_ppoll_pselect_and_epoll_wait_follow_libc() -> io::Result<()> {
    setup();
    let (a, mut b) = UnixStream::pair()?;
    let fd = a.as_raw_fd();
    let others = Rc::new(Cell::new(0u32));
    let o = others.clone();
    let busy = spawn(move || {
        loop {
            greenhouse::sleep(Duration::from_millis(1));
            o.set(o.get() + 1);
        }
    });
    // select with a timeout and nothing ready: 0, the set cleared, the
    // timeout updated to what is left (0), and others ran meanwhile.
    let g = spawn(move || {
        // SAFETY: fd_set and timeval are plain data; fd < FD_SETSIZE.
        unsafe {
            let mut r: libc::fd_set = std::mem::zeroed();
            libc::FD_SET(fd, &mut r);
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 30_000,
            };
            let n = libc::select(
                fd + 1,
                &mut r,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut tv,
            );
            (n, libc::FD_ISSET(fd, &r), tv.tv_sec, tv.tv_usec)
        }
    });
    let before = others.get();
    assert_eq!(g.join().unwrap(), (0, false, 0, 0));
    assert!(others.get() > before, "the hub ran others during select");
    // Invalid arguments are libc's business: EBADF for a closed fd.
    // fd 900: inside the fd table (the dup2 grew it), closed, and too high
    // for lowest-first allocation by tests running alongside to reuse it.
    let closed = {
        let (x, _y) = UnixStream::pair()?;
        // SAFETY: dup2 onto a free high number, then close that number.
        unsafe {
            assert_eq!(libc::dup2(x.as_raw_fd(), 900), 900);
            libc::close(900);
        }
        900
    };
    let g = spawn(move || {
        // SAFETY: as above; `closed` is a closed fd below FD_SETSIZE.
        unsafe {
            let mut r: libc::fd_set = std::mem::zeroed();
            libc::FD_SET(closed, &mut r);
            let mut tv = libc::timeval {
                tv_sec: 1,
                tv_usec: 0,
            };
            let n = libc::select(
                closed + 1,
                &mut r,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut tv,
            );
            (n, io::Error::last_os_error().raw_os_error())
        }
    });
    assert_eq!(g.join().unwrap(), (-1, Some(libc::EBADF)));
    // ppoll, pselect (with a signal mask) and epoll_pwait park until data
    // comes; each sees it exactly as libc reports it.
    let parked_before = parked_calls();
    let g = spawn(move || {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let tmo = libc::timespec {
            tv_sec: 60,
            tv_nsec: 0,
        };
        // SAFETY: one valid pollfd, a valid timeout, no mask.
        let n1 = unsafe { libc::ppoll(&mut p, 1, &tmo, std::ptr::null()) };
        // SAFETY: plain data; an empty signal mask.
        let n2 = unsafe {
            let mut r: libc::fd_set = std::mem::zeroed();
            libc::FD_SET(fd, &mut r);
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::pselect(
                fd + 1,
                &mut r,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &tmo,
                &mask,
            )
        };
        // SAFETY: a new epoll set with the fd; a buffer of 4 events.
        let n3 = unsafe {
            let ep = libc::epoll_create1(0);
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 7,
            };
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev);
            let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            let n = libc::epoll_pwait(ep, out.as_mut_ptr(), 4, 60_000, &mask);
            libc::close(ep);
            (n, out[0].u64)
        };
        (n1, p.revents & libc::POLLIN != 0, n2, n3)
    });
    greenhouse::sleep(Duration::from_millis(20));
    b.write_all(b"x")?;
    assert_eq!(g.join().unwrap(), (1, true, 1, (1, 7)));
    assert!(parked_calls() > parked_before, "the first wait parked");
    busy.kill().unwrap();
    Ok(())
}

#[test]
fn child_process_waits_park_only_their_greenlet() {
    setup();
    use std::process::{Command, Stdio};
    // 100 children alive at once: each `cat` lives until main closes its
    // stdin, which main does only once all 100 greenlets wait in
    // `Child::wait`. A wait that blocked the thread would hang here.
    let alive = Rc::new(Cell::new(0usize));
    let stdins = Rc::new(std::cell::RefCell::new(Vec::new()));
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let (alive, stdins) = (alive.clone(), stdins.clone());
            spawn(move || {
                let mut child = Command::new("cat")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                stdins.borrow_mut().push(child.stdin.take().unwrap());
                alive.set(alive.get() + 1);
                let status = child.wait().unwrap();
                alive.set(alive.get() - 1);
                status.success()
            })
        })
        .collect();
    while alive.get() < 100 {
        greenhouse::sleep(Duration::from_millis(1));
    }
    stdins.borrow_mut().clear(); // EOF: every cat exits
    for r in joinall(waiters) {
        assert!(r.unwrap());
    }
    // `status()` and `output()` overlap too (std's `output` reads the
    // pipes with a patched `poll`, then waits).
    let inside = Overlap::default();
    let sleepers: Vec<_> = (0..100)
        .map(|_| {
            let s = inside.clone();
            spawn(move || {
                s.enter();
                let st = Command::new("sleep").arg("0.2").status().unwrap();
                s.leave();
                st.success()
            })
        })
        .collect();
    let outputs: Vec<_> = (0..20)
        .map(|i| {
            spawn(move || {
                Command::new("sh")
                    .args(["-c", &format!("sleep 0.1; echo {i}")])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for r in joinall(sleepers) {
        assert!(r.unwrap());
    }
    assert!(inside.peak.get() > 1, "the status() waits overlapped");
    for (i, r) in joinall(outputs).into_iter().enumerate() {
        let out = r.unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{i}\n"));
    }
}

#[test]
fn a_killed_child_wait_fails_with_ecanceled_and_waitid_works() {
    setup();
    use std::process::Command;
    // Reaped below with waitid, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let g = spawn(move || {
        let mut status = 0;
        // SAFETY: waiting for our own child into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        (r, io::Error::last_os_error().raw_os_error())
    });
    yield_now(); // it parks in waitpid
    g.kill().unwrap();
    assert_eq!(g.join().unwrap_err(), Error::Killed);
    child.kill().unwrap();
    // waitid reports the exit (a signal) as libc does.
    let g = spawn(move || {
        // SAFETY: a zeroed siginfo for waitid to fill.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED);
            (r, info.si_pid(), info.si_code)
        }
    });
    assert_eq!(g.join().unwrap(), (0, pid, libc::CLD_KILLED));
}
