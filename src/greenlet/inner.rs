//! The greenlet record ([`Inner`]) and the per-thread context that knows
//! which greenlet is running.
//!
//! # Ownership
//!
//! Who keeps a record alive, and why no reference can dangle:
//!
//! - **Main** is owned by the thread context ([`Ctx`]) for the thread's life.
//! - **A started, unfinished greenlet owns itself**: the first thing its
//!   body does on its own stack is take a strong `Rc` to its record
//!   (`create` in `mod.rs`), and that frame lives until the body returns.
//!   So while the greenlet has frames, its record cannot be freed, whoever
//!   drops what. A frame that holds `&Inner` across a suspension (the
//!   trampoline's `suspend`) is below that `Rc` on the same stack.
//! - **A record without frames** (not started, or dead) is owned by whoever
//!   holds an `Rc`: handles, the hub's queues and tokens, `drive`.
//! - A suspended greenlet whose every [`Handle`] is gone (user handles and
//!   children's parent links) can never be switched to again. It is
//!   *doomed*: queued here, and the trampoline raises `GreenletExit` in it
//!   at the next point where nobody was handed control (`drive`, before it
//!   asks the hub who runs next). Nothing frees it meanwhile (it owns
//!   itself); it is freed after it dies.
//! - A coroutine is only dropped when it is finished or never started
//!   (`bury`, or the record's last `Rc`): corosensei's forced unwind of a
//!   suspended coroutine never runs.
//!
//! **Architecture Invariant:** `CURRENT` always points at a live `Inner`:
//! main's (owned by [`Ctx`]) or the greenlet the trampoline is resuming
//! (owned by its own frame and by the trampoline's reference).

use std::cell::{Cell, RefCell};
use std::panic::Location;
use std::rc::Rc;

use corosensei::{Coroutine, Yielder};

use super::payload::{Ending, Expect, Inbox, Msg};
use super::trampoline::{ForwardPtr, Schedule};
use crate::hub::Slot;
use crate::stack::GreenletStack;

/// What a greenlet's coroutine is resumed with: `None` to run on (its
/// messages go through `Inner::pending`), or a routine to run on its stack
/// at its suspension point before suspending back at once (the hub's
/// stack dump, `trampoline::run_on_stack`).
pub(crate) type Resume = Option<fn()>;

/// The coroutine type every greenlet runs on; it yields who runs next.
pub(crate) type Coro = Coroutine<Resume, Option<Rc<Inner>>, Ending, GreenletStack>;

/// A greenlet's coroutine, or what makes it.
pub(crate) enum CoroSlot {
    /// None: main's, or a buried greenlet's.
    Empty,
    /// A copy-stack greenlet that has not run yet: what makes its
    /// coroutine on its run stack at its first run (`copy::enter`). Kept
    /// here rather than beside the copy-stack part, so the two share the
    /// slot's 48 bytes.
    Start(super::copy::Start),
    /// Its coroutine.
    Made(Coro),
}

impl CoroSlot {
    /// The coroutine, once it is made.
    #[inline]
    pub(crate) fn made(&mut self) -> Option<&mut Coro> {
        match self {
            CoroSlot::Made(c) => Some(c),
            _ => None,
        }
    }
}

/// The yielder of a greenlet's coroutine.
pub(crate) type GreenletYielder = Yielder<Resume, Option<Rc<Inner>>>;

/// Where a greenlet is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Created, never switched to.
    NotStarted,
    /// Its code is executing now (it is `current()`).
    Running,
    /// Waiting in an explicit `switch` for a value.
    Suspended,
    /// Owned by the scheduler: parked in the hub (waiting for an event, a
    /// timer or a join) or queued to run. Which of the two is the hub's
    /// business (`hub::Slot::queued`).
    Blocked,
    /// Its body returned, panicked or was killed.
    Dead,
}

