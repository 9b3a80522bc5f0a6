//! The core every greenhouse socket is built on: a non-blocking fd in a
//! [`Watcher`], plus std-style read and write timeouts.
//!
//! Every blocking socket method goes through [`Io::read`] or
//! [`Io::write`]: try the non-blocking call; on `WouldBlock` park until the
//! fd is ready (or the deadline passes), then retry.

use std::cell::Cell;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::hub::Interest;
use crate::hub::watcher::{Watcher, deadline, timeout_error};

/// A registered non-blocking socket with std-style timeouts.
pub(crate) struct Io<T: AsFd> {
    w: Watcher<T>,
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
}

impl<T: AsFd> Io<T> {
    /// Wraps an fd that is already non-blocking; registers it lazily.
    pub(crate) fn new(io: T) -> Io<T> {
        Io {
            w: Watcher::lazy(io),
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
        }
    }

    pub(crate) fn get(&self) -> &T {
        self.w.get_ref()
    }

    pub(crate) fn into_inner(self) -> T {
        self.w.into_inner()
    }

    /// Runs `op` until it does not return `WouldBlock`, parking on
    /// readability in between; honours the read timeout.
    pub(crate) fn read<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.w
            .io_with(Interest::Read, deadline(self.read_timeout.get()), op)
    }

    /// A stream read into `len` bytes (see `Watcher::read_stream`): skips
    /// the try that would only say `WouldBlock` after a short read.
    pub(crate) fn read_stream(
        &self,
        len: usize,
        op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.w
            .read_stream(deadline(self.read_timeout.get()), len, op)
    }

    /// As [`read`](Self::read), for writability and the write timeout.
    pub(crate) fn write<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.w
            .io_with(Interest::Write, deadline(self.write_timeout.get()), op)
    }

    #[cfg(any(feature = "futures-io", feature = "tokio"))]
    /// The async read and write (see `Watcher::poll_io`).
    pub(crate) fn poll_io<R>(
        &self,
        interest: Interest,
        cx: &mut std::task::Context<'_>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> std::task::Poll<io::Result<R>> {
        self.w.poll_io(interest, cx, op)
    }

    /// Waits for writability with an explicit deadline (non-blocking connect).
    pub(crate) fn wait_writable(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.w.wait_or(Interest::Write, deadline, timeout_error)
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(check_timeout(t)?);
        Ok(())
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.write_timeout.set(check_timeout(t)?);
        Ok(())
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout.get()
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout.get()
    }
}

/// std refuses a zero timeout with `InvalidInput`; so do we.
fn check_timeout(t: Option<Duration>) -> io::Result<Option<Duration>> {
    match t {
        Some(d) if d.is_zero() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )),
        t => Ok(t),
    }
}

/// True for the errors a non-blocking `connect` reports while in progress.
pub(crate) fn connect_in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock
}
