//! The crate's error type.

use std::any::Any;
use std::fmt;
use std::io;

/// Everything that can go wrong when switching, joining or blocking.
///
/// I/O operations report these through [`io::Error`] (see the `From` impl);
/// greenlet and hub operations return them directly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The greenlet has finished; it cannot be switched to or thrown into.
    Dead,
    /// A switched value, or a greenlet's return value, is not of the type
    /// the receiver waits for.
    WrongType {
        /// The type the receiver waits for.
        expected: &'static str,
        /// What was offered.
        found: &'static str,
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
    /// The greenlet panicked; `message` holds the panic message and location.
    Panicked {
        /// The greenlet's name.
        name: String,
        /// The panic message, with its source location when known.
        message: String,
    },
    /// Nothing can ever wake the caller: no greenlet is ready, no timer is
    /// pending and nobody waits for IO (gevent's `LoopExit`).
    Deadlock,
    /// The result was already taken by an earlier join.
    ResultTaken,
    /// A greenlet could not be created (no memory or map entries for its stack).
    Spawn(String),
    /// The hub behind a [`HubHandle`](crate::HubHandle) is gone: its thread
    /// has exited, so it will run nothing more.
    HubClosed,
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
            Error::Panicked { name, message } => write!(f, "greenlet '{name}' panicked: {message}"),
            Error::Deadlock => f.write_str(
                "this operation would block forever: nothing is ready, scheduled or waiting for IO",
            ),
            Error::ResultTaken => f.write_str("the greenlet's result was already taken"),
            Error::Spawn(why) => write!(f, "cannot create a greenlet: {why}"),
            Error::HubClosed => f.write_str("the hub's thread has exited; it runs nothing more"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e {
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::Killed => io::ErrorKind::Interrupted,
            Error::Spawn(_) => io::ErrorKind::OutOfMemory,
            Error::WrongType { .. } | Error::Invalid(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

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
