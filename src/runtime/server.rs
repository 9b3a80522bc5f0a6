//! One TCP server across every hub of a [`Runtime`]: a
//! [`StreamServer`] per hub, each with a handler made on that hub by a
//! factory (so the handler need not be `Send`).
//!
//! By default each hub owns its own listener, bound with `SO_REUSEPORT`
//! to the same address, and the kernel spreads connections between them:
//! no hand-over, no shared accept queue. Without it
//! ([`ServerBuilder::reuse_port`]`(false)`), hub 0 runs the only listener
//! and an acceptor greenlet hands each accepted socket to the hubs in
//! turn through a [`mpmc`] channel per hub.
//!
//! The per-hub [`StreamServer`]s live in a registry on their hub's thread
//! (they are `!Send`), under the server's id; [`Server`] reaches them with
//! [`HubHandle::call`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::Runtime;
use crate::error::Error;
use crate::hub::{HubHandle, JoinHandle};
use crate::net::{StreamServer, TcpListener, TcpStream};
use crate::sync::mpmc;

/// The backlog of every listener (as [`TcpListener::bind`]).
const BACKLOG: i32 = 1024;

thread_local! {
    /// This hub's part of every running [`Server`], by id.
    static PARTS: RefCell<HashMap<u64, Part>> = RefCell::new(HashMap::new());
}

/// One hub's part of a [`Server`].
struct Part {
    server: StreamServer,
    /// Hub 0 without `SO_REUSEPORT`: the acceptor greenlet.
    acceptor: Option<JoinHandle<()>>,
}

/// Counters shared by every hub's part.
#[derive(Default)]
struct Stats {
    live: AtomicUsize,
    refused: AtomicU64,
    accepted: Vec<AtomicU64>,
}

/// Configures a [`Server`]; [`start`](Self::start) it on a runtime.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    addr: Result<SocketAddr, String>,
    per_hub: Option<usize>,
    total: Option<usize>,
    reuse_port: bool,
}

impl ServerBuilder {
    /// At most `max` connections handled at once over all hubs (`None`:
    /// no cap). A hub cannot pass a connection it accepted to another, so
    /// one accepted beyond the cap is closed at once and counted in
    /// [`Server::refused`]; [`max_connections_per_hub`] instead leaves
    /// connections waiting in the kernel's backlog.
    ///
    /// [`max_connections_per_hub`]: Self::max_connections_per_hub
    pub fn max_connections(mut self, max: Option<usize>) -> ServerBuilder {
        self.total = max;
        self
    }

    /// At most `max` connections handled at once on each hub (`None`: no
    /// cap); beyond it the hub's accept loop waits (as
    /// [`StreamServer::set_max_connections`]).
    pub fn max_connections_per_hub(mut self, max: Option<usize>) -> ServerBuilder {
        self.per_hub = max;
        self
    }

    /// Whether each hub binds its own listener with `SO_REUSEPORT`
    /// (default `true`). With `false`, hub 0 accepts every connection and
    /// hands them to the hubs round robin: for kernels or setups without
    /// `SO_REUSEPORT` load balancing, at the cost of a hand-over per
    /// connection.
    pub fn reuse_port(mut self, on: bool) -> ServerBuilder {
        self.reuse_port = on;
        self
    }

