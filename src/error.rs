//! The crate's error type.

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

/// Everything that can go wrong when switching, joining or blocking.
///
/// I/O operations report these through [`io::Error`] (see the `From` impl);
/// greenlet and hub operations return them directly.
///
/// Equality compares what an error says: two `Panicked` are equal when they
/// carry the same payload, two `Spawn` when their `io::Error`s have the same
/// kind and message, two `Custom` when their messages are the same.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The greenlet has finished; it cannot be switched to or thrown into.
    Dead,
    /// A switched value, or a greenlet's return value, is not of the type
    /// the receiver waits for.
    WrongType {
        /// The type the receiver waits for.
        expected: TypeName,
        /// What was offered.
        found: TypeName,
    },
    /// Setting this parent would make a cycle of parents.
    ParentCycle,
    /// The greenlet is blocked in (or queued by) the hub, so an explicit
    /// switch cannot reach it; wake it through what it waits on, or kill it.
    Blocked,
    /// An operation that makes no sense for this greenlet.
    Invalid(&'static str),
    /// A deadline passed: an operation's own timeout, or an armed
    /// [`Timeout`](crate::Timeout) scope.
    TimedOut,
    /// The greenlet was killed (died of [`GreenletExit`](crate::GreenletExit)).
    Killed,
    /// The greenlet panicked: [`Panic`] holds its name, the panic message
    /// and location, and the payload ([`Error::into_panic`] gives it back,
    /// to [`resume_unwind`](std::panic::resume_unwind) it).
    Panicked(Panic),
    /// Nothing can ever wake the caller: no greenlet is ready, no timer is
    /// pending and nobody waits for IO (gevent's `LoopExit`).
    Deadlock,
    /// The result was already taken by an earlier join.
    ResultTaken,
    /// A greenlet (or a blocking-pool worker) could not be created: no
    /// memory or map entries for its stack, or no thread. The OS error is
    /// also the error's [`source`](std::error::Error::source).
    Spawn(Arc<io::Error>),
    /// The hub behind a [`HubHandle`](crate::HubHandle) is gone: its thread
    /// has exited, so it will run nothing more.
    HubClosed,
    /// A [`Pool`](crate::pool::Pool) had no free slot: `try_spawn` /
    /// `try_add` found it full, or `spawn_timeout` / `add_timeout` waited
    /// in vain (gevent's `PoolFull`).
    PoolFull,
    /// A cross-hub channel ([`sync::mpmc`](crate::sync::mpmc)) is closed:
    /// a receive found it empty with every sender gone, or a send found
    /// every receiver gone.
    Closed,
    /// An error of the program's own, made with [`Error::custom`]: what
    /// [`JoinHandle::kill_with`](crate::JoinHandle::kill_with) and
    /// [`Greenlet::throw_error`](crate::Greenlet::throw_error) end a
    /// greenlet with. It is also the error's
    /// [`source`](std::error::Error::source); see [`Error::downcast_ref`].
    Custom(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dead => f.write_str("the greenlet is dead"),
            Error::WrongType { expected, found } => {
                write!(
                    f,
                    "wrong value type on switch: expected {expected}, found {found}"
                )
            }
            Error::ParentCycle => f.write_str("cyclic parent chain"),
            Error::Blocked => f.write_str(
                "the greenlet is blocked in the hub; switch to it through what it waits on",
            ),
            Error::Invalid(why) => f.write_str(why),
            Error::TimedOut => f.write_str("timed out"),
            Error::Killed => f.write_str("the greenlet was killed"),
            Error::Panicked(p) => {
                write!(f, "greenlet '{}' panicked: {}", p.name(), p.message())
            }
            Error::Deadlock => f.write_str(
                "this operation would block forever: nothing is ready, scheduled or waiting for IO",
            ),
            Error::ResultTaken => f.write_str("the greenlet's result was already taken"),
            Error::Spawn(why) => write!(f, "cannot create a greenlet: {why}"),
            Error::HubClosed => f.write_str("the hub's thread has exited; it runs nothing more"),
            Error::PoolFull => f.write_str("the pool is full"),
            Error::Closed => f.write_str("the channel is closed"),
            Error::Custom(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        use Error::*;
        match (self, other) {
            (
                WrongType {
                    expected: a,
                    found: b,
                },
                WrongType {
                    expected: c,
                    found: d,
                },
            ) => a == c && b == d,
            (Invalid(a), Invalid(b)) => a == b,
            (Panicked(a), Panicked(b)) => a == b,
            (Spawn(a), Spawn(b)) => a.kind() == b.kind() && a.to_string() == b.to_string(),
            (Custom(a), Custom(b)) => Arc::ptr_eq(a, b) || a.to_string() == b.to_string(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for Error {}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn(e) => Some(e.as_ref()),
            Error::Custom(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl Error {
    /// The payload of a greenlet's panic, to raise it again with
    /// [`resume_unwind`](std::panic::resume_unwind) (tokio's
    /// `JoinError::into_panic`). `None` for any other error.
    ///
    /// Clones of one `Panicked` error share the payload: the first to call
    /// this gets it, later ones get the panic message as a `String`.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = greenhouse::spawn(|| -> u8 { std::panic::panic_any(42u32) });
    /// let payload = h.join().unwrap_err().into_panic().unwrap();
    /// assert_eq!(payload.downcast_ref::<u32>(), Some(&42));
    /// ```
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self {
            Error::Panicked(p) => Some(p.into_panic()),
            _ => None,
        }
    }

    /// Wraps an error of the program's own (gevent's `kill(exception=...)`
    /// takes any exception; here, any `std::error::Error`).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::Error;
    ///
    /// let e = Error::custom(std::io::Error::other("shutting down"));
    /// assert_eq!(e.to_string(), "shutting down");
    /// assert!(e.downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn custom(e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Custom(Arc::new(e))
    }

    /// The program's own error inside a [`Custom`](Error::Custom), if it
    /// is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::Custom(e) => e.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// A [`Spawn`](Error::Spawn) error for `e`.
    pub(crate) fn spawn(e: io::Error) -> Error {
        Error::Spawn(Arc::new(e))
    }
}

/// A greenlet's panic, as [`Error::Panicked`] carries it: the greenlet's
/// name, the panic message and the panic's own payload. One word, shared
/// by clones of the error (the payload goes to the first
/// [`into_panic`](Panic::into_panic)); equal only to its clones.
///
/// # Examples
///
/// ```
/// use greenhouse::Error;
///
/// let h = greenhouse::Builder::new()
///     .name("worker")
///     .spawn(|| -> u8 { panic!("out of cheese") })
///     .unwrap();
/// match h.join() {
///     Err(Error::Panicked(p)) => {
///         assert_eq!(p.name(), "worker");
///         assert!(p.message().contains("out of cheese"));
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone)]
pub struct Panic(Arc<PanicInner>);

struct PanicInner {
    name: String,
    message: String,
    payload: Mutex<Option<Box<dyn Any + Send + 'static>>>,
}

impl Panic {
    pub(crate) fn new(name: String, message: String, payload: Box<dyn Any + Send>) -> Panic {
        Panic(Arc::new(PanicInner {
            name,
            message,
            payload: Mutex::new(Some(payload)),
        }))
    }

    /// The panicking greenlet's name (or what panicked: `"blocking task"`,
    /// `"tokio task"`, a runtime hub's name).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The panic message, with its source location when known.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The panic's payload, to [`resume_unwind`](std::panic::resume_unwind)
    /// it. Clones share it: the first to call this gets it, later ones get
    /// the message as a `String`.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        let taken = self
            .0
            .payload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        taken.unwrap_or_else(|| Box::new(self.0.message.clone()))
    }
}

impl fmt::Debug for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panic")
            .field("name", &self.0.name)
            .field("message", &self.0.message)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Panic {
    fn eq(&self, other: &Panic) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Panic {}

/// A Rust type's name, as [`std::any::type_name`] gives it, in one word
/// (it is read when asked for). Derefs to the name: compare it, print it or
/// search it like a `&str`.
///
/// # Examples
///
/// ```
/// let name = greenhouse::TypeName::of::<u32>();
/// assert_eq!(name, "u32");
/// assert!(name.contains("32"));
/// ```
#[derive(Clone, Copy)]
pub struct TypeName(fn() -> &'static str);

impl TypeName {
    /// The name of `T`.
    pub fn of<T: ?Sized>() -> TypeName {
        TypeName(std::any::type_name::<T>)
    }

    /// A name given by a function returning it (`TypeInfo` keeps one).
    pub(crate) fn from_fn(name: fn() -> &'static str) -> TypeName {
        TypeName(name)
    }

    /// The name.
    pub fn as_str(&self) -> &'static str {
        (self.0)()
    }
}

impl std::ops::Deref for TypeName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for TypeName {
    fn eq(&self, other: &TypeName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TypeName {}

impl PartialEq<str> for TypeName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TypeName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<Error> for io::Error {
    /// Maps to the closest [`io::ErrorKind`]. A kill is `Other`, never
    /// `Interrupted`: std's `read_exact`, `write_all` and `io::copy` retry
    /// `Interrupted`, and a killed operation must not be retried.
    fn from(e: Error) -> io::Error {
        let kind = match e {
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::Spawn(ref e) => e.kind(),
            Error::WrongType { .. } | Error::Invalid(_) => io::ErrorKind::InvalidInput,
            Error::Closed => io::ErrorKind::BrokenPipe,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// An [`Error::Panicked`] for a panic of `name` with payload `p`.
pub(crate) fn panicked(name: String, p: Box<dyn Any + Send>) -> Error {
    let message = panic_message(p.as_ref());
    Error::Panicked(Panic::new(name, message, p))
}

// An `Error` is three words: every `Result` of the crate's API carries one,
// and a parked greenlet's frames hold them (copied, for copy-stack ones).
const _: () = assert!(std::mem::size_of::<Error>() == 24);

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// Prints a panic that nobody will ever see through a join.
pub(crate) fn report_unhandled(name: &str, p: &(dyn Any + Send)) {
    eprintln!(
        "greenhouse: greenlet '{name}' panicked and nobody joined it: {}",
        panic_message(p)
    );
}
