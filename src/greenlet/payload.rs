//! The messages that travel with every switch, and how a receiver unpacks them.
//!
//! A value passed to [`Greenlet::switch`](crate::Greenlet::switch) is never
//! boxed: it stays in an `Option<T>` on the sender's stack and the receiver
//! takes it through a pointer before anything else runs ([`Transfer`]).
//! Only a finished greenlet's return value is boxed, once, because its stack
//! is gone by the time the parent reads it.

use crate::error::{Error, TypeName};
use std::any::{Any, TypeId};
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::panic;

/// Panic payload that unwinds a greenlet when it is thrown into or killed,
/// like Python's `GreenletExit`.
///
/// It runs destructors on the way up and is not an error: a greenlet that
/// lets it propagate simply dies (its joiners see [`Error::Killed`]). Code
/// that must survive a kill can catch it with [`std::panic::catch_unwind`]
/// and check `payload.is::<GreenletExit>()`.
///
/// # Examples
///
/// ```
/// use greenhouse::{Greenlet, GreenletExit};
///
/// let g = Greenlet::new(|(): ()| {
///     let caught = std::panic::catch_unwind(|| {
///         greenhouse::Greenlet::main().switch::<(), ()>(()).unwrap();
///     });
///     // `throw` landed here: the unwind stopped at our catch_unwind.
///     caught.unwrap_err().is::<GreenletExit>()
/// });
/// g.switch::<(), ()>(()).unwrap(); // runs until it switches back to main
/// let caught: bool = g.throw().unwrap();
/// assert!(caught);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GreenletExit;

/// Panic payload that unwinds a greenlet thrown into or killed *with an
/// error* ([`Greenlet::throw_error`](crate::Greenlet::throw_error),
/// [`JoinHandle::kill_with`](crate::JoinHandle::kill_with)): gevent's
/// `g.throw(SomeError)` and `g.kill(exception=SomeError)`.
///
/// Like [`GreenletExit`] it runs destructors on the way up. Unlike it, the
/// greenlet ends *unsuccessful* with the error: its joiners (or its parent,
/// for an explicit greenlet) get `Err(error)`, not [`Error::Killed`]. Code
/// may catch it with [`std::panic::catch_unwind`] and
/// `payload.downcast::<ThrownError>()`, and carry on.
#[derive(Debug, Clone)]
pub struct ThrownError(pub Error);

/// Unwinds the current greenlet as a throw does: with [`GreenletExit`], or
/// with [`ThrownError`] when an error was thrown.
pub(crate) fn raise(error: Option<Error>) -> ! {
    match error {
        None => panic::resume_unwind(Box::new(GreenletExit)),
        Some(e) => panic::resume_unwind(Box::new(ThrownError(e))),
    }
}

/// A type's identity and name, one per type in static memory
/// ([`TypeInfo::of`]): records and messages carry a one-word reference.
#[derive(Debug)]
pub(crate) struct TypeInfo {
    /// `TypeId::of::<T>` as a function (a `TypeId` in a constant needs
    /// Rust 1.91; the crate supports 1.85).
    id: fn() -> TypeId,
    /// `type_name::<T>` as a function: one word instead of a `&str`.
    name: fn() -> &'static str,
}

/// Holds [`TypeInfo`]'s per-type constant.
struct InfoOf<T>(std::marker::PhantomData<T>);

impl<T: 'static> InfoOf<T> {
    const INFO: TypeInfo = TypeInfo {
        id: TypeId::of::<T>,
        name: std::any::type_name::<T>,
    };
}

impl TypeInfo {
    /// `T`'s info (a promoted constant: `'static`, no allocation).
    #[inline(always)]
    pub(crate) fn of<T: 'static>() -> &'static TypeInfo {
        &InfoOf::<T>::INFO
    }

    /// Whether this is `T`'s info: the same address (the common case, one
    /// compare), or, since a constant may be duplicated across codegen
    /// units, the same id.
    #[inline(always)]
    fn is<T: 'static>(&self) -> bool {
        std::ptr::eq(self, Self::of::<T>()) || (self.id)() == TypeId::of::<T>()
    }
}

/// The type a suspended greenlet is waiting to receive: one word.
#[derive(Debug)]
pub(crate) struct Expect(Cell<&'static TypeInfo>);

impl Expect {
    #[inline]
    pub(crate) fn of<T: 'static>() -> Self {
        Expect(Cell::new(TypeInfo::of::<T>()))
    }

    /// Records that the greenlet now waits for a `T`.
    #[inline]
    pub(crate) fn set<T: 'static>(&self) {
        self.0.set(TypeInfo::of::<T>());
    }

    /// Whether the greenlet waits for a `T`.
    #[inline]
    pub(crate) fn is<T: 'static>(&self) -> bool {
        self.0.get().is::<T>()
    }

    /// The name of the type the greenlet waits for.
    pub(crate) fn name(&self) -> TypeName {
        TypeName::from_fn(self.0.get().name)
    }
}

