//! `DatagramServer`: a handler greenlet per UDP datagram (gevent's
//! `gevent.server.DatagramServer`).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::addr::ToSocketAddrs;
use super::crew::Crew;
use super::udp::UdpSocket;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

type Handler = dyn Fn(Vec<u8>, SocketAddr, &DatagramServer);

struct Shared {
    addr: SocketAddr,
    socket: RefCell<Option<Rc<UdpSocket>>>,
    handler: Rc<Handler>,
    crew: Rc<Crew>,
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
            .field("handlers", &self.shared.crew.live.get())
            .field("running", &self.shared.crew.running.get())
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
                crew: Rc::default(),
            }),
        })
    }

    /// Runs at most `max` handlers at once (at least 1); `None` (the
    /// default) removes the bound.
    pub fn set_max_handlers(&self, max: Option<usize>) {
        self.shared.crew.set_max(max);
    }

    /// The address the server receives on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Handlers running now.
    pub fn handlers(&self) -> usize {
        self.shared.crew.live.get()
    }

    /// Datagrams received since the start.
    pub fn received(&self) -> u64 {
        self.shared.crew.taken.get()
    }

    /// Whether the receive loop is running.
    pub fn is_running(&self) -> bool {
        self.shared.crew.running.get()
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
        let socket =
            sh.socket.borrow().clone().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "the server was stopped")
            })?;
        let me = self.clone();
        sh.crew
            .start(format!("DatagramServer({})", sh.addr), move || {
                receive_loop(&me, &socket)
            })
    }

    /// Starts (if needed) and waits until the server is stopped: the
    /// receive loop has ended and, when [`stop`](Self::stop) ended it, that
    /// `stop` is done too (its handlers finished or were killed).
    ///
    /// # Errors
    /// The error that ended the receive loop, if it failed on its own;
    /// `TimedOut` if an armed [`Timeout`](crate::Timeout) expires.
    pub fn serve_forever(&self) -> io::Result<()> {
        self.start()?;
        self.shared.crew.wait_finished()
    }

    /// Stops the server: stops receiving at once, waits up to `timeout` for
    /// the running handlers to finish (`None`: do not wait), kills the
    /// rest, then closes the socket (later `send_to`s fail).
    ///
    /// # Errors
    /// `TimedOut` if an armed [`Timeout`](crate::Timeout) interrupts the wait.
    pub fn stop(&self, timeout: Option<Duration>) -> io::Result<()> {
        // The handlers may still answer: the socket closes after them.
        self.shared.crew.stop(timeout, || ())?;
        drop(self.shared.socket.borrow_mut().take());
        Ok(())
    }
}

fn receive_loop(server: &DatagramServer, socket: &UdpSocket) {
    let crew = &server.shared.crew;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if !crew.before_taking() {
            return;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let (me, data) = (server.clone(), buf[..n].to_vec());
                crew.spawn_handler(move || {
                    let handler = me.shared.handler.clone();
                    handler(data, peer, &me);
                });
            }
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
                crew.fail(e);
                return;
            }
        }
    }
}
