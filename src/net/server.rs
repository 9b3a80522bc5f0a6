//! `StreamServer`: one greenlet per accepted TCP connection (gevent's
//! `gevent.server.StreamServer`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::addr::ToSocketAddrs;
use super::tcp::{TcpListener, TcpStream};
use crate::hub::scheduler::{WaitList, Woke};
use crate::{Builder, JoinHandle};

type Handler = dyn Fn(TcpStream, SocketAddr);

struct Shared {
    addr: SocketAddr,
    handler: Rc<Handler>,
    max: Cell<Option<usize>>,
    listener: RefCell<Option<Rc<TcpListener>>>,
    acceptor: RefCell<Option<JoinHandle<()>>>,
    conns: RefCell<HashMap<u64, JoinHandle<()>>>,
    next_id: Cell<u64>,
    accepted: Cell<u64>,
    live: Cell<usize>,
    /// Woken whenever a connection ends (a slot frees up).
    conn_ended: WaitList,
    /// Woken when the accept loop ends.
    finished: WaitList,
    running: Cell<bool>,
    stopped: Cell<bool>,
    /// Why the accept loop ended, if it failed.
    failure: RefCell<Option<io::Error>>,
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
            .field("connections", &self.shared.live.get())
            .field("running", &self.shared.running.get())
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
        Ok(StreamServer {
            shared: Rc::new(Shared {
                addr,
                handler: Rc::new(handler),
                max: Cell::new(None),
                listener: RefCell::new(Some(Rc::new(listener))),
                acceptor: RefCell::new(None),
                conns: RefCell::new(HashMap::new()),
                next_id: Cell::new(0),
                accepted: Cell::new(0),
                live: Cell::new(0),
                conn_ended: WaitList::default(),
                finished: WaitList::default(),
                running: Cell::new(false),
                stopped: Cell::new(false),
                failure: RefCell::new(None),
            }),
        })
    }

    /// Caps concurrent connections at `max` (at least 1); `None` removes
    /// the cap. While the cap is reached, new connections wait in the
    /// kernel's backlog.
    pub fn set_max_connections(&self, max: Option<usize>) {
        self.shared.max.set(max.map(|m| m.max(1)));
        crate::hub::with(|hub| self.shared.conn_ended.wake_all(&hub.ready));
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Connections being handled now.
    pub fn connections(&self) -> usize {
        self.shared.live.get()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.get()
    }

    /// Whether the accept loop is running.
    pub fn is_running(&self) -> bool {
        self.shared.running.get()
    }

    /// Starts accepting in a new greenlet and returns at once.
    ///
    /// # Errors
    /// `InvalidInput` if the server was stopped; nothing if already running.
    pub fn start(&self) -> io::Result<()> {
        let sh = &self.shared;
        if sh.stopped.get() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the server was stopped",
            ));
        }
        if sh.running.get() {
            return Ok(());
        }
        let listener =
            sh.listener.borrow().clone().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "the server was stopped")
            })?;
        let me = self.shared.clone();
        let h = Builder::new()
            .name(format!("StreamServer({})", sh.addr))
            .spawn(move || accept_loop(&me, &listener))
            .map_err(io::Error::from)?;
        sh.running.set(true);
        *sh.acceptor.borrow_mut() = Some(h);
        Ok(())
    }

    /// Starts (if needed) and waits until the server is stopped.
    ///
    /// # Errors
    /// The error that ended the accept loop, if it failed on its own;
    /// `TimedOut` if an armed [`Timeout`](crate::Timeout) expires.
    pub fn serve_forever(&self) -> io::Result<()> {
        self.start()?;
        while self.shared.running.get() {
            match self.shared.finished.wait(None) {
                Woke::Ready => {}
                Woke::Deadline | Woke::TimedOut => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
                Woke::Deadlock => return Err(crate::Error::Deadlock.into()),
            }
        }
        match self.shared.failure.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops the server: closes the listener at once (new connections are
    /// refused), waits up to `timeout` for the running handlers to finish
    /// (`None`: do not wait), then kills the rest.
    ///
    /// # Errors
    /// `TimedOut` if an armed [`Timeout`](crate::Timeout) interrupts the wait.
    pub fn stop(&self, timeout: Option<Duration>) -> io::Result<()> {
        let sh = &self.shared;
        sh.stopped.set(true);
        let acceptor = sh.acceptor.borrow_mut().take();
        if let Some(a) = acceptor {
            a.kill().map_err(io::Error::from)?;
        }
        sh.running.set(false);
        drop(sh.listener.borrow_mut().take());
        crate::hub::with(|hub| sh.finished.wake_all(&hub.ready));
        if let Some(t) = timeout {
            let deadline = crate::hub::watcher::saturating_deadline(t);
            while sh.live.get() > 0 && Instant::now() < deadline {
                if sh.conn_ended.wait(Some(deadline)) == Woke::TimedOut {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
            }
        }
        let me = crate::Greenlet::current();
        let rest: Vec<JoinHandle<()>> = {
            let mut conns = sh.conns.borrow_mut();
            let ids: Vec<u64> = conns
                .iter()
                .filter(|(_, h)| h.greenlet() != me)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| conns.remove(&id)).collect()
        };
        crate::killall(&rest).map_err(io::Error::from)
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

/// Marks the accept loop finished on every exit path (return, error, kill).
struct AcceptorDone<'a>(&'a Shared);

impl Drop for AcceptorDone<'_> {
    fn drop(&mut self) {
        self.0.running.set(false);
        crate::hub::with(|hub| self.0.finished.wake_all(&hub.ready));
    }
}

/// Connections accepted in a row before the accept loop lets the hub turn
/// (gevent's `max_accept`): a burst of thousands of connections must not
/// starve the handlers already running (the blocked-hub detector caught
/// 5,000 accepts in a row holding the hub for 278 ms).
const MAX_ACCEPT: usize = 100;

fn accept_loop(sh: &Rc<Shared>, listener: &TcpListener) {
    let _done = AcceptorDone(sh);
    let mut backoff = Duration::from_millis(5);
    let mut reported = false;
    let mut in_a_row = 0;
    loop {
        in_a_row += 1;
        if in_a_row > MAX_ACCEPT {
            in_a_row = 0;
            crate::hub::scheduler::yield_now();
        }
        while sh.max.get().is_some_and(|m| sh.live.get() >= m) {
            if sh.conn_ended.wait(None) == Woke::Deadlock {
                return;
            }
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                reported = false;
                spawn_connection(sh, stream, peer);
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
                *sh.failure.borrow_mut() = Some(e);
                return;
            }
        }
    }
}

/// Ends one connection's bookkeeping, however its handler ends.
struct ConnDone {
    shared: Rc<Shared>,
    id: u64,
}

impl Drop for ConnDone {
    fn drop(&mut self) {
        let sh = &self.shared;
        sh.live.set(sh.live.get() - 1);
        let me = sh.conns.borrow_mut().remove(&self.id);
        drop(me);
        crate::hub::with(|hub| sh.conn_ended.wake_all(&hub.ready));
    }
}

fn spawn_connection(sh: &Rc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let id = sh.next_id.get();
    sh.next_id.set(id + 1);
    sh.accepted.set(sh.accepted.get() + 1);
    sh.live.set(sh.live.get() + 1);
    let done = ConnDone {
        shared: sh.clone(),
        id,
    };
    let handler = sh.handler.clone();
    let h = crate::spawn(move || {
        let _done = done;
        handler(stream, peer);
    });
    sh.conns.borrow_mut().insert(id, h);
}
