//! Tokio-only futures from greenlets (feature `tokio`): futures that need
//! a tokio reactor or timer (reqwest, hyper-util's client, sqlx's tokio
//! runtime...) run as tasks on a tokio runtime, and the calling greenlet
//! parks until the result is back.
//!
//! [`wait_tokio`] uses a small `current_thread` runtime that the bridge
//! starts on a thread of its own the first time it is needed (IO and time
//! drivers enabled, thread `greenhouse-tokio`); [`wait_tokio_on`] takes a
//! runtime of the program's own. Each call costs a cross-thread handoff
//! each way: `Handle::spawn` wakes the tokio thread, and the task's
//! completion wakes the greenlet through its hub's inbox (see
//! `examples/async_bridge.rs` for the measured cost). Many greenlets may
//! wait at once: each waits for its own task.
//!
//! A `Timeout` or a kill of the waiting greenlet aborts the task.

use std::future::Future;
use std::io;
use std::sync::OnceLock;

use tokio::runtime::Handle;

use crate::error::{Error, panicked};

/// Runs `fut` as a task on the bridge's background tokio runtime and
/// parks the calling greenlet until it finishes; returns its output.
///
/// # Errors
/// - [`Error::Panicked`] if the task panicked (named `"tokio task"`);
/// - [`Error::Killed`] if the runtime cancelled it (shutting down);
/// - [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expired
///   first (the task is aborted);
/// - [`Error::Spawn`] if the background runtime cannot be started.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "tokio")] {
/// use std::time::Duration;
/// // tokio's timer needs a tokio runtime: the bridge provides it.
/// let v = greenhouse::bridge::tokio::wait_tokio(async {
///     tokio::time::sleep(Duration::from_millis(5)).await;
///     7
/// });
/// assert_eq!(v, Ok(7));
/// # }
/// ```
pub fn wait_tokio<F>(fut: F) -> Result<F::Output, Error>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    wait_tokio_on(&background()?, fut)
}

/// [`wait_tokio`] on a runtime of the program's own.
///
/// # Errors
/// As [`wait_tokio`].
pub fn wait_tokio_on<F>(handle: &Handle, fut: F) -> Result<F::Output, Error>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// Aborts the task on every way out (a kill's unwind, a Timeout).
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(handle.spawn(fut));
    match super::wait_future(&mut task.0)? {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => Err(panicked("tokio task".into(), e.into_panic())),
        Err(_) => Err(Error::Killed),
    }
}

/// The bridge's own runtime, started on first use.
fn background() -> Result<Handle, Error> {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::spawn)?;
    let handle = rt.handle().clone();
    // Two racing first calls may both build one; the loser's runtime is
    // dropped unused and its thread never started.
    if HANDLE.set(handle).is_ok() {
        std::thread::Builder::new()
            .name("greenhouse-tokio".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| Error::spawn(io::Error::other(e)))?;
    }
    Ok(HANDLE.get().expect("set above").clone())
}