/// One greenlet. Shared through `Rc`; never leaves its thread.
pub(crate) struct Inner {
    pub(crate) id: u64,
    /// Its name, if its builder gave one: boxed twice so that the field is
    /// one word (most greenlets have none, every record pays the field).
    #[allow(clippy::redundant_allocation)]
    pub(crate) name: Option<Box<Box<str>>>,
    pub(crate) is_main: bool,
    /// Managed by the hub (spawned): finishes into the hub, not a parent.
    pub(crate) spawned: bool,
    pub(crate) state: Cell<State>,
    /// The type the greenlet waits for while `NotStarted` or `Suspended`.
    pub(crate) expects: Expect,
    /// `None` for main and for spawned greenlets (their parent is the hub).
    /// A counted [`Handle`]: a child can deliver its result here, so the
    /// parent is reachable while the child exists.
    /// (A `Cell`, read by taking and putting back: a word smaller than a
    /// `RefCell`; see [`Inner::parent_rc`].)
    pub(crate) parent: Cell<Option<Handle>>,
    /// Live [`Handle`]s: user handles and children's parent links. The
    /// trampoline's, the hub's and the greenlet's own references are not
    /// counted: they do not make it reachable by `switch`. 32 bits, so it
    /// shares a word with the flags (the process aborts on overflow, as
    /// `Rc` does).
    pub(crate) handles: Cell<u32>,
    /// Killed because it became unreachable: its outcome goes to nobody.
    pub(crate) reaped: Cell<bool>,
    pub(crate) coro: RefCell<CoroSlot>,
    /// The coroutine's stack, `(top, bottom)`; `(0, 0)` for main. Kept
    /// here because the coroutine is borrowed while it runs.
    pub(crate) stack: Cell<(usize, usize)>,
    /// Set by the body on first resume; valid while the coroutine lives.
    pub(crate) yielder: Cell<*const GreenletYielder>,
    /// While this greenlet resumes a generator: that generator's forwarder
    /// (see [`Forward`](super::trampoline::Forward)); its suspensions go
    /// through it.
    pub(crate) forward: Cell<Option<ForwardPtr>>,
    /// Its inbox: the message it will find when it is next resumed.
    pub(crate) pending: Inbox,
    /// Where it was created (`#[track_caller]` of `Greenlet::new` and
    /// `spawn`), and the id of the greenlet that created it.
    pub(crate) created_at: Cell<Option<&'static Location<'static>>>,
    pub(crate) creator: Cell<u64>,
    /// Its neighbours in this thread's list of records (see [`register`]);
    /// both null while it is not in the list.
    prev: Cell<*const Inner>,
    next: Cell<*const Inner>,
    /// The extension slot owned by the hub (its park state, `Timeout`
    /// scopes, deferred exit, greenlet-locals). This layer never reads it.
    pub(crate) ext: Slot,
    /// A copy-stack greenlet's run stack binding and saved bytes
    /// (`copy.rs`); read through `Copied::get`, which is `None` for a
    /// greenlet with a stack of its own.
    pub(crate) copied: super::copy::Copied,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.is_main {
            detach_all(self);
        } else {
            unlink(self);
        }
    }
}

// The list of records, for the hub's dump: an intrusive doubly linked list
// through `prev`/`next`, headed by main's record, so adding and removing a
// greenlet are a few stores (a spawn pays no allocation for it).
//
// **Invariant:** every record reachable from main through `next` (and
// every non-null `prev`/`next` of a linked record) is alive, with a strong
// count of at least one. It holds because
// - a record is linked only by `register`, from an `Rc` (alive), and
// - it unlinks itself first thing in its own `Drop`, before any field is
//   dropped (field destructors, such as a never-started greenlet's
//   closure, may run user code that walks the list), and before its
//   memory is freed; records whose strong count reached zero are exactly
//   those whose `Drop` has begun, so none is still linked;
// - main's record is freed only at thread teardown (`Ctx::drop`), and its
//   `Drop` first detaches every record still linked (nulling their links),
//   so a record that outlives main never touches it.
// Everything happens on the owning thread: records are `!Send`.

/// Links `g`, a record that is not in the list (a new one: `create`
/// calls this once per record), into this thread's list, right after main.
pub(crate) fn register(g: &Rc<Inner>) {
    let head = MAIN.try_with(Cell::get).unwrap_or(std::ptr::null());
    if head.is_null() {
        return; // thread teardown: no list any more
    }
    // SAFETY: `head` is main's record, alive while MAIN is non-null (it is
    // nulled in `Ctx::drop` before main is released); `next` is null or a
    // linked record, alive by the list invariant.
    unsafe {
        let h = &*head;
        let next = h.next.get();
        g.prev.set(head);
        g.next.set(next);
        if let Some(n) = next.as_ref() {
            n.prev.set(Rc::as_ptr(g));
        }
        h.next.set(Rc::as_ptr(g));
    }
}

