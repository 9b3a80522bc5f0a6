//! `DatagramServer`: a handler greenlet per UDP datagram (gevent's
//! `gevent.server.DatagramServer`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::addr::ToSocketAddrs;
use super::udp::UdpSocket;
use crate::hub::scheduler::{WaitList, Woke};
use crate::{Builder, JoinHandle};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

type Handler = dyn Fn(Vec<u8>, SocketAddr, &DatagramServer);

struct Shared {
    addr: SocketAddr,
    socket: RefCell<Option<Rc<UdpSocket>>>,
    handler: Rc<Handler>,
    max: Cell<Option<usize>>,
    receiver: RefCell<Option<JoinHandle<()>>>,
    handlers: RefCell<HashMap<u64, JoinHandle<()>>>,
    next_id: Cell<u64>,
    received: Cell<u64>,
    live: Cell<usize>,
    /// Woken whenever a handler ends (a slot frees up).
    handler_ended: WaitList,
    /// Woken when the receive loop ends.
    finished: WaitList,
    running: Cell<bool>,
    stopped: Cell<bool>,
    /// Why the receive loop ended, if it failed.
    failure: RefCell<Option<io::Error>>,
}

/// A UDP server that runs `handler(data, peer, server)` in a new greenlet
/// for every datagram, as gevent's `DatagramServer` calls `handle(data,
/// address)`; the handler answers with [`send_to`](Self::send_to).
///
/// With [`set_max_handlers`](Self::set_max_handlers), at most that many
/// handlers run at once (a bounded pool): the receive loop waits for one
/// to end, and datagrams wait in the socket's kernel buffer meanwhile
/// (which drops them when full, as UDP does). Start and stop work as for
/// [`StreamServer`](super::StreamServer), and the handle is as cheap to
/// clone.
///
/// # Examples
///
/// ```
/// use greenhouse::net::{DatagramServer, UdpSocket};
///
/// let server = DatagramServer::bind("127.0.0.1:0", |data, peer, server| {
///     let reply = String::from_utf8_lossy(&data).to_uppercase();
///     server.send_to(reply.as_bytes(), peer).unwrap();
/// })?;
/// server.start()?;
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"ping", server.local_addr())?;
/// let mut buf = [0u8; 16];
/// let (n, _) = client.recv_from(&mut buf)?;
/// assert_eq!(&buf[..n], b"PING");
/// server.stop(None)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct DatagramServer {
    shared: Rc<Shared>,
}

impl fmt::Debug for DatagramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramServer")
            .field("addr", &self.shared.addr)
            .field("handlers", &self.shared.live.get())
            .field("running", &self.shared.running.get())
            .finish()
    }
}

impl DatagramServer {
    /// Binds a UDP socket to `addr`; call [`start`](Self::start) or
    /// [`serve_forever`](Self::serve_forever) to receive.
    ///
    /// # Errors
    /// As [`UdpSocket::bind`].
    pub fn bind<A, F>(addr: A, handler: F) -> io::Result<DatagramServer>
    where
        A: ToSocketAddrs,
        F: Fn(Vec<u8>, SocketAddr, &DatagramServer) + 'static,
    {
        DatagramServer::from_socket(UdpSocket::bind(addr)?, handler)
    }

    /// Serves on a socket made elsewhere.
    ///
    /// # Errors
    /// If the socket's address cannot be read.
    pub fn from_socket<F>(socket: UdpSocket, handler: F) -> io::Result<DatagramServer>
    where
        F: Fn(Vec<u8>, SocketAddr, &DatagramServer) + 'static,
    {
        let addr = socket.local_addr()?;
        Ok(DatagramServer {
            shared: Rc::new(Shared {
                addr,
                socket: RefCell::new(Some(Rc::new(socket))),
                handler: Rc::new(handler),
                max: Cell::new(None),
                receiver: RefCell::new(None),
                handlers: RefCell::new(HashMap::new()),
                next_id: Cell::new(0),
                received: Cell::new(0),
                live: Cell::new(0),
                handler_ended: WaitList::default(),
                finished: WaitList::default(),
                running: Cell::new(false),
                stopped: Cell::new(false),
                failure: RefCell::new(None),
            }),
        })
    }

    /// Runs at most `max` handlers at once (at least 1); `None` (the
    /// default) removes the bound.
    pub fn set_max_handlers(&self, max: Option<usize>) {
        self.shared.max.set(max.map(|m| m.max(1)));
        self.shared.handler_ended.wake_all_now();
    }

    /// The address the server receives on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Handlers running now.
    pub fn handlers(&self) -> usize {
        self.shared.live.get()
    }

    /// Datagrams received since the start.
    pub fn received(&self) -> u64 {
        self.shared.received.get()
    }

    /// Whether the receive loop is running.
    pub fn is_running(&self) -> bool {
        self.shared.running.get()
    }

