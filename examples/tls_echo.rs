//! TLS on one thread: `rustls` over greenhouse's `TcpStream`, client and
//! server, with a self-signed certificate made at start (`rcgen`).
//!
//! rustls is sans-IO: `StreamOwned` drives a TLS connection over anything
//! that is `Read + Write`. A greenhouse `TcpStream` is, and its reads and
//! writes park only their greenlet, so every handshake and echo below
//! overlaps the others on one thread with no async code. With the `monkey`
//! feature, `--std` runs the same over std's `TcpListener`/`TcpStream`
//! under `monkey::patch_all()`: unmodified blocking TLS code, made
//! cooperative.
//!
//! ```text
//! cargo run --release --example tls_echo -- [--clients 100]
//! cargo run --release --features monkey --example tls_echo -- --std
//! ```
//!
//! std's `TcpListener::bind` asks for a backlog of 128: beyond about that
//! many clients connecting at once, the kernel drops SYNs and the clients
//! retry after a second (greenhouse's `StreamServer` asks for 1,024).

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use greenhouse::net::{StreamServer, TcpStream};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// A server and a client configuration that trust one fresh self-signed
/// certificate for `localhost`.
fn configs() -> io::Result<(Arc<ServerConfig>, Arc<ClientConfig>)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(io::Error::other)?;
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .map_err(io::Error::other)?;
    let mut roots = RootCertStore::empty();
    roots.add(cert).map_err(io::Error::other)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

/// How many sessions the server has open, and the most at once.
#[derive(Clone, Default)]
struct Sessions {
    open: Rc<Cell<usize>>,
    peak: Rc<Cell<usize>>,
    served: Rc<Cell<usize>>,
}

impl Sessions {
    fn enter(&self) {
        self.open.set(self.open.get() + 1);
        self.peak.set(self.peak.get().max(self.open.get()));
    }
    fn leave(&self) {
        self.open.set(self.open.get() - 1);
        self.served.set(self.served.get() + 1);
    }
}

/// The server's side of one connection over any blocking stream: the
/// handshake, then every decrypted byte echoed back encrypted, until the
/// client's `close_notify`.
fn serve_tls<S: Read + Write>(
    cfg: Arc<ServerConfig>,
    sock: S,
    sessions: &Sessions,
) -> io::Result<()> {
    sessions.enter();
    let conn = ServerConnection::new(cfg).map_err(io::Error::other);
    let r = conn.and_then(|conn| {
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf)? {
                0 => break, // close_notify
                n => tls.write_all(&buf[..n])?,
            }
        }
        tls.conn.send_close_notify();
        tls.flush()
    });
    sessions.leave();
    r
}

/// One client session over any blocking stream: handshake, `rounds`
/// messages each checked when echoed back, `close_notify`.
fn client_tls<S: Read + Write>(
    cfg: Arc<ClientConfig>,
    sock: S,
    id: usize,
    rounds: usize,
) -> io::Result<()> {
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = ClientConnection::new(cfg, name).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    for round in 0..rounds {
        let msg = format!("client {id} round {round}: hello over TLS");
        tls.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        tls.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(io::Error::other(format!(
                "client {id}: echo came back wrong"
            )));
        }
    }
    tls.conn.send_close_notify();
    tls.flush()?;
    // The server's own close_notify: a clean end of the session.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)?;
    Ok(())
}

/// A TLS echo server on a greenhouse `StreamServer` and `clients`
/// greenlets talking to it; returns the server's peak of open sessions.
fn run_greenhouse(clients: usize, rounds: usize) -> io::Result<usize> {
    let (server_cfg, client_cfg) = configs()?;
    let sessions = Sessions::default();
    let s = sessions.clone();
    let server = StreamServer::bind("127.0.0.1:0", move |conn, _| {
        if let Err(e) = serve_tls(server_cfg.clone(), conn, &s) {
            eprintln!("server: {e}");
        }
    })?;
    server.start()?;
    let addr = server.local_addr();
    let all: Vec<_> = (0..clients)
        .map(|id| {
            let cfg = client_cfg.clone();
            greenhouse::spawn(move || client_tls(cfg, TcpStream::connect(addr)?, id, rounds))
        })
        .collect();
    for (id, g) in all.into_iter().enumerate() {
        g.join()
            .map_err(|e| io::Error::other(format!("client {id}: {e}")))??;
    }
    server.stop(None)?;
    check_served(&sessions, clients)
}

