//! Cooperative TCP: echo, many clients, timeouts, kills, resets, refusal,
//! half-close, and `StreamServer` behaviour.

mod common;

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::net::{StreamServer, TcpListener, TcpStream};
use greenhouse::{Error, Timeout, joinall, sleep, spawn, stats, yield_now};

fn echo_server() -> io::Result<StreamServer> {
    let server = StreamServer::bind("127.0.0.1:0", |conn, _| {
        let _ = io::copy(&mut &conn, &mut &conn);
    })?;
    server.start()?;
    Ok(server)
}

#[test]
fn echo_round_trips() -> io::Result<()> {
    let server = echo_server()?;
    let mut c = TcpStream::connect(server.local_addr())?;
    for i in 0..100u32 {
        let msg = format!("message {i}\n");
        c.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back)?;
        assert_eq!(back, msg.as_bytes());
    }
    drop(c);
    server.stop(Some(Duration::from_secs(5)))?;
    Ok(())
}

#[test]
fn thousand_concurrent_clients_every_byte_verified() -> io::Result<()> {
    const CLIENTS: usize = 1000;
    const ROUNDS: usize = 5;
    common::raise_fd_limit();
    let server = echo_server()?;
    let addr = server.local_addr();
    let peak = Rc::new(Cell::new(0usize));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (server, peak) = (server.clone(), peak.clone());
            spawn(move || -> io::Result<usize> {
                let mut c = TcpStream::connect(addr)?;
                let mut verified = 0;
                for round in 0..ROUNDS {
                    // Content unique to this client and round.
                    let msg: Vec<u8> = (0..64).map(|k| (id * 31 + round * 7 + k) as u8).collect();
                    c.write_all(&msg)?;
                    let mut back = [0u8; 64];
                    c.read_exact(&mut back)?;
                    assert_eq!(back[..], msg[..], "client {id} round {round}");
                    verified += back.len();
                    peak.set(peak.get().max(server.connections()));
                }
                Ok(verified)
            })
        })
        .collect();
    let total: usize = joinall(clients)
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .sum();
    assert_eq!(total, CLIENTS * ROUNDS * 64);
    assert!(
        peak.get() > CLIENTS / 2,
        "connections overlapped: peak {}",
        peak.get()
    );
    server.stop(Some(Duration::from_secs(5)))?;
    Ok(())
}

#[test]
fn read_timeout_fires_with_would_block_like_std() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let c = TcpStream::connect(listener.local_addr()?)?;
    let (mut s, _) = listener.accept()?;
    s.set_read_timeout(Some(Duration::from_millis(30)))?;
    assert_eq!(s.read_timeout()?, Some(Duration::from_millis(30)));
    let e = s.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    // Still usable afterwards.
    (&c).write_all(b"late")?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)?;
    assert_eq!(&buf, b"late");
    assert_eq!(
        s.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    Ok(())
}

#[test]
fn timeout_interrupts_a_blocked_recv() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let _c = TcpStream::connect(listener.local_addr()?)?;
    let (mut s, _) = listener.accept()?;
    let t = Timeout::start(Duration::from_millis(20));
    let e = s.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(t.fired());
    assert_eq!(stats().io_waiters, 0);
    Ok(())
}

#[test]
fn kill_of_a_greenlet_blocked_in_accept_closes_the_listener() -> io::Result<()> {
    let before = stats().io_sources;
    let addr_tx = Rc::new(Cell::new(None));
    let tx = addr_tx.clone();
    let h = spawn(move || -> io::Result<()> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        tx.set(Some(l.local_addr()?));
        l.accept()?;
        Ok(())
    });
    yield_now();
    let addr = addr_tx.get().expect("listener bound");
    assert_eq!(stats().io_waiters, 1);
    h.kill().unwrap();
    assert_eq!(stats().io_sources, before, "no registration left");
    assert_eq!(stats().io_waiters, 0);
    // The listener's fd was closed: connecting is refused.
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    Ok(())
}

