//! Async IO traits over greenhouse's stream sockets, so async protocol
//! crates run on the hub's own reactor with no second runtime:
//! `futures_io::AsyncRead`/`AsyncWrite` (feature `futures-io`) and
//! `tokio::io::AsyncRead`/`AsyncWrite` (feature `tokio`; wrap the stream
//! in `hyper_util::rt::TokioIo` for hyper) for [`TcpStream`] and
//! [`UnixStream`], owned and by reference.
//!
//! A poll tries the non-blocking call; on `WouldBlock` it files the task's
//! waker with the socket's reactor entry (one reader and one writer task
//! at a time, the latest replacing the one before, as `async-io` does)
//! and returns `Pending`; the socket's next readiness edge wakes it. Drive
//! such futures with [`wait_future`](crate::wait_future) from a greenlet
//! of the socket's hub: only that greenlet parks. `poll_close` /
//! `poll_shutdown` shut the write half down; `poll_flush` has nothing to
//! flush. The socket's read and write timeouts apply to its blocking
//! calls only; bound an async operation with `wait_future_timeout` or a
//! [`Timeout`](crate::Timeout).
//!
//! [`TcpStream`]: super::TcpStream
//! [`UnixStream`]: super::UnixStream

/// Implements the async IO traits of the enabled features for `$ty` and
/// `&$ty`, a wrapper around `Io<_>`; `|$s, $buf| $write` writes `$buf`
/// to the std socket `$s` (without blocking: the fd is non-blocking).
macro_rules! async_io_traits {
    ($ty:ident, |$s:ident, $buf:ident| $write:expr) => {
        #[cfg(any(feature = "futures-io", feature = "tokio"))]
        impl $ty {
            fn poll_read_buf(
                &self,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.io
                    .poll_io(crate::hub::Interest::Read, cx, |mut s| {
                        std::io::Read::read(&mut s, buf)
                    })
            }

            fn poll_write_buf(
                &self,
                cx: &mut std::task::Context<'_>,
                $buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.io
                    .poll_io(crate::hub::Interest::Write, cx, |$s| $write)
            }

            fn poll_shutdown_write(&self) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(
                    match self.io.get().shutdown(std::net::Shutdown::Write) {
                        // Already shut down, or the peer is gone: nothing
                        // is left to close.
                        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
                        r => r,
                    },
                )
            }
        }

        crate::net::async_io::async_io_traits!(@impls $ty);
        crate::net::async_io::async_io_traits!(@impls &$ty);
    };
    (@impls $t:ty) => {
        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncRead for $t {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.poll_read_buf(cx, buf)
            }
        }

        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncWrite for $t {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.poll_write_buf(cx, buf)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.poll_shutdown_write()
            }
        }

        #[cfg(feature = "tokio")]
        impl tokio::io::AsyncRead for $t {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let dst = buf.initialize_unfilled();
                match self.poll_read_buf(cx, dst) {
                    std::task::Poll::Ready(Ok(n)) => {
                        buf.advance(n);
                        std::task::Poll::Ready(Ok(()))
                    }
                    std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                    std::task::Poll::Pending => std::task::Poll::Pending,
                }
            }
        }

        #[cfg(feature = "tokio")]
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.poll_write_buf(cx, buf)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.poll_shutdown_write()
            }
        }
    };
}

pub(crate) use async_io_traits;
