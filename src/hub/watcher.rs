//! `Watcher`: cooperative readiness waits on any file descriptor.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Hub;
use super::reactor::{Interest, Source};
use super::scheduler::Woke;

/// Owns an IO object and lets greenlets wait for its readiness.
///
/// The fd is registered with this thread's reactor once, in [`new`], and
/// removed in `Drop` before the object is closed. Waiting parks only the
/// calling greenlet; the hub runs others meanwhile. Put the fd in
/// non-blocking mode yourself before using the `*_with` helpers.
///
/// [`new`]: Watcher::new
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use greenhouse::Watcher;
///
/// let (a, mut b) = UnixStream::pair()?;
/// a.set_nonblocking(true)?;
/// let a = Watcher::new(a)?;
/// let writer = greenhouse::spawn(move || b.write_all(b"ping"));
/// let mut buf = [0u8; 4];
/// // Parks (the writer runs) until `a` is readable, then reads.
/// let n = a.read_with(None, |mut s| s.read(&mut buf))?;
/// assert_eq!(&buf[..n], b"ping");
/// writer.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Watcher<T: AsFd> {
    io: Option<T>,
    src: Rc<Source>,
    hub: Rc<Hub>,
    _not_send: PhantomData<*const ()>,
}

impl<T: AsFd> fmt::Debug for Watcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

impl<T: AsFd> Watcher<T> {
    /// Registers `io`'s fd with this thread's reactor.
    ///
    /// # Errors
    /// If the poller cannot be created or refuses the fd (e.g. a regular
    /// file, which epoll does not support, or an fd already registered).
    pub fn new(io: T) -> io::Result<Watcher<T>> {
        let hub = super::get();
        let src = hub.reactor.register(io.as_fd())?;
        Ok(Watcher {
            io: Some(io),
            src,
            hub,
            _not_send: PhantomData,
        })
    }

    /// The wrapped object.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("present until into_inner or drop")
    }

    /// Deregisters the fd and returns the object.
    pub fn into_inner(mut self) -> T {
        self.hub.reactor.deregister(&self.src);
        self.io.take().expect("present until into_inner or drop")
    }

    fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        match self.hub.reactor.wait(&self.src, interest, deadline)? {
            Woke::Ready => Ok(()),
            Woke::Deadline | Woke::TimedOut => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for readiness",
            )),
            Woke::Deadlock => Err(crate::Error::Deadlock.into()),
        }
    }

    /// Parks until the fd is readable (or `timeout` passes).
    ///
    /// # Errors
    /// `TimedOut` when the timeout or an armed [`Timeout`](crate::Timeout)
    /// expires; the poller's error if it cannot be armed.
    pub fn readable(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.wait(Interest::Read, deadline(timeout))
    }

    /// Parks until the fd is writable (or `timeout` passes).
    ///
    /// # Errors
    /// As for [`readable`](Self::readable).
    pub fn writable(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.wait(Interest::Write, deadline(timeout))
    }

    /// The retry loop for reads: runs `op`; on `WouldBlock` parks until
    /// readable and tries again; any other result is returned.
    ///
    /// # Errors
    /// `op`'s errors other than `WouldBlock`, and those of [`readable`](Self::readable).
    pub fn read_with<R>(
        &self,
        timeout: Option<Duration>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.retry(Interest::Read, deadline(timeout), op)
    }

    /// The retry loop for writes (see [`read_with`](Self::read_with)).
    ///
    /// # Errors
    /// `op`'s errors other than `WouldBlock`, and those of [`writable`](Self::writable).
    pub fn write_with<R>(
        &self,
        timeout: Option<Duration>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.retry(Interest::Write, deadline(timeout), op)
    }

    fn retry<R>(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(interest, deadline)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl<T: AsFd> AsRawFd for Watcher<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_fd().as_raw_fd()
    }
}

impl<T: AsFd> Drop for Watcher<T> {
    fn drop(&mut self) {
        if self.io.is_some() {
            // Deregister first, then close (reactor invariant).
            self.hub.reactor.deregister(&self.src);
            drop(self.io.take());
        }
    }
}
