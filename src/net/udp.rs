//! UDP: `UdpSocket`, a cooperative version of std's.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use super::addr::{ToSocketAddrs, each_addr};
use super::fd::{fd_traits, timeout_methods};
use super::io::Io;

/// A UDP socket whose receives (and full-buffer sends) park only the
/// calling greenlet.
///
/// # Examples
///
/// ```
/// use greenhouse::net::UdpSocket;
///
/// let a = UdpSocket::bind("127.0.0.1:0")?;
/// let b = UdpSocket::bind("127.0.0.1:0")?;
/// b.send_to(b"ping", a.local_addr()?)?;
/// let mut buf = [0u8; 16];
/// let (n, from) = a.recv_from(&mut buf)?;
/// assert_eq!((&buf[..n], from), (&b"ping"[..], b.local_addr()?));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UdpSocket {
    io: Io<std::net::UdpSocket>,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.get().fmt(f)
    }
}

impl UdpSocket {
    fn from_io(io: Io<std::net::UdpSocket>) -> Self {
        UdpSocket { io }
    }

    /// Binds to `addr` (trying each resolved address).
    ///
    /// # Errors
    /// `AddrInUse`, `AddrNotAvailable`, resolution errors.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(&addr, |a| {
            let s = std::net::UdpSocket::bind(a)?;
            s.set_nonblocking(true)?;
            Ok(UdpSocket::from_io(Io::new(s)))
        })
    }

    /// Receives one datagram and its sender, parking until one arrives.
    ///
    /// # Errors
    /// OS errors; `WouldBlock` after the read timeout.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.read(|s| s.recv_from(buf))
    }

    /// Like [`recv_from`](Self::recv_from) without consuming the datagram.
    ///
    /// # Errors
    /// As `recv_from`.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.read(|s| s.peek_from(buf))
    }

    /// Sends one datagram to `addr`.
    ///
    /// # Errors
    /// OS errors; resolution errors.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let addrs = addr.to_addrs()?;
        let to = addrs.first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        self.io.write(|s| s.send_to(buf, to))
    }

    /// Sets the default peer for `send` and `recv` (and filters others).
    ///
    /// # Errors
    /// OS errors; resolution errors.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(&addr, |a| self.io.get().connect(a))
    }

    /// Sends to the connected peer.
    ///
    /// # Errors
    /// `NotConnected`, OS errors (e.g. `ConnectionRefused` from an ICMP error).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(|s| s.send(buf))
    }

    /// Receives from the connected peer.
    ///
    /// # Errors
    /// As `send`; `WouldBlock` after the read timeout.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(|s| s.recv(buf))
    }

    /// Like [`recv`](Self::recv) without consuming the datagram.
    ///
    /// # Errors
    /// As `recv`.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(|s| s.peek(buf))
    }

    /// The bound address.
    ///
    /// # Errors
    /// As std's `local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    /// `NotConnected` if not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// Sets `SO_BROADCAST`.
    ///
    /// # Errors
    /// As std's.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.io.get().set_broadcast(on)
    }

    /// Sets `IP_TTL`.
    ///
    /// # Errors
    /// As std's.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get().set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    ///
    /// # Errors
    /// As std's.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get().ttl()
    }

    /// A new handle to the same socket (a `dup`ed fd).
    ///
    /// # Errors
    /// As std's `try_clone`.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket::from_io(Io::new(self.io.get().try_clone()?)))
    }
}

timeout_methods!(UdpSocket);
fd_traits!(UdpSocket, std::net::UdpSocket);
