//! A spawned greenlet's join state: whether it has finished, who waits for
//! it, its result, and what runs when it finishes.
//!
//! It lives in the greenlet's record (`Slot::join`), not in an allocation
//! of its own: a spawn costs one allocation fewer, and a parked greenlet
//! 72 bytes fewer (the state's own bytes and the allocator's header). The
//! record is untyped, so the result is kept as a `Box<dyn Any>` (a
//! `Box<T>`, which allocates nothing for a `()`, or a `Box<Error>`) and
//! the typed [`JoinHandle`](super::JoinHandle) downcasts it. Links and the
//! async waker, which few greenlets have, live in the record's cold part.
//!
//! **Ownership:** the result belongs to the record, so it lives at most as
//! long as the record; and no longer than someone can read it: it is not
//! kept when the handle is gone and no callback wants it, and it is
//! dropped with the handle.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

use super::scheduler::WaitList;
use crate::error::{Error, TypeName, panic_message};
use crate::greenlet::{Greenlet, GreenletExit, Inner};

/// What a spawned greenlet's record keeps for its [`JoinHandle`](super::JoinHandle).
#[derive(Default)]
pub(crate) struct JoinCore {
    /// It has finished (its result, if anyone may read it, is in `result`).
    pub(super) done: Cell<bool>,
    /// The result was taken or seen (by a join or a callback): a panic in
    /// it needs no report.
    pub(super) taken: Cell<bool>,
    /// Its handle exists.
    pub(super) handle_alive: Cell<bool>,
    /// Scheduled to run (spawned, or created and then started).
    pub(super) started: Cell<bool>,
    /// `result` holds a `Box<Error>`, not a value.
    failed: Cell<bool>,
    /// Who waits for it to finish.
    pub(super) waiters: WaitList,
    /// Its result, once it has finished, while someone may read it.
    result: Cell<Option<Box<dyn Any>>>,
}

/// The rarely used part of a join state, in the record's cold part
/// (`slot::Cold::join`), allocated at first use.
#[derive(Default)]
pub(crate) struct Extra {
    /// What runs when it finishes, in the order added.
    pub(super) links: RefCell<Vec<(LinkKey, Link)>>,
    pub(super) next_link: Cell<u64>,
    /// The waker of an async task awaiting the handle as a `Future`.
    pub(super) waker: RefCell<Option<std::task::Waker>>,
}

/// A completion callback, given the greenlet and its join state (it reads
/// and puts back the typed result itself: [`JoinCore::take`],
/// [`JoinCore::put`]).
pub(super) type Callback = Box<dyn FnOnce(&Greenlet, &JoinCore)>;

/// The crate's own completion notice (see [`Link::Notice`]).
pub(crate) type Notice = Box<dyn FnOnce()>;

/// One thing to run when a greenlet finishes.
pub(super) enum Link {
    /// A user's callback (`link` and its siblings, `link_take`): it sees
    /// the result, and counts as having seen a panic.
    Callback(Callback),
    /// The crate's own notice (`JoinAll`, `Group::add`): it neither sees
    /// the result nor counts as having seen it.
    Notice(Notice),
}

/// Identifies a callback registered with [`JoinHandle::link`](super::JoinHandle::link)
/// (and its siblings), to [`unlink`](super::JoinHandle::unlink) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkKey(pub(super) u64);

impl JoinCore {
    /// Stores `result` (replacing, and dropping, what was there).
    pub(super) fn put<T: 'static>(&self, result: Result<T, Error>) {
        let boxed: Box<dyn Any> = match result {
            Ok(v) => {
                self.failed.set(false);
                Box::new(v)
            }
            Err(e) => {
                self.failed.set(true);
                Box::new(e)
            }
        };
        self.result.set(Some(boxed));
    }

    /// Takes the result, if it is there.
    ///
    /// A value of another type than `T` cannot be there (a record's result
    /// is put only as its handle's `T`); it would be reported as
    /// [`Error::WrongType`], not as a panic.
    pub(super) fn take<T: 'static>(&self) -> Option<Result<T, Error>> {
        let boxed = self.result.take()?;
        Some(if self.failed.get() {
            boxed
                .downcast::<Error>()
                .map_or_else(|_| Err(wrong_type::<Error>()), |e| Err(*e))
        } else {
            boxed
                .downcast::<T>()
                .map_or_else(|_| Err(wrong_type::<T>()), |v| Ok(*v))
        })
    }

    /// Lends the result out (to a callback), until the loan is dropped.
    pub(super) fn lend<T: 'static>(&self) -> Lent<'_, T> {
        Lent {
            core: self,
            result: self.take(),
        }
    }

    /// Drops the result (nobody can read it any more).
    pub(super) fn discard(&self) {
        drop(self.result.take());
    }

    /// Runs `f` with the error it failed with, if its result is there and
    /// is one.
    pub(super) fn with_error<R>(&self, f: impl FnOnce(Option<&Error>) -> R) -> R {
        let boxed = self.result.take();
        let r = f(boxed
            .as_deref()
            .filter(|_| self.failed.get())
            .and_then(|b| b.downcast_ref::<Error>()));
        self.result.set(boxed);
        r
    }

    /// Whether its result is there.
    pub(super) fn has_result(&self) -> bool {
        let boxed = self.result.take();
        let there = boxed.is_some();
        self.result.set(boxed);
        there
    }
}