/// Takes a record out of the list (from its `Drop`).
fn unlink(g: &Inner) {
    let prev = g.prev.replace(std::ptr::null());
    let next = g.next.replace(std::ptr::null());
    if prev.is_null() {
        return; // never linked, or detached when main went
    }
    // SAFETY: `prev` and `next` are linked neighbours of a record that was
    // linked until now: alive by the list invariant.
    unsafe {
        (*prev).next.set(next);
        if let Some(n) = next.as_ref() {
            n.prev.set(prev);
        }
    }
}

/// Main's record is going (thread teardown): empties the list, so records
/// that outlive main have no links to follow.
fn detach_all(main: &Inner) {
    let mut p = main.next.replace(std::ptr::null());
    // SAFETY: each `p` is a linked record, alive by the list invariant;
    // nulling its links drops nothing.
    while let Some(g) = unsafe { p.as_ref() } {
        p = g.next.replace(std::ptr::null());
        g.prev.set(std::ptr::null());
    }
}

/// Every greenlet record of this thread that is not dead, main first, in
/// no particular order after that.
pub(crate) fn live_records() -> Vec<Rc<Inner>> {
    let main = main_rc();
    let mut p = main.next.get();
    let mut out = vec![main];
    // SAFETY: each `p` is a linked record, alive by the list invariant;
    // taking counts drops nothing, so the list does not change meanwhile.
    while let Some(g) = unsafe { p.as_ref() } {
        p = g.next.get();
        if !g.is_dead() {
            // SAFETY: `g` lives in an `Rc` allocation (only `register`
            // links, from an `Rc`) whose strong count is at least one (list
            // invariant): a new count, owned by the `Rc` made from it.
            out.push(unsafe {
                Rc::increment_strong_count(g);
                Rc::from_raw(g)
            });
        }
    }
    out
}

impl Inner {
    pub(crate) fn new(
        name: Option<Box<str>>,
        spawned: bool,
        parent: Option<Handle>,
        expects: Expect,
    ) -> Self {
        Inner {
            id: next_id(),
            name: name.map(Box::new),
            is_main: false,
            spawned,
            state: Cell::new(State::NotStarted),
            expects,
            parent: Cell::new(parent),
            handles: Cell::new(0),
            reaped: Cell::new(false),
            coro: RefCell::new(CoroSlot::Empty),
            stack: Cell::new((0, 0)),
            yielder: Cell::new(std::ptr::null()),
            forward: Cell::new(None),
            pending: Inbox::default(),
            created_at: Cell::new(None),
            creator: Cell::new(0),
            prev: Cell::new(std::ptr::null()),
            next: Cell::new(std::ptr::null()),
            ext: Slot::default(),
            copied: super::copy::Copied::own(),
        }
    }

    /// Makes this a copy-stack greenlet's record.
    pub(crate) fn with_copied(mut self, copied: super::copy::Copied) -> Self {
        self.copied = copied;
        self
    }

    fn new_main() -> Self {
        let mut inner = Inner::new(Some("main".into()), false, None, Expect::of::<()>());
        inner.is_main = true;
        // The thread context's own handle: main is always reachable, so a
        // switch from main never looks unreachable (one compare saved on
        // every switch).
        inner.handles.set(1);
        inner.state.set(State::Running);
        inner
    }

    /// Puts `msg` in the inbox (replacing, and dropping, anything there).
    #[inline(always)]
    pub(crate) fn put_msg(&self, msg: Msg) {
        self.pending.put(msg);
    }

    /// Takes the inbox (a plain wake-up if it is empty).
    #[inline(always)]
    pub(crate) fn take_msg(&self) -> Msg {
        match self.pending.take() {
            Msg::Empty => Msg::Wake(super::payload::Woke::Ready),
            m => m,
        }
    }

    /// Its parent's record, if it has one.
    pub(crate) fn parent_rc(&self) -> Option<Rc<Inner>> {
        // Moving the handle out and back changes no count.
        let p = self.parent.take();
        let rc = p.as_ref().map(|h| h.rc().clone());
        self.parent.set(p);
        rc
    }

