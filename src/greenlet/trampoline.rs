//! The one place that resumes greenlets' coroutines (generators resume their own).
//!
//! corosensei is asymmetric: a coroutine can only suspend back to whoever
//! resumed it. greenhouse builds greenlet's any-to-any `switch` on top of
//! that by letting only the main greenlet resume coroutines: every switch
//! between two greenlets is `A suspends → main's loop ([`drive`]) → resume B`.
//! The loop runs on the main greenlet's stack, inside whatever blocking call
//! main is in; when it has nothing to resume it asks the hub ([`Schedule`]).
//!
//! Messages do not travel through corosensei: the sender puts the message
//! in the receiver's `pending` slot (its inbox) and suspends with only the
//! target; the receiver takes its inbox when it runs again.

use std::ptr::NonNull;
use std::rc::Rc;

use corosensei::CoroutineResult;

use super::copy;
use super::inner::{self, Inner, Resume, State};
use super::payload::{Msg, Outcome, Resumed, Woke};

/// What the hub provides to the trampoline.
pub(crate) trait Schedule {
    /// Picks the next greenlet to resume (its message is in its `pending`
    /// slot); runs timers and waits on the poller as needed. `None` means
    /// nothing can ever become ready again (deadlock).
    fn next(&self) -> Option<Rc<Inner>>;

    /// A finished greenlet's outcome had nobody to go to.
    fn unhandled(&self, dead: &Inner, outcome: Outcome);

    /// `g` is about to run (feature `tracing`: its span is entered).
    #[cfg(feature = "tracing")]
    fn resuming(&self, g: &Inner);

    /// `g` suspended or finished (feature `tracing`: its span is exited).
    #[cfg(feature = "tracing")]
    fn suspended(&self, g: &Inner);
}

/// Passes a greenlet's suspension out of a nested coroutine (a generator
/// the greenlet is resuming) to the frame that resumed that coroutine.
///
/// corosensei lets a coroutine suspend only through its own `Yielder`, on
/// its own stack. When greenlet code running on a generator's stack must
/// suspend the greenlet (it parks, or switches), the generator yields this
/// request to whoever resumed it, on the stack below; that frame suspends
/// the greenlet (forwarding again if it is itself inside a generator) and
/// resumes the generator with the message the greenlet was woken with.
pub(crate) trait Forward {
    /// Suspends the greenlet as [`suspend`] would, from the resumer's frame.
    fn suspend(&self, target: Option<Rc<Inner>>) -> Msg;
}

/// A thin pointer to a forwarder: it points at a `*const dyn Forward` kept
/// in the forwarding frame beside the forwarder itself, so the record
/// field that holds it is one word.
pub(crate) type ForwardPtr = NonNull<*const dyn Forward>;

/// Hands control to `target` (whose inbox the caller has filled), or to the
/// scheduler when `target` is `None`, and returns the message the current
/// greenlet is resumed with. From main this runs the trampoline loop in place.
#[inline(always)]
pub(crate) fn suspend(target: Option<Rc<Inner>>) -> Msg {
    suspend_then::<true, _>(target, Inner::take_msg, |_, m| m)
}

/// [`suspend`] to the scheduler for a park: returns what the greenlet was
/// resumed with in one byte ([`Inbox::take_wake`](super::payload::Inbox::take_wake)),
/// without a message-sized slot in the caller's frame (the frame a parked
/// greenlet keeps, and a copy-stack greenlet copies). `INLINE` as for
/// [`suspend_then`]: out of line, the caller's frame saves only the few
/// registers it keeps across the call (an inline switch clobbers all of
/// them, so its caller saves six and spills what it keeps), and a
/// page-stack park pays a mispredicted return (`scheduler::suspend_paged`).
#[inline(always)]
pub(crate) fn suspend_wake<const INLINE: bool>() -> Resumed {
    suspend_then::<INLINE, _>(
        None,
        |cur| cur.pending.take_wake(),
        |cur, m| m.into_resumed(&cur.pending),
    )
}

