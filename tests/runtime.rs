//! The multi-hub layer: `Runtime` (a hub per thread, run_on_each,
//! block_on, pinning, shutdown) and `runtime::Server` (one server over
//! every hub, with `SO_REUSEPORT` or a hand-over acceptor).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use greenhouse::net::TcpStream;
use greenhouse::runtime::Server;
use greenhouse::{Error, Runtime, spawn};

fn two_hubs() -> Runtime {
    Runtime::builder().hubs(2).build().expect("runtime")
}

#[test]
fn run_on_each_runs_on_every_hub_in_its_own_thread() {
    let rt = Runtime::builder()
        .hubs(3)
        .thread_name("worker")
        .build()
        .unwrap();
    assert_eq!(rt.hubs(), 3);
    let out = rt
        .run_on_each(|i| {
            let t = std::thread::current();
            // Greenlets of that hub, overlapping on its thread.
            let sleepers: Vec<_> = (0..50)
                .map(|_| spawn(|| greenhouse::sleep(Duration::from_millis(20))))
                .collect();
            greenhouse::joinall(sleepers);
            (i, t.name().unwrap().to_string(), format!("{:?}", t.id()))
        })
        .unwrap();
    let names: Vec<_> = out.iter().map(|(i, n, _)| (*i, n.clone())).collect();
    assert_eq!(
        names,
        [
            (0, "worker-0".into()),
            (1, "worker-1".into()),
            (2, "worker-2".into())
        ]
    );
    let ids: HashSet<_> = out.iter().map(|(_, _, id)| id.clone()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(rt.block_on(|| 6 * 7), Ok(42));
}

#[test]
fn a_panic_on_one_hub_is_reported_and_the_others_finish() {
    let rt = two_hubs();
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let r = rt.run_on_each(move |i| {
        if i == 1 {
            panic!("hub one gives up");
        }
        greenhouse::sleep(Duration::from_millis(50));
        f.fetch_add(1, Ordering::Relaxed);
    });
    match r {
        Err(Error::Panicked(p)) => assert!(p.message().contains("hub one gives up")),
        other => panic!("expected the panic, got {other:?}"),
    }
    assert_eq!(finished.load(Ordering::Relaxed), 1, "hub 0's work was lost");
    // Both hubs still serve.
    assert_eq!(rt.run_on_each(|i| i).unwrap(), vec![0, 1]);
}

#[test]
fn pinned_hubs_run_on_one_cpu_each() {
    let rt = Runtime::builder()
        .hubs(2)
        .pin_to_cores(true)
        .build()
        .unwrap();
    let cpus = rt
        .run_on_each(|_| {
            // SAFETY: reads this thread's affinity into a zeroed set.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(
                    libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set),
                    0
                );
                libc::CPU_COUNT(&set)
            }
        })
        .unwrap();
    assert_eq!(cpus, vec![1, 1]);
}

#[test]
fn shutdown_unwinds_the_greenlets_left_on_every_hub() {
    let rt = two_hubs();
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let d = dropped.clone();
    rt.run_on_each(move |_| {
        for _ in 0..10 {
            let c = Count(d.clone());
            spawn(move || {
                let _c = c;
                greenhouse::sleep(Duration::from_secs(3600));
            });
        }
    })
    .unwrap();
    rt.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(dropped.load(Ordering::Relaxed), 20);
}

