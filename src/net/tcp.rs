//! TCP: `TcpListener` and `TcpStream`, cooperative versions of std's.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::addr::{ToSocketAddrs, each_addr};
use super::fd::{fd_traits, timeout_methods};
use super::io::{Io, connect_in_progress};

/// A TCP server socket; `accept` parks the calling greenlet until a
/// connection arrives.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use greenhouse::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let server = greenhouse::spawn(move || -> std::io::Result<Vec<u8>> {
///     let (mut conn, _) = listener.accept()?;
///     let mut buf = Vec::new();
///     conn.read_to_end(&mut buf)?;
///     Ok(buf)
/// });
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"hello")?;
/// drop(client);
/// assert_eq!(server.join().unwrap()?, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpListener {
    io: Io<std::net::TcpListener>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.get().fmt(f)
    }
}

impl TcpListener {
    fn from_io(io: Io<std::net::TcpListener>) -> Self {
        TcpListener { io }
    }

    /// Binds to `addr` (trying each resolved address) and listens, with
    /// `SO_REUSEADDR` and a backlog of 1024.
    ///
    /// # Errors
    /// `AddrInUse`, `AddrNotAvailable`, `PermissionDenied`, resolution errors.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(&addr, |a| {
            let s = Socket::new(Domain::for_address(*a), Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.bind(&(*a).into())?;
            s.listen(1024)?;
            s.set_nonblocking(true)?;
            Ok(TcpListener::from_io(Io::new(s.into())))
        })
    }

    /// Waits for a connection; returns the stream and the peer's address.
    ///
    /// # Errors
    /// The OS's accept errors (`EMFILE` when out of fds, …), `TimedOut` if
    /// an armed [`Timeout`](crate::Timeout) expires.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = self.io.read(|l| l.accept())?;
        s.set_nonblocking(true)?;
        Ok((TcpStream::from_io(Io::new(s)), a))
    }

    /// An endless iterator of accepted connections.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The bound address.
    ///
    /// # Errors
    /// As std's `local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// Sets `IP_TTL`.
    ///
    /// # Errors
    /// As std's `set_ttl`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get().set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    ///
    /// # Errors
    /// As std's `ttl`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get().ttl()
    }

    /// A new handle to the same socket (a `dup`ed fd).
    ///
    /// # Errors
    /// As std's `try_clone`.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener::from_io(Io::new(self.io.get().try_clone()?)))
    }

    /// The pending socket error (`SO_ERROR`), if any.
    ///
    /// # Errors
    /// As std's `take_error`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get().take_error()
    }
}

fd_traits!(TcpListener, std::net::TcpListener);

/// Iterator over [`TcpListener::accept`] results; never ends.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A TCP connection whose blocking calls park only the calling greenlet.
///
/// It implements [`Read`] and [`Write`] (also for `&TcpStream`), so
/// `BufReader`, `read_exact`, `write_all` and `io::copy` work as with std.
/// Writes never raise `SIGPIPE`: a closed peer is an `EPIPE` error.
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use greenhouse::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let _echo = greenhouse::spawn(move || -> std::io::Result<u64> {
///     let (conn, _) = listener.accept()?;
///     std::io::copy(&mut &conn, &mut &conn)
/// });
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"line one\n")?;
/// let mut line = String::new();
/// BufReader::new(&client).read_line(&mut line)?;
/// assert_eq!(line, "line one\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpStream {
    io: Io<std::net::TcpStream>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.get().fmt(f)
    }
}

impl TcpStream {
    fn from_io(io: Io<std::net::TcpStream>) -> Self {
        TcpStream { io }
    }

    /// Connects to `addr`, trying each resolved address in turn.
    ///
    /// # Errors
    /// `ConnectionRefused`, `TimedOut` (armed `Timeout`), unreachable
    /// networks, resolution errors: the last address's error.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(&addr, |a| TcpStream::connect_one(a, None))
    }

    /// Connects to one address, giving up after `timeout` with `TimedOut`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); a zero timeout is `InvalidInput`.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        TcpStream::connect_one(
            addr,
            Some(crate::hub::watcher::saturating_deadline(timeout)),
        )
        .map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
            } else {
                e
            }
        })
    }

    fn connect_one(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
        let s = Socket::new(
            Domain::for_address(*addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_nonblocking(true)?;
        let pending = match s.connect(&(*addr).into()) {
            Ok(()) => false,
            Err(e) if connect_in_progress(&e) => true,
            Err(e) => return Err(e),
        };
        let stream = TcpStream::from_io(Io::new(s.into()));
        if pending {
            stream.io.wait_writable(deadline)?;
            if let Some(e) = stream.io.get().take_error()? {
                return Err(e);
            }
        }
        Ok(stream)
    }

    /// Reads without consuming (`MSG_PEEK`), parking until data arrives.
    ///
    /// # Errors
    /// As [`Read::read`].
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(|s| s.peek(buf))
    }

    /// Shuts down the read, write or both halves.
    ///
    /// # Errors
    /// As std's `shutdown` (`NotConnected`, …).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get().shutdown(how)
    }

    /// The remote address.
    ///
    /// # Errors
    /// As std's `peer_addr`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// As std's `local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// As std's `set_nodelay`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.get().set_nodelay(on)
    }

    /// Reads `TCP_NODELAY`.
    ///
    /// # Errors
    /// As std's `nodelay`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get().nodelay()
    }

    /// Sets `IP_TTL`.
    ///
    /// # Errors
    /// As std's `set_ttl`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get().set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    ///
    /// # Errors
    /// As std's `ttl`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get().ttl()
    }

    /// A new handle to the same connection (a `dup`ed fd), with its own
    /// registration and timeouts.
    ///
    /// # Errors
    /// As std's `try_clone`.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream::from_io(Io::new(self.io.get().try_clone()?)))
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read_stream(buf.len(), |mut s| s.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.io.read_stream(len, |mut s| s.read_vectored(bufs))
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(|mut s| s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.io.write(|mut s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

timeout_methods!(TcpStream);
fd_traits!(TcpStream, std::net::TcpStream);
super::async_io::async_io_traits!(TcpStream, |s, buf| std::io::Write::write(&mut &*s, buf));
