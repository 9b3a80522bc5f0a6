//! `StreamServer`: one greenlet per accepted TCP connection (gevent's
//! `gevent.server.StreamServer`).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::addr::ToSocketAddrs;
use super::crew::Crew;
use super::tcp::{TcpListener, TcpStream};
use crate::sync::mpmc;

type Handler = dyn Fn(TcpStream, SocketAddr);

/// Where connections come from.
#[derive(Clone)]
enum Incoming {
    /// Accepted here.
    Listener(Rc<TcpListener>),
    /// Accepted by another hub and handed over (the acceptor of a
    /// multi-hub [`Server`](crate::runtime::Server) without `SO_REUSEPORT`).
    Inbox(mpmc::Receiver<(std::net::TcpStream, SocketAddr)>),
}

struct Shared {
    addr: SocketAddr,
    handler: Rc<Handler>,
    incoming: RefCell<Option<Incoming>>,
    crew: Rc<Crew>,
}

/// A TCP server that runs `handler` in a new greenlet for every connection.
///
/// `StreamServer` is a cheap handle (clone it freely): any greenlet can
/// [`stop`](Self::stop) the server that another one is
/// [`serve_forever`](Self::serve_forever)-ing. A started server keeps
/// serving until stopped, even if every handle is dropped.
///
/// When a connection cap is set, the accept loop waits while the cap is
/// reached. When the process runs out of fds (`EMFILE`), the accept loop
/// reports it once and retries with a backoff instead of failing.
///
/// The accept loop is a greenlet like the handlers, so under heavy load it
/// waits its turn in the ready queue. Give the listener a backlog that
/// covers connection bursts: [`TcpListener::bind`] uses 1024, while std's
/// `bind` (for adopted listeners) uses 128. The kernel resets connections
/// that overflow the accept queue.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use greenhouse::net::{StreamServer, TcpStream};
///
/// let server = StreamServer::bind("127.0.0.1:0", |mut conn, _peer| {
///     let mut buf = [0u8; 1024];
///     while let Ok(n) = conn.read(&mut buf) {
///         if n == 0 || conn.write_all(&buf[..n]).is_err() {
///             break;
///         }
///     }
/// })?;
/// server.start()?;
/// let mut c = TcpStream::connect(server.local_addr())?;
/// c.write_all(b"echo")?;
/// let mut buf = [0u8; 4];
/// c.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"echo");
/// server.stop(None)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct StreamServer {
    shared: Rc<Shared>,
}

impl fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("addr", &self.shared.addr)
            .field("connections", &self.shared.crew.live.get())
            .field("running", &self.shared.crew.running.get())
            .finish()
    }
}