    /// The greenlet's name: the one given to its builder, or `Greenlet-<id>`.
    pub(crate) fn name(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => format!("Greenlet-{}", self.id),
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.state.get() == State::Dead
    }

    /// Makes this greenlet `Dead` and releases its stack. Called by the
    /// trampoline after the coroutine returned.
    pub(crate) fn bury(&self) {
        self.state.set(State::Dead);
        super::copy::leave(self);
        self.yielder.set(std::ptr::null());
        let coro = std::mem::replace(&mut *self.coro.borrow_mut(), CoroSlot::Empty);
        match coro {
            // Dropping a suspended coroutine would force-unwind frames that
            // own this very record (see Ownership); never do that.
            CoroSlot::Made(c) if c.started() && !c.done() => std::mem::forget(c),
            c => drop(c),
        }
        run_exit_hook(self);
    }
}

/// A counted reference to a greenlet: what [`Greenlet`](super::Greenlet)
/// handles and parent links hold. When the last one goes while the
/// greenlet is suspended in a switch, it is doomed (see Ownership).
pub(crate) struct Handle(Rc<Inner>);

impl Handle {
    pub(crate) fn new(g: Rc<Inner>) -> Handle {
        // Four billion handles to one greenlet: abort, like `Rc`'s count.
        let n = g
            .handles
            .get()
            .checked_add(1)
            .unwrap_or_else(|| std::process::abort());
        g.handles.set(n);
        Handle(g)
    }

    #[inline]
    pub(crate) fn rc(&self) -> &Rc<Inner> {
        &self.0
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        Handle::new(self.0.clone())
    }
}

impl std::ops::Deref for Handle {
    type Target = Inner;
    #[inline]
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let n = self.0.handles.get() - 1;
        self.0.handles.set(n);
        if n == 0 && self.0.state.get() == State::Suspended {
            doom(&self.0);
        }
    }
}

/// Queues a greenlet that nobody can switch to any more, to be killed by
/// the trampoline at its next scheduling point.
pub(crate) fn doom(g: &Rc<Inner>) {
    if g.is_main {
        return;
    }
    let queued = DOOMED.try_with(|d| d.borrow_mut().push(g.clone()));
    if queued.is_ok() {
        HAS_DOOMED.with(|f| f.set(true));
    }
    // During thread teardown there is nothing left to run it: it stays
    // suspended, owning itself (leaked, like an OS thread at process exit).
}

/// The next doomed greenlet that is still unreachable and suspended, with
/// `GreenletExit` in its inbox and its outcome bound for nobody.
#[inline]
pub(crate) fn take_doomed() -> Option<Rc<Inner>> {
    if !HAS_DOOMED.with(Cell::get) {
        return None;
    }
    take_doomed_slow()
}

#[cold]
fn take_doomed_slow() -> Option<Rc<Inner>> {
    loop {
        let g = DOOMED
            .try_with(|d| {
                let mut d = d.borrow_mut();
                let g = d.pop();
                if d.is_empty() {
                    HAS_DOOMED.with(|f| f.set(false));
                }
                g
            })
            .ok()
            .flatten()?;
        if g.handles.get() == 0 && g.state.get() == State::Suspended {
            g.reaped.set(true);
            g.put_msg(Msg::Throw);
            return Some(g);
        }
        // Reachable again, or no longer suspended: not ours to kill. It is
        // dropped here, outside the list's borrow (dropping a record may
        // doom its parent, which pushes onto the list).
        drop(g);
    }
}

/// Builds an `Inner` directly in its `Rc` allocation (a plain `Rc::new`
/// copies the 200-byte record from the stack: a `memcpy` per spawn).
#[inline]
pub(crate) fn new_rc(make: impl FnOnce() -> Inner) -> Rc<Inner> {
    let mut rc = Rc::<Inner>::new_uninit();
    Rc::get_mut(&mut rc)
        .expect("a fresh Rc is unique")
        .write(make());
    // SAFETY: the value was fully initialised by `write` just above.
    unsafe { rc.assume_init() }
}

/// What the layers above run when a greenlet's body ends (on its own
/// stack) and again when it is buried: installed once per process.
static EXIT_HOOK: std::sync::OnceLock<fn(&Inner)> = std::sync::OnceLock::new();

