//! Echo over UDP, Unix streams and Unix datagrams; timeouts and kills;
//! `DatagramServer`.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use greenhouse::net::{DatagramServer, UdpSocket, UnixDatagram, UnixListener, UnixStream};
use greenhouse::{joinall, spawn, stats, yield_now};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("greenhouse-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn udp_echo() -> io::Result<()> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let addr = server.local_addr()?;
    let echo = spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 1500];
        for _ in 0..20 {
            let (n, from) = server.recv_from(&mut buf)?;
            server.send_to(&buf[..n], from)?;
        }
        Ok(())
    });
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(addr)?;
    for i in 0..20u8 {
        let msg = [i; 100];
        client.send(&msg)?;
        let mut back = [0u8; 200];
        let n = client.recv(&mut back)?;
        assert_eq!(&back[..n], &msg[..]);
    }
    echo.join().unwrap()?;
    Ok(())
}

#[test]
fn udp_read_timeout_and_kill() -> io::Result<()> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    assert_eq!(
        s.recv(&mut [0u8; 8]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    let h = spawn(move || s.recv_from(&mut [0u8; 8]).map(|(n, _)| n));
    yield_now();
    assert_eq!(stats().io_waiters, 1);
    h.kill().unwrap();
    assert_eq!((stats().io_waiters, stats().io_sources), (0, 0));
    Ok(())
}

#[test]
fn unix_stream_echo_many_clients() -> io::Result<()> {
    let dir = temp_dir("ustream");
    let path = dir.join("echo.sock");
    let listener = UnixListener::bind(&path)?;
    let _server = spawn(move || -> io::Result<()> {
        loop {
            let (conn, _) = listener.accept()?;
            spawn(move || {
                let _ = io::copy(&mut &conn, &mut &conn);
            });
        }
    });
    let clients: Vec<_> = (0..50u8)
        .map(|i| {
            let path = path.clone();
            spawn(move || -> io::Result<()> {
                let mut c = UnixStream::connect(&path)?;
                let msg = vec![i; 4096];
                c.write_all(&msg)?;
                let mut back = vec![0u8; 4096];
                c.read_exact(&mut back)?;
                assert_eq!(back, msg);
                Ok(())
            })
        })
        .collect();
    for r in joinall(clients) {
        r.unwrap()?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn unix_stream_pair_peek_and_half_close() -> io::Result<()> {
    let (mut a, mut b) = UnixStream::pair()?;
    let writer = spawn(move || -> io::Result<()> {
        greenhouse::sleep(Duration::from_millis(5));
        b.write_all(b"peekaboo")?;
        b.shutdown(std::net::Shutdown::Write)?;
        let mut rest = String::new();
        b.read_to_string(&mut rest)?;
        assert_eq!(rest, "bye");
        Ok(())
    });
    let mut buf = [0u8; 4];
    assert_eq!(a.peek(&mut buf)?, 4);
    assert_eq!(&buf, b"peek");
    let mut all = String::new();
    a.read_to_string(&mut all)?;
    assert_eq!(all, "peekaboo");
    a.write_all(b"bye")?;
    drop(a);
    writer.join().unwrap()?;
    Ok(())
}

/// After a read that returned less than it asked for, the next read parks
/// without trying (the socket is known empty). Data and the peer's FIN can
/// then come in one readiness event; the EOF must still be seen, the read
/// timeout must still fire, and later data must still wake the reader.
#[test]
fn short_reads_then_timeout_data_and_eof_in_one_event() -> io::Result<()> {
    let (mut a, mut b) = UnixStream::pair()?;
    a.set_read_timeout(Some(Duration::from_millis(20)))?;
    let reader = spawn(move || -> io::Result<Vec<Vec<u8>>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let n = a.read(&mut buf)?; // parks, then a short read
        got.push(buf[..n].to_vec());
        // Known empty now: this read parks and its timeout fires.
        let e = a.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.set_read_timeout(None)?;
        let n = a.read(&mut buf)?; // woken by the next data
        got.push(buf[..n].to_vec());
        // The writer now sends bytes and closes while we are parked, so
        // both arrive before we run: one event, then EOF without an edge.
        let mut rest = Vec::new();
        a.read_to_end(&mut rest)?;
        got.push(rest);
        Ok(got)
    });
    greenhouse::sleep(Duration::from_millis(5));
    b.write_all(b"one")?;
    greenhouse::sleep(Duration::from_millis(60));
    b.write_all(b"two")?;
    greenhouse::sleep(Duration::from_millis(5));
    b.write_all(b"three")?;
    drop(b);
    let got = reader.join().unwrap()?;
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    Ok(())
}

#[test]
fn unix_stream_write_to_closed_peer_is_epipe_not_sigpipe() -> io::Result<()> {
    let (mut a, b) = UnixStream::pair()?;
    drop(b);
    let e = a.write_all(&[0u8; 1 << 16]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    Ok(())
}

#[test]
fn unix_datagram_echo() -> io::Result<()> {
    let dir = temp_dir("udgram");
    let server_path = dir.join("server.sock");
    let client_path = dir.join("client.sock");
    let server = UnixDatagram::bind(&server_path)?;
    let echo = spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 256];
        for _ in 0..10 {
            let (n, from) = server.recv_from(&mut buf)?;
            let to = from.as_pathname().expect("bound client").to_owned();
            server.send_to(&buf[..n], to)?;
        }
        Ok(())
    });
    let client = UnixDatagram::bind(&client_path)?;
    for i in 0..10u8 {
        client.send_to(&[i, i, i], &server_path)?;
        let mut back = [0u8; 8];
        let n = client.recv(&mut back)?;
        assert_eq!(&back[..n], &[i, i, i]);
    }
    echo.join().unwrap()?;
    let (x, y) = UnixDatagram::pair()?;
    x.send(b"pair")?;
    let mut b = [0u8; 4];
    assert_eq!(y.recv(&mut b)?, 4);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn datagram_server_runs_a_handler_per_datagram_concurrently() -> io::Result<()> {
    let peak = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let p = peak.clone();
    let server = DatagramServer::bind("127.0.0.1:0", move |data, peer, server| {
        p.set(p.get().max(server.handlers()));
        greenhouse::sleep(Duration::from_millis(20)); // all overlap
        server.send_to(&data, peer).unwrap();
    })?;
    server.start()?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    for i in 0..10u8 {
        client.send_to(&[i], server.local_addr())?;
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        let mut buf = [0u8; 8];
        let (n, from) = client.recv_from(&mut buf)?;
        assert_eq!((n, from), (1, server.local_addr()));
        got.push(buf[0]);
    }
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    assert_eq!(
        peak.get(),
        10,
        "one handler greenlet per datagram, all at once"
    );
    assert_eq!(server.received(), 10);
    server.stop(Some(Duration::from_secs(5)))?;
    assert!(!server.is_running());
    assert_eq!(
        server
            .send_to(b"x", client.local_addr()?)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotConnected
    );
    assert_eq!(
        server.start().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    Ok(())
}

#[test]
fn datagram_server_bounds_its_handlers_and_stop_kills_the_rest() -> io::Result<()> {
    let peak = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let p = peak.clone();
    let server = DatagramServer::bind("127.0.0.1:0", move |_data, _peer, server| {
        p.set(p.get().max(server.handlers()));
        greenhouse::sleep(Duration::from_secs(3600));
    })?;
    server.set_max_handlers(Some(3));
    server.start()?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..8u8 {
        client.send_to(&[i], server.local_addr())?;
    }
    while server.handlers() < 3 {
        greenhouse::sleep(Duration::from_millis(1));
    }
    greenhouse::sleep(Duration::from_millis(20));
    assert_eq!(
        (peak.get(), server.handlers(), server.received()),
        (3, 3, 3)
    );
    // The rest wait in the socket; stop kills the three sleepers.
    server.stop(None)?;
    assert_eq!(server.handlers(), 0);
    Ok(())
}
