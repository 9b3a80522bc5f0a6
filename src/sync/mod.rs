//! Synchronisation between greenlets of one hub: gevent's `event`, `lock`
//! and `queue` modules.
//!
//! - [`Event`], [`AsyncResult`]: signals and one-shot results.
//! - [`Semaphore`], [`BoundedSemaphore`], [`Lock`], [`RLock`]: permits and
//!   mutual exclusion, each `acquire` with an optional timeout.
//! - [`Queue`], [`LifoQueue`], [`PriorityQueue`], [`JoinableQueue`],
//!   [`Channel`]: blocking `put`/`get` with optional timeouts, and
//!   `put_nowait`/`get_nowait` that fail with [`Full`]/[`Empty`].
//!
//! Waiters are served in FIFO order, by direct handoff: a released permit
//! or a put item goes to the oldest waiter, never to a newcomer. A waiter
//! that times out or is killed leaves the queue and never swallows an item
//! or a permit.
//!
//! - [`mpmc`]: the exception, channels *between* hubs and threads
//!   (`Send` senders and receivers; a wait parks only its greenlet).
//!
//! Every other type here is a cheap, cloneable handle (clones share
//! state), and `!Send`: they belong to one hub. To reach them from another OS thread,
//! hand a closure to the hub with a [`HubHandle`](crate::HubHandle), or run
//! blocking work with [`spawn_blocking`](crate::threadpool::spawn_blocking).
//!
//! ```compile_fail
//! let e = greenhouse::sync::Event::new();
//! std::thread::spawn(move || e.set());
//! ```

mod event;
pub mod mpmc;
mod queue;
mod semaphore;
mod waiters;

pub use event::{AsyncResult, Event};
pub use queue::{Channel, Empty, Full, JoinableQueue, LifoQueue, PriorityQueue, PutError, Queue};
pub use semaphore::{
    BoundedSemaphore, Lock, LockGuard, RLock, RLockGuard, Semaphore, SemaphoreGuard,
};
