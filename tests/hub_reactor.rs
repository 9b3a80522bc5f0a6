//! The reactor: parking on fd readiness, timeouts, and cleanup on kill.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use greenhouse::{Timeout, Watcher, sleep, spawn, stats, yield_now};

fn pair() -> io::Result<(Watcher<UnixStream>, UnixStream)> {
    let (a, b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    Ok((Watcher::new(a)?, b))
}

#[test]
fn a_reader_parks_until_data_arrives_while_others_run() -> io::Result<()> {
    let (a, mut b) = pair()?;
    let writer = spawn(move || -> io::Result<()> {
        sleep(Duration::from_millis(10));
        b.write_all(b"hello")?;
        Ok(())
    });
    let mut buf = [0u8; 16];
    let n = a.read_with(None, |mut s| s.read(&mut buf))?;
    assert_eq!(&buf[..n], b"hello");
    writer.join().unwrap()?;
    let s = stats();
    assert_eq!((s.io_waiters, s.io_armed), (0, 0));
    Ok(())
}

#[test]
fn readable_times_out_and_leaves_nothing_armed() -> io::Result<()> {
    let (a, _b) = pair()?;
    let e = a.readable(Some(Duration::from_millis(10))).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    let s = stats();
    assert_eq!(
        (s.io_sources, s.io_waiters, s.io_armed, s.timers),
        (1, 0, 0, 0)
    );
    drop(a);
    assert_eq!(stats().io_sources, 0);
    Ok(())
}

#[test]
fn a_killed_greenlet_parked_on_the_reactor_leaves_no_registration() -> io::Result<()> {
    let (a, b) = pair()?;
    let a = std::rc::Rc::new(a);
    let a2 = a.clone();
    let h = spawn(move || a2.readable(None));
    yield_now();
    let s = stats();
    assert_eq!((s.io_waiters, s.io_armed), (1, 1), "parked and armed");
    h.kill().unwrap();
    assert_eq!(h.join().unwrap_err(), greenhouse::Error::Killed);
    let s = stats();
    assert_eq!((s.io_sources, s.io_waiters, s.io_armed), (1, 0, 0));
    drop(a);
    drop(b);
    assert_eq!(stats().io_sources, 0);
    Ok(())
}

#[test]
fn a_timeout_scope_interrupts_a_reactor_wait() -> io::Result<()> {
    let (a, _b) = pair()?;
    let _t = Timeout::start(Duration::from_millis(10));
    let e = a
        .read_with(None, |mut s| s.read(&mut [0u8; 4]))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(stats().io_waiters, 0);
    Ok(())
}

#[test]
fn several_greenlets_wait_on_one_fd_and_all_wake() -> io::Result<()> {
    let (a, mut b) = pair()?;
    let a = std::rc::Rc::new(a);
    let hs: Vec<_> = (0..5)
        .map(|_| {
            let a = a.clone();
            spawn(move || a.readable(None))
        })
        .collect();
    yield_now();
    assert_eq!(stats().io_waiters, 5);
    b.write_all(b"x")?;
    for h in hs {
        h.join().unwrap()?;
    }
    assert_eq!(stats().io_waiters, 0);
    Ok(())
}

#[test]
fn writable_waits_for_buffer_space() -> io::Result<()> {
    let (a, mut b) = pair()?;
    // Fill the socket buffer until it would block.
    let chunk = [7u8; 65536];
    let mut sent = 0usize;
    loop {
        match a.get_ref().write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let reader = spawn(move || -> io::Result<(usize, UnixStream)> {
        sleep(Duration::from_millis(5));
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < 100_000 {
            got += b.read(&mut buf)?;
        }
        Ok((got, b)) // keep the peer open until the writer is done
    });
    let n = a.write_with(None, |mut s| s.write(&chunk))?;
    assert!(n > 0 && sent > 0);
    assert!(reader.join().unwrap()?.0 >= 100_000);
    Ok(())
}

#[test]
fn a_regular_file_is_refused_with_an_error() {
    let f = std::fs::File::open("/proc/self/status").unwrap();
    let e = Watcher::new(f).unwrap_err();
    assert!(e.raw_os_error().is_some(), "{e}");
}

#[test]
fn into_inner_deregisters() -> io::Result<()> {
    let (a, _b) = pair()?;
    assert_eq!(stats().io_sources, 1);
    let raw = a.into_inner();
    assert_eq!(stats().io_sources, 0);
    // The socket itself is still open and usable.
    raw.set_nonblocking(false)?;
    Ok(())
}