/// A pointer to an `Option<T>` on the sender's (suspended) stack, with
/// `T`'s [`TypeInfo`] (checked without a vtable call).
///
/// # Invariant
/// The pointee outlives the transfer: the sender stays suspended until the
/// receiver has called [`Transfer::take`], which it does before any other
/// switch can happen. `ptr` points at an `Option<T>` whose `TypeInfo` is
/// `ty`.
pub(crate) struct Transfer {
    ptr: *mut (),
    ty: &'static TypeInfo,
}

/// Moves the value out of `slot` into a [`Msg::Boxed`] (a copy-stack
/// sender's switch value, which must not stay on its stack).
#[cold]
#[inline(never)]
pub(crate) fn boxed<T: 'static>(slot: &mut Option<T>) -> Msg {
    Msg::Boxed(Box::new(slot.take().expect("a switch value is boxed once")))
}

impl Transfer {
    #[inline]
    pub(crate) fn new<T: 'static>(slot: &mut Option<T>) -> Self {
        Transfer {
            ptr: (slot as *mut Option<T>).cast(),
            ty: TypeInfo::of::<T>(),
        }
    }

    /// The name of the value's type.
    fn type_name(&self) -> TypeName {
        TypeName::from_fn(self.ty.name)
    }

    /// Takes the value if it is a `T`.
    #[inline]
    fn take<T: 'static>(self) -> Option<T> {
        if !self.ty.is::<T>() {
            return None;
        }
        // SAFETY: per the invariant, `ptr` is a live `Option<T>` (the type
        // ids match) that nobody else touches while we take the value out.
        unsafe { (*self.ptr.cast::<Option<T>>()).take() }
    }
}

/// How a park ended: the one park-outcome type. The hub puts it in a
/// parked greenlet's inbox (`Msg::Wake`), and `park` returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// What it waited for happened (or `yield_now` came around).
    Ready,
    /// The operation's own deadline passed.
    Deadline,
    /// An armed `Timeout` scope expired.
    TimedOut,
    /// Nothing can ever wake it: no ready greenlet, timer or IO interest.
    Deadlock,
}

/// What a greenlet receives when it is resumed.
///
/// `repr(u64)` keeps every payload 8-byte aligned: with a one-byte tag the
/// compiler copies the enum with misaligned moves that defeat store-to-load
/// forwarding, which tripled the cost of a switch.
#[repr(u64)]
pub(crate) enum Msg {
    /// Nothing (an empty inbox).
    Empty,
    /// A switched value, still on the sender's stack.
    Value(Transfer),
    /// A finished child's return value.
    Boxed(Box<dyn Any>),
    /// A finished child's panic, to be raised again in the receiver.
    Panic(Box<dyn Any + Send>),
    /// A child died of [`GreenletExit`].
    Exited,
    /// A typed failure to report (e.g. a child could not take its argument).
    Error(Box<Error>),
    /// The hub woke a parked greenlet.
    Wake(Woke),
    /// Raise [`GreenletExit`] at the suspension point.
    Throw,
    /// Raise [`ThrownError`] with this error at the suspension point.
    ThrowError(Box<Error>),
}

/// A greenlet's inbox: the one [`Msg`] waiting for it.
///
/// Read with care for store-to-load forwarding. Its writer stores a message
/// in 8-byte pieces; a plain copy of the whole cell loads it in 16-byte
/// pieces, and a load spanning two recent stores stalls until they retire
/// (a third of a greenlet-to-greenlet switch, measured with perf). So the
/// inbox reads its tag alone before deciding, and takes a message a word at
/// a time.
pub(crate) struct Inbox(Cell<Msg>);

// `Inbox::take` copies a message as whole 8-byte words.
const _: () = assert!(std::mem::size_of::<Msg>() % 8 == 0 && std::mem::align_of::<Msg>() == 8);

impl Default for Inbox {
    fn default() -> Self {
        Inbox(Cell::new(Msg::Empty))
    }
}

impl Inbox {
    /// Whether nothing waits in the inbox (reads only the tag).
    #[inline(always)]
    fn is_empty(&self) -> bool {
        // SAFETY: a `Cell` never hands out references to its contents and
        // `Inbox` is `!Sync`, so nothing writes the cell while this shared
        // borrow lives; it ends within this expression.
        matches!(unsafe { &*self.0.as_ptr() }, Msg::Empty)
    }

