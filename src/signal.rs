//! Unix signals as events for greenlets (gevent's `signal_handler`).
//!
//! [`Signals`] lets greenlets wait for `SIGINT`, `SIGTERM`, `SIGHUP`,
//! `SIGCHLD`, ...: [`recv`](Signals::recv) parks only the caller until
//! one arrives. [`handler`] runs a closure in a greenlet of its own for
//! each delivery, until [cancelled](SignalHandler::cancel). A typical use
//! is a graceful shutdown of a server on Ctrl-C:
//!
//! ```no_run
//! use std::time::Duration;
//! use greenhouse::net::StreamServer;
//!
//! let server = StreamServer::bind("127.0.0.1:8080", |_conn, _| {})?;
//! let s = server.clone();
//! let _stop = greenhouse::signal::handler(libc::SIGINT, move || {
//!     let _ = s.stop(Some(Duration::from_secs(5)));
//! })?;
//! server.serve_forever()?; // returns once the handlers are done
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # How
//!
//! The first registration of a signal installs a process-wide handler
//! (`sigaction`) that writes the signal's number to a self-pipe, the only
//! async-signal-safe thing it does (a full pipe is counted instead, so no
//! delivery is lost). A dispatcher thread reads the pipe and hands each
//! delivery to every hub with a registration for that signal, through
//! its [`HubHandle`]: the registrations' queues are filled on their own
//! hubs. When the last registration of a signal goes, its previous
//! disposition is restored. Signals the kernel merges while pending are
//! merged here too (standard signals are not queued).
//!
//! While a registration exists its hub stays alive waiting for it (as
//! with a live [`HubHandle`]): a `join` there waits instead of reporting
//! [`Error::Deadlock`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use crate::error::Error;
use crate::hub::{Builder, HubHandle, JoinHandle};
use crate::sync::Queue;

/// Signal numbers on Linux are below this.
const NSIG: usize = 65;

/// The write end of the self-pipe (`-1` until the dispatcher runs).
static PIPE_W: AtomicI32 = AtomicI32::new(-1);

/// Deliveries the pipe could not take (full), per signal.
static OVERFLOW: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];

/// One registration: deliveries of `sig` go to queue `key` on `hub`.
struct Reg {
    sig: i32,
    key: u64,
    hub: HubHandle,
}

/// Every registration of the process, and the dispositions to restore.
struct Table {
    regs: Vec<Reg>,
    previous: Vec<(i32, libc::sigaction)>,
    next_key: u64,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    regs: Vec::new(),
    previous: Vec::new(),
    next_key: 1,
});

fn table() -> std::sync::MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// This hub's registrations' queues, by key.
    static QUEUES: RefCell<HashMap<u64, Queue<i32>>> = RefCell::new(HashMap::new());
}

/// Signals that cannot be caught, that report a fault in the thread that
/// caused it (handling them here would loop), or that greenhouse uses.
fn refused(sig: i32) -> bool {
    sig <= 0
        || sig as usize >= NSIG
        || [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGURG,
        ]
        .contains(&sig)
}

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: `__errno_location` is this thread's errno slot; saved and
    // restored so that the interrupted code sees its own.
    let errno = unsafe { *libc::__errno_location() };
    let fd = PIPE_W.load(Ordering::Relaxed);
    let b = sig as u8;
    // SAFETY: `write(2)` of one byte from a live local is async-signal-
    // safe; the system call itself (libc's `write` may be interposed).
    let n = unsafe { libc::syscall(libc::SYS_write, fd, &raw const b, 1usize) };
    if n != 1 {
        if let Some(c) = OVERFLOW.get(sig as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Starts the dispatcher thread and its self-pipe (once).
fn start_dispatcher() -> io::Result<()> {
    static START: Once = Once::new();
    let mut result = Ok(());
    START.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            result = Err(io::Error::last_os_error());
            return;
        }
        // The handler must never block: a full pipe is counted instead.
        // SAFETY: F_SETFL on the write end we just made.
        unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) };
        PIPE_W.store(fds[1], Ordering::Release);
        let r = fds[0];
        if let Err(e) = std::thread::Builder::new()
            .name("greenhouse-signals".into())
            .spawn(move || dispatch_forever(r))
        {
            result = Err(e);
        }
    });
    result
}

fn dispatch_forever(r: libc::c_int) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reading into a local buffer of the size given; the
        // system call (this thread has no hub, but be explicit).
        let n = unsafe { libc::syscall(libc::SYS_read, r, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        for &sig in &buf[..n as usize] {
            dispatch(i32::from(sig));
        }
        for (sig, c) in OVERFLOW.iter().enumerate() {
            for _ in 0..c.swap(0, Ordering::Relaxed) {
                dispatch(sig as i32);
            }
        }
    }
}

/// Hands one delivery of `sig` to every registration for it.
fn dispatch(sig: i32) {
    let t = table();
    for reg in t.regs.iter().filter(|r| r.sig == sig) {
        let key = reg.key;
        let _ = reg.hub.spawn(move || deliver(key, sig));
    }
}

/// On the registration's hub: queue the delivery, if it still exists.
fn deliver(key: u64, sig: i32) {
    let q = QUEUES.with(|q| q.borrow().get(&key).cloned());
    if let Some(q) = q {
        let _ = q.put_nowait(sig);
    }
}

/// Installs the handler for `sig` if nobody has registered it yet.
fn install(t: &mut Table, sig: i32) -> io::Result<()> {
    if t.previous.iter().any(|(s, _)| *s == sig) {
        return Ok(());
    }
    // SAFETY: a plain sigaction call with a fully initialised struct; the
    // handler only makes a system call and touches atomics.
    let old = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &sa, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        old
    };
    t.previous.push((sig, old));
    Ok(())
}

