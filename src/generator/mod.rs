//! Python-style generators: `yield` / `send` / `throw` / `close` /
//! `yield from`, on the same pooled, guard-paged stacks as greenlets.
//!
//! A [`Generator`] runs a closure on its own stack. The closure receives a
//! [`Yielder`] and the first value sent, and can suspend from any depth of
//! its call stack with [`Yielder::yield_`]. Resuming goes straight to the
//! generator's coroutine, never through the hub.
//!
//! **Blocking inside a generator.** A generator resumed inside a greenlet
//! may call `sleep`, socket IO, `join`, … The greenlet's suspension is
//! *forwarded*: the generator yields a request to the frame that resumed
//! it (`resume_with`), which suspends the greenlet from its own stack and
//! resumes the generator with the wake-up message. Every coroutine thus
//! suspends only through its own yielder, as corosensei requires
//! (ARCHITECTURE.md has the one forced-unwind corner).

pub mod stages;
mod yielder;

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::rc::Rc;

use corosensei::{Coroutine, CoroutineResult};

use crate::greenlet::{self, Forward};
use crate::stack::{self, PooledStack};
pub use yielder::Yielder;
use yielder::{Fwd, In, Out, Shared};

/// An error thrown into a generator, or out of it.
pub type Thrown = Box<dyn std::error::Error + 'static>;

/// What a resumed generator did: yielded a value, or finished with its
/// return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeneratorState<Y, R> {
    /// It yielded this value and is suspended.
    Yielded(Y),
    /// Its closure returned this value; it is finished.
    Complete(R),
}

/// Why a generator operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum GeneratorError {
    /// The generator has finished (returned, failed, or was closed).
    Finished,
    /// An error thrown in with [`Generator::throw`] was not handled by the
    /// body: here it is back; the generator is finished.
    Thrown(Thrown),
    /// The body yielded while being closed (it caught `GeneratorExit`); it
    /// was unwound by force.
    YieldedDuringClose,
    /// No stack could be allocated for it.
    Spawn(String),
}

impl fmt::Display for GeneratorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeneratorError::Finished => f.write_str("the generator has finished"),
            GeneratorError::Thrown(e) => {
                write!(f, "unhandled error thrown into the generator: {e}")
            }
            GeneratorError::YieldedDuringClose => {
                f.write_str("the generator yielded while being closed")
            }
            GeneratorError::Spawn(why) => write!(f, "cannot create a generator: {why}"),
        }
    }
}

impl std::error::Error for GeneratorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GeneratorError::Thrown(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// Panic payload that unwinds a generator's body when it is closed (or
/// dropped unfinished), like Python's `GeneratorExit`. Destructors run on
/// the way up; it is not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GeneratorExit;

/// How the body ended, as seen at the coroutine's root.
enum End<R> {
    Returned(R),
    /// A thrown error escaped; it is in `Shared::thrown`.
    Thrown,
    /// Closed (`GeneratorExit` reached the root).
    Exited,
    /// Any other unwind (a panic, or a greenlet kill passing through):
    /// re-raised in the caller.
    Unwound(Box<dyn std::any::Any + Send>),
}

type Coro<S, Y, R> = Coroutine<In<S>, Out<Y>, End<R>, PooledStack>;

/// A stackful generator: yields `Y`, receives `S` on each `send`, and
/// returns `R`.
///
/// # Send
/// `!Send`: it lives on the thread that created it.
///
/// # Examples
///
/// A push coroutine, fed with `send` (no priming needed: the first value
/// sent is the closure's argument):
///
/// ```
/// use greenhouse::{Generator, GeneratorState};
///
/// let mut averager = Generator::new(|y, mut x: f64| {
///     let (mut sum, mut n) = (0.0, 0.0);
///     loop {
///         sum += x;
///         n += 1.0;
///         x = y.yield_(sum / n);
///     }
/// });
/// assert_eq!(averager.send(10.0).unwrap(), GeneratorState::Yielded(10.0));
/// assert_eq!(averager.send(20.0).unwrap(), GeneratorState::Yielded(15.0));
/// ```
///
/// A pull pipeline: with `S = ()` a generator is an `Iterator`:
///
/// ```
/// use greenhouse::Generator;
///
/// let evens = Generator::new(|y, ()| {
///     for i in 0.. {
///         if i % 2 == 0 {
///             y.yield_(i);
///         }
///     }
/// });
/// let v: Vec<u32> = evens.map(|x| x * 10).take(3).collect();
/// assert_eq!(v, [0, 20, 40]);
/// ```
#[must_use = "a generator runs nothing until it is resumed"]
pub struct Generator<S: 'static, Y: 'static, R: 'static> {
    /// `None` once it has finished (returned, failed, or been closed).
    coro: Option<Coro<S, Y, R>>,
    shared: Rc<Shared>,
    /// The return value, kept when the generator is driven as an iterator.
    returned: Option<R>,
}