    /// Writes `msg` over the inbox without dropping what is there: only for
    /// an inbox known to hold `Msg::Empty` (which owns nothing) or whose
    /// message was just copied out by [`take`](Self::take).
    #[inline(always)]
    fn overwrite_empty(&self, msg: Msg) {
        // SAFETY: the pointer is the cell's, valid and aligned; no
        // reference into the cell exists (see `is_empty`). What is
        // overwritten owns nothing that is not owned elsewhere (the
        // callers' contract above).
        unsafe { self.0.as_ptr().write(msg) }
    }

    /// Puts `msg` in the inbox, dropping whatever was there.
    #[inline(always)]
    pub(crate) fn put(&self, msg: Msg) {
        if self.is_empty() {
            self.overwrite_empty(msg);
        } else {
            self.0.replace(msg).discard();
        }
    }

    /// Takes the message out, leaving the inbox empty.
    #[inline(always)]
    pub(crate) fn take(&self) -> Msg {
        if self.is_empty() {
            return Msg::Empty;
        }
        const WORDS: usize = std::mem::size_of::<Msg>() / 8;
        let src = self.0.as_ptr().cast::<MaybeUninit<u64>>();
        let mut words = [MaybeUninit::<u64>::uninit(); WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            // SAFETY: `Msg` is `repr(u64)`, so it is 8-byte aligned and a
            // whole number of words (the const assertion above); word `i`
            // lies inside the cell. Volatile keeps each an 8-byte load.
            // Copying `MaybeUninit` words keeps padding and pointer
            // provenance intact.
            *w = unsafe { std::ptr::read_volatile(src.add(i)) };
        }
        // The cell's bytes now belong to `words`; mark it empty without
        // dropping them (`Msg::Empty` owns nothing).
        self.overwrite_empty(Msg::Empty);
        // SAFETY: `words` is a bitwise copy of a valid `Msg`, whose
        // ownership moved here when the cell was overwritten above.
        unsafe { std::mem::transmute::<[MaybeUninit<u64>; WORDS], Msg>(words) }
    }
}

impl Inbox {
    /// What a parked greenlet was resumed with, read in place: a wake-up
    /// is taken (an empty inbox reads as `Woke::Ready`, as
    /// `Inner::take_msg` does), a throw is left for [`raise_thrown`], and
    /// anything else is dropped. One byte comes back, so the park's frame
    /// keeps no copy of the message.
    #[inline(always)]
    pub(crate) fn take_wake(&self) -> Resumed {
        // SAFETY: as in `is_empty`: no reference into the cell exists and
        // nothing writes it while this one lives; it ends with this
        // statement (the `Woke` is copied out), before the cell is written.
        let read = match unsafe { &*self.0.as_ptr() } {
            Msg::Empty => return Resumed::Woke(Woke::Ready),
            Msg::Wake(w) => Resumed::Woke(*w),
            Msg::Throw | Msg::ThrowError(_) => return Resumed::Thrown,
            _ => Resumed::Other,
        };
        if read == Resumed::Other {
            self.take().discard();
        } else {
            // A wake-up owns nothing.
            self.overwrite_empty(Msg::Empty);
        }
        read
    }
}

/// What a parked greenlet was resumed with ([`Inbox::take_wake`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// The hub woke it.
    Woke(Woke),
    /// A message that is not a wake-up (dropped: an explicit switch cannot
    /// reach a parked greenlet, so it is spurious).
    Other,
    /// A throw, still in the inbox: [`raise_thrown`] raises it.
    Thrown,
}

/// Raises the throw that waits in the current greenlet's inbox (after
/// [`Inbox::take_wake`] said [`Resumed::Thrown`]), out of line: the error
/// stays boxed in the inbox until here, so the frames that wait for a
/// message (on every parked stack, copied for copy-stack greenlets) do not
/// hold an `Error`.
#[cold]
#[inline(never)]
pub(crate) fn raise_thrown() -> ! {
    let msg = super::inner::with_current(|c| c.pending.take());
    match msg.into_throw() {
        Ok(e) => raise(e.map(|e| *e)),
        Err(other) => unreachable!(
            "a park was resumed by a throw that is no longer in the inbox ({:?})",
            std::mem::discriminant(&other)
        ),
    }
}

impl Msg {
    /// Drops a message, skipping the generic drop for the variants that own
    /// nothing (a value still on its sender's stack stays the sender's), so
    /// the hot paths never call the out-of-line drop glue.
    #[inline]
    pub(crate) fn discard(self) {
        match self {
            Msg::Boxed(_) | Msg::Panic(_) | Msg::Error(_) | Msg::ThrowError(_) => drop_cold(self),
            _ => std::mem::forget(self),
        }
    }