/// Each client sends its id and a payload derived from it, and checks the
/// echo byte for byte; the server records which ids it served.
fn serve_2000_clients(reuse_port: bool) {
    common::raise_fd_limit();
    const CLIENTS: usize = 2000;
    const LEN: usize = 3000;
    let rt = two_hubs();
    let served: Arc<Vec<AtomicU8>> = Arc::new((0..CLIENTS).map(|_| AtomicU8::new(0)).collect());
    let s = served.clone();
    let server = Server::builder("127.0.0.1:0")
        .reuse_port(reuse_port)
        .start(&rt, move |_hub| {
            let s = s.clone();
            move |mut conn: TcpStream, _peer: SocketAddr| {
                let mut id = [0u8; 4];
                if conn.read_exact(&mut id).is_err() {
                    return;
                }
                let id = u32::from_le_bytes(id) as usize;
                s[id].fetch_add(1, Ordering::Relaxed);
                let mut buf = vec![0u8; LEN];
                if conn.read_exact(&mut buf).is_ok() {
                    let _ = conn.write_all(&buf);
                }
            }
        })
        .unwrap();
    let addr = server.local_addr();
    // The clients: greenlets on this thread's own hub.
    let clients: Vec<_> = (0..CLIENTS as u32)
        .map(|id| {
            spawn(move || -> std::io::Result<()> {
                let mut c = TcpStream::connect(addr)?;
                let payload: Vec<u8> = (0..LEN).map(|k| (k as u32 ^ id) as u8).collect();
                c.write_all(&id.to_le_bytes())?;
                c.write_all(&payload)?;
                let mut back = vec![0u8; LEN];
                c.read_exact(&mut back)?;
                assert_eq!(back, payload, "client {id}: echo differs");
                Ok(())
            })
        })
        .collect();
    for (id, c) in clients.into_iter().enumerate() {
        c.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("client {id}: {e}"));
    }
    let once = served
        .iter()
        .filter(|n| n.load(Ordering::Relaxed) == 1)
        .count();
    assert_eq!(
        once, CLIENTS,
        "not every connection was served exactly once"
    );
    let per_hub = server.accepted_per_hub();
    assert_eq!(per_hub.iter().sum::<u64>(), CLIENTS as u64);
    assert!(
        per_hub.iter().all(|&n| n > 0),
        "a hub served nothing: {per_hub:?}"
    );
    server.stop(None).unwrap();
}

#[test]
fn two_hubs_with_reuseport_serve_2000_clients_each_exactly_once() {
    serve_2000_clients(true);
}

#[test]
fn two_hubs_fed_by_one_acceptor_serve_2000_clients_each_exactly_once() {
    serve_2000_clients(false);
}

