//! Cooperative sockets: std's networking API, where a call that would block
//! parks only the calling greenlet.
//!
//! The types mirror `std::net` and `std::os::unix::net` (same method names
//! and signatures where that makes sense) and implement `Read`/`Write`, so
//! `BufReader`, `read_exact`, `write_all` and `io::copy` work unchanged.
//! Host names are resolved on the blocking thread pool ([`ToSocketAddrs`]).
//! [`StreamServer`] runs one greenlet per connection.
//!
//! All fds are non-blocking underneath. A call tries the operation; on
//! `WouldBlock` it parks on the hub's reactor until the fd is ready, its
//! timeout passes, an armed [`Timeout`](crate::Timeout) expires, or the
//! greenlet is killed — in every case nothing stays registered. Outside
//! any spawned greenlet (plain `main`), the main greenlet runs the hub
//! while it waits.
//!
//! **API Boundary:** OS errors (`ECONNRESET`, `EPIPE`, `ECONNREFUSED`,
//! `EADDRINUSE`, `EMFILE`, …) come back as `io::Error`; writes never raise
//! `SIGPIPE`. Dropping a socket deregisters it, then closes it.

mod addr;
pub(crate) mod async_io;
mod crew;
mod dgram_server;
mod fd;
pub(crate) mod io;
mod server;
mod tcp;
mod udp;
mod unix;

pub use addr::ToSocketAddrs;
pub use dgram_server::DatagramServer;
pub use server::StreamServer;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};