#[test]
fn kill_of_a_greenlet_blocked_in_recv_closes_its_socket() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (conn, _) = listener.accept()?;
    let before = stats().io_sources;
    let h = spawn(move || -> io::Result<usize> {
        let mut conn = conn;
        conn.read(&mut [0u8; 16])
    });
    yield_now();
    assert_eq!(stats().io_waiters, 1);
    h.kill().unwrap();
    assert_eq!(stats().io_waiters, 0);
    assert!(stats().io_sources < before + 1);
    // The peer sees the connection closed.
    assert_eq!(client.read(&mut [0u8; 16])?, 0);
    Ok(())
}

#[test]
fn peer_reset_mid_stream_is_connection_reset() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (mut conn, _) = listener.accept()?;
    (&client).write_all(b"partial")?;
    // SO_LINGER 0: closing sends RST instead of FIN.
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO))?;
    drop(client);
    let mut buf = [0u8; 7];
    conn.read_exact(&mut buf)?;
    assert_eq!(&buf, b"partial");
    let e = conn.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    // Writing to a reset connection is an error, not a SIGPIPE death.
    let mut failed = false;
    for _ in 0..10 {
        if conn.write(b"x").is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed);
    Ok(())
}

#[test]
fn connect_refused_is_an_error() -> io::Result<()> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?; // closed again at once
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    let e = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    Ok(())
}

#[test]
fn address_in_use_is_an_error() -> io::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let e = TcpListener::bind(l.local_addr()?).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    Ok(())
}

#[test]
fn half_close_peer_still_reads_and_replies() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = spawn(move || -> io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        let mut got = Vec::new();
        conn.read_to_end(&mut got)?; // until the client's FIN
        conn.write_all(format!("got {} bytes", got.len()).as_bytes())?;
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.write_all(&[7u8; 1000])?;
    c.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    c.read_to_string(&mut reply)?;
    assert_eq!(reply, "got 1000 bytes");
    server.join().unwrap()?;
    Ok(())
}

#[test]
fn hostname_resolution_parks_only_the_caller() -> io::Result<()> {
    use greenhouse::net::ToSocketAddrs;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let _ticker = spawn(move || t.set(t.get() + 1));
    // The name is resolved on a helper thread while this greenlet parks,
    // so the ready ticker runs before the lookup returns.
    let addrs = ("localhost", port).to_addrs()?;
    assert_eq!(
        ticks.get(),
        1,
        "the hub ran other greenlets during the lookup"
    );
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == port)
    );
    let v4 = addrs.iter().find(|a| a.is_ipv4()).copied();
    if let Some(a) = v4 {
        let c = TcpStream::connect(a)?;
        let (s, _) = listener.accept()?;
        assert_eq!(c.local_addr()?, s.peer_addr()?);
    }
    Ok(())
}

#[test]
fn buf_reader_lines_and_try_clone() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let _w = spawn(move || -> io::Result<()> {
        let (conn, _) = listener.accept()?;
        let mut writer = conn.try_clone()?;
        for i in 0..3 {
            writeln!(writer, "line {i}")?;
            sleep(Duration::from_millis(2));
        }
        Ok(())
    });
    let c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    assert!(c.nodelay()?);
    let lines: Vec<String> = BufReader::new(c).lines().collect::<io::Result<_>>()?;
    assert_eq!(lines, ["line 0", "line 1", "line 2"]);
    Ok(())
}

#[test]
fn std_sockets_can_be_adopted() -> io::Result<()> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = std_listener.local_addr()?;
    let listener = TcpListener::from(std_listener);
    let std_client = std::net::TcpStream::connect(addr)?;
    let (mut conn, _) = listener.accept()?;
    let mut client = TcpStream::from(std_client);
    client.write_all(b"adopted")?;
    let mut buf = [0u8; 7];
    conn.read_exact(&mut buf)?;
    assert_eq!(&buf, b"adopted");
    Ok(())
}

#[test]
fn stream_server_stop_with_live_connections() -> io::Result<()> {
    let entered = Rc::new(Cell::new(0));
    let e = entered.clone();
    let server = StreamServer::bind("127.0.0.1:0", move |conn, _| {
        e.set(e.get() + 1);
        let _ = io::copy(&mut &conn, &mut &conn); // echo until EOF or kill
    })?;
    server.start()?;
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(addr))
        .collect::<io::Result<_>>()?;
    for c in &mut clients {
        c.write_all(b"hi")?;
        let mut b = [0u8; 2];
        c.read_exact(&mut b)?;
    }
    assert_eq!(server.connections(), 5);
    assert_eq!(entered.get(), 5);
    server.stop(Some(Duration::from_millis(30)))?;
    assert_eq!(server.connections(), 0, "remaining handlers were killed");
    assert!(!server.is_running());
    for c in &mut clients {
        assert_eq!(
            c.read(&mut [0u8; 4])?,
            0,
            "the killed handler closed the socket"
        );
    }
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    assert!(server.start().is_err(), "a stopped server does not restart");
    Ok(())
}