/// A join state's result, lent out: put back when the loan is dropped,
/// also when the borrower panics (a callback's panic loses nothing).
pub(super) struct Lent<'a, T: 'static> {
    core: &'a JoinCore,
    result: Option<Result<T, Error>>,
}

impl<T: 'static> Lent<'_, T> {
    /// The result, if it was there (not taken by a join).
    pub(super) fn result(&self) -> Option<&Result<T, Error>> {
        self.result.as_ref()
    }
}

impl<T: 'static> Drop for Lent<'_, T> {
    fn drop(&mut self) {
        if let Some(r) = self.result.take() {
            self.core.put(r);
        }
    }
}

/// The error for a result of another type than the handle's.
fn wrong_type<T>() -> Error {
    Error::WrongType {
        expected: TypeName::of::<T>(),
        found: TypeName::of::<dyn Any>(),
    }
}

/// The join state's rarely used part, if it was ever used.
pub(super) fn extra_if(g: &Inner) -> Option<&Extra> {
    g.ext.cold_if().and_then(|c| c.join.get()).map(|x| &**x)
}

/// The join state's rarely used part, allocated now if it was not yet.
pub(super) fn extra(g: &Inner) -> &Extra {
    g.ext.cold().join.get_or_init(Box::default)
}

/// Finishes `g`'s join state with `result`: keeps it for the handle (or a
/// callback), wakes the joiners and the async waker, then runs the links on
/// the finishing greenlet's own stack.
pub(super) fn complete<T: 'static>(g: &Inner, result: Result<T, Error>) {
    let core = &g.ext.join;
    let extra = extra_if(g);
    let links = extra.map_or_else(Vec::new, |x| std::mem::take(&mut *x.links.borrow_mut()));
    let seen = links.iter().any(|(_, l)| matches!(l, Link::Callback(_)));
    if core.handle_alive.get() || seen {
        core.put(result);
    } else {
        // Nobody can read it: reported if it is a panic, dropped now.
        report_if_panicked(result.as_ref().err());
        drop(result);
    }
    core.done.set(true);
    super::with(|hub| core.waiters.wake_all(&hub.ready));
    let waker = extra.and_then(|x| x.waker.borrow_mut().take());
    if let Some(w) = waker {
        w.wake();
    }
    if links.is_empty() {
        return;
    }
    let me = Greenlet::current();
    for (_, link) in links {
        match link {
            Link::Notice(n) => n(),
            Link::Callback(cb) => run_callback(core, &me, cb),
        }
    }
    if !core.handle_alive.get() {
        // The callbacks have seen it; nobody else can.
        core.discard();
    }
}

/// Runs `cb` with the join state (the result not borrowed meanwhile, so
/// the callback may use the handle). A panic in it is reported, not raised.
pub(super) fn run_callback(core: &JoinCore, g: &Greenlet, cb: Callback) {
    core.taken.set(true);
    let r = panic::catch_unwind(AssertUnwindSafe(|| cb(g, core)));
    if let Err(p) = r {
        if !p.is::<GreenletExit>() {
            let msg = super::spawn::take_last_panic().unwrap_or_else(|| panic_message(p.as_ref()));
            eprintln!("greenhouse: a completion callback panicked: {msg}");
        }
    }
}

/// Reports a panic that nobody will see on stderr.
pub(super) fn report_if_panicked(error: Option<&Error>) {
    if let Some(Error::Panicked(p)) = error {
        eprintln!(
            "greenhouse: greenlet '{}' panicked and nobody joined it: {}",
            p.name(),
            p.message()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_back_as_it_was_put() {
        let core = JoinCore::default();
        assert!(core.take::<u32>().is_none());
        core.put::<u32>(Ok(7));
        assert!(core.has_result());
        assert_eq!(core.with_error(|e| e.cloned()), None);
        assert_eq!(core.take::<u32>(), Some(Ok(7)));
        assert!(!core.has_result());
        core.put::<u32>(Err(Error::Killed));
        assert_eq!(core.with_error(|e| e.cloned()), Some(Error::Killed));
        assert_eq!(core.take::<u32>(), Some(Err(Error::Killed)));
        // An `Error` as the value is a value, not a failure.
        core.put::<Error>(Ok(Error::Closed));
        assert_eq!(core.with_error(|e| e.cloned()), None);
        assert_eq!(core.take::<Error>(), Some(Ok(Error::Closed)));
    }

    #[test]
    fn a_result_of_another_type_is_an_error_not_a_panic() {
        let core = JoinCore::default();
        core.put::<u32>(Ok(7));
        assert!(matches!(
            core.take::<String>(),
            Some(Err(Error::WrongType { .. }))
        ));
    }
}