    /// Binds and starts serving on every hub of `rt`: hub `i` runs
    /// `make_handler(i)` once, on its own thread, and calls the handler it
    /// returns in a new greenlet per connection.
    ///
    /// # Errors
    /// If the address does not resolve, or a hub cannot bind, listen or
    /// start (the hubs already started are stopped again).
    pub fn start<M, H>(self, rt: &Runtime, make_handler: M) -> io::Result<Server>
    where
        M: Fn(usize) -> H + Send + Sync + 'static,
        H: Fn(TcpStream, SocketAddr) + 'static,
    {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let mut addr = self.addr.map_err(io::Error::other)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let n = rt.hubs();
        let hubs: Vec<HubHandle> = (0..n).filter_map(|i| rt.handle(i)).collect();
        let stats = Arc::new(Stats {
            accepted: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ..Stats::default()
        });
        let make = Arc::new(make_handler);
        let mut server = Server {
            id,
            hubs: Vec::new(),
            addr,
            stats: stats.clone(),
        };
        // Without SO_REUSEPORT: one channel per hub, fed by hub 0.
        let (inboxes, outboxes): (Vec<_>, Vec<_>) = if self.reuse_port {
            (Vec::new(), Vec::new())
        } else {
            (0..n)
                .map(|_| mpmc::unbounded())
                .map(|(tx, rx)| (rx, tx))
                .unzip()
        };
        let mut inboxes = inboxes.into_iter();
        let mut outboxes = Some(outboxes);
        for (i, hub) in hubs.iter().enumerate() {
            let (make, stats) = (make.clone(), stats.clone());
            let (per_hub, total, reuse) = (self.per_hub, self.total, self.reuse_port);
            let inbox = inboxes.next();
            let acceptor_out = if i == 0 { outboxes.take() } else { None };
            let bound = hub.call(move || -> io::Result<SocketAddr> {
                let handler = counted(make(i), i, total, stats);
                let (server, acceptor, at) = if reuse {
                    let l = listener(addr, true)?;
                    let at = l.local_addr()?;
                    (StreamServer::from_listener(l, handler)?, None, at)
                } else if let Some(out) = acceptor_out {
                    let l = listener(addr, false)?;
                    let at = l.local_addr()?;
                    let inbox = inbox.ok_or_else(|| io::Error::other("no inbox"))?;
                    let s = StreamServer::from_inbox(at, inbox, handler);
                    (
                        s,
                        Some(crate::spawn(move || accept_and_hand_out(l, out))),
                        at,
                    )
                } else {
                    let inbox = inbox.ok_or_else(|| io::Error::other("no inbox"))?;
                    (StreamServer::from_inbox(addr, inbox, handler), None, addr)
                };
                server.set_max_connections(per_hub);
                server.start()?;
                PARTS.with(|p| p.borrow_mut().insert(id, Part { server, acceptor }));
                Ok(at)
            });
            match bound.map_err(io::Error::from).and_then(|r| r) {
                Ok(at) => {
                    // Port 0: the other hubs bind the port the first got.
                    addr = at;
                    server.addr = at;
                    server.hubs.push(hub.clone());
                }
                Err(e) => {
                    let _ = server.stop(None);
                    return Err(e);
                }
            }
        }
        Ok(server)
    }
}

/// A listener on `addr` (with `SO_REUSEPORT` if `reuse_port`).
fn listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(TcpListener::from(std::net::TcpListener::from(s)))
}

/// Hub 0's acceptor without `SO_REUSEPORT`: accepts and hands each socket
/// to the next hub's inbox. Ends when killed (by `stop`) or when the
/// listener fails for good.
fn accept_and_hand_out(l: TcpListener, out: Vec<mpmc::Sender<(std::net::TcpStream, SocketAddr)>>) {
    let mut next = 0;
    loop {
        match l.accept() {
            Ok((stream, peer)) => {
                let fd = stream.into_raw_fd();
                // SAFETY: `fd` was just taken out of the accepted stream,
                // which owned it; the std stream owns it now.
                let s = unsafe { std::net::TcpStream::from_raw_fd(fd) };
                // A hub whose part stopped refuses it: the socket closes.
                let _ = out[next].send((s, peer));
                next = (next + 1) % out.len();
            }
            // Out of fds or memory: wait for some to be freed.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                crate::sleep(Duration::from_millis(5));
            }
            // One aborted connection, not the listener.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => {
                eprintln!("greenhouse: Server acceptor: {e}; no more connections");
                return;
            }
        }
    }
}

/// Wraps hub `i`'s handler: keeps the shared counters and the total cap.
fn counted<H>(
    handler: H,
    i: usize,
    total: Option<usize>,
    stats: Arc<Stats>,
) -> impl Fn(TcpStream, SocketAddr) + 'static
where
    H: Fn(TcpStream, SocketAddr) + 'static,
{
    /// One live connection, however its handler ends.
    struct Live<'a>(&'a Stats);
    impl Drop for Live<'_> {
        fn drop(&mut self) {
            self.0.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
    move |conn, peer| {
        let now = stats.live.fetch_add(1, Ordering::AcqRel) + 1;
        let _live = Live(&stats);
        if total.is_some_and(|t| now > t) {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return; // closes `conn`
        }
        stats.accepted[i].fetch_add(1, Ordering::Relaxed);
        handler(conn, peer);
    }
}

/// A TCP server running on every hub of a [`Runtime`] (see the
/// [module docs](crate::runtime)): `Send`, `Sync` and cheap to clone, so any thread
/// or greenlet can watch or stop it.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
///
/// let rt = greenhouse::Runtime::builder().hubs(2).build()?;
/// // The factory runs once per hub; the handler it makes stays there.
/// let server = greenhouse::runtime::Server::builder("127.0.0.1:0")
///     .start(&rt, |hub| move |mut conn: greenhouse::net::TcpStream, _| {
///         let _ = conn.write_all(format!("hub {hub}\n").as_bytes());
///     })?;
/// let mut c = std::net::TcpStream::connect(server.local_addr())?;
/// let mut s = String::new();
/// c.read_to_string(&mut s)?;
/// assert!(s.starts_with("hub "));
/// server.stop(None)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Server {
    id: u64,
    hubs: Vec<HubHandle>,
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("hubs", &self.hubs.len())
            .field("connections", &self.connections())
            .finish()
    }
}