/// Installs the exit hook (later calls with the same hook are no-ops).
pub(crate) fn set_exit_hook(hook: fn(&Inner)) {
    let _ = EXIT_HOOK.set(hook);
}

/// Runs the exit hook, if one is installed.
#[inline]
pub(crate) fn run_exit_hook(g: &Inner) {
    if let Some(h) = EXIT_HOOK.get() {
        h(g);
    }
}

/// A fresh number, unique on this thread (greenlet ids, `Timeout` scopes).
pub(crate) fn next_id() -> u64 {
    thread_local! { static NEXT: Cell<u64> = const { Cell::new(1) }; }
    NEXT.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    })
}

/// Per-thread context: the main greenlet and the installed scheduler.
struct Ctx {
    main: *const Inner,
    sched: RefCell<Option<Rc<dyn Schedule>>>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(std::ptr::null()));
        MAIN.with(|m| m.set(std::ptr::null()));
        SCHED.with(|s| s.set(None));
        drop(self.sched.borrow_mut().take());
        // SAFETY: `main` came from `Rc::into_raw` in `Ctx::new` and this is
        // the matching release.
        drop(unsafe { Rc::from_raw(self.main) });
    }
}

/// Calls `f` with the running greenlet's id and name (empty if it has
/// none), reading only: safe to call from a signal handler on this thread
/// (the blocked-hub detector's), which interrupts the greenlet that runs.
pub(crate) fn with_running_identity(f: impl FnOnce(u64, &[u8])) {
    let p = CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null());
    // SAFETY: a non-null CURRENT is the running greenlet: `drive` owns an
    // `Rc` count of it (`into_raw`) from before it sets CURRENT until after
    // it has set CURRENT back to main, and main's record lives as long as
    // the thread. The interrupted code cannot drop that count while the
    // handler runs on top of it.
    match unsafe { p.as_ref() } {
        Some(g) => f(g.id, g.name.as_deref().map_or(&[][..], |n| n.as_bytes())),
        None => f(0, b"main"),
    }
}

thread_local! {
    /// The running greenlet (raw for speed and for the overflow handler).
    static CURRENT: Cell<*const Inner> = const { Cell::new(std::ptr::null()) };
    /// This thread's main greenlet (null until the context exists).
    static MAIN: Cell<*const Inner> = const { Cell::new(std::ptr::null()) };
    /// The installed scheduler, for the trampoline's hot path. Points into
    /// the `Rc` that `Ctx::sched` owns; cleared before that `Rc` is dropped.
    static SCHED: Cell<Option<*const dyn Schedule>> = const { Cell::new(None) };
    /// Greenlets to kill at the next scheduling point (see [`doom`]).
    static DOOMED: RefCell<Vec<Rc<Inner>>> = const { RefCell::new(Vec::new()) };
    /// Whether `DOOMED` may be non-empty (read on every trampoline step).
    static HAS_DOOMED: Cell<bool> = const { Cell::new(false) };
    /// True while the trampoline itself (not greenlet or main code) runs.
    static IN_SCHEDULER: Cell<bool> = const { Cell::new(false) };
    static CTX: Ctx = {
        crate::stack::ensure_thread_ready();
        crate::stack::set_name_hook(name_hook);
        let main = Rc::into_raw(Rc::new(Inner::new_main()));
        CURRENT.with(|c| c.set(main));
        MAIN.with(|m| m.set(main));
        Ctx { main, sched: RefCell::new(None) }
    };
}

/// Overflow-handler hook: copies the running greenlet's name. Reads only
/// plain fields set before the greenlet first ran.
fn name_hook(buf: &mut [u8]) -> usize {
    let p = CURRENT.with(Cell::get);
    if p.is_null() {
        return 0;
    }
    // SAFETY: CURRENT points at a live Inner (module invariant); `name` and
    // `id` are never written after construction.
    let inner = unsafe { &*p };
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    match &inner.name {
        Some(name) => put(name.as_bytes()),
        None => {
            put(b"Greenlet-");
            let mut digits = [0u8; 24];
            put(crate::stack::fmt_usize(inner.id as usize, &mut digits));
        }
    }
    n
}