/// A server whose handlers hold their connection until it closes.
fn holding_server(rt: &Runtime, reuse_port: bool) -> Server {
    Server::builder("127.0.0.1:0")
        .reuse_port(reuse_port)
        .start(rt, |_| {
            |mut conn: TcpStream, _| {
                let _ = conn.write_all(b"hi");
                let mut buf = [0u8; 16];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
        })
        .unwrap()
}

/// Connects and waits for the greeting: the connection is being handled.
fn held(addr: SocketAddr) -> std::net::TcpStream {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hi = [0u8; 2];
    c.read_exact(&mut hi).unwrap();
    c
}

#[test]
fn stop_ends_live_connections_on_every_hub() {
    for reuse_port in [true, false] {
        let rt = two_hubs();
        let server = holding_server(&rt, reuse_port);
        let mut conns = Vec::new();
        // Until both hubs hold some (the kernel spreads by address).
        while conns.len() < 200 && server.accepted_per_hub().iter().any(|&n| n < 3) {
            conns.push(held(server.local_addr()));
        }
        assert!(server.accepted_per_hub().iter().all(|&n| n >= 3));
        assert_eq!(server.connections(), conns.len());
        server.stop(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(server.connections(), 0);
        for mut c in conns {
            // Killed handlers closed their sockets: EOF (or a reset).
            let mut buf = [0u8; 1];
            assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
        }
        assert!(std::net::TcpStream::connect(server.local_addr()).is_err());
        server.wait().unwrap();
    }
}

#[test]
fn a_panicking_handler_loses_no_other_connection() {
    let rt = two_hubs();
    let ok = Arc::new(AtomicUsize::new(0));
    let server = Server::builder("127.0.0.1:0")
        .start(&rt, |_| {
            |mut conn: TcpStream, _| {
                let mut b = [0u8; 1];
                conn.read_exact(&mut b).unwrap();
                if b[0] == b'!' {
                    panic!("this connection's handler fails");
                }
                greenhouse::sleep(Duration::from_millis(20));
                conn.write_all(&b).unwrap();
            }
        })
        .unwrap();
    let addr = server.local_addr();
    let clients: Vec<_> = (0..100u8)
        .map(|i| {
            let ok = ok.clone();
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let msg = if i % 10 == 0 { b'!' } else { b'a' + i % 26 };
                c.write_all(&[msg]).unwrap();
                let mut b = [0u8; 1];
                if msg != b'!' && c.read_exact(&mut b).is_ok() && b[0] == msg {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::Relaxed), 90);
    server.stop(None).unwrap();
}

#[test]
fn the_total_cap_closes_what_is_beyond_it() {
    let rt = two_hubs();
    let server = Server::builder("127.0.0.1:0")
        .max_connections(Some(4))
        .start(&rt, |_| {
            |mut conn: TcpStream, _| {
                let _ = conn.write_all(b"hi");
                let mut buf = [0u8; 1];
                let _ = conn.read(&mut buf);
            }
        })
        .unwrap();
    let addr = server.local_addr();
    let mut greeted = Vec::new();
    let mut closed = 0;
    for _ in 0..10 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hi = [0u8; 2];
        match c.read_exact(&mut hi) {
            Ok(()) => greeted.push(c),
            Err(_) => closed += 1,
        }
    }
    assert_eq!(greeted.len(), 4);
    assert_eq!(closed, 6);
    assert_eq!(server.refused(), 6);
    assert!(server.connections() <= 4);
    drop(greeted);
    server.stop(Some(Duration::from_secs(5))).unwrap();
}

#[test]
fn handlers_on_every_hub_report_through_one_channel() {
    // Cross-hub communication from handlers: each hub's part reports its
    // connections on one mpmc channel read here.
    let rt = two_hubs();
    let (tx, rx) = greenhouse::sync::mpmc::unbounded::<usize>();
    let tx = Mutex::new(tx);
    let server = Server::builder("127.0.0.1:0")
        .start(&rt, move |hub| {
            let tx = tx.lock().unwrap().clone();
            move |conn: TcpStream, _| {
                drop(conn);
                let _ = tx.send(hub);
            }
        })
        .unwrap();
    for _ in 0..50 {
        drop(std::net::TcpStream::connect(server.local_addr()).unwrap());
    }
    let hubs: Vec<usize> = (0..50).map(|_| rx.recv().unwrap()).collect();
    assert!(hubs.iter().all(|&h| h < 2));
    server.stop(None).unwrap();
}

/// The child side of the next test: a two-hub server that stops
/// gracefully on SIGTERM. Each handler first says which hub it is on,
/// then echoes five bytes after 300 ms of work.
#[test]
fn graceful_runtime_server_child() {
    if std::env::var_os("GREENHOUSE_RUNTIME_CHILD").is_none() {
        return;
    }
    let rt = two_hubs();
    let server = Server::builder("127.0.0.1:0")
        .start(&rt, |hub| {
            move |mut conn: TcpStream, _| {
                let _ = conn.write_all(&[hub as u8]);
                let mut buf = [0u8; 5];
                if conn.read_exact(&mut buf).is_ok() {
                    greenhouse::sleep(Duration::from_millis(300));
                    let _ = conn.write_all(&buf);
                }
            }
        })
        .unwrap();
    let _stop = server
        .stop_on_signals(&[libc::SIGINT, libc::SIGTERM], Duration::from_secs(10))
        .unwrap();
    println!("listening {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    server.wait().unwrap();
    println!("stopped gracefully");
}

#[test]
fn sigterm_stops_a_runtime_server_on_every_hub_gracefully() {
    if std::env::var_os("GREENHOUSE_RUNTIME_CHILD").is_some() {
        return;
    }
    let (mut child, mut out, addr) =
        common::spawn_listening_child("graceful_runtime_server_child", "GREENHOUSE_RUNTIME_CHILD");
    // Connections in progress on both hubs.
    let mut conns = Vec::new();
    let mut hubs = HashSet::new();
    while hubs.len() < 2 && conns.len() < 200 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut hub = [0u8; 1];
        c.read_exact(&mut hub).unwrap();
        hubs.insert(hub[0]);
        conns.push(c);
    }
    assert_eq!(hubs.len(), 2, "the kernel never picked the second hub");
    for c in &mut conns {
        c.write_all(b"hello").unwrap();
    }
    std::thread::sleep(Duration::from_millis(50)); // the handlers work
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for c in &mut conns {
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello", "a connection in progress was cut");
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{rest}");
    assert!(rest.contains("stopped gracefully"), "{rest}");
}

/// The doors between threads are `Send` (the README lists them); the
/// `!Send` side is checked by the `compile_fail` doctests on `Greenlet`,
/// `JoinHandle` and the `sync` primitives.
#[test]
fn the_doors_between_threads_are_send() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<greenhouse::HubHandle>();
    send_sync::<greenhouse::RemoteTask<String>>();
    send::<greenhouse::sync::mpmc::Sender<String>>();
    send::<greenhouse::sync::mpmc::Receiver<String>>();
    send::<Runtime>();
    send_sync::<Server>();
    send_sync::<Error>();
}