impl<S, Y, R> fmt::Debug for Generator<S, Y, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("started", &self.coro.as_ref().is_some_and(|c| c.started()))
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<S: 'static, Y: 'static, R: 'static> Generator<S, Y, R> {
    /// Creates a generator running `f` on a pooled stack of the
    /// [default size](crate::DEFAULT_STACK_SIZE). Nothing runs until the
    /// first [`send`](Self::send) (or `next`), whose value becomes `f`'s
    /// second argument.
    ///
    /// # Panics
    /// If no stack can be allocated; see [`with_stack_size`](Self::with_stack_size).
    pub fn new<F>(f: F) -> Generator<S, Y, R>
    where
        F: FnOnce(&Yielder<S, Y>, S) -> R + 'static,
    {
        match Generator::with_stack_size(stack::DEFAULT_STACK_SIZE, f) {
            Ok(g) => g,
            Err(e) => panic!("greenhouse: {e}"),
        }
    }

    /// Like [`new`](Self::new) with a stack of at least `size` bytes
    /// (rounded up to pages, at least 16 KiB).
    ///
    /// # Errors
    /// [`GeneratorError::Spawn`] if the stack cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut g = greenhouse::Generator::with_stack_size(32 * 1024, |y, n: u8| y.yield_(n) + 1)?;
    /// assert_eq!(g.send(1)?, greenhouse::GeneratorState::Yielded(1));
    /// assert_eq!(g.send(41)?, greenhouse::GeneratorState::Complete(42));
    /// # Ok::<(), greenhouse::GeneratorError>(())
    /// ```
    pub fn with_stack_size<F>(size: usize, f: F) -> Result<Generator<S, Y, R>, GeneratorError>
    where
        F: FnOnce(&Yielder<S, Y>, S) -> R + 'static,
    {
        let st = stack::take(size, false).map_err(|e| GeneratorError::Spawn(e.to_string()))?;
        let shared = Rc::new(Shared::default());
        let sh = shared.clone();
        let coro = Coroutine::with_stack(
            st,
            move |cy: &corosensei::Yielder<In<S>, Out<Y>>, first: In<S>| {
                let first = match first {
                    In::Send(s) => s,
                    // Thrown into or closed before it ever ran.
                    In::Throw(e) => {
                        *sh.thrown.borrow_mut() = Some(e);
                        return End::Thrown;
                    }
                    In::Close => return End::Exited,
                    In::Resume => return End::Exited, // never sent first
                };
                // From now on the resuming greenlet's suspensions are
                // forwarded through this frame's yielder (see Forward).
                let fwd = Fwd::<S, Y> { y: cy };
                let fwd_dyn: *const dyn Forward = &fwd;
                let fp = NonNull::from(&fwd_dyn);
                sh.fwd.set(Some(fp));
                greenlet::with_current(|c| c.forward.set(Some(fp)));
                let y = Yielder::new(cy, sh.clone());
                let end = match panic::catch_unwind(AssertUnwindSafe(|| f(&y, first))) {
                    Ok(r) => End::Returned(r),
                    Err(p) if p.is::<GeneratorExit>() => End::Exited,
                    Err(p) if p.is::<yielder::ThrowMarker>() => End::Thrown,
                    Err(p) => End::Unwound(p),
                };
                sh.fwd.set(None); // `fwd` and `fwd_dyn` die with this frame
                end
            },
        );
        Ok(Generator {
            coro: Some(coro),
            shared,
            returned: None,
        })
    }

    /// Whether it has finished (returned, failed, or been closed).
    pub fn is_finished(&self) -> bool {
        self.coro.is_none()
    }

    /// Resumes the coroutine. While it runs, the current greenlet's
    /// suspensions are forwarded through it (`Inner::forward` points at the
    /// body's forwarder, and is restored when the resume returns): a
    /// forwarded suspension comes back here as `Out::Forward`, the greenlet
    /// suspends from this frame, and the coroutine is resumed with the
    /// message the greenlet woke with. So every coroutine suspends only
    /// through its own yielder, on its own stack, as corosensei requires.
    #[inline]
    fn resume_with(&mut self, input: In<S>) -> Result<GeneratorState<Y, R>, GeneratorError> {
        let Some(coro) = self.coro.as_mut() else {
            return Err(GeneratorError::Finished);
        };
        // The greenlet running now stays the one running across `resume`:
        // its suspensions inside come back here as `Out::Forward`.
        let cur = greenlet::current_rc();
        let prev = cur.forward.get();
        let mut input = input;
        let result = loop {
            if let Some(f) = self.shared.fwd.get() {
                cur.forward.set(Some(f));
            }
            let r = coro.resume(input);
            cur.forward.set(prev);
            match r {
                CoroutineResult::Yield(Out::Forward(target)) => {
                    // Suspend the greenlet here, on our own stack; the
                    // message it wakes with goes back into its inbox for
                    // the forwarder to take on the generator's stack.
                    let msg = greenlet::suspend(target);
                    cur.put_msg(msg);
                    input = In::Resume;
                }
                CoroutineResult::Yield(Out::Value(y)) => break CoroutineResult::Yield(y),
                CoroutineResult::Return(end) => break CoroutineResult::Return(end),
            }
        };
        match result {
            CoroutineResult::Yield(y) => Ok(GeneratorState::Yielded(y)),
            CoroutineResult::Return(end) => {
                self.finish();
                match end {
                    End::Returned(r) => Ok(GeneratorState::Complete(r)),
                    End::Thrown => match self.shared.thrown.borrow_mut().take() {
                        Some(e) => Err(GeneratorError::Thrown(e)),
                        None => Err(GeneratorError::Finished),
                    },
                    End::Exited => Err(GeneratorError::Finished),
                    End::Unwound(p) => panic::resume_unwind(p),
                }
            }
        }
    }

    /// Marks it finished and gives its stack back to the pool.
    fn finish(&mut self) {
        drop(self.coro.take());
    }

    /// Resumes the generator with `value`: on the first call it becomes the
    /// closure's argument, afterwards the result of the pending
    /// [`yield_`](Yielder::yield_). Returns what it yields next, or its
    /// return value.
    ///
    /// # Errors
    /// [`GeneratorError::Finished`] if it already finished.
    ///
    /// # Panics
    /// A panic in the body propagates here, and the generator is finished.
    pub fn send(&mut self, value: S) -> Result<GeneratorState<Y, R>, GeneratorError> {
        self.resume_with(In::Send(value))
    }

    /// Raises `error` at the suspended yield point. If the body handles it
    /// (with [`Yielder::try_yield`]) and yields again, that is returned;
    /// otherwise the generator finishes and the error comes back as
    /// [`GeneratorError::Thrown`]. A generator that never started finishes
    /// without running.
    ///
    /// # Errors
    /// `Thrown` (not handled), `Finished` (already finished).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::{Generator, GeneratorError, GeneratorState};
    ///
    /// let mut g = Generator::new(|y, ()| loop {
    ///     match y.try_yield("waiting") {
    ///         Ok(()) => {}
    ///         Err(e) => { y.yield_("recovered"); return e.to_string(); }
    ///     }
    /// });
    /// assert_eq!(g.send(()).unwrap(), GeneratorState::Yielded("waiting"));
    /// assert_eq!(g.throw("bad input").unwrap(), GeneratorState::Yielded("recovered"));
    /// assert_eq!(g.send(()).unwrap(), GeneratorState::Complete("bad input".to_string()));
    /// ```
    pub fn throw(
        &mut self,
        error: impl Into<Thrown>,
    ) -> Result<GeneratorState<Y, R>, GeneratorError> {
        self.resume_with(In::Throw(error.into()))
    }

    /// Closes the generator: raises [`GeneratorExit`] at the yield point so
    /// destructors on its stack run. Closing a finished or never-started
    /// generator just marks it finished.
    ///
    /// # Errors
    /// [`GeneratorError::YieldedDuringClose`] if the body caught the unwind
    /// and yielded again (it is then unwound by force);
    /// [`GeneratorError::Thrown`] if an earlier thrown error surfaces.
    pub fn close(&mut self) -> Result<(), GeneratorError> {
        if self.is_finished() {
            return Ok(());
        }
        if !self.coro.as_ref().is_some_and(|c| c.started()) {
            self.finish(); // drops the unstarted closure
            return Ok(());
        }
        match self.resume_with(In::Close) {
            Err(GeneratorError::Finished) => Ok(()),
            Ok(GeneratorState::Complete(_)) => Ok(()),
            Ok(GeneratorState::Yielded(_)) => {
                // It swallowed GeneratorExit and yielded: unwind it by force
                // (corosensei keeps unwinding until the root), then report.
                if let Some(mut c) = self.coro.take() {
                    c.force_unwind();
                }
                Err(GeneratorError::YieldedDuringClose)
            }
            Err(e) => Err(e),
        }
    }

    /// The return value, after the generator was driven to completion as an
    /// iterator (once).
    pub fn take_return(&mut self) -> Option<R> {
        self.returned.take()
    }
}