/// The running greenlet, as a borrowed pointer.
///
/// The returned reference is valid until the next switch; callers use it
/// only within the current step of the running greenlet.
#[inline(always)]
pub(crate) fn current_ptr() -> *const Inner {
    let p = CURRENT.with(Cell::get);
    if !p.is_null() {
        return p;
    }
    CTX.with(|c| c.main)
}

/// Runs `f` with the running greenlet.
#[inline(always)]
pub(crate) fn with_current<R>(f: impl FnOnce(&Inner) -> R) -> R {
    // SAFETY: module invariant: CURRENT is live, and nothing can switch
    // away (and so drop it) while `f` holds the borrow... except `f`
    // itself, which callers never let switch.
    f(unsafe { &*current_ptr() })
}

/// A new strong reference to the running greenlet.
pub(crate) fn current_rc() -> Rc<Inner> {
    let p = current_ptr();
    // SAFETY: `p` came from `Rc::into_raw` (main) or `Rc::into_raw` in the
    // trampoline, and is live; incrementing first makes `from_raw` own a
    // fresh count.
    unsafe {
        Rc::increment_strong_count(p);
        Rc::from_raw(p)
    }
}

/// A new strong reference to this thread's main greenlet.
pub(crate) fn main_rc() -> Rc<Inner> {
    let p = CTX.with(|c| c.main);
    // SAFETY: `main` came from `Rc::into_raw` and Ctx keeps it alive.
    unsafe {
        Rc::increment_strong_count(p);
        Rc::from_raw(p)
    }
}

/// Whether the running greenlet is a spawned one (safe to call from a
/// panic hook at any time, even during thread teardown).
pub(crate) fn current_is_spawned() -> bool {
    let p = CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null());
    // SAFETY: module invariant: a non-null CURRENT is live.
    !p.is_null() && unsafe { (*p).spawned && !(*p).is_main }
}

pub(crate) fn set_current(p: *const Inner) {
    CURRENT.with(|c| c.set(p));
}

#[inline]
pub(crate) fn main_ptr() -> *const Inner {
    let p = MAIN.with(Cell::get);
    if !p.is_null() {
        return p;
    }
    CTX.with(|c| c.main)
}

/// Whether the code running now may park: a scheduler is installed on this
/// thread and the trampoline itself is not running. Reads only constant
/// thread-locals without destructors, so it is safe at any time: before
/// `main`, on threads that never used greenhouse, and during thread exit.
#[cfg(feature = "monkey")]
#[inline]
pub(crate) fn may_park() -> bool {
    SCHED.with(|s| s.get().is_some()) && !IN_SCHEDULER.with(Cell::get)
}

pub(crate) fn in_scheduler() -> bool {
    IN_SCHEDULER.with(Cell::get)
}

pub(crate) fn set_in_scheduler(on: bool) {
    IN_SCHEDULER.with(|f| f.set(on));
}

/// Runs `f` with the installed scheduler, without touching its reference
/// count; `None` if there is none (or the thread is exiting).
#[inline]
pub(crate) fn with_scheduler<R>(f: impl FnOnce(Option<&dyn Schedule>) -> R) -> R {
    match SCHED.with(Cell::get) {
        // SAFETY: SCHED points into the Rc owned by `Ctx::sched`, which
        // lives until `Ctx::drop`, and that clears SCHED first.
        Some(p) => f(Some(unsafe { &*p })),
        None => f(None),
    }
}

/// Installs the hub as this thread's scheduler (once).
pub(crate) fn install_scheduler(s: Rc<dyn Schedule>) {
    CTX.with(|c| {
        SCHED.with(|p| p.set(Some(Rc::as_ptr(&s))));
        *c.sched.borrow_mut() = Some(s);
    });
}

#[cfg(test)]
mod size_tests {
    /// Every parked greenlet has a record: its size is part of a parked
    /// greenlet's memory (issue 21), so growing it should be a decision.
    /// It holds a spawned greenlet's join state (48 bytes, which took an
    /// allocation of 72 of its own before). (The `tracing` feature adds
    /// each greenlet's span, and corosensei's `sanitizer` feature, on in
    /// the ASan job, its coroutine's bounds.)
    #[cfg(not(any(feature = "tracing", greenhouse_asan)))]
    #[test]
    fn a_record_is_328_bytes() {
        assert_eq!(std::mem::size_of::<super::Inner>(), 328);
    }
}
