//! The hub's extension slot in every greenlet record.
//!
//! The greenlet layer carries one [`Slot`] per record (`Inner::ext`) and
//! never looks inside it: everything here is the meaning the layers above
//! give a greenlet. The hub's park state and `Timeout` scopes, the monkey
//! hooks' deferred exit, greenlet-local values (the `local` module), and
//! what its park waits for (the dump, `dump.rs`).
//!
//! **Architecture Invariant:** `greenlet/` names this type in one place
//! (the field) and reads none of its fields; `tests/tidy.rs` allows exactly
//! that one upward reference.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::dump::WaitingOn;

/// One armed `Timeout` scope.
pub(crate) struct Scope {
    pub(crate) id: u64,
    pub(crate) deadline: Instant,
    /// Its deadline interrupted a wait.
    pub(crate) fired: bool,
    /// Silent (`with_timeout_silent`): once fired, the next park unwinds
    /// the greenlet to the scope instead of returning `TimedOut`.
    pub(crate) silent: bool,
    /// That unwind is under way: parks in destructors meanwhile return
    /// `TimedOut` instead of raising again.
    pub(crate) raising: bool,
}

/// What the hub and the layers above keep per greenlet.
#[derive(Default)]
pub(crate) struct Slot {
    /// Bumped at every park (and by a kill); a wake token carries the value
    /// of the park it was made for, so late or duplicate wakes are ignored.
    pub(crate) park_gen: Cell<u64>,
    /// While the greenlet is `Blocked` (layer 1): true if it sits in the
    /// ready queue with its message, false if it is parked waiting for a
    /// token. Meaningless in any other state.
    pub(crate) queued: Cell<bool>,
    /// A kill that could not unwind where it landed (inside a patched libc
    /// call, whose C frames must not be unwound): raised at the next park,
    /// or reported as the greenlet's result if it returns first.
    pub(crate) deferred_exit: Cell<bool>,
    /// A patched sleep reported the deferred kill as `ECANCELED`; its
    /// caller may be unwinding from it (see `scheduler::raise_deferred_exit`).
    pub(crate) cancelled: Cell<bool>,
    /// How many thread-park waits in a row ended by the patched futex
    /// wait's safety poll rather than a wake: the next poll waits twice as
    /// long (`monkey/futex.rs`).
    #[cfg(feature = "monkey")]
    pub(crate) futex_polls: Cell<u8>,
    /// What it waits for in its current (or latest) park, for the dump.
    pub(crate) waiting: Cell<WaitingOn>,
    /// That park's deadline, if it has one.
    until: Cell<PackedInstant>,
    /// When that park began, to the hub's tick (`Hub::clock`).
    since: Cell<PackedInstant>,
    /// Its `tracing` span (`trace.rs`).
    #[cfg(feature = "tracing")]
    pub(crate) span: std::cell::OnceCell<tracing::Span>,
    /// A spawned greenlet's join state (`join_state.rs`).
    pub(crate) join: super::join_state::JoinCore,
    /// What few greenlets use, allocated at first use: a parked greenlet
    /// that never armed a `Timeout`, set a local or was killed inside a
    /// patched call pays one pointer for it, not 128 bytes.
    cold: OnceCell<Box<Cold>>,
}

/// The rarely used part of a [`Slot`].
#[derive(Default)]
pub(crate) struct Cold {
    /// The `Timeout` scopes it armed, outermost first.
    pub(crate) deadlines: RefCell<Vec<Scope>>,
    /// The error of a deferred kill with an error (`kill_with`), raised as
    /// `ThrownError` instead of `GreenletExit`.
    pub(crate) deferred_error: RefCell<Option<crate::error::Error>>,
    /// Greenlet-local values, by key (the `local` module).
    pub(crate) locals: RefCell<Vec<(u64, Rc<dyn Any>)>>,
    /// A spawned greenlet's links and async waker (`join_state.rs`).
    pub(crate) join: OnceCell<Box<super::join_state::Extra>>,
}

impl Slot {
    /// The rarely used part, allocated now if it was not yet.
    pub(crate) fn cold(&self) -> &Cold {
        self.cold.get_or_init(Box::default)
    }

    /// The error of a deferred kill, taking it (`None` for a plain kill).
    pub(crate) fn take_deferred_error(&self) -> Option<crate::error::Error> {
        self.cold_if().and_then(|c| c.deferred_error.take())
    }

    /// The rarely used part, if it was ever used.
    #[inline]
    pub(crate) fn cold_if(&self) -> Option<&Cold> {
        self.cold.get().map(|c| &**c)
    }

    /// Records a park for the dump: three stores (and the deadline packed,
    /// if it has one), no clock read.
    #[inline(always)]
    pub(crate) fn note_park(&self, on: WaitingOn, until: Option<Instant>, now: PackedInstant) {
        self.waiting.set(on);
        self.note_park_times(until, now);
    }

    /// Records a park's deadline and start for the dump, what it waits for
    /// having been set already (`waiting`).
    #[inline(always)]
    pub(crate) fn note_park_times(&self, until: Option<Instant>, now: PackedInstant) {
        self.until.set(PackedInstant::of(until));
        self.since.set(now);
    }

    /// The latest park's deadline, if it had one.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.until.get().get()
    }

    /// When the latest park began (`None` before the first).
    pub(crate) fn since(&self) -> Option<Instant> {
        self.since.get().get()
    }

    /// Drops the greenlet-local values (their destructors may use other
    /// locals, so the list is not borrowed meanwhile). Installed as the
    /// greenlet layer's exit hook: it runs on the greenlet's own stack when
    /// its body ends, and again (finding nothing) when it is buried.
    pub(crate) fn drop_locals(&self) {
        let Some(cold) = self.cold_if() else {
            return;
        };
        loop {
            let all = std::mem::take(&mut *cold.locals.borrow_mut());
            if all.is_empty() {
                return;
            }
            drop(all);
        }
    }
}

/// An optional instant in one word: nanoseconds after a process-wide
/// epoch, plus one (0 is `None`). Two of these record a greenlet's park for
/// the dump, at half the size of two `Option<Instant>`s; the hub keeps its
/// clock packed, so a park's "since" is a copy.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct PackedInstant(u64);

impl PackedInstant {
    /// The epoch: an hour before the first use (so instants read a little
    /// before it still fit), or that first use on a clock younger than an
    /// hour. Instants before it read as the epoch; 584 years after, as the
    /// last representable one.
    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(|| {
            let now = Instant::now();
            now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
        })
    }

    /// `at`, packed.
    #[inline]
    pub(crate) fn of(at: Option<Instant>) -> PackedInstant {
        PackedInstant(at.map_or(0, |at| {
            let ns = at.saturating_duration_since(Self::epoch()).as_nanos();
            u64::try_from(ns).unwrap_or(u64::MAX).min(u64::MAX - 1) + 1
        }))
    }

    /// The instant back.
    pub(crate) fn get(self) -> Option<Instant> {
        match self.0 {
            0 => None,
            n => Self::epoch().checked_add(Duration::from_nanos(n - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_instant_reads_back_what_was_stored() {
        assert_eq!(PackedInstant::default().get(), None);
        assert_eq!(PackedInstant::of(None).get(), None);
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_secs(86_400 * 365),
            now - Duration::from_secs(60),
        ] {
            assert_eq!(PackedInstant::of(Some(at)).get(), Some(at));
        }
    }
}