impl<Y: 'static, R: 'static> Generator<(), Y, R> {
    /// `send(())`, for generators that receive nothing.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn resume(&mut self) -> Result<GeneratorState<Y, R>, GeneratorError> {
        self.send(())
    }
}

impl<Y: 'static, R: 'static> Iterator for Generator<(), Y, R> {
    type Item = Y;

    /// The next yielded value; `None` once it completed (its return value is
    /// kept for [`take_return`](Generator::take_return)).
    fn next(&mut self) -> Option<Y> {
        match self.send(()) {
            Ok(GeneratorState::Yielded(y)) => Some(y),
            Ok(GeneratorState::Complete(r)) => {
                self.returned = Some(r);
                None
            }
            Err(_) => None,
        }
    }
}

impl<S: 'static, Y: 'static, R: 'static> Drop for Generator<S, Y, R> {
    fn drop(&mut self) {
        // An unfinished generator is closed: its destructors run.
        let _ = self.close();
    }
}

impl crate::Builder {
    /// Creates a generator with this builder's stack size (its name is not
    /// used: a generator runs as part of the greenlet that resumes it).
    ///
    /// # Errors
    /// [`GeneratorError::Spawn`] if the stack cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut g = greenhouse::Builder::new()
    ///     .stack_size(32 * 1024)
    ///     .generator(|y, ()| { y.yield_(1); 2 })?;
    /// assert_eq!(g.next(), Some(1));
    /// # Ok::<(), greenhouse::GeneratorError>(())
    /// ```
    pub fn generator<S, Y, R, F>(self, f: F) -> Result<Generator<S, Y, R>, GeneratorError>
    where
        S: 'static,
        Y: 'static,
        R: 'static,
        F: FnOnce(&Yielder<S, Y>, S) -> R + 'static,
    {
        Generator::with_stack_size(self.stack_size_value(), f)
    }
}

/// Debug view of a generator's shared error slot.
impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("thrown", &self.thrown.borrow().is_some())
            .finish()
    }
}