/// The same with std's listener and streams under monkey patching: a
/// plain accept loop in a greenlet, a greenlet per connection.
#[cfg(feature = "monkey")]
fn run_patched_std(clients: usize, rounds: usize) -> io::Result<usize> {
    greenhouse::monkey::patch_all();
    let (server_cfg, client_cfg) = configs()?;
    let sessions = Sessions::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let s = sessions.clone();
    let acceptor = greenhouse::spawn(move || -> io::Result<()> {
        let mut handlers = Vec::new();
        for _ in 0..clients {
            let (conn, _) = listener.accept()?; // std, patched
            let (cfg, s) = (server_cfg.clone(), s.clone());
            handlers.push(greenhouse::spawn(move || serve_tls(cfg, conn, &s)));
        }
        for h in handlers {
            h.join().map_err(io::Error::other)??;
        }
        Ok(())
    });
    let all: Vec<_> = (0..clients)
        .map(|id| {
            let cfg = client_cfg.clone();
            greenhouse::spawn(move || {
                client_tls(cfg, std::net::TcpStream::connect(addr)?, id, rounds)
            })
        })
        .collect();
    for (id, g) in all.into_iter().enumerate() {
        g.join()
            .map_err(|e| io::Error::other(format!("client {id}: {e}")))??;
    }
    acceptor.join().map_err(io::Error::other)??;
    check_served(&sessions, clients)
}

/// Every client was served, and none is still open: the peak.
fn check_served(sessions: &Sessions, clients: usize) -> io::Result<usize> {
    if sessions.served.get() != clients || sessions.open.get() != 0 {
        return Err(io::Error::other(format!(
            "{} of {clients} sessions served, {} still open",
            sessions.served.get(),
            sessions.open.get()
        )));
    }
    Ok(sessions.peak.get())
}

fn main() -> io::Result<()> {
    let mut clients = 100;
    let mut std_streams = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--clients" => {
                clients = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| io::Error::other("--clients needs a number"))?
            }
            "--std" => std_streams = true,
            other => {
                return Err(io::Error::other(format!(
                    "unknown flag {other}; usage: tls_echo [--clients N] [--std]"
                )));
            }
        }
    }
    let rounds = 5;
    let t0 = Instant::now();
    let (how, peak) = if std_streams {
        #[cfg(feature = "monkey")]
        {
            (
                "std TcpStream, monkey-patched",
                run_patched_std(clients, rounds)?,
            )
        }
        #[cfg(not(feature = "monkey"))]
        {
            return Err(io::Error::other("--std needs --features monkey"));
        }
    } else {
        ("greenhouse TcpStream", run_greenhouse(clients, rounds)?)
    };
    println!(
        "{clients} TLS clients x {rounds} echoes over {how}, one thread: {:.0} ms, \
         up to {peak} sessions open at once",
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

#[test]
fn tls_over_greenhouse_tcp_streams_overlaps() -> io::Result<()> {
    let peak = run_greenhouse(40, 3)?;
    // One thread: sessions overlap only if every read and write parks
    // just its own greenlet.
    assert!(peak > 1, "sessions never overlapped (peak {peak})");
    Ok(())
}

#[cfg(feature = "monkey")]
#[test]
fn tls_over_patched_std_streams_overlaps() -> io::Result<()> {
    let before = greenhouse::monkey::parked_calls();
    let peak = run_patched_std(40, 3)?;
    assert!(peak > 1, "sessions never overlapped (peak {peak})");
    assert!(greenhouse::monkey::parked_calls() > before);
    Ok(())
}
