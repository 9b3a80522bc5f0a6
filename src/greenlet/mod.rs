//! Greenlets with explicit switch, with the semantics of Python's `greenlet`.
//!
//! A [`Greenlet`] wraps a closure that runs on its own pooled stack. Nothing
//! runs until the first [`switch`](Greenlet::switch); after that, control
//! moves only when some greenlet switches, returns, or blocks in the hub.
//!
//! **API Boundary:** everything here is safe and `!Send`. Misuse (switching
//! to a dead greenlet, a value of the wrong type, a parent cycle) is an
//! [`Error`], never a panic.

mod copy;
mod inner;
mod payload;
mod trampoline;

use std::fmt;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe, Location};
use std::rc::Rc;

use corosensei::Coroutine;

pub(crate) use copy::{default as copy_default, set_default as set_copy_default};
#[cfg(feature = "monkey")]
pub(crate) use inner::may_park;
use inner::{GreenletYielder, Resume};
pub(crate) use inner::{
    Handle, Inner, State, current_is_spawned, current_ptr, current_rc, install_scheduler,
    live_records, main_rc, next_id, set_exit_hook, with_current, with_running_identity,
};
pub(crate) use payload::{Expect, Msg, Outcome, Resumed, Woke, raise, raise_thrown};
pub use payload::{GreenletExit, ThrownError};
pub(crate) use trampoline::{Forward, ForwardPtr, Schedule, run_on_stack, suspend, suspend_wake};

use crate::error::Error;
use crate::stack;

/// A greenlet: a closure with its own stack that you switch into and out of.
///
/// Cloning a `Greenlet` clones the handle, not the greenlet. When the last
/// handle of a greenlet suspended in a switch is dropped (and no child of
/// it still exists, since a child's result goes to its parent), nothing can
/// switch to it again: [`GreenletExit`] is raised in it the next time the
/// hub gets control on this thread (any greenlet blocks, sleeps or
/// yields; [`yield_now`](crate::yield_now) is enough), so its destructors
/// run; its outcome goes to nobody. If it catches the exit and suspends in
/// a switch again while unreachable, it is killed again. Use
/// [`throw`](Greenlet::throw) to kill it at a moment of your choosing.
///
/// # Send
/// `Greenlet` is neither `Send` nor `Sync`: a greenlet belongs to the thread
/// that created it, and handing one to another thread is a compile error.
///
/// ```compile_fail
/// let g = greenhouse::Greenlet::new(|(): ()| ());
/// std::thread::spawn(move || drop(g));
/// ```
///
/// # Examples
///
/// Values travel both ways through `switch`:
///
/// ```
/// use greenhouse::Greenlet;
///
/// let doubler = Greenlet::new(|mut n: i32| loop {
///     // Hand 2n back to main; wait for the next n.
///     n = Greenlet::main().switch(n * 2).unwrap();
/// });
/// assert_eq!(doubler.switch::<i32, i32>(3).unwrap(), 6);
/// assert_eq!(doubler.switch::<i32, i32>(21).unwrap(), 42);
/// ```
#[derive(Clone)]
#[must_use = "a greenlet runs nothing until it is switched to"]
pub struct Greenlet {
    inner: Handle,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for Greenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Greenlet")
            .field("name", &self.inner.name())
            .field("state", &self.inner.state.get())
            .finish()
    }
}

impl PartialEq for Greenlet {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(self.inner.rc(), other.inner.rc())
    }
}

impl Eq for Greenlet {}

/// What a greenlet runs: a closure, or a body that wants to be got as late
/// as it can ([`Body::run_got`]).
pub(crate) trait Body: 'static {
    /// Gets the body from `get` (once) and runs it. `get` reads it from
    /// where it waits (a copy-stack greenlet's record); a body got right
    /// where it is used is on the stack once, where a body got early and
    /// passed on is there as often as it was moved across a call, in
    /// frames that stay while the greenlet is parked (and are copied).
    fn run_got(get: impl FnOnce() -> Self) -> Outcome;
}

