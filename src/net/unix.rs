//! Unix-domain sockets: `UnixListener`, `UnixStream`, `UnixDatagram`.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::fd::{fd_traits, timeout_methods};
use super::io::{Io, connect_in_progress};

/// A Unix-domain stream server socket.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use greenhouse::net::{UnixListener, UnixStream};
///
/// let dir = std::env::temp_dir().join(format!("gh-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("sock");
/// let _ = std::fs::remove_file(&path);
/// let listener = UnixListener::bind(&path)?;
/// let server = greenhouse::spawn(move || -> std::io::Result<String> {
///     let (mut conn, _) = listener.accept()?;
///     let mut s = String::new();
///     conn.read_to_string(&mut s)?;
///     Ok(s)
/// });
/// let mut c = UnixStream::connect(&path)?;
/// c.write_all(b"over unix")?;
/// drop(c);
/// assert_eq!(server.join().unwrap()?, "over unix");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UnixListener {
    io: Io<std::os::unix::net::UnixListener>,
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.get().fmt(f)
    }
}

impl UnixListener {
    fn from_io(io: Io<std::os::unix::net::UnixListener>) -> Self {
        UnixListener { io }
    }

    /// Binds to `path` and listens (backlog 1024).
    ///
    /// # Errors
    /// `AddrInUse` if the path exists, and other OS errors.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        s.bind(&SockAddr::unix(path)?)?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        let fd: std::os::fd::OwnedFd = s.into();
        Ok(UnixListener::from_io(Io::new(fd.into())))
    }

    /// Waits for a connection.
    ///
    /// # Errors
    /// The OS's accept errors; `TimedOut` if an armed `Timeout` expires.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, a) = self.io.read(|l| l.accept())?;
        s.set_nonblocking(true)?;
        Ok((UnixStream::from_io(Io::new(s)), a))
    }

    /// The bound address.
    ///
    /// # Errors
    /// As std's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// A new handle to the same socket.
    ///
    /// # Errors
    /// As std's.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        Ok(UnixListener::from_io(Io::new(self.io.get().try_clone()?)))
    }
}

fd_traits!(UnixListener, std::os::unix::net::UnixListener);

/// A Unix-domain stream connection; `Read`/`Write` park only this greenlet.
pub struct UnixStream {
    io: Io<std::os::unix::net::UnixStream>,
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.get().fmt(f)
    }
}

impl UnixStream {
    fn from_io(io: Io<std::os::unix::net::UnixStream>) -> Self {
        UnixStream { io }
    }

    /// Connects to the socket at `path`. If the listener's backlog is full
    /// (`EAGAIN`), retries every millisecond, cooperatively.
    ///
    /// # Errors
    /// `NotFound`, `ConnectionRefused`, other OS errors.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let addr = SockAddr::unix(path)?;
        let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        loop {
            match s.connect(&addr) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    crate::hub::timeout::try_sleep(Duration::from_millis(1))
                        .map_err(io::Error::from)?;
                }
                Err(e) if connect_in_progress(&e) => {
                    let fd: std::os::fd::OwnedFd = s.into();
                    let stream = UnixStream::from_io(Io::new(fd.into()));
                    stream.io.wait_writable(None)?;
                    return match stream.io.get().take_error()? {
                        Some(e) => Err(e),
                        None => Ok(stream),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        let fd: std::os::fd::OwnedFd = s.into();
        Ok(UnixStream::from_io(Io::new(fd.into())))
    }

    /// A connected pair.
    ///
    /// # Errors
    /// As std's `pair`.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((a.into(), b.into()))
    }

    /// Reads without consuming.
    ///
    /// # Errors
    /// As `read`.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io
            .read(|s| socket2::SockRef::from(s).peek(super::fd::as_uninit(buf)))
    }

    /// Shuts down one or both halves.
    ///
    /// # Errors
    /// As std's.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get().shutdown(how)
    }

    /// The local address.
    ///
    /// # Errors
    /// As std's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As std's.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// A new handle to the same connection.
    ///
    /// # Errors
    /// As std's.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        Ok(UnixStream::from_io(Io::new(self.io.get().try_clone()?)))
    }
}

impl Read for &UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read_stream(buf.len(), |mut s| s.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.io.read_stream(len, |mut s| s.read_vectored(bufs))
    }
}

impl Write for &UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // send(MSG_NOSIGNAL): a closed peer is EPIPE, never SIGPIPE.
        self.io
            .write(|s| socket2::SockRef::from(s).send_with_flags(buf, libc::MSG_NOSIGNAL))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.io
            .write(|s| socket2::SockRef::from(s).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

timeout_methods!(UnixStream);
// send(MSG_NOSIGNAL): a closed peer is EPIPE, never SIGPIPE.
super::async_io::async_io_traits!(UnixStream, |s, buf| {
    socket2::SockRef::from(s).send_with_flags(buf, libc::MSG_NOSIGNAL)
});
fd_traits!(UnixStream, std::os::unix::net::UnixStream);

/// A Unix-domain datagram socket.
pub struct UnixDatagram {
    io: Io<std::os::unix::net::UnixDatagram>,
}

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.get().fmt(f)
    }
}

impl UnixDatagram {
    fn from_io(io: Io<std::os::unix::net::UnixDatagram>) -> Self {
        UnixDatagram { io }
    }

    /// Binds to `path`.
    ///
    /// # Errors
    /// As std's.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        Ok(std::os::unix::net::UnixDatagram::bind(path)?.into())
    }

    /// An unbound socket.
    ///
    /// # Errors
    /// As std's.
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(std::os::unix::net::UnixDatagram::unbound()?.into())
    }

    /// A connected pair.
    ///
    /// # Errors
    /// As std's.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
        Ok((a.into(), b.into()))
    }

    /// Sets the default peer.
    ///
    /// # Errors
    /// As std's.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.io.get().connect(path)
    }

    /// Sends to the connected peer, parking while its queue is full.
    ///
    /// # Errors
    /// As std's.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(|s| s.send(buf))
    }

    /// Sends to `path`, parking while its queue is full.
    ///
    /// # Errors
    /// As std's.
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let path = path.as_ref();
        self.io.write(|s| s.send_to(buf, path))
    }

    /// Receives one datagram, parking until one arrives.
    ///
    /// # Errors
    /// As std's; `WouldBlock` after the read timeout.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(|s| s.recv(buf))
    }

    /// Receives one datagram and its sender.
    ///
    /// # Errors
    /// As `recv`.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.read(|s| s.recv_from(buf))
    }

    /// The local address.
    ///
    /// # Errors
    /// As std's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As std's.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// Shuts down one or both halves.
    ///
    /// # Errors
    /// As std's.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get().shutdown(how)
    }

    /// A new handle to the same socket.
    ///
    /// # Errors
    /// As std's.
    pub fn try_clone(&self) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram::from_io(Io::new(self.io.get().try_clone()?)))
    }
}

timeout_methods!(UnixDatagram);
fd_traits!(UnixDatagram, std::os::unix::net::UnixDatagram);
