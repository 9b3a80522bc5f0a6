//! Structured events through `tracing` (cargo feature `tracing`).
//!
//! Every greenlet gets a span, `greenlet`, with its `id`, `name` and the id
//! of the greenlet that created it (`spawned_by`); the span is entered
//! whenever the greenlet runs and exited whenever it suspends, so events
//! and spans of user code inside a greenlet nest under it. A spawned
//! greenlet's span is created by `spawn`, as a child of the spawner's
//! current span; a raw greenlet's (`Greenlet::new`) when it first runs, as
//! a root. Spans are entered by the trampoline through the hub, so a raw
//! greenlet switched to on a thread whose hub does not exist yet (nothing
//! there has spawned, slept, joined or touched a socket) runs outside any
//! span until the hub is created (`greenhouse::stats()` creates it).
//!
//! Events, all with target `greenhouse`:
//!
//! | event | level | fields |
//! |---|---|---|
//! | `spawn` | TRACE | `greenlet_id`, `greenlet_name` (in the spawner's span) |
//! | `park` | TRACE | `waiting_on`, `deadline_ms` (in the parking greenlet's span) |
//! | `wake` | TRACE | `greenlet_id`, `woke` (in the waker's span) |
//! | `kill` | DEBUG | `greenlet_id`, `with_error` (in the killer's span) |
//! | `panic` | ERROR | `greenlet_id`, `greenlet_name`, `reason` |
//! | `blocked` | WARN | `thread`, `greenlet_id`, `greenlet_name`, `running_ms`, `backtrace` |
//! | `unblocked` | INFO | `thread`, `greenlet_id`, `greenlet_name`, `running_ms` |
//!
//! The detector's events come from its own thread, so they carry no
//! greenlet span. Without the feature every function here is an empty
//! inline function: nothing is compiled in.

use std::time::Instant;

use super::dump::WaitingOn;
use super::monitor::BlockedReport;
use crate::greenlet::{Inner, Woke};

#[cfg(feature = "tracing")]
mod on {
    use std::time::Instant;

    use super::super::dump::WaitingOn;
    use super::super::monitor::BlockedReport;
    use crate::greenlet::{Inner, Woke};

    /// The greenlet's span, created on first use (a raw greenlet's, as a
    /// root, when it first runs).
    fn span(g: &Inner) -> tracing::Span {
        g.ext
            .span
            .get_or_init(|| {
                tracing::trace_span!(
                    target: "greenhouse",
                    parent: None,
                    "greenlet",
                    id = g.id,
                    name = %g.name(),
                    spawned_by = g.creator.get(),
                )
            })
            .clone()
    }

    pub(crate) fn spawned(g: &Inner) {
        let _ = g.ext.span.set(tracing::trace_span!(
            target: "greenhouse",
            "greenlet",
            id = g.id,
            name = %g.name(),
            spawned_by = g.creator.get(),
        ));
        tracing::trace!(
            target: "greenhouse",
            greenlet_id = g.id,
            greenlet_name = %g.name(),
            "spawn"
        );
    }

    pub(crate) fn resuming(g: &Inner) {
        span(g).with_subscriber(|(id, d)| d.enter(id));
    }

    pub(crate) fn suspended(g: &Inner) {
        if let Some(s) = g.ext.span.get() {
            s.with_subscriber(|(id, d)| d.exit(id));
        }
    }

    pub(crate) fn parked(on: WaitingOn, deadline: Option<Instant>) {
        let deadline_ms =
            deadline.map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64);
        tracing::trace!(target: "greenhouse", waiting_on = %on, deadline_ms, "park");
    }

    pub(crate) fn woke(g: &Inner, woke: Woke) {
        tracing::trace!(target: "greenhouse", greenlet_id = g.id, woke = ?woke, "wake");
    }

    pub(crate) fn killed(g: &Inner, with_error: bool) {
        tracing::debug!(target: "greenhouse", greenlet_id = g.id, with_error, "kill");
    }

    pub(crate) fn panicked(g: &Inner, message: &str) {
        tracing::error!(
            target: "greenhouse",
            greenlet_id = g.id,
            greenlet_name = %g.name(),
            reason = message,
            "panic"
        );
    }

    pub(crate) fn blocked(r: &BlockedReport) {
        let running_ms = r.running_for.as_millis() as u64;
        if r.finished {
            tracing::info!(
                target: "greenhouse",
                thread = %r.thread,
                greenlet_id = r.id,
                greenlet_name = %r.greenlet,
                running_ms,
                "unblocked"
            );
        } else {
            tracing::warn!(
                target: "greenhouse",
                thread = %r.thread,
                greenlet_id = r.id,
                greenlet_name = %r.greenlet,
                running_ms,
                backtrace = %r.backtrace,
                "blocked"
            );
        }
    }
}

// Called only through the `Schedule` methods that exist with the feature.
#[cfg(feature = "tracing")]
pub(crate) use on::{resuming, suspended};

/// Forwards to `on::$name` with the feature, and compiles to nothing
/// without it.
macro_rules! forward {
    ($(#[$doc:meta] fn $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[$doc]
        #[inline(always)]
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(feature = "tracing")]
            on::$name($($arg),*);
            #[cfg(not(feature = "tracing"))]
            let _ = ($($arg,)*);
        }
    )*};
}

forward! {
    /// A greenlet was spawned (by the current one).
    fn spawned(g: &Inner);
    /// The current greenlet parks (the event is in its own span).
    fn parked(on: WaitingOn, deadline: Option<Instant>);
    /// A parked greenlet was woken.
    fn woke(g: &Inner, woke: Woke);
    /// A greenlet is being killed.
    fn killed(g: &Inner, with_error: bool);
    /// A spawned greenlet panicked.
    fn panicked(g: &Inner, message: &str);
    /// A report of the blocked-hub detector.
    fn blocked(r: &BlockedReport);
}
