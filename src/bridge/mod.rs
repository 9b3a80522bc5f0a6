//! Async Rust from greenlets, and greenlets from async Rust (the bridge
//! SQLAlchemy built on greenlet: `await_only` / `greenlet_spawn`).
//!
//! - [`wait_future`] (re-exported as `greenhouse::wait_future`) awaits
//!   any [`Future`] in blocking style: it polls the
//!   future on the calling greenlet's stack, with a [`Waker`](std::task::Waker)
//!   that reschedules *that greenlet*, and parks only it meanwhile. A wake
//!   from the same hub is a ready-queue push; one from another thread
//!   goes through the hub's inbox, as [`HubHandle`](crate::HubHandle)'s
//!   handoffs do. [`Timeout`](crate::Timeout) and kill interrupt it, and
//!   the future is dropped on the greenlet's stack.
//! - The other direction: a [`JoinHandle`](crate::JoinHandle) is a
//!   `Future` (await a greenlet from async code on its hub), and
//!   [`HubHandle::spawn`](crate::HubHandle::spawn) returns a `Send`
//!   [`RemoteTask`](crate::RemoteTask) that any executor can await.
//!
//! - [`tokio`] (feature `tokio`): futures that need a tokio reactor run
//!   on a tokio runtime while the calling greenlet parks.
//!
//! Async protocol crates can also run on the hub's own reactor: with the
//! `futures-io` or `tokio` feature, greenhouse's [`TcpStream`](crate::net::TcpStream)
//! and [`UnixStream`](crate::net::UnixStream) implement the async IO
//! traits.
//!
//! Sits beside `net` and `sync` (layer 3): it uses the hub's park and
//! remote-wake machinery and nothing above it.

mod join;
#[cfg(feature = "tokio")]
pub mod tokio;
mod wait;

pub use wait::{wait_future, wait_future_timeout};