impl<C: FnOnce() -> Outcome + 'static> Body for C {
    #[inline(always)]
    fn run_got(get: impl FnOnce() -> Self) -> Outcome {
        get()()
    }
}

/// What a greenlet's coroutine runs: the body `get` gives, as the greenlet
/// whose yielder is `y`. Inlined into the coroutine's base frame (one frame
/// fewer on every parked stack). The body is got after the record is set
/// up, by the body's own [`Body::run_got`], so that the base frame holds
/// no copy of it (a copy-stack greenlet's parked frames are copied).
#[inline(always)]
pub(crate) fn run<B: Body>(y: &GreenletYielder, get: impl FnOnce() -> B) -> payload::Ending {
    // The greenlet owns its record while it has frames (inner.rs,
    // Ownership): this reference lives until the body has returned.
    let me = current_rc();
    me.yielder.set(y as *const _);
    let outcome = B::run_got(get);
    // What the layers above keep per greenlet (its locals) dies with it,
    // on its own stack.
    inner::run_exit_hook(&me);
    drop(me);
    outcome.into_ending()
}

/// Creates the coroutine for `inner`, with `body` as what runs on its stack.
///
/// `body` finds the first message the greenlet is resumed with in its
/// inbox (`Inner::take_msg`): taken there rather than passed in, so that
/// the base frame, which stays on the stack while the greenlet lives, has
/// no message slot.
/// With `clean_stack`, the stack starts with no memory (see
/// [`Greenlet::stack_usage`]). With `copy`, the greenlet is a copy-stack
/// greenlet (`copy.rs`): bound to a shared run stack, its coroutine made at
/// its first run.
pub(crate) fn create(
    make: impl FnOnce() -> Inner,
    stack_size: usize,
    clean_stack: bool,
    copy: bool,
    at: &'static Location<'static>,
    body: impl Body,
) -> std::io::Result<Rc<Inner>> {
    let inner = if copy {
        let start = copy::Start::new(body);
        let (copied, bounds) = copy::bind(stack_size)?;
        let inner = inner::new_rc(move || make().with_copied(copied));
        inner.stack.set(bounds);
        *inner.coro.borrow_mut() = inner::CoroSlot::Start(start);
        inner
    } else {
        let stack = stack::take(stack_size, clean_stack)?;
        let inner = inner::new_rc(make);
        inner.stack.set(stack.bounds());
        *inner.coro.borrow_mut() = inner::CoroSlot::Made(Coroutine::with_stack(
            stack::GreenletStack::Own(stack),
            #[inline(always)]
            move |y: &GreenletYielder, _: Resume| run(y, move || body),
        ));
        inner
    };
    inner.created_at.set(Some(at));
    inner.creator.set(with_current(|c| c.id));
    inner::register(&inner);
    Ok(inner)
}

impl Greenlet {
    /// Creates a greenlet that will run `f` on first switch; the value of
    /// that switch becomes `f`'s argument. Its parent is the greenlet that
    /// creates it. Uses the [default stack size](crate::DEFAULT_STACK_SIZE).
    ///
    /// When `f` returns, its value is delivered to the parent's pending
    /// `switch`; when it panics, the panic is raised in the parent there.
    ///
    /// # Panics
    /// Panics if no stack can be allocated (the kernel is out of memory or of
    /// map entries); use [`Greenlet::with_stack_size`] to handle that.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::Greenlet;
    ///
    /// let g = Greenlet::new(|name: &'static str| format!("hello, {name}"));
    /// assert_eq!(g.switch::<_, String>("world").unwrap(), "hello, world");
    /// assert!(g.is_dead());
    /// ```
    #[track_caller]
    pub fn new<A, R, F>(f: F) -> Greenlet
    where
        A: 'static,
        R: 'static,
        F: FnOnce(A) -> R + 'static,
    {
        match Greenlet::with_stack_size(stack::DEFAULT_STACK_SIZE, f) {
            Ok(g) => g,
            Err(e) => panic!("greenhouse: cannot create a greenlet: {e}"),
        }
    }