    /// If this message is a throw: what it raises (`None` for
    /// [`GreenletExit`]). Anything else is given back.
    #[inline]
    pub(crate) fn into_throw(self) -> Result<Option<Box<Error>>, Msg> {
        match self {
            Msg::Throw => Ok(None),
            Msg::ThrowError(e) => Ok(Some(e)),
            other => Err(other),
        }
    }

    /// [`Inbox::take_wake`] for a message already taken out of `inbox`
    /// (the scheduler's and a forwarder's paths): a throw goes back into
    /// `inbox`.
    pub(crate) fn into_resumed(self, inbox: &Inbox) -> Resumed {
        match self {
            Msg::Wake(w) => Resumed::Woke(w),
            Msg::Throw | Msg::ThrowError(_) => {
                inbox.put(self);
                Resumed::Thrown
            }
            other => {
                other.discard();
                Resumed::Other
            }
        }
    }
}

#[cold]
fn drop_cold(msg: Msg) {
    drop(msg);
}

/// How a greenlet's body ended.
pub(crate) enum Outcome {
    /// A spawned greenlet finished and stored its own result.
    Done,
    Returned(Box<dyn Any>),
    Panicked(Box<dyn Any + Send>),
    Exited,
    Failed(Box<Error>),
}

/// What a greenlet's coroutine returns: its [`Outcome`], boxed unless it
/// is `Done` (a spawned greenlet's, which delivered its own result). One
/// word, so that the coroutine's base frame, which stays on the stack
/// while the greenlet lives, reserves one word for it.
pub(crate) type Ending = Option<Box<Outcome>>;

impl Outcome {
    /// This outcome as a coroutine's return value.
    #[inline]
    pub(crate) fn into_ending(self) -> Ending {
        match self {
            Outcome::Done => None,
            o => Some(Box::new(o)),
        }
    }

    /// The outcome a coroutine returned.
    pub(crate) fn of_ending(e: Ending) -> Outcome {
        e.map_or(Outcome::Done, |o| *o)
    }

    /// Classifies the result of `catch_unwind` around a greenlet body.
    pub(crate) fn from_result(r: std::thread::Result<Box<dyn Any>>) -> Self {
        match r {
            Ok(v) => Outcome::Returned(v),
            Err(p) if p.is::<GreenletExit>() => Outcome::Exited,
            Err(p) if p.is::<ThrownError>() => match p.downcast::<ThrownError>() {
                Ok(t) => Outcome::Failed(Box::new(t.0)),
                Err(p) => Outcome::Panicked(p),
            },
            Err(p) => Outcome::Panicked(p),
        }
    }

    pub(crate) fn into_msg(self) -> Msg {
        match self {
            Outcome::Done => Msg::Boxed(Box::new(())),
            Outcome::Returned(v) => Msg::Boxed(v),
            Outcome::Panicked(p) => Msg::Panic(p),
            Outcome::Exited => Msg::Exited,
            Outcome::Failed(e) => Msg::Error(e),
        }
    }
}

/// Unpacks what a greenlet received at an explicit switch (or at its start).
///
/// # Panics
/// Re-raises a child's panic, and raises [`GreenletExit`] for a throw; both
/// are unwinds the API promises, not misuse.
#[inline]
pub(crate) fn receive<R: 'static>(msg: Msg) -> Result<R, Error> {
    match msg {
        Msg::Value(t) => {
            let found = t.type_name();
            match t.take::<R>() {
                Some(v) => Ok(v),
                None => Err(Error::WrongType {
                    expected: TypeName::of::<R>(),
                    found,
                }),
            }
        }
        other => receive_slow(other),
    }
}

#[cold]
fn receive_slow<R: 'static>(msg: Msg) -> Result<R, Error> {
    match msg {
        Msg::Value(t) => Err(Error::WrongType {
            expected: TypeName::of::<R>(),
            found: t.type_name(),
        }),
        Msg::Boxed(b) => match b.downcast::<R>() {
            Ok(v) => Ok(*v),
            Err(_) => Err(Error::WrongType {
                expected: TypeName::of::<R>(),
                found: TypeName::from_fn(
                    || "the return value of a finished greenlet, of another type",
                ),
            }),
        },
        Msg::Panic(p) => panic::resume_unwind(p),
        Msg::Throw => raise(None),
        Msg::ThrowError(e) => raise(Some(*e)),
        Msg::Exited => Err(Error::Killed),
        Msg::Error(e) => Err(*e),
        Msg::Wake(Woke::Deadlock) => Err(Error::Deadlock),
        Msg::Wake(_) | Msg::Empty => Err(Error::Blocked),
    }
}
