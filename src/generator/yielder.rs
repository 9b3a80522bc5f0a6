//! The body's side of a generator: `yield_`, `try_yield`, `yield_from`.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::panic;
use std::rc::Rc;

use super::{Generator, GeneratorError, GeneratorExit, GeneratorState, Thrown};
use crate::greenlet::{Forward, ForwardPtr, Inner, Msg};

/// What the caller sends in when it resumes the generator.
pub(crate) enum In<S> {
    Send(S),
    Throw(Thrown),
    Close,
    /// The greenlet was resumed after a forwarded suspension
    /// ([`Out::Forward`]); its message is back in its inbox.
    Resume,
}

/// What the generator's coroutine yields to its resumer.
pub(crate) enum Out<Y> {
    /// A value for the caller of `send`.
    Value(Y),
    /// Greenlet code on the generator's stack must suspend the greenlet
    /// (towards this target): the resumer does it on its own stack (see
    /// [`Forward`]) and resumes us with [`In::Resume`].
    Forward(Option<Rc<Inner>>),
}

/// State shared by a generator and its body.
#[derive(Default)]
pub(crate) struct Shared {
    /// A thrown error on its way out (panic payloads must be `Send`; errors
    /// need not be, so the unwind carries a marker and the error waits here).
    pub(crate) thrown: RefCell<Option<Thrown>>,
    /// The body's forwarder, while the body runs (set by its root, cleared
    /// before it returns).
    pub(crate) fwd: Cell<Option<ForwardPtr>>,
}

/// The body root's forwarder: suspends the generator's coroutine with
/// [`Out::Forward`], through its own corosensei yielder, on its own stack.
pub(crate) struct Fwd<S: 'static, Y: 'static> {
    /// # Invariant
    /// The body root's yielder: valid while the root's frame (which owns
    /// this `Fwd`) is alive, which is whenever a greenlet's `forward`
    /// points here.
    pub(crate) y: *const corosensei::Yielder<In<S>, Out<Y>>,
}

impl<S: 'static, Y: 'static> Forward for Fwd<S, Y> {
    fn suspend(&self, target: Option<Rc<Inner>>) -> Msg {
        // SAFETY: per the field invariant the yielder is alive; `forward` is
        // only consulted by code running inside this generator's resume,
        // i.e. on its stack, where its yielder may suspend.
        match unsafe { (*self.y).suspend(Out::Forward(target)) } {
            In::Resume => crate::greenlet::with_current(Inner::take_msg),
            // Only `resume_with` resumes a forwarded suspension, always
            // with `Resume`; anything else would be a bookkeeping bug.
            _ => unreachable!("a forwarded suspension resumed without its message"),
        }
    }
}

/// Unwind payload that carries a thrown error out of the body.
pub(crate) struct ThrowMarker;

/// Handed to a generator's body: suspends it, handing values to the caller.
///
/// It can be used from any depth of the body's call stack (pass
/// `&Yielder` down).
pub struct Yielder<S: 'static, Y: 'static> {
    /// The corosensei yielder on this generator's stack.
    ///
    /// # Invariant
    /// Valid while the body runs: the `Yielder` is created by the body's
    /// root and only lent (`&Yielder`) to the body, which cannot keep it
    /// past its own return (the closure is `'static`, the borrow is not).
    inner: *const corosensei::Yielder<In<S>, Out<Y>>,
    shared: Rc<Shared>,
    _not_send: PhantomData<*const ()>,
}

impl<S, Y> std::fmt::Debug for Yielder<S, Y> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Yielder")
    }
}

impl<S: 'static, Y: 'static> Yielder<S, Y> {
    pub(crate) fn new(inner: &corosensei::Yielder<In<S>, Out<Y>>, shared: Rc<Shared>) -> Self {
        Yielder {
            inner,
            shared,
            _not_send: PhantomData,
        }
    }

    fn suspend(&self, y: Y) -> In<S> {
        // SAFETY: per the field invariant the yielder is alive, and we are
        // running inside the body on this generator's stack.
        unsafe { (*self.inner).suspend(Out::Value(y)) }
    }

    /// Hands `value` to the caller and suspends; returns the next value sent.
    ///
    /// A thrown error that the body does not handle here unwinds the body
    /// and goes back to the caller of `throw`; closing unwinds it with
    /// [`GeneratorExit`] (destructors run).
    pub fn yield_(&self, value: Y) -> S {
        match self.try_yield(value) {
            Ok(s) => s,
            Err(e) => self.raise(e),
        }
    }

    /// Like [`yield_`](Self::yield_), but an error thrown in with
    /// [`Generator::throw`] comes back as `Err` for the body to handle.
    ///
    /// # Errors
    /// The thrown error.
    pub fn try_yield(&self, value: Y) -> Result<S, Thrown> {
        match self.suspend(value) {
            In::Send(s) => Ok(s),
            In::Throw(e) => Err(e),
            In::Close => panic::resume_unwind(Box::new(GeneratorExit)),
            In::Resume => unreachable!("a forwarded message reached a yield point"),
        }
    }

    fn raise(&self, e: Thrown) -> ! {
        *self.shared.thrown.borrow_mut() = Some(e);
        panic::resume_unwind(Box::new(ThrowMarker))
    }

    /// Delegates to `inner` (Python's `yield from`): starts it with `first`,
    /// passes everything it yields to our caller, forwards every value sent
    /// (and every error thrown) to it, and evaluates to its return value.
    /// Closing us closes it first.
    ///
    /// # Panics
    /// A panic in `inner` propagates.
    pub fn yield_from<R2: 'static>(&self, mut inner: Generator<S, Y, R2>, first: S) -> R2 {
        let mut step = inner.send(first);
        loop {
            let y = match step {
                Ok(GeneratorState::Complete(r)) => return r,
                Ok(GeneratorState::Yielded(y)) => y,
                Err(GeneratorError::Thrown(e)) => self.raise(e),
                Err(e) => self.raise(Box::new(e)),
            };
            step = match self.suspend(y) {
                In::Send(s) => inner.send(s),
                In::Throw(e) => inner.throw(e),
                In::Close => {
                    let _ = inner.close();
                    panic::resume_unwind(Box::new(GeneratorExit));
                }
                In::Resume => unreachable!("a forwarded message reached a yield point"),
            };
        }
    }
}
