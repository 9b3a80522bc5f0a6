//! File-descriptor conversions shared by every socket type: `AsFd`,
//! `AsRawFd`, `IntoRawFd`, `FromRawFd`, and adopting a std socket with
//! `From`.
//!
//! `FromRawFd::from_raw_fd` is `unsafe` by definition (the caller vouches
//! for the fd); it forwards to std's own implementation, which carries the
//! same contract. That and [`as_uninit`] are the only unsafe code in `net`.

/// Implements the fd traits for `$ty`, a wrapper around `Io<$std>`.
macro_rules! fd_traits {
    ($ty:ident, $std:ty) => {
        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(self.io.get())
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(self.io.get())
            }
        }

        impl std::os::fd::IntoRawFd for $ty {
            /// Deregisters the socket and hands over its fd (left non-blocking).
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                std::os::fd::IntoRawFd::into_raw_fd(self.io.into_inner())
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            /// Adopts an open socket fd (made non-blocking here).
            ///
            /// # Safety
            /// `fd` must be an open socket of the right kind that nothing
            /// else owns, as for std's `from_raw_fd`.
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> Self {
                // SAFETY: the caller upholds std's contract, which is ours.
                let s = unsafe { <$std as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                Self::from(s)
            }
        }

        impl From<$std> for $ty {
            /// Adopts a socket made elsewhere: it is switched to non-blocking
            /// mode and registered with this thread's hub on first wait.
            fn from(s: $std) -> Self {
                // Only fails for an invalid fd, which then fails on first use.
                let _ = s.set_nonblocking(true);
                Self::from_io(crate::net::io::Io::new(s))
            }
        }
    };
}

/// Implements std's timeout methods for `$ty`, a wrapper around `Io<_>`.
macro_rules! timeout_methods {
    ($ty:ident) => {
        impl $ty {
            /// Makes reads give up after `timeout` with `WouldBlock`, as std
            /// does (honoured cooperatively: only this greenlet waits).
            /// `None` waits forever.
            ///
            /// # Errors
            /// `InvalidInput` for a zero duration.
            pub fn set_read_timeout(
                &self,
                timeout: Option<std::time::Duration>,
            ) -> std::io::Result<()> {
                self.io.set_read_timeout(timeout)
            }

            /// Makes writes give up after `timeout` with `WouldBlock`.
            ///
            /// # Errors
            /// `InvalidInput` for a zero duration.
            pub fn set_write_timeout(
                &self,
                timeout: Option<std::time::Duration>,
            ) -> std::io::Result<()> {
                self.io.set_write_timeout(timeout)
            }

            /// The read timeout.
            ///
            /// # Errors
            /// Never; `Result` for std compatibility.
            pub fn read_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.io.read_timeout())
            }

            /// The write timeout.
            ///
            /// # Errors
            /// Never; `Result` for std compatibility.
            pub fn write_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.io.write_timeout())
            }

            /// The pending socket error (`SO_ERROR`), if any.
            ///
            /// # Errors
            /// As std's `take_error`.
            pub fn take_error(&self) -> std::io::Result<Option<std::io::Error>> {
                self.io.get().take_error()
            }
        }
    };
}

pub(crate) use fd_traits;
pub(crate) use timeout_methods;

/// Views an initialised byte buffer as `MaybeUninit` bytes, for socket2
/// calls (such as `peek`) that take those.
pub(crate) fn as_uninit(buf: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and every
    // initialised value is a valid `MaybeUninit`. socket2 writes only
    // initialised bytes through it, so `buf` stays initialised.
    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
}
