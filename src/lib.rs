//! greenhouse: single-threaded green threads in the spirit of Python's
//! greenlet + gevent.
//!
//! Write plain blocking-style code, spawn thousands of greenlets, and the
//! hub switches between them whenever one would block: on a sleep, a join,
//! a timeout, or a file descriptor that is not ready.
//!
//! - [`Greenlet`]: explicit `switch` with values both ways, parents,
//!   `throw`, dead greenlets — Python's `greenlet`.
//! - [`spawn()`], [`JoinHandle::join`], [`JoinHandle::kill`], [`joinall`],
//!   [`killall`], [`sleep`], [`yield_now`], [`Timeout`], [`with_timeout`] —
//!   gevent's hub API.
//! - [`Watcher`]: park a greenlet until an fd is readable or writable.
//! - [`net`]: cooperative sockets with std's API, and `StreamServer`.
//! - [`sync`]: `Event`, `AsyncResult`, semaphores, locks, queues and
//!   `Channel`, with FIFO waiters — gevent's `event`, `lock`, `queue`.
//! - [`pool`]: `Pool` and `Group`, with `map`/`imap`; [`JoinHandle::link`]
//!   for completion callbacks.
//! - [`threadpool`]: `spawn_blocking` for truly blocking calls;
//!   [`HubHandle`] to hand closures to a hub from other threads.
//! - [`Runtime`] and [`runtime::Server`]: a hub per core, and one server
//!   over all of them; [`sync::mpmc`] channels between hubs.
//! - [`local`]: greenlet-local storage.
//! - `monkey` (cargo feature `monkey`): `monkey::patch_all()` makes
//!   blocking std and third-party code (std sockets, `thread::sleep`, name
//!   lookups) yield cooperatively inside greenlets, like gevent's.
//! - [`Generator`]: Python-style generators on the same stacks.
//!
//! One hub per OS thread, created on first use. Everything is `!Send`; the
//! thread's own stack is the main greenlet and runs the scheduler while it
//! waits. Greenlets run on pooled, guard-paged stacks
//! ([`DEFAULT_STACK_SIZE`] each, reused without system calls).
//!
//! # Examples
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! let (asleep, most) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
//! let workers: Vec<_> = (0..100u64)
//!     .map(|i| {
//!         let (asleep, most) = (asleep.clone(), most.clone());
//!         greenhouse::spawn(move || {
//!             asleep.set(asleep.get() + 1);
//!             most.set(most.get().max(asleep.get()));
//!             greenhouse::sleep(Duration::from_millis(20));
//!             asleep.set(asleep.get() - 1);
//!             i * i
//!         })
//!     })
//!     .collect();
//! let total: u64 = greenhouse::joinall(workers).into_iter().map(Result::unwrap).sum();
//! assert_eq!(total, 328_350);
//! // The 100 sleeps overlapped: the whole batch took about one sleep.
//! assert_eq!(most.get(), 100);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct ReadmeDoctests;

pub mod bridge;
mod error;
mod generator;
pub use generator::stages;
mod greenlet;
mod hub;
pub mod local;
#[cfg(feature = "monkey")]
pub mod monkey;
pub mod net;
pub mod pool;
pub mod process;
pub mod runtime;
pub mod signal;
mod stack;
pub mod sync;
pub mod threadpool;

pub use bridge::{wait_future, wait_future_timeout};
pub use error::{Error, Panic, TypeName};
pub use generator::{Generator, GeneratorError, GeneratorExit, GeneratorState, Thrown, Yielder};
pub use greenlet::{Greenlet, GreenletExit, StackUsage, ThrownError};
pub use hub::{
    BlockedReport, Builder, Dump, Finished, Frame, GreenletInfo, GreenletState, HubHandle,
    HubStats, Iwait, JoinAll, JoinHandle, Joined, LinkKey, RemoteJoinHandle, RemoteTask,
    StackTrace, Timeout, Waitable, WaitingOn, Watcher, blocked_threshold, clear_blocked_hook, dump,
    dump_brief, dump_on_signal, iwait, joinall, joinall_timeout, killall, killall_with, run_info,
    set_blocked_hook, set_blocked_threshold, set_copy_stacks, sleep, sleep_until, spawn,
    spawn_later, stats, wait, with_timeout, with_timeout_silent, yield_now,
};
pub use runtime::Runtime;
pub use stack::DEFAULT_STACK_SIZE;

/// The greenlet running now (gevent's `getcurrent`).
///
/// # Examples
///
/// ```
/// assert!(greenhouse::current().is_main());
/// ```
pub fn current() -> Greenlet {
    Greenlet::current()
}