impl Server {
    /// A builder for a server on `addr` (the first address it resolves
    /// to; port 0 picks a free port, shared by every hub).
    pub fn builder(addr: impl ToSocketAddrs) -> ServerBuilder {
        let addr = match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err("the address resolved to nothing".to_string()),
            Err(e) => Err(e.to_string()),
        };
        ServerBuilder {
            addr,
            per_hub: None,
            total: None,
            reuse_port: true,
        }
    }

    /// The address every hub listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections being handled now, over all hubs.
    pub fn connections(&self) -> usize {
        self.stats.live.load(Ordering::Acquire)
    }

    /// Connections handled since the start, per hub.
    pub fn accepted_per_hub(&self) -> Vec<u64> {
        self.stats
            .accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// Connections handled since the start, over all hubs.
    pub fn accepted(&self) -> u64 {
        self.accepted_per_hub().iter().sum()
    }

    /// Connections closed at once because the total cap was reached.
    pub fn refused(&self) -> u64 {
        self.stats.refused.load(Ordering::Relaxed)
    }

    /// Stops every hub's part at once, as [`StreamServer::stop`] does for
    /// one: listeners closed, handlers given up to `timeout` to finish
    /// (`None`: not at all), then killed. Parks only the calling greenlet.
    ///
    /// # Errors
    /// The first hub's error, after every hub has stopped.
    pub fn stop(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let id = self.id;
        self.on_every_hub(move || {
            let part = PARTS.with(|p| {
                p.borrow_mut()
                    .get_mut(&id)
                    .map(|p| (p.server.clone(), p.acceptor.take()))
            });
            let Some((server, acceptor)) = part else {
                return Ok(()); // stopped already
            };
            if let Some(a) = acceptor {
                a.kill()?;
            }
            let r = server.stop(timeout).map_err(Error::custom);
            // Only now: `wait` waits while the part is registered.
            PARTS.with(|p| p.borrow_mut().remove(&id));
            r
        })
    }

    /// Waits until every hub's part has stopped (and its stop finished):
    /// a multi-hub `serve_forever`.
    ///
    /// # Errors
    /// The first hub's error (one whose accept loop failed on its own).
    pub fn wait(&self) -> Result<(), Error> {
        let id = self.id;
        self.on_every_hub(move || {
            let server = PARTS.with(|p| p.borrow().get(&id).map(|p| p.server.clone()));
            match server {
                Some(s) => s.wait_stopped().map_err(Error::custom),
                None => Ok(()),
            }
        })
    }

    /// Stops the server gracefully (as [`stop`](Self::stop) with `grace`)
    /// when any of `signals` arrives: the process-level shutdown of a
    /// multi-hub server on Ctrl-C or SIGTERM. The handlers are
    /// [`signal::handler`](crate::signal::handler)s on the calling
    /// thread's hub (the signal reaches that hub, which stops every hub's
    /// part), so that hub must run: typically the caller then waits in
    /// [`wait`](Self::wait). They stay registered until the returned
    /// handlers are cancelled.
    ///
    /// # Errors
    /// As [`signal::handler`](crate::signal::handler).
    pub fn stop_on_signals(
        &self,
        signals: &[i32],
        grace: Duration,
    ) -> io::Result<Vec<crate::signal::SignalHandler>> {
        signals
            .iter()
            .map(|&sig| {
                let server = self.clone();
                crate::signal::handler(sig, move || {
                    if let Err(e) = server.stop(Some(grace)) {
                        eprintln!("greenhouse: stopping the server on signal {sig}: {e}");
                    }
                })
            })
            .collect()
    }

    /// Runs `f` on every hub of the server at once; the first error after
    /// all are done.
    fn on_every_hub<F>(&self, f: F) -> Result<(), Error>
    where
        F: Fn() -> Result<(), Error> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let jobs: Vec<_> = self
            .hubs
            .iter()
            .map(|h| {
                let f = f.clone();
                h.submit(move || f())
            })
            .collect();
        let mut first = None;
        for j in jobs {
            if let Err(e) = j.and_then(|j| j.join()).and_then(|r| r) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
