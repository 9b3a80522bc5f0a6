//! `Watcher`: cooperative readiness waits on any file descriptor.

use std::cell::OnceCell;
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
    /// Registered on first wait (or at once by [`Watcher::new`]).
    src: OnceCell<Rc<Source>>,
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

/// The instant `timeout` from now, if any (none if it is too far away to
/// represent: such a timeout never passes).
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The instant `d` from now, or about a century from now if that is not
/// representable (a delay that long never passes in practice).
pub(crate) fn saturating_deadline(d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(d.min(CENTURY)).unwrap_or(now)
}

/// [`deadline`] for a timeout that is always given.
pub(crate) fn deadline_in(timeout: Duration) -> Option<Instant> {
    deadline(Some(timeout))
}

/// The error for a socket operation whose park ended without readiness: its
/// own deadline is std's `WouldBlock` (as with `SO_RCVTIMEO`), an armed
/// [`Timeout`](crate::Timeout) scope is `TimedOut`.
pub(crate) fn timeout_error(woke: Woke) -> io::Error {
    match woke {
        Woke::Deadline => io::Error::new(io::ErrorKind::WouldBlock, "socket operation timed out"),
        Woke::TimedOut => io::Error::new(io::ErrorKind::TimedOut, "timed out"),
        Woke::Deadlock => crate::Error::Deadlock.into(),
        Woke::Ready => io::Error::other("spurious wake-up"),
    }
}

/// The error for `Watcher`'s own waits: any deadline is `TimedOut`.
fn readiness_timeout(woke: Woke) -> io::Error {
    match woke {
        Woke::Deadline | Woke::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for readiness")
        }
        other => timeout_error(other),
    }
}

impl<T: AsFd> Watcher<T> {
    /// Registers `io`'s fd with this thread's reactor.
    ///
    /// # Errors
    /// If the poller cannot be created or refuses the fd (e.g. a regular
    /// file, which epoll does not support, or an fd already registered).
    pub fn new(io: T) -> io::Result<Watcher<T>> {
        let w = Watcher::lazy(io);
        w.source()?;
        Ok(w)
    }

    /// Wraps `io` without registering it yet: registration happens on the
    /// first wait, and its error (if any) is returned there.
    pub(crate) fn lazy(io: T) -> Watcher<T> {
        Watcher {
            io: Some(io),
            src: OnceCell::new(),
            hub: super::get(),
            _not_send: PhantomData,
        }
    }

    fn source(&self) -> io::Result<&Rc<Source>> {
        if let Some(s) = self.src.get() {
            return Ok(s);
        }
        let s = self.hub.reactor.register(self.get_ref().as_fd())?;
        Ok(self.src.get_or_init(|| s))
    }

    /// The wrapped object.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("present until into_inner or drop")
    }

    /// Deregisters the fd and returns the object.
    pub fn into_inner(mut self) -> T {
        if let Some(src) = self.src.take() {
            self.hub.reactor.deregister(&src);
        }
        self.io.take().expect("present until into_inner or drop")
    }

    /// Parks until ready for `interest`; returns how the park ended.
    /// Always inlined: its caller's frame and its own would both stay on a
    /// parked stack (copied for copy-stack greenlets), each with its saved
    /// registers.
    #[inline(always)]
    pub(crate) fn wait_woke(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> io::Result<Woke> {
        let src = self.source()?;
        Ok(self.hub.reactor.wait(src, interest, deadline))
    }

    /// Parks until ready; a park that ends otherwise becomes `on_timeout(woke)`.
    /// Always inlined, as [`wait_woke`](Self::wait_woke) is.
    #[inline(always)]
    pub(crate) fn wait_or(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        on_timeout: impl Fn(Woke) -> io::Error,
    ) -> io::Result<()> {
        match self.wait_woke(interest, deadline)? {
            Woke::Ready => Ok(()),
            other => Err(on_timeout(other)),
        }
    }

    fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        // No operation was tried first, so ask the kernel before parking:
        // the reactor is edge-triggered and an earlier edge may be gone.
        if self.hub.reactor.is_ready(self.source()?, interest) {
            return Ok(());
        }
        self.wait_or(interest, deadline, readiness_timeout)
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
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.retry_map(interest, deadline, op, readiness_timeout)
    }

    /// The socket retry loop: try `op`; on `WouldBlock` park and retry. A
    /// passed `deadline` gives std's `WouldBlock`, an armed `Timeout` scope
    /// `TimedOut` (see [`timeout_error`]).
    pub(crate) fn io_with<R>(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.retry_map(interest, deadline, op, timeout_error)
    }

    /// The read loop for stream sockets: [`io_with`](Self::io_with) for
    /// reading into `len` bytes, plus tokio's heuristic. A read that
    /// returned less than it asked for (`0 < n < len`) has emptied the
    /// socket, so the next read parks for the next readiness edge instead
    /// of first trying a read that would only return `WouldBlock` (one
    /// system call saved per message). Any readable event since clears the
    /// mark, and the fd is edge-triggered, so data that arrives after the
    /// short read always produces one. Not for datagrams: a short datagram
    /// says nothing about the next.
    pub(crate) fn read_stream(
        &self,
        deadline: Option<Instant>,
        len: usize,
        op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if let Some(src) = self.src.get() {
            if len > 0 && src.is_drained() {
                self.wait_or(Interest::Read, deadline, timeout_error)?;
            }
        }
        let n = self.retry_map(Interest::Read, deadline, op, timeout_error)?;
        if n > 0 && n < len {
            if let Some(src) = self.src.get() {
                src.mark_drained();
            }
        }
        Ok(n)
    }

    #[cfg(any(feature = "futures-io", feature = "tokio"))]
    /// The async form of the retry loop, for `poll_read`/`poll_write`
    /// of async IO traits: try `op`; on `WouldBlock`, have `cx`'s waker
    /// woken at the fd's next `interest` edge and return `Pending` (the
    /// edge cannot be missed: events are taken only by this thread's hub
    /// poll, which cannot run between the try and the registration).
    pub(crate) fn poll_io<R>(
        &self,
        interest: Interest,
        cx: &mut std::task::Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> std::task::Poll<io::Result<R>> {
        use std::task::Poll;
        let src = match self.source() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.hub.reactor.set_waker(src, interest, cx.waker());
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// The one try / park / retry loop. `WouldBlock` has just happened when
    /// it parks, so with the edge-triggered reactor the next edge will come;
    /// a park that ends without readiness becomes `on_timeout(woke)`.
    fn retry_map<R>(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mut op: impl FnMut(&T) -> io::Result<R>,
        on_timeout: impl Fn(Woke) -> io::Error,
    ) -> io::Result<R> {
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_or(interest, deadline, &on_timeout)?;
                }
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
        // Deregister first, then close (reactor invariant).
        if let Some(src) = self.src.take() {
            self.hub.reactor.deregister(&src);
        }
        drop(self.io.take());
    }
}