/// The body of [`suspend`]: `take` reads the current greenlet's inbox when
/// it is resumed on its own stack; `convert` turns the message of the rare
/// paths (main, a forwarding generator) into the same result, out of line.
/// `INLINE` inlines a page-stack greenlet's switch (the greenlet-to-greenlet
/// path, for speed).
#[inline(always)]
fn suspend_then<const INLINE: bool, R>(
    target: Option<Rc<Inner>>,
    take: impl FnOnce(&Inner) -> R,
    convert: impl FnOnce(&Inner, Msg) -> R,
) -> R {
    let cur = inner::current_ptr();
    // SAFETY: CURRENT is live (inner.rs invariant), and stays live across
    // the suspension below: a non-main greenlet's record is owned by its
    // own body frame, which is alive for as long as any frame above it is
    // (on its stack, or on a generator's stack it resumed: inner.rs,
    // Ownership); main's is owned by the thread context.
    let cur = unsafe { &*cur };
    if let Some(f) = cur.forward.get() {
        return converted(cur, || forwarded(f, target), convert);
    }
    if cur.is_main {
        return converted(cur, || drive(target), convert);
    }
    let y = cur.yielder.get();
    debug_assert!(!y.is_null());
    // SAFETY: `yielder` was set by this greenlet's body when it started and
    // points into its own stack; the greenlet is running (it is CURRENT), so
    // we are executing on that stack inside `Coroutine::resume`, which is
    // exactly when `Yielder::suspend` may be called (for a copy-stack
    // greenlet, its bytes are in place: `copy::enter` ran before the resume).
    let y_ref = unsafe { &*y };
    let mut resumed = match cur.copied.get() {
        None if INLINE => y_ref.suspend(target),
        None => switch_own(y_ref, target),
        Some(cp) => copy::switch_out(y_ref, target, cp.sp()),
    };
    // Resumed only to run a routine here (`run_on_stack`): run it and hand
    // control straight back to whoever resumed us.
    while let Some(routine) = resumed {
        resumed = on_stack(cur, y, routine);
    }
    take(cur)
}

/// A page-stack greenlet's switch, out of line (see [`suspend_wake`]).
#[inline(never)]
fn switch_own(y: &inner::GreenletYielder, target: Option<Rc<Inner>>) -> Resume {
    y.suspend(target)
}

/// `convert(cur, get())`, out of line: the message's slot lives in this
/// frame, not in the suspending caller's.
#[inline(never)]
fn converted<R>(
    cur: &Inner,
    get: impl FnOnce() -> Msg,
    convert: impl FnOnce(&Inner, Msg) -> R,
) -> R {
    convert(cur, get())
}

/// Runs `routine` for [`run_on_stack`] and suspends back to its caller.
#[cold]
#[inline(never)]
fn on_stack(cur: &Inner, y: *const inner::GreenletYielder, routine: fn()) -> Resume {
    // A panic must not unwind this greenlet's frames: it would run its
    // destructors without anyone having asked it to stop.
    let _ = std::panic::catch_unwind(routine);
    // SAFETY: as in `suspend`: we are running on this greenlet's own stack
    // inside the `Coroutine::resume` of `run_on_stack`, and `y` is the
    // greenlet's live yielder.
    let y = unsafe { &*y };
    match cur.copied.get() {
        None => y.suspend(None),
        Some(cp) => copy::switch_out(y, None, cp.sp()),
    }
}

/// Runs `routine` on `g`'s stack, on top of the frames where `g` is
/// suspended, and returns: `g` is resumed with the routine as its resume
/// value, runs it inside its own `suspend` (above), and suspends back at
/// once. None of `g`'s own code runs, its inbox and state are untouched,
/// and the routine sees `g` as the running greenlet. The hub's dump uses
/// it to capture each greenlet's backtrace. Returns false (running
/// nothing) unless `g` is a started, unfinished greenlet that is not
/// running now: suspended in a switch, or blocked in the hub.
///
/// Called from any greenlet's stack: the resume nests (corosensei returns
/// to whoever resumed), which is sound because `g` is not on the chain of
/// running coroutines (only main resumes greenlets, and `g` is not
/// running), and its coroutine is not borrowed (only `drive` borrows one,
/// that of the running greenlet).
pub(crate) fn run_on_stack(g: &Rc<Inner>, routine: fn()) -> bool {
    if g.is_main || !matches!(g.state.get(), State::Suspended | State::Blocked) {
        return false;
    }
    let Ok(mut coro) = g.coro.try_borrow_mut() else {
        return false;
    };
    let Some(c) = coro.made().filter(|c| c.started() && !c.done()) else {
        return false;
    };
    // A copy-stack greenlet's bytes must be in place; not possible when its
    // run stack's resident is running (this very call, perhaps).
    if !copy::enter(g) {
        return false;
    }
    let prev = inner::current_ptr();
    inner::set_current(Rc::as_ptr(g));
    let r = c.resume(Some(routine));
    inner::set_current(prev);
    debug_assert!(matches!(r, CoroutineResult::Yield(None)));
    true
}

/// [`suspend`] from code running inside a generator: out of line, so that
/// the common path stays small enough for corosensei's suspend to inline.
#[cold]
#[inline(never)]
fn forwarded(f: ForwardPtr, target: Option<Rc<Inner>>) -> Msg {
    // SAFETY: `forward` is set only while the generator it points into is
    // being resumed by this greenlet, and points at that generator's
    // pointer to its forwarder, both of which live on the generator's stack
    // for the whole resume (generator/mod.rs sets and restores it around
    // `Coroutine::resume`). We are running inside that resume.
    unsafe { (**f.as_ptr()).suspend(target) }
}