impl StreamServer {
    /// Binds a listener to `addr`; call [`start`](Self::start) or
    /// [`serve_forever`](Self::serve_forever) to accept.
    ///
    /// # Errors
    /// As [`TcpListener::bind`].
    pub fn bind<A, F>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        StreamServer::from_listener(TcpListener::bind(addr)?, handler)
    }

    /// Serves on a listener made elsewhere.
    ///
    /// # Errors
    /// If the listener's address cannot be read.
    pub fn from_listener<F>(listener: TcpListener, handler: F) -> io::Result<StreamServer>
    where
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        let addr = listener.local_addr()?;
        Ok(StreamServer::with_incoming(
            addr,
            Incoming::Listener(Rc::new(listener)),
            handler,
        ))
    }

    /// Serves connections another hub accepted on `addr` and sends here
    /// (they are adopted as greenhouse streams on this hub).
    pub(crate) fn from_inbox<F>(
        addr: SocketAddr,
        inbox: mpmc::Receiver<(std::net::TcpStream, SocketAddr)>,
        handler: F,
    ) -> StreamServer
    where
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        StreamServer::with_incoming(addr, Incoming::Inbox(inbox), handler)
    }

    fn with_incoming<F>(addr: SocketAddr, incoming: Incoming, handler: F) -> StreamServer
    where
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        StreamServer {
            shared: Rc::new(Shared {
                addr,
                handler: Rc::new(handler),
                incoming: RefCell::new(Some(incoming)),
                crew: Rc::default(),
            }),
        }
    }

    /// Caps concurrent connections at `max` (at least 1); `None` removes
    /// the cap. While the cap is reached, new connections wait in the
    /// kernel's backlog.
    pub fn set_max_connections(&self, max: Option<usize>) {
        self.shared.crew.set_max(max);
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Connections being handled now.
    pub fn connections(&self) -> usize {
        self.shared.crew.live.get()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.crew.taken.get()
    }

    /// Whether the accept loop is running.
    pub fn is_running(&self) -> bool {
        self.shared.crew.running.get()
    }

    /// Starts accepting in a new greenlet and returns at once.
    ///
    /// # Errors
    /// `InvalidInput` if the server was stopped; nothing if already running.
    pub fn start(&self) -> io::Result<()> {
        let sh = &self.shared;
        let incoming =
            sh.incoming.borrow().clone().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "the server was stopped")
            })?;
        let me = sh.clone();
        sh.crew.start(
            format!("StreamServer({})", sh.addr),
            move || match incoming {
                Incoming::Listener(l) => accept_loop(&me, &l),
                Incoming::Inbox(rx) => inbox_loop(&me, &rx),
            },
        )
    }

    /// Starts (if needed) and waits until the server is stopped: the
    /// accept loop has ended and, when [`stop`](Self::stop) ended it, that
    /// `stop` is done too (its handlers finished or were killed), so a
    /// graceful stop from a signal handler completes before this returns.
    ///
    /// # Errors
    /// The error that ended the accept loop, if it failed on its own;
    /// `TimedOut` if an armed [`Timeout`](crate::Timeout) expires.
    pub fn serve_forever(&self) -> io::Result<()> {
        self.start()?;
        self.shared.crew.wait_finished()
    }

    /// Waits until the accept loop has ended and a stop that ended it is
    /// done, without starting it ([`serve_forever`](Self::serve_forever)
    /// starts it first).
    pub(crate) fn wait_stopped(&self) -> io::Result<()> {
        self.shared.crew.wait_finished()
    }

    /// Stops the server: closes the listener at once (new connections are
    /// refused), waits up to `timeout` for the running handlers to finish
    /// (`None`: do not wait), then kills the rest.
    ///
    /// # Errors
    /// `TimedOut` if an armed [`Timeout`](crate::Timeout) interrupts the wait.
    pub fn stop(&self, timeout: Option<Duration>) -> io::Result<()> {
        let sh = &self.shared;
        sh.crew
            .stop(timeout, || drop(sh.incoming.borrow_mut().take()))
    }
}

/// True for accept errors that mean "out of resources, try again later".
fn resource_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// True for accept errors about one aborted connection, not the listener.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

fn accept_loop(sh: &Rc<Shared>, listener: &TcpListener) {
    let mut backoff = Duration::from_millis(5);
    let mut reported = false;
    loop {
        if !sh.crew.before_taking() {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                reported = false;
                let handler = sh.handler.clone();
                sh.crew.spawn_handler(move || handler(stream, peer));
            }
            Err(e) if resource_exhausted(&e) => {
                if !reported {
                    eprintln!(
                        "greenhouse: StreamServer({}) accept: {e}; retrying",
                        sh.addr
                    );
                    reported = true;
                }
                if crate::hub::timeout::try_sleep(backoff).is_err() {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                sh.crew.fail(e);
                return;
            }
        }
    }
}

/// The loop of a server fed by another hub's acceptor: ends when the
/// acceptor is gone (the channel closed), or when stopped.
fn inbox_loop(sh: &Rc<Shared>, inbox: &mpmc::Receiver<(std::net::TcpStream, SocketAddr)>) {
    loop {
        if !sh.crew.before_taking() {
            return;
        }
        match inbox.recv() {
            Ok((stream, peer)) => {
                let stream = TcpStream::from(stream);
                let handler = sh.handler.clone();
                sh.crew.spawn_handler(move || handler(stream, peer));
            }
            Err(crate::Error::Closed) => return,
            Err(e) => {
                sh.crew.fail(e.into());
                return;
            }
        }
    }
}