    /// Like [`Greenlet::new`], with a stack of at least `stack_size` bytes.
    ///
    /// # Errors
    /// [`Error::Spawn`] if the stack cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenhouse::Greenlet::with_stack_size(64 * 1024, |x: u8| x + 1)?;
    /// assert_eq!(g.switch::<u8, u8>(1)?, 2);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    #[track_caller]
    pub fn with_stack_size<A, R, F>(stack_size: usize, f: F) -> Result<Greenlet, Error>
    where
        A: 'static,
        R: 'static,
        F: FnOnce(A) -> R + 'static,
    {
        let parent = Handle::new(current_rc());
        let record = move || Inner::new(None, false, Some(parent), Expect::of::<A>());
        let inner = create(
            record,
            stack_size,
            false,
            copy::default(),
            Location::caller(),
            move || {
                let arg = match with_current(Inner::take_msg).into_throw() {
                    Ok(None) => return Outcome::Exited,
                    Ok(Some(e)) => return Outcome::Failed(e),
                    Err(other) => {
                        match panic::catch_unwind(AssertUnwindSafe(|| payload::receive::<A>(other)))
                        {
                            Ok(Ok(a)) => a,
                            Ok(Err(e)) => return Outcome::Failed(Box::new(e)),
                            Err(p) => return Outcome::from_result(Err(p)),
                        }
                    }
                };
                Outcome::from_result(panic::catch_unwind(AssertUnwindSafe(move || {
                    Box::new(f(arg)) as Box<dyn std::any::Any>
                })))
            },
        )
        .map_err(Error::spawn)?;
        Ok(Greenlet::from_inner(inner))
    }

    pub(crate) fn from_inner(inner: Rc<Inner>) -> Greenlet {
        Greenlet {
            inner: Handle::new(inner),
            _not_send: PhantomData,
        }
    }

    /// The record behind this handle.
    pub(crate) fn inner(&self) -> &Rc<Inner> {
        self.inner.rc()
    }

    /// The greenlet that is running now (the main greenlet outside any other).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::Greenlet;
    /// assert_eq!(Greenlet::current(), Greenlet::main());
    /// let g = Greenlet::new(|(): ()| Greenlet::current().name());
    /// let name: String = g.switch(()).unwrap();
    /// assert!(name.starts_with("Greenlet-"));
    /// ```
    pub fn current() -> Greenlet {
        Greenlet::from_inner(current_rc())
    }

    /// This thread's main greenlet: the thread's own stack.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenhouse::Greenlet::main().is_main());
    /// ```
    pub fn main() -> Greenlet {
        Greenlet::from_inner(main_rc())
    }