/// The trampoline loop, on main's stack. Resumes greenlets until one hands
/// control to main, and returns main's message.
///
/// When nobody was handed control (a greenlet parked, yielded or finished
/// into the hub), the doomed greenlets are killed first (inner.rs,
/// Ownership): this is the scheduling point where no switched value is in
/// flight and no greenlet waits to be resumed, so running them disturbs
/// nobody.
fn drive(mut next: Option<Rc<Inner>>) -> Msg {
    let main = inner::main_ptr();
    let outer = inner::in_scheduler();
    inner::set_in_scheduler(true);
    loop {
        let g = match next.take().or_else(inner::take_doomed) {
            Some(g) => g,
            None => match inner::with_scheduler(|s| s.and_then(|s| s.next())) {
                Some(g) => g,
                None => {
                    // Nothing can run again: tell main instead of hanging.
                    // SAFETY: main is live for the thread's life.
                    unsafe { (*main).put_msg(Msg::Wake(Woke::Deadlock)) };
                    break;
                }
            },
        };
        if g.is_main {
            break;
        }
        if !copy::enter(&g) {
            // Only at thread teardown (no run stacks any more): it can
            // never run again.
            g.bury();
            continue;
        }
        g.state.set(State::Running);
        let raw = Rc::into_raw(g);
        inner::set_current(raw);
        inner::set_in_scheduler(false);
        // SAFETY: `raw` came from `Rc::into_raw` just above; we own that
        // count until `from_raw` below.
        let g_ref = unsafe { &*raw };
        #[cfg(feature = "tracing")]
        inner::with_scheduler(|s| s.map(|s| s.resuming(g_ref)));
        let mut ended = Ended::No;
        let target = resume(g_ref, &mut ended);
        #[cfg(feature = "tracing")]
        inner::with_scheduler(|s| s.map(|s| s.suspended(g_ref)));
        inner::set_in_scheduler(true);
        inner::set_current(main);
        // SAFETY: matches the `into_raw` above.
        let g = unsafe { Rc::from_raw(raw) };
        next = match ended {
            Ended::No => target,
            Ended::Returned(outcome) => finish(&g, outcome),
            Ended::Dead => {
                // A greenlet without a live coroutine cannot be resumed; it
                // is dead. (Only reachable through a bookkeeping bug.)
                g.bury();
                None
            }
        };
    }
    inner::set_in_scheduler(outer);
    // SAFETY: main is live for the thread's life.
    let main = unsafe { &*main };
    main.state.set(State::Running);
    main.take_msg()
}

/// How a [`resume`] ended when it did not yield.
enum Ended {
    /// It yielded: the returned target is who runs next.
    No,
    /// The greenlet's body finished with this outcome.
    Returned(Outcome),
    /// It had no live coroutine to resume.
    Dead,
}

/// Resumes `g`'s coroutine until it yields (returning who runs next) or
/// returns (`ended` then holds the outcome).
///
/// The hot result, a yield's target, comes back in a register: returning
/// corosensei's whole `CoroutineResult` made the caller copy it with one
/// 16-byte load over two 8-byte stores, a store-forwarding stall that
/// cost a third of a greenlet-to-greenlet switch.
#[inline(never)]
fn resume(g: &Inner, ended: &mut Ended) -> Option<Rc<Inner>> {
    let mut coro = g.coro.borrow_mut();
    match coro.made() {
        Some(c) if !c.done() => match c.resume(None) {
            CoroutineResult::Yield(target) => target,
            CoroutineResult::Return(ending) => {
                *ended = Ended::Returned(Outcome::of_ending(ending));
                None
            }
        },
        _ => {
            *ended = Ended::Dead;
            None
        }
    }
}

/// Buries a finished greenlet and finds who receives its outcome: the
/// nearest live ancestor waiting in a `switch` (or not started yet). A
/// spawned greenlet, one killed because it was unreachable, or one whose
/// ancestors are all dead or blocked in the hub, hands its outcome to the
/// hub.
fn finish(g: &Rc<Inner>, outcome: Outcome) -> Option<Rc<Inner>> {
    g.bury();
    if let Outcome::Done = outcome {
        return None; // a spawned greenlet already delivered its result
    }
    let up = |g: &Inner| g.parent_rc();
    let mut parent = up(g);
    if !g.spawned && !g.reaped.get() {
        while let Some(p) = parent {
            match p.state.get() {
                State::Suspended | State::NotStarted => {
                    p.put_msg(outcome.into_msg());
                    return Some(p);
                }
                State::Dead => parent = up(&p),
                _ => break,
            }
        }
    }
    inner::with_scheduler(|s| match s {
        Some(s) => s.unhandled(g, outcome),
        None => {
            if let Outcome::Panicked(p) = outcome {
                crate::error::report_unhandled(&g.name(), &p);
            }
        }
    });
    None
}
