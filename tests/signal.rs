//! `greenhouse::signal`: greenlets wait for Unix signals; deliveries fan
//! out to every hub registered; handlers run per delivery until
//! cancelled; the old disposition comes back; a `StreamServer` stops
//! gracefully on SIGTERM.
//!
//! Signals are process-wide and the tests run in parallel threads, so each
//! test uses a signal of its own.

mod common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use greenhouse::signal::{Signals, handler};

fn raise(sig: i32) {
    // SAFETY: raising a signal the test has a handler for.
    assert_eq!(unsafe { libc::raise(sig) }, 0);
}

/// The process's current handler address for `sig`.
fn disposition(sig: i32) -> usize {
    // SAFETY: querying only (null new action).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

#[test]
fn a_greenlet_receives_the_signals_it_waits_for() {
    let sig = libc::SIGUSR1;
    let s = Signals::new(&[sig, sig]).unwrap();
    assert_eq!(s.signals(), &[sig]);
    assert_eq!(s.try_recv(), None);
    assert_eq!(s.recv_timeout(Duration::from_millis(10)).unwrap(), None);
    // Others run while one waits.
    let waiter = greenhouse::spawn(move || s.recv());
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let ticker = greenhouse::spawn(move || {
        loop {
            greenhouse::sleep(Duration::from_millis(1));
            t.set(t.get() + 1);
        }
    });
    // The ticker gets turns while the waiter waits (bounded generously: on
    // a loaded machine, under ASan, a few milliseconds may pass unticked).
    let t0 = std::time::Instant::now();
    while ticks.get() == 0 && t0.elapsed() < Duration::from_secs(10) {
        greenhouse::sleep(Duration::from_millis(1));
    }
    assert!(
        ticks.get() > 0,
        "the ticker never ran while the waiter waited"
    );
    assert!(!waiter.is_ready());
    raise(sig);
    assert_eq!(waiter.join().unwrap(), Ok(sig));
    ticker.kill().unwrap();
}

#[test]
fn every_registered_hub_gets_each_delivery() {
    let sig = libc::SIGHUP;
    let before = disposition(sig);
    let here = Signals::new(&[sig]).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let other = std::thread::spawn(move || {
        let s = Signals::new(&[sig]).unwrap();
        ready_tx.send(()).unwrap();
        let got = s.recv_timeout(Duration::from_secs(30)).unwrap();
        drop(s);
        got
    });
    ready_rx.recv().unwrap();
    raise(sig);
    assert_eq!(
        here.recv_timeout(Duration::from_secs(30)).unwrap(),
        Some(sig)
    );
    assert_eq!(other.join().unwrap(), Some(sig));
    drop(here);
    assert_eq!(disposition(sig), before, "the old disposition is back");
}

#[test]
fn a_handler_runs_per_delivery_until_cancelled() {
    let sig = libc::SIGUSR2;
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    let h = handler(sig, move || s.set(s.get() + 1)).unwrap();
    assert_eq!(h.greenlet().name(), format!("signal-{sig}"));
    for n in 1..=3 {
        raise(sig);
        while seen.get() < n {
            greenhouse::sleep(Duration::from_millis(1));
        }
    }
    h.cancel().unwrap();
    assert_eq!(seen.get(), 3);
    assert_ne!(
        disposition(sig),
        libc::SIG_IGN,
        "restored to what it was, not ignored"
    );
}

#[test]
fn signals_that_cannot_be_handled_are_refused() {
    for sig in [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGURG,
        0,
        -1,
        99,
    ] {
        let e = Signals::new(&[sig]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "signal {sig}");
    }
}

/// The child side of the next test: an echo server that stops gracefully
/// on SIGTERM, letting the connection in progress finish.
#[test]
fn graceful_server_child() {
    if std::env::var_os("GREENHOUSE_SIGNAL_CHILD").is_none() {
        return;
    }
    use greenhouse::net::{StreamServer, TcpStream};
    let server = StreamServer::bind("127.0.0.1:0", |conn: TcpStream, _| {
        let mut buf = [0u8; 5];
        if (&conn).read_exact(&mut buf).is_ok() {
            // Slow work: SIGTERM arrives meanwhile.
            greenhouse::sleep(Duration::from_millis(300));
            let _ = (&conn).write_all(&buf);
        }
    })
    .unwrap();
    let s = server.clone();
    let _h = handler(libc::SIGTERM, move || {
        println!("stopping");
        s.stop(Some(Duration::from_secs(10))).unwrap();
    })
    .unwrap();
    println!("listening {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    server.serve_forever().unwrap();
    println!("stopped gracefully");
}

#[test]
fn sigterm_stops_a_stream_server_gracefully() {
    if std::env::var_os("GREENHOUSE_SIGNAL_CHILD").is_some() {
        return;
    }
    let (mut child, mut out, addr) =
        common::spawn_listening_child("graceful_server_child", "GREENHOUSE_SIGNAL_CHILD");
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"hello").unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the handler is working
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello", "the connection in progress finished");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{rest}");
    assert!(rest.contains("stopping"), "{rest}");
    assert!(rest.contains("stopped gracefully"), "{rest}");
}
