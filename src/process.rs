//! Child processes for greenlets (gevent's `subprocess`), without monkey
//! patching: [`Command`] spawns like std's, and waiting for the child or
//! reading and writing its pipes parks only the calling greenlet.
//!
//! A [`Child`] watches its process with a `pidfd` (Linux 5.3 and later) on
//! the hub's reactor: [`wait`](Child::wait) parks until it is readable
//! (the child has exited), then reaps it with std's `try_wait`. Where
//! `pidfd_open` is not available it asks `try_wait` on a timer instead (1
//! ms, doubling up to 50 ms). Piped stdio is made non-blocking and read or
//! written through a [`Watcher`]. `output` reads stdout and stderr at once
//! (stderr in a helper greenlet), so neither pipe can fill up and stall
//! the child.
//!
//! ```
//! use greenhouse::process::Command;
//!
//! let out = Command::new("echo").arg("hello").output()?;
//! assert!(out.status.success());
//! assert_eq!(out.stdout, b"hello\n");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::hub::scheduler::Woke;
use crate::hub::watcher::deadline_in;
use crate::hub::{Interest, Watcher};

/// A process builder (std's `Command`, whose waits park the greenlet).
///
/// The usual builder calls are here; [`as_std_mut`](Self::as_std_mut)
/// reaches the rest of std's (`uid`, `pre_exec`, ...).
#[derive(Debug)]
pub struct Command {
    inner: std::process::Command,
}

impl From<std::process::Command> for Command {
    fn from(inner: std::process::Command) -> Command {
        Command { inner }
    }
}

macro_rules! forward {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(where $($w:tt)*)?; )*) => {$(
        $(#[$doc])*
        pub fn $name(&mut self, $($arg: $ty),*) -> &mut Command $(where $($w)*)? {
            self.inner.$name($($arg),*);
            self
        }
    )*};
}

impl Command {
    /// A command for `program`, as [`std::process::Command::new`].
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            inner: std::process::Command::new(program),
        }
    }

    forward! {
        /// Adds an argument.
        fn arg(arg: impl AsRef<OsStr>);
        /// Adds arguments.
        fn args(args: impl IntoIterator<Item = impl AsRef<OsStr>>);
        /// Sets an environment variable.
        fn env(key: impl AsRef<OsStr>, val: impl AsRef<OsStr>);
        /// Removes an environment variable.
        fn env_remove(key: impl AsRef<OsStr>);
        /// Clears the environment.
        fn env_clear();
        /// Sets the working directory.
        fn current_dir(dir: impl AsRef<Path>);
        /// Sets the child's stdin.
        fn stdin(cfg: impl Into<Stdio>);
        /// Sets the child's stdout.
        fn stdout(cfg: impl Into<Stdio>);
        /// Sets the child's stderr.
        fn stderr(cfg: impl Into<Stdio>);
    }

    /// std's builder, for everything else.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.inner
    }

    /// Starts the child (stdio inherited unless set otherwise).
    ///
    /// # Errors
    /// As [`std::process::Command::spawn`]; or if a pipe cannot be made
    /// non-blocking or watched.
    pub fn spawn(&mut self) -> io::Result<Child> {
        Child::adopt(self.inner.spawn()?)
    }

    /// Runs the child to its end and returns its exit status, parking only
    /// this greenlet while it runs.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn) and [`Child::wait`].
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        self.spawn()?.wait()
    }

    /// Runs the child with stdout and stderr piped (stdin empty unless
    /// set) and collects both, parking only this greenlet.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn) and [`Child::wait_with_output`].
    pub fn output(&mut self) -> io::Result<Output> {
        self.inner.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.spawn()?.wait_with_output()
    }
}

/// A running (or finished) child process.
///
/// Dropping it neither kills nor reaps the child, as with std.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    /// The child's pidfd, readable once it has exited.
    exit: Option<Watcher<OwnedFd>>,
    /// Its stdin, if piped.
    pub stdin: Option<ChildStdin>,
    /// Its stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, if piped.
    pub stderr: Option<ChildStderr>,
}