    /// Switches to this greenlet, passing `value`, and returns the value the
    /// current greenlet is later switched back with.
    ///
    /// On the first switch `value` is the greenlet's argument; afterwards it
    /// is what the target's own pending `switch` returns. Switching to the
    /// current greenlet returns `value` at once (if `T` is `R`).
    ///
    /// # Errors
    /// - [`Error::Dead`]: the greenlet has finished. (Python's greenlet
    ///   instead passes the value on to the dead greenlet's parent, and
    ///   `throw` into a dead greenlet raises in the parent. greenhouse
    ///   reports the mistake where it happens: a switch that silently goes
    ///   elsewhere is a hard bug to find, and a Rust caller can always
    ///   switch to `parent()` itself.)
    /// - [`Error::WrongType`]: it is waiting for another type than `T`
    ///   (checked before switching, so nothing is lost), or what comes back
    ///   to us is not an `R`.
    /// - [`Error::Blocked`]: it is blocked in the hub (sleeping, joining,
    ///   waiting for IO) or queued by the hub; wake it through what it waits on.
    /// - [`Error::Killed`]: what we waited on died of [`GreenletExit`].
    /// - Any error a child died of after [`throw_error`](Greenlet::throw_error).
    /// - [`Error::Deadlock`]: nothing can ever switch back to us.
    ///
    /// # Panics
    /// If a child whose result comes back to us panicked, its panic is
    /// raised again here, as Python's greenlet raises it in the parent. If
    /// we are thrown into while waiting, [`GreenletExit`] unwinds from here.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::{Error, Greenlet};
    ///
    /// let g = Greenlet::new(|x: u32| x);
    /// assert!(matches!(g.switch::<&str, u32>("no"), Err(Error::WrongType { .. })));
    /// assert_eq!(g.switch::<u32, u32>(7), Ok(7));
    /// assert_eq!(g.switch::<u32, u32>(8), Err(Error::Dead));
    /// ```
    pub fn switch<T: 'static, R: 'static>(&self, value: T) -> Result<R, Error> {
        let target = self.inner.rc();
        let me = with_current(|c| c as *const Inner);
        if std::ptr::eq(me, Rc::as_ptr(target)) {
            let mut slot = Some(value);
            return payload::receive::<R>(Msg::Value(payload::Transfer::new(&mut slot)));
        }
        self.check_target()?;
        if !target.expects.is::<T>() {
            return Err(Error::WrongType {
                expected: target.expects.name(),
                found: crate::TypeName::of::<T>(),
            });
        }
        let mut slot = Some(value);
        // A copy-stack sender's stack may be moved out before the receiver
        // takes the value (copy.rs): send it boxed. One `deliver` for both
        // kinds, so that the switch path is inlined once.
        let msg = if with_current(|c| c.copied.get().is_some()) {
            payload::boxed(&mut slot)
        } else {
            Msg::Value(payload::Transfer::new(&mut slot))
        };
        let reply = self.deliver::<R>(msg);
        drop(slot); // taken by the receiver (or boxed), unless something went wrong
        payload::receive::<R>(reply)
    }