    /// Sends `buf` to `addr` from the server's socket (gevent's
    /// `sendto`); parks while the socket's buffer is full.
    ///
    /// # Errors
    /// `NotConnected` once the server is stopped; otherwise as
    /// [`UdpSocket::send_to`].
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let socket = self.shared.socket.borrow().clone();
        match socket {
            Some(s) => s.send_to(buf, addr),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the datagram server was stopped",
            )),
        }
    }

    /// Starts receiving in a new greenlet and returns at once.
    ///
    /// # Errors
    /// `InvalidInput` if the server was stopped; nothing if already running.
    pub fn start(&self) -> io::Result<()> {
        let sh = &self.shared;
        let stopped = || io::Error::new(io::ErrorKind::InvalidInput, "the server was stopped");
        if sh.stopped.get() {
            return Err(stopped());
        }
        if sh.running.get() {
            return Ok(());
        }
        let socket = sh.socket.borrow().clone().ok_or_else(stopped)?;
        let me = self.clone();
        let h = Builder::new()
            .name(format!("DatagramServer({})", sh.addr))
            .spawn(move || receive_loop(&me, &socket))
            .map_err(io::Error::from)?;
        sh.running.set(true);
        *sh.receiver.borrow_mut() = Some(h);
        Ok(())
    }

    /// Starts (if needed) and waits until the server is stopped.
    ///
    /// # Errors
    /// The error that ended the receive loop, if it failed on its own;
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

    /// Stops the server: stops receiving at once, waits up to `timeout` for
    /// the running handlers to finish (`None`: do not wait), kills the
    /// rest, then closes the socket (later `send_to`s fail).
    ///
    /// # Errors
    /// `TimedOut` if an armed [`Timeout`](crate::Timeout) interrupts the wait.
    pub fn stop(&self, timeout: Option<Duration>) -> io::Result<()> {
        let sh = &self.shared;
        sh.stopped.set(true);
        let receiver = sh.receiver.borrow_mut().take();
        if let Some(r) = receiver {
            r.kill().map_err(io::Error::from)?;
        }
        sh.running.set(false);
        sh.finished.wake_all_now();
        if let Some(t) = timeout {
            let deadline = crate::hub::watcher::saturating_deadline(t);
            while sh.live.get() > 0 && Instant::now() < deadline {
                if sh.handler_ended.wait(Some(deadline)) == Woke::TimedOut {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
            }
        }
        let me = crate::Greenlet::current();
        let rest: Vec<JoinHandle<()>> = {
            let mut hs = sh.handlers.borrow_mut();
            let ids: Vec<u64> = hs
                .iter()
                .filter(|(_, h)| h.greenlet() != me)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| hs.remove(&id)).collect()
        };
        crate::killall(&rest).map_err(io::Error::from)?;
        drop(sh.socket.borrow_mut().take());
        Ok(())
    }
}

/// Marks the receive loop finished on every exit path (return, error, kill).
struct ReceiverDone<'a>(&'a Shared);

impl Drop for ReceiverDone<'_> {
    fn drop(&mut self) {
        self.0.running.set(false);
        self.0.finished.wake_all_now();
    }
}

fn receive_loop(server: &DatagramServer, socket: &UdpSocket) {
    let sh = &server.shared;
    let _done = ReceiverDone(sh);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut in_a_row = 0;
    loop {
        // Let the hub turn now and then in a flood of datagrams.
        in_a_row += 1;
        if in_a_row > 100 {
            in_a_row = 0;
            crate::hub::scheduler::yield_now();
        }
        while sh.max.get().is_some_and(|m| sh.live.get() >= m) {
            if sh.handler_ended.wait(None) != Woke::Ready {
                return;
            }
        }
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => spawn_handler(server, buf[..n].to_vec(), peer),
            // An ICMP error from an earlier send, or a signal: not fatal.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => {
                *sh.failure.borrow_mut() = Some(e);
                return;
            }
        }
    }
}

/// Ends one handler's bookkeeping, however it ends.
struct HandlerDone {
    shared: Rc<Shared>,
    id: u64,
}

impl Drop for HandlerDone {
    fn drop(&mut self) {
        let sh = &self.shared;
        sh.live.set(sh.live.get() - 1);
        let me = sh.handlers.borrow_mut().remove(&self.id);
        drop(me);
        sh.handler_ended.wake_all_now();
    }
}

fn spawn_handler(server: &DatagramServer, data: Vec<u8>, peer: SocketAddr) {
    let sh = &server.shared;
    let id = sh.next_id.get();
    sh.next_id.set(id + 1);
    sh.received.set(sh.received.get() + 1);
    sh.live.set(sh.live.get() + 1);
    let done = HandlerDone {
        shared: sh.clone(),
        id,
    };
    let me = server.clone();
    let h = crate::spawn(move || {
        let _done = done;
        let handler = me.shared.handler.clone();
        handler(data, peer, &me);
    });
    sh.handlers.borrow_mut().insert(id, h);
}