impl Child {
    /// Takes over a child spawned with std (its pipes become cooperative).
    ///
    /// # Errors
    /// If a pipe cannot be made non-blocking or watched.
    pub fn adopt(mut inner: std::process::Child) -> io::Result<Child> {
        // SAFETY: the pidfd_open system call takes a pid and flags; a
        // non-negative result is a new fd that we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, inner.id() as libc::pid_t, 0) };
        let exit = if fd >= 0 {
            // SAFETY: `fd` was just returned by pidfd_open and is ours.
            Watcher::new(unsafe { OwnedFd::from_raw_fd(fd as i32) }).ok()
        } else {
            None
        };
        Ok(Child {
            stdin: inner
                .stdin
                .take()
                .map(Pipe::new)
                .transpose()?
                .map(ChildStdin),
            stdout: inner
                .stdout
                .take()
                .map(Pipe::new)
                .transpose()?
                .map(ChildStdout),
            stderr: inner
                .stderr
                .take()
                .map(Pipe::new)
                .transpose()?
                .map(ChildStderr),
            inner,
            exit,
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Sends it `SIGKILL` (nothing if it has already been reaped).
    ///
    /// # Errors
    /// As [`std::process::Child::kill`].
    pub fn kill(&mut self) -> io::Result<()> {
        self.inner.kill()
    }

    /// Its exit status if it has exited; never waits.
    ///
    /// # Errors
    /// As [`std::process::Child::try_wait`].
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.inner.try_wait()
    }

    /// Parks until the child exits (its stdin is closed first, as std
    /// does, so a child reading it sees the end).
    ///
    /// # Errors
    /// As [`std::process::Child::wait`]; `TimedOut` if an armed
    /// [`Timeout`](crate::Timeout) expires (the child keeps running; wait
    /// again to reap it).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        match self.wait_until(None)? {
            Some(s) => Ok(s),
            None => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
        }
    }

    /// Like [`wait`](Self::wait), giving up after `timeout` (`Ok(None)`,
    /// the child still running).
    ///
    /// # Errors
    /// As for `wait`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        drop(self.stdin.take());
        self.wait_until(deadline_in(timeout))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        let mut step = Duration::from_millis(1);
        loop {
            if let Some(s) = self.inner.try_wait()? {
                return Ok(Some(s));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            let woke = match &self.exit {
                Some(w) => w.wait_woke(Interest::Read, deadline)?,
                None => {
                    let next = Instant::now() + step;
                    step = (step * 2).min(Duration::from_millis(50));
                    let until = deadline.map_or(next, |d| d.min(next));
                    match crate::hub::timeout::sleep_checked(until) {
                        Ok(()) => Woke::Ready,
                        Err(_) => Woke::TimedOut,
                    }
                }
            };
            match woke {
                Woke::Ready => {}
                Woke::Deadline => {}
                Woke::TimedOut => return Err(Error::TimedOut.into()),
                Woke::Deadlock => return Err(Error::Deadlock.into()),
            }
        }
    }

    /// Collects stdout and stderr (whichever are piped) to their ends,
    /// then waits for the child.
    ///
    /// # Errors
    /// As [`wait`](Self::wait) and reading the pipes.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let err_reader = self.stderr.take().map(|mut e| {
            crate::spawn(move || {
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).map(|_| buf)
            })
        });
        let mut stdout = Vec::new();
        if let Some(o) = self.stdout.as_mut() {
            o.read_to_end(&mut stdout)?;
        }
        let stderr = match err_reader {
            Some(h) => h.join().map_err(io::Error::from)??,
            None => Vec::new(),
        };
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// A child's pipe, non-blocking and watched by the reactor (as a `File`,
/// which reads and writes through `&`).
#[derive(Debug)]
struct Pipe {
    w: Watcher<File>,
    _not_send: PhantomData<*const ()>,
}

impl Pipe {
    fn new(p: impl Into<OwnedFd>) -> io::Result<Pipe> {
        let p = File::from(p.into());
        let fd = p.as_fd().as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a pipe fd the value owns.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Pipe {
            w: Watcher::new(p)?,
            _not_send: PhantomData,
        })
    }
}

/// The child's stdin: writes park while the pipe is full.
#[derive(Debug)]
pub struct ChildStdin(Pipe);

/// The child's stdout: reads park until there is data.
#[derive(Debug)]
pub struct ChildStdout(Pipe);

/// The child's stderr: reads park until there is data.
#[derive(Debug)]
pub struct ChildStderr(Pipe);

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.w.write_with(None, |mut p: &File| p.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for ChildStdout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.w.read_with(None, |mut p: &File| p.read(buf))
    }
}

impl Read for ChildStderr {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.w.read_with(None, |mut p: &File| p.read(buf))
    }
}