    /// Puts `msg` in this greenlet's inbox, suspends the current greenlet
    /// (waiting for an `R`) and switches here; returns the message the
    /// current greenlet is resumed with.
    #[inline(always)]
    fn deliver<R: 'static>(&self, msg: Msg) -> Msg {
        self.inner.put_msg(msg);
        let unreachable = with_current(|c| {
            c.expects.set::<R>();
            c.state.set(State::Suspended);
            c.handles.get() == 0 // main always has its context's handle
        });
        if unreachable {
            // Nobody can switch back to us: we die at the next scheduling
            // point instead of waiting forever (inner.rs, Ownership).
            inner::doom(&current_rc());
        }
        suspend(Some(self.inner.rc().clone()))
    }

    /// Raises [`GreenletExit`] in this greenlet at its suspension point and
    /// switches to it; returns what the current greenlet is later switched
    /// back with.
    ///
    /// Destructors on its stack run as the unwind passes. If the greenlet
    /// lets the unwind reach its base it dies, and its parent's pending
    /// switch returns `Err(Error::Killed)`; if it catches it, it continues
    /// and may switch back with a value. A greenlet that never started dies
    /// without running.
    ///
    /// # Errors
    /// As for [`switch`](Greenlet::switch): `Dead`, `Blocked`, `WrongType`,
    /// `Killed`, `Deadlock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::{Error, Greenlet};
    ///
    /// struct Loud(std::rc::Rc<std::cell::Cell<bool>>);
    /// impl Drop for Loud {
    ///     fn drop(&mut self) { self.0.set(true) }
    /// }
    /// let dropped = std::rc::Rc::new(std::cell::Cell::new(false));
    /// let flag = dropped.clone();
    /// let g = Greenlet::new(move |(): ()| {
    ///     let _guard = Loud(flag);
    ///     Greenlet::main().switch::<(), ()>(()).unwrap();
    /// });
    /// g.switch::<(), ()>(()).unwrap();
    /// assert_eq!(g.throw::<()>(), Err(Error::Killed));
    /// assert!(dropped.get() && g.is_dead());
    /// ```
    pub fn throw<R: 'static>(&self) -> Result<R, Error> {
        if current_ptr() == Rc::as_ptr(self.inner.rc()) {
            panic::resume_unwind(Box::new(GreenletExit));
        }
        self.check_target()?;
        payload::receive::<R>(self.deliver::<R>(Msg::Throw))
    }

    /// Like [`throw`](Greenlet::throw), raising [`ThrownError`] with
    /// `error` instead of [`GreenletExit`] (greenlet's `g.throw(SomeError)`).
    ///
    /// If the greenlet lets it reach its base it dies *with that error*: its
    /// parent's pending switch returns `Err(error)` (so this call does, when
    /// the caller is the parent). If it catches it, it continues and may
    /// switch back with a value. A greenlet that never started dies with
    /// the error without running. Throwing into yourself unwinds at once.
    ///
    /// # Errors
    /// As for [`throw`](Greenlet::throw), and the thrown error as above.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::{Error, Greenlet, ThrownError};
    ///
    /// let g = Greenlet::new(|(): ()| {
    ///     let main = Greenlet::main();
    ///     // Catch the first throw and answer with its message...
    ///     let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    ///         main.switch::<(), ()>(()).unwrap()
    ///     }));
    ///     let e = caught.unwrap_err().downcast::<ThrownError>().unwrap();
    ///     main.switch::<String, ()>(e.0.to_string()).unwrap();
    ///     // ...and let the second one end the greenlet.
    ///     unreachable!()
    /// });
    /// g.switch::<(), ()>(()).unwrap();
    /// let stop = || Error::custom(std::io::Error::other("stop"));
    /// let reply: String = g.throw_error(stop()).unwrap();
    /// assert_eq!(reply, "stop");
    /// let err = g.throw_error::<()>(stop()).unwrap_err();
    /// assert!(err.downcast_ref::<std::io::Error>().is_some() && g.is_dead());
    /// ```
    pub fn throw_error<R: 'static>(&self, error: Error) -> Result<R, Error> {
        if current_ptr() == Rc::as_ptr(self.inner.rc()) {
            payload::raise(Some(error));
        }
        self.check_target()?;
        payload::receive::<R>(self.deliver::<R>(Msg::ThrowError(Box::new(error))))
    }

    fn check_target(&self) -> Result<(), Error> {
        match self.inner.state.get() {
            State::Dead => Err(Error::Dead),
            State::NotStarted | State::Suspended => Ok(()),
            State::Blocked | State::Running => Err(Error::Blocked),
        }
    }

    /// This greenlet's parent: who receives its return value. `None` for the
    /// main greenlet and for spawned greenlets (whose parent is the hub).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::Greenlet;
    /// let g = Greenlet::new(|(): ()| ());
    /// assert_eq!(g.parent(), Some(Greenlet::main()));
    /// ```
    pub fn parent(&self) -> Option<Greenlet> {
        let p = self.inner.parent_rc();
        p.map(Greenlet::from_inner)
    }

    /// Makes `parent` this greenlet's parent.
    ///
    /// # Errors
    /// [`Error::ParentCycle`] if `parent` is this greenlet or one of its
    /// descendants; [`Error::Invalid`] for the main greenlet and for spawned
    /// greenlets, whose parent is fixed.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::{Error, Greenlet};
    /// let a = Greenlet::new(|(): ()| ());
    /// let b = Greenlet::new(|(): ()| ());
    /// b.set_parent(&a)?;
    /// assert_eq!(a.set_parent(&b), Err(Error::ParentCycle));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn set_parent(&self, parent: &Greenlet) -> Result<(), Error> {
        if self.inner.is_main {
            return Err(Error::Invalid("the main greenlet has no parent"));
        }
        if self.inner.spawned {
            return Err(Error::Invalid("a spawned greenlet's parent is the hub"));
        }
        let mut p = Some(parent.inner.rc().clone());
        while let Some(cur) = p {
            if Rc::ptr_eq(&cur, self.inner.rc()) {
                return Err(Error::ParentCycle);
            }
            p = cur.parent_rc();
        }
        let old = self.inner.parent.replace(Some(parent.inner.clone()));
        drop(old); // may doom the old parent: after the new one is in place
        Ok(())
    }

    /// Whether the greenlet has finished (returned, panicked or was killed).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenhouse::Greenlet::new(|(): ()| ());
    /// assert!(!g.is_dead());
    /// g.switch::<(), ()>(()).unwrap();
    /// assert!(g.is_dead());
    /// ```
    pub fn is_dead(&self) -> bool {
        self.inner.is_dead()
    }

    /// Whether the greenlet has started and not finished (Python's `bool(g)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenhouse::Greenlet::new(|(): ()| ());
    /// assert!(!g.is_active());
    /// ```
    pub fn is_active(&self) -> bool {
        !matches!(self.inner.state.get(), State::NotStarted | State::Dead)
    }

    /// Whether this is the thread's main greenlet.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!greenhouse::Greenlet::new(|(): ()| ()).is_main());
    /// ```
    pub fn is_main(&self) -> bool {
        self.inner.is_main
    }

    /// The greenlet's name: `main`, the name given to its builder, or
    /// `Greenlet-<n>`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenhouse::Greenlet::main().name(), "main");
    /// ```
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// A number that identifies the greenlet within its thread (unique
    /// while the thread lives; `Greenlet-<id>` is its default name).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenhouse::Greenlet::new(|(): ()| ());
    /// assert_eq!(g.name(), format!("Greenlet-{}", g.id()));
    /// ```
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// How much of this greenlet's stack holds memory: its high-water mark,
    /// to a page. `None` for the main greenlet (the thread's own stack) and
    /// for a dead greenlet (its stack went back to the pool).
    ///
    /// Stacks are pooled, and a reused stack keeps the pages its earlier
    /// users touched until the pool releases them, so `touched` is at least
    /// this greenlet's own depth. For a measurement of one greenlet alone,
    /// spawn it with [`Builder::clean_stack`](crate::Builder::clean_stack).
    /// Each call is one `mincore` system call.
    ///
    /// Use it to size stacks ([`Builder::stack_size`](crate::Builder::stack_size)):
    /// run the deepest path of a handler, read `touched` at its end, and
    /// leave a margin, since an overflow aborts the process.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::{Builder, Greenlet};
    ///
    /// let h = Builder::new().clean_stack(true).spawn(|| {
    ///     let buf = [1u8; 20_000]; // about five pages of stack
    ///     std::hint::black_box(&buf);
    ///     Greenlet::current().stack_usage().unwrap()
    /// })?;
    /// let usage = h.join()?;
    /// assert!(usage.touched >= 20_000 && usage.touched < usage.size);
    /// assert_eq!(Greenlet::main().stack_usage(), None);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn stack_usage(&self) -> Option<StackUsage> {
        let (top, bottom) = self.inner.stack.get();
        if top == 0 || self.is_dead() {
            return None;
        }
        Some(StackUsage {
            size: top - bottom,
            // The range is a live pooled stack, mapped for the process's
            // life: mincore cannot fail on it.
            touched: stack::touched((top, bottom)).unwrap_or(0),
            saved: self.inner.copied.get().map_or(0, copy::Copied::saved_len),
        })
    }
}

/// A greenlet's stack: its size and how much of it holds memory, from
/// [`Greenlet::stack_usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackUsage {
    /// Usable bytes: the requested stack size rounded up to whole pages.
    pub size: usize,
    /// Bytes from the top of the stack down to the deepest page that holds
    /// memory (a multiple of the page size): the high-water mark since the
    /// stack's memory was last released, and what the stack costs in RSS.
    /// For a copy-stack greenlet ([`Builder::copy_stack`](crate::Builder::copy_stack))
    /// these two describe the run stack it shares with others.
    pub touched: usize,
    /// A copy-stack greenlet's live stack bytes held on the heap while
    /// another greenlet uses its run stack (0 while its bytes are in
    /// place, and always 0 for a greenlet with a stack of its own): what
    /// the parked greenlet costs in stack memory. Runs of 256 zero bytes
    /// or more (a zeroed buffer's unused part) are not stored, on x86-64,
    /// so this can be less than its stack's depth.
    pub saved: usize,
}