#[test]
fn stream_server_max_connections_is_never_exceeded() -> io::Result<()> {
    let live = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let (l, p) = (live.clone(), peak.clone());
    let server = StreamServer::bind("127.0.0.1:0", move |mut conn, _| {
        l.set(l.get() + 1);
        p.set(p.get().max(l.get()));
        let mut b = [0u8; 1];
        let _ = conn.read_exact(&mut b);
        sleep(Duration::from_millis(5));
        let _ = conn.write_all(&b);
        l.set(l.get() - 1);
    })?;
    server.set_max_connections(Some(2));
    server.start()?;
    let addr = server.local_addr();
    let clients: Vec<_> = (0..8u8)
        .map(|i| {
            spawn(move || -> io::Result<u8> {
                let mut c = TcpStream::connect(addr)?;
                c.write_all(&[i])?;
                let mut b = [0u8; 1];
                c.read_exact(&mut b)?;
                Ok(b[0])
            })
        })
        .collect();
    let got: Vec<u8> = joinall(clients)
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(got, (0..8).collect::<Vec<u8>>());
    assert_eq!(peak.get(), 2);
    assert_eq!(server.accepted(), 8);
    server.stop(None)?;
    Ok(())
}

#[test]
fn serve_forever_returns_after_stop_from_another_greenlet() -> io::Result<()> {
    let server = echo_server()?;
    let s2 = server.clone();
    let _stopper = spawn(move || {
        sleep(Duration::from_millis(10));
        s2.stop(None).unwrap();
    });
    server.serve_forever()?;
    assert!(!server.is_running());
    Ok(())
}

#[test]
fn an_unknown_host_is_an_error_not_a_hang() {
    let e = TcpStream::connect(("no-such-host.invalid", 80)).unwrap_err();
    assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
}

#[test]
fn kill_of_a_greenlet_blocked_in_connect_leaves_nothing_registered() -> io::Result<()> {
    // A loopback listener that never accepts, with a full accept queue:
    // the kernel drops further SYNs, so a new connect stays in progress.
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )?;
    l.listen(0)?;
    let addr = l.local_addr()?.as_socket().unwrap();
    let mut fillers = Vec::new();
    let pending = loop {
        let h = spawn(move || TcpStream::connect_timeout(&addr, Duration::from_secs(30)));
        yield_now();
        if !h.is_ready() {
            break h; // this one is stuck in connect
        }
        fillers.push(h.join().unwrap()?);
        assert!(fillers.len() < 64, "the accept queue never filled up");
    };
    assert_eq!(stats().io_waiters, 1);
    pending.kill().unwrap();
    assert_eq!(pending.join().unwrap_err(), Error::Killed);
    assert_eq!(stats().io_waiters, 0);
    assert_eq!(
        stats().io_sources,
        0,
        "the half-open socket was deregistered and closed"
    );
    drop(fillers);
    Ok(())
}

#[test]
fn kill_of_a_greenlet_blocked_in_send_leaves_nothing_registered() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (_conn, _) = listener.accept()?; // never reads: the client's send fills up
    let sent = Rc::new(Cell::new(0usize));
    let s = sent.clone();
    let h = spawn(move || -> io::Result<()> {
        let chunk = [1u8; 65536];
        loop {
            s.set(s.get() + (&client).write(&chunk)?);
        }
    });
    while stats().io_waiters == 0 {
        yield_now(); // until the writer has filled the buffers and parked
    }
    assert!(sent.get() > 0);
    h.kill().unwrap();
    assert_eq!(h.join().unwrap_err(), Error::Killed);
    assert_eq!(stats().io_waiters, 0);
    assert_eq!(stats().io_armed, 0);
    Ok(())
}
