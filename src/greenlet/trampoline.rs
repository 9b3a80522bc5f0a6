//! The one place that resumes coroutines.
//!
//! corosensei is asymmetric: a coroutine can only suspend back to whoever
//! resumed it. greenhouse builds greenlet's any-to-any `switch` on top of
//! that by letting only the main greenlet resume coroutines: every switch
//! between two greenlets is `A suspends → main's loop ([`drive`]) → resume B`.
//! The loop runs on the main greenlet's stack, inside whatever blocking call
//! main is in; when it has nothing to resume it asks the hub ([`Schedule`]).

use std::rc::Rc;

use corosensei::CoroutineResult;

use super::inner::{self, Inner, State};
use super::payload::{Msg, Outcome, Req, Wake};

/// What the hub provides to the trampoline.
pub(crate) trait Schedule {
    /// Picks the next greenlet to resume and the message to resume it with;
    /// runs timers and waits on the poller as needed. `None` means nothing
    /// can ever become ready again (deadlock).
    fn next(&self) -> Option<(Rc<Inner>, Msg)>;

    /// Takes ownership of a suspended greenlet whose last handle was dropped,
    /// to unwind it with `GreenletExit` from a scheduling point.
    fn adopt(&self, orphan: Rc<Inner>);

    /// A finished greenlet's outcome had nobody to go to.
    fn unhandled(&self, dead: &Inner, outcome: Outcome);
}

/// Suspends the running greenlet with `req` and returns what it is resumed
/// with. From main this runs the trampoline loop in place.
pub(crate) fn suspend(req: Req) -> Msg {
    let cur = inner::current_ptr();
    // SAFETY: CURRENT is live (inner.rs invariant).
    let cur = unsafe { &*cur };
    if cur.is_main {
        let first = match req {
            Req::Switch(target, msg) => Some((target, msg)),
            Req::Schedule => None,
        };
        return drive(first);
    }
    let y = cur.yielder.get();
    debug_assert!(!y.is_null());
    // SAFETY: `yielder` was set by this greenlet's body when it started and
    // points into its own stack; the greenlet is running (it is CURRENT), so
    // we are executing on that stack inside `Coroutine::resume`, which is
    // exactly when `Yielder::suspend` may be called.
    unsafe { (*y).suspend(req) }
}

/// The trampoline loop, on main's stack. Resumes greenlets until one hands
/// control to main, and returns main's message.
fn drive(mut next: Option<(Rc<Inner>, Msg)>) -> Msg {
    let main = inner::main_ptr();
    let outer = inner::in_scheduler();
    inner::set_in_scheduler(true);
    let msg = loop {
        let (g, msg) = match next.take() {
            Some(x) => x,
            None => match inner::scheduler().and_then(|s| s.next()) {
                Some(x) => x,
                None => break Msg::Wake(Wake::Deadlock),
            },
        };
        if g.is_main {
            break msg;
        }
        g.state.set(State::Running);
        let raw = Rc::into_raw(g);
        inner::set_current(raw);
        inner::set_in_scheduler(false);
        // SAFETY: `raw` came from `Rc::into_raw` just above; we own that
        // count until `from_raw` below.
        let g_ref = unsafe { &*raw };
        let result = {
            let mut coro = g_ref.coro.borrow_mut();
            match coro.as_mut() {
                Some(c) if !c.done() => Some(c.resume(msg)),
                _ => None,
            }
        };
        inner::set_in_scheduler(true);
        inner::set_current(main);
        // SAFETY: matches the `into_raw` above.
        let g = unsafe { Rc::from_raw(raw) };
        next = match result {
            Some(CoroutineResult::Yield(Req::Switch(target, m))) => Some((target, m)),
            Some(CoroutineResult::Yield(Req::Schedule)) => None,
            Some(CoroutineResult::Return(outcome)) => finish(&g, outcome),
            None => {
                // A greenlet without a live coroutine cannot be resumed; it
                // is dead. (Only reachable through a bookkeeping bug.)
                g.bury();
                None
            }
        };
    };
    inner::set_in_scheduler(outer);
    // SAFETY: main is live for the thread's life.
    unsafe { (*main).state.set(State::Running) };
    msg
}

/// Buries a finished greenlet and finds who receives its outcome: the
/// nearest live ancestor waiting in a `switch` (or not started yet). A
/// spawned greenlet, or one whose ancestors are all dead or blocked in the
/// hub, hands its outcome to the hub.
fn finish(g: &Rc<Inner>, outcome: Outcome) -> Option<(Rc<Inner>, Msg)> {
    let mut parent = g.parent.borrow().clone();
    g.bury();
    if !g.spawned {
        while let Some(p) = parent {
            match p.state.get() {
                State::Suspended | State::NotStarted => return Some((p, outcome.into_msg())),
                State::Dead => parent = p.parent.borrow().clone(),
                _ => break,
            }
        }
    }
    if let Some(s) = inner::scheduler() {
        s.unhandled(g, outcome);
    } else if let Outcome::Panicked(p) = outcome {
        crate::error::report_unhandled(&g.name(), &p);
    }
    None
}