/// Restores `sig`'s previous disposition if no registration is left.
fn uninstall_if_unused(t: &mut Table, sig: i32) {
    if t.regs.iter().any(|r| r.sig == sig) {
        return;
    }
    if let Some(at) = t.previous.iter().position(|(s, _)| *s == sig) {
        let (_, old) = t.previous.swap_remove(at);
        // SAFETY: restoring the disposition sigaction gave us.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
}

/// A set of signals this hub's greenlets wait for.
///
/// Deliveries queue up (FIFO) from the moment it is made until it is
/// dropped; dropping the last registration of a signal restores what the
/// process did with it before. `!Send`, like every greenhouse primitive.
///
/// # Examples
///
/// ```
/// use greenhouse::signal::Signals;
///
/// let signals = Signals::new(&[libc::SIGUSR2])?;
/// // SAFETY: sending ourselves a signal we now handle.
/// unsafe { libc::raise(libc::SIGUSR2) };
/// assert_eq!(signals.recv()?, libc::SIGUSR2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Signals {
    key: u64,
    signals: Vec<i32>,
    queue: Queue<i32>,
    _not_send: PhantomData<*const ()>,
}

impl Signals {
    /// Starts receiving `signals` on this thread's hub.
    ///
    /// # Errors
    /// `InvalidInput` for a signal that cannot be caught or handled here
    /// (`SIGKILL`, `SIGSTOP`, the fault signals, `SIGURG`, which greenhouse
    /// uses, or a number out of range); the OS error if the handler or the
    /// dispatcher cannot be set up.
    pub fn new(signals: &[i32]) -> io::Result<Signals> {
        if let Some(&bad) = signals.iter().find(|&&s| refused(s)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("greenhouse: signal {bad} cannot be handled"),
            ));
        }
        start_dispatcher()?;
        let hub = HubHandle::current()?;
        let queue = Queue::new();
        let mut t = table();
        let key = t.next_key;
        t.next_key += 1;
        QUEUES.with(|q| q.borrow_mut().insert(key, queue.clone()));
        let mut signals = signals.to_vec();
        signals.sort_unstable();
        signals.dedup();
        for &sig in &signals {
            if let Err(e) = install(&mut t, sig) {
                drop(t);
                drop(Signals {
                    key,
                    signals,
                    queue,
                    _not_send: PhantomData,
                });
                return Err(e);
            }
            t.regs.push(Reg {
                sig,
                key,
                hub: hub.clone(),
            });
        }
        Ok(Signals {
            key,
            signals,
            queue,
            _not_send: PhantomData,
        })
    }

    /// Parks until one of the signals arrives, and returns its number.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires.
    pub fn recv(&self) -> Result<i32, Error> {
        self.queue.get()
    }

    /// Like [`recv`](Self::recv), giving up after `timeout` (`Ok(None)`).
    ///
    /// # Errors
    /// As for `recv`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<i32>, Error> {
        self.queue.get_own_timeout(timeout)
    }

    /// A delivery that has already arrived, if any; never waits.
    pub fn try_recv(&self) -> Option<i32> {
        self.queue.get_nowait().ok()
    }

    /// The signals it receives.
    pub fn signals(&self) -> &[i32] {
        &self.signals
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let mut t = table();
        t.regs.retain(|r| r.key != self.key);
        for &sig in &self.signals {
            uninstall_if_unused(&mut t, sig);
        }
        drop(t);
        let _ = QUEUES.try_with(|q| q.borrow_mut().remove(&self.key));
    }
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("signals", &self.signals)
            .field("pending", &self.queue.len())
            .finish()
    }
}

/// A greenlet that runs a closure for every delivery of a signal (see
/// [`handler`]).
#[derive(Debug)]
pub struct SignalHandler {
    greenlet: JoinHandle<()>,
}

impl SignalHandler {
    /// Stops handling the signal: the handler's greenlet is killed (a
    /// closure running now is unwound) and the registration dropped.
    ///
    /// # Errors
    /// As for [`JoinHandle::kill`].
    pub fn cancel(&self) -> Result<(), Error> {
        self.greenlet.kill()
    }

    /// Its greenlet.
    pub fn greenlet(&self) -> crate::Greenlet {
        self.greenlet.greenlet()
    }
}

/// Runs `f` in a greenlet named `signal-<n>` each time `signal` arrives
/// (gevent's `signal_handler`), until [`SignalHandler::cancel`]. The
/// registration is made before this returns, so no delivery after it is
/// missed. Dropping the `SignalHandler` leaves it running.
///
/// # Errors
/// As for [`Signals::new`]; `Other` if the greenlet cannot be spawned.
///
/// # Examples
///
/// ```
/// use std::{cell::Cell, rc::Rc};
///
/// let seen = Rc::new(Cell::new(0));
/// let s = seen.clone();
/// let h = greenhouse::signal::handler(libc::SIGUSR2, move || s.set(s.get() + 1))?;
/// greenhouse::yield_now(); // the handler's greenlet starts waiting
/// // SAFETY: sending ourselves a signal we now handle.
/// unsafe { libc::raise(libc::SIGUSR2) };
/// while seen.get() == 0 {
///     greenhouse::sleep(std::time::Duration::from_millis(1));
/// }
/// h.cancel()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn handler(signal: i32, mut f: impl FnMut() + 'static) -> io::Result<SignalHandler> {
    let signals = Signals::new(&[signal])?;
    let greenlet = Builder::new()
        .name(format!("signal-{signal}"))
        .spawn(move || {
            while signals.recv().is_ok() {
                f();
            }
        })
        .map_err(io::Error::other)?;
    Ok(SignalHandler { greenlet })
}
