//! `spawn` and friends: greenlets owned by the hub, and their join handles.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;
use std::time::{Duration, Instant};

use super::dump::WaitingOn;
use super::join_state::{self, Callback, JoinCore, Link, LinkKey, Notice};
use super::scheduler::{self, Token, WaitList, Woke};
use super::watcher::deadline_in;
use crate::error::{Error, Panic, panic_message};
use crate::greenlet::{
    self, Expect, Greenlet, GreenletExit, Inner, Msg, Outcome, State, ThrownError,
};
use crate::stack::DEFAULT_STACK_SIZE;

/// Options for a new greenlet: its name and stack size.
///
/// # Examples
///
/// ```
/// let h = greenhouse::Builder::new()
///     .name("worker")
///     .stack_size(64 * 1024)
///     .spawn(|| greenhouse::Greenlet::current().name())?;
/// assert_eq!(h.join()?, "worker");
/// # Ok::<(), greenhouse::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: usize,
    clean_stack: bool,
    /// `Some(true)`: a copy stack; `Some(false)`: a stack of its own;
    /// `None`: the hub's default ([`set_copy_stacks`]).
    copy: Option<bool>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Default options: `Greenlet-<n>` names, [`DEFAULT_STACK_SIZE`] stacks.
    pub fn new() -> Builder {
        Builder {
            name: None,
            stack_size: DEFAULT_STACK_SIZE,
            clean_stack: false,
            copy: None,
        }
    }

    /// Names the greenlet (shown in errors, panic reports and overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// The configured stack size.
    pub(crate) fn stack_size_value(&self) -> usize {
        self.stack_size
    }

    /// Sets the usable stack size in bytes (rounded up to whole pages, at
    /// least 16 KiB). Above 1 TiB, spawning fails with [`Error::Spawn`]
    /// (kind `InvalidInput`).
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = size;
        self
    }

    /// With `true`, the greenlet gets a stack that holds no memory yet (a
    /// pooled stack that was used before is released first: one `madvise`),
    /// so that [`Greenlet::stack_usage`] measures this greenlet's own
    /// high-water mark. Off by default: reusing a warm stack is faster.
    pub fn clean_stack(mut self, clean: bool) -> Builder {
        self.clean_stack = clean;
        self
    }

    /// Runs the greenlet on a *copy stack*: on a run stack shared with
    /// other copy-stack greenlets of this thread, its live stack bytes
    /// moved to the heap while another greenlet needs the run stack. A
    /// greenlet parked in `sleep` then costs a few hundred bytes of stack
    /// instead of a 4 KiB page, for a copy of those bytes when it resumes
    /// after another one ran. [`stack_size`](Self::stack_size) is the most
    /// it may use, as for any greenlet; beyond it, the overflow is reported
    /// with its name and the process aborts.
    ///
    /// # Safety
    /// While the greenlet is blocked (any blocking greenhouse call, any
    /// patched libc call, a `switch`), the memory of its stack holds another
    /// greenlet's data. So nothing but the greenlet itself may use a
    /// reference or pointer into its stack across such a call. In
    /// particular, inside the greenlet:
    /// - no scoped thread (`std::thread::scope`, `crossbeam::scope`,
    ///   `rayon::scope`, a scoped thread pool) may borrow its locals while
    ///   it blocks inside the scope;
    /// - no scoped thread-local (`scoped_tls`) may be set to its locals
    ///   across a blocking call;
    /// - under monkey patching (the `monkey` feature), no blocking call may
    ///   let another thread or greenlet write into the waiting frame. std's
    ///   rendezvous channel does: `std::sync::mpsc::sync_channel(0)` (and
    ///   crossbeam's `bounded(0)`) keep the receiver's slot on its stack and
    ///   the sender fills it, so use a channel with capacity, or greenhouse's
    ///   own [`sync::Channel`](crate::sync::Channel). C libraries that wait
    ///   for a worker thread to fill a buffer on the caller's stack do too.
    ///
    /// Greenhouse's own code keeps no such pointer (see ARCHITECTURE.md,
    /// "Copy stacks"), and generators the greenlet runs are fine. Safe Rust
    /// cannot rule out the cases above, which are sound with a stack of the
    /// greenlet's own; hence `unsafe`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// // SAFETY: the greenlet lends nothing on its stack to other threads
    /// // or greenlets.
    /// let b = unsafe { greenhouse::Builder::new().copy_stack() };
    /// let h = b.spawn(|| {
    ///     let local = [7u8; 64];
    ///     greenhouse::sleep(Duration::from_millis(1));
    ///     local.iter().map(|&b| u32::from(b)).sum::<u32>()
    /// })?;
    /// assert_eq!(h.join()?, 448);
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub unsafe fn copy_stack(mut self) -> Builder {
        self.copy = Some(true);
        self
    }

    /// Gives the greenlet a stack of its own even when the hub's default is
    /// copy stacks ([`set_copy_stacks`]).
    pub fn own_stack(mut self) -> Builder {
        self.copy = Some(false);
        self
    }

    /// Spawns `f` as a new greenlet, scheduled to start at the hub's next
    /// turn.
    ///
    /// # Errors
    /// [`Error::Spawn`] when no stack can be allocated.
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        spawn_at(self, Start::Now, f)
    }

    /// Creates the greenlet without starting it (gevent's `Greenlet(func)`):
    /// it runs only after [`JoinHandle::start`] or
    /// [`JoinHandle::start_later`]. Until then it is neither
    /// [started](JoinHandle::is_started), [ready](JoinHandle::is_ready) nor
    /// [dead](JoinHandle::is_dead); killing it then means it never runs (it
    /// ends [`Error::Killed`] and its link callbacks run once). Dropping the
    /// handle of a greenlet that was never started drops its closure
    /// unrun; joining one that nobody starts fails with
    /// [`Error::Deadlock`] when nothing else can run.
    ///
    /// # Errors
    /// [`Error::Spawn`] when no stack can be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenhouse::Builder;
    ///
    /// let h = Builder::new().create(|| 6 * 7)?;
    /// greenhouse::yield_now();
    /// assert!(!h.is_started() && !h.is_ready());
    /// h.start();
    /// assert!(h.is_started());
    /// assert_eq!(h.join(), Ok(42));
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    #[track_caller]
    pub fn create<F, T>(self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        spawn_at(self, Start::Never, f)
    }

    /// Spawns `f` to start after `delay`.
    ///
    /// # Errors
    /// [`Error::Spawn`] when no stack can be allocated.
    #[track_caller]
    pub fn spawn_later<F, T>(self, delay: Duration, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        spawn_at(
            self,
            Start::At(super::watcher::saturating_deadline(delay)),
            f,
        )
    }
}

/// Makes copy stacks ([`Builder::copy_stack`]) the default for greenlets
/// made on this thread from now on: by [`spawn`], by a [`Builder`] that
/// does not choose ([`Builder::own_stack`] still does), by the servers and
/// pools running here, and explicit ones ([`Greenlet::new`](crate::Greenlet::new)).
/// `false` turns the default back to stacks of their own.
///
/// # Safety
/// Every greenlet spawned with the default must meet the contract of
/// [`Builder::copy_stack`]; that includes greenlets that libraries spawn
/// on this thread.
///
/// # Examples
///
/// ```
/// // SAFETY: no greenlet of this thread lends its stack to others.
/// unsafe { greenhouse::set_copy_stacks(true) };
/// let hs: Vec<_> = (0..1000u32).map(|i| greenhouse::spawn(move || {
///     greenhouse::sleep(std::time::Duration::from_millis(1));
///     i
/// })).collect();
/// let sum: u32 = hs.into_iter().map(|h| h.join().unwrap()).sum();
/// assert_eq!(sum, 999 * 1000 / 2);
/// // SAFETY: turning copy stacks off needs no promise.
/// unsafe { greenhouse::set_copy_stacks(false) };
/// ```
pub unsafe fn set_copy_stacks(on: bool) {
    greenlet::set_copy_default(on);
}

/// Spawns `f` as a new greenlet on this thread's hub and returns its handle.
///
/// The greenlet starts the next time the hub runs: when the current
/// greenlet blocks, sleeps, joins or yields. It runs detached: dropping the
/// handle does not stop it. A panic inside it is caught and returned by
/// [`JoinHandle::join`]; if nobody joins, it is reported on stderr with the
/// greenlet's name.
///
/// Never panics: if the stack cannot be allocated, the handle's `join`
/// returns [`Error::Spawn`] (use [`Builder::spawn`] to see it at once).
///
/// # Examples
///
/// ```
/// let h = greenhouse::spawn(|| 6 * 7);
/// assert_eq!(h.join(), Ok(42));
/// ```
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    Builder::new().spawn(f).unwrap_or_else(JoinHandle::failed)
}

/// Spawns `f` to start after `delay` (gevent's `spawn_later`).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// let t0 = Instant::now();
/// let h = greenhouse::spawn_later(Duration::from_millis(20), move || t0.elapsed());
/// assert!(h.join().unwrap() >= Duration::from_millis(20));
/// ```
#[track_caller]
pub fn spawn_later<F, T>(delay: Duration, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    Builder::new()
        .spawn_later(delay, f)
        .unwrap_or_else(JoinHandle::failed)
}

thread_local! {
    /// Message and location captured by the panic hook in a spawned greenlet.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Inside spawned greenlets, the hook records the panic for `join` instead
/// of printing it; everywhere else it defers to the previous hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if greenlet::current_is_spawned() {
                let msg = panic_message(info.payload());
                let text = match info.location() {
                    Some(l) => format!("{msg} (at {}:{}:{})", l.file(), l.line(), l.column()),
                    None => msg,
                };
                let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(text));
            } else {
                prev(info);
            }
        }));
    });
}

/// One spawned greenlet alive, as the blocked-hub detector counts them.
struct Live;

impl Drop for Live {
    fn drop(&mut self) {
        let _ = super::try_with(|hub| hub.probe.add_live(-1));
    }
}

/// When a new greenlet starts.
#[derive(Clone, Copy)]
enum Start {
    /// At the hub's next turn.
    Now,
    /// At this deadline.
    At(Instant),
    /// When its handle says so.
    Never,
}

/// Whether a spawned greenlet's body runs, from how it was first resumed
/// (its first message, in its inbox):
/// a wake-up (the common case) runs it; a kill before it started completes
/// its join state with its error instead.
///
/// This and the functions below are out of line, like everything a
/// spawned greenlet's base frame does before and after its body: that
/// frame stays on the stack while the greenlet lives, and a copy-stack
/// greenlet's parked stack is copied, so it is kept small.
#[inline(never)]
fn started<T: 'static>() -> bool {
    let first = greenlet::with_current(Inner::take_msg);
    if let Msg::Wake(_) = first {
        // A wake-up owns nothing: no drop glue on the common path.
        std::mem::forget(first);
        return true;
    }
    not_started::<T>(first)
}

/// [`started`] for anything but a wake-up: a kill before the start ends
/// the greenlet with its error.
#[cold]
#[inline(never)]
fn not_started<T: 'static>(first: Msg) -> bool {
    match first.into_throw() {
        Ok(t) => {
            complete_current::<T>(Err(t.map_or(Error::Killed, |e| *e)));
            false
        }
        Err(msg) => {
            msg.discard();
            true
        }
    }
}

/// A spawned greenlet's body: `f`, whose result goes to its join state.
struct Spawned<F, T> {
    /// Counts it alive for the blocked-hub detector until it is dropped:
    /// run to its end, or dropped unrun.
    live: Live,
    f: F,
    _result: PhantomData<fn() -> T>,
}

impl<F: FnOnce() -> T + 'static, T: 'static> greenlet::Body for Spawned<F, T> {
    /// Inlined into the coroutine's base frame (one frame fewer on every
    /// parked stack); the body is got in `run_caught`'s frame, where it is
    /// called.
    #[inline(always)]
    fn run_got(get: impl FnOnce() -> Self) -> Outcome {
        if std::mem::size_of::<F>() <= SMALL_BODY {
            let Spawned { live, f, .. } = get();
            run_caught_small(f);
            drop(live);
        } else {
            run_caught(get);
        }
        Outcome::Done
    }
}

/// The size up to which a body is got in the base frame and passed on by
/// value ([`run_caught_small`]): LLVM then inlines a small body into the
/// frame that catches its panics, which saves the body a frame of its own;
/// a larger one is got where it is called ([`run_caught`]), so that its
/// captures are on the stack once instead of twice.
const SMALL_BODY: usize = 16;

/// [`run_caught`] for a small body, passed by value.
#[inline(never)]
fn run_caught_small<F, T>(f: F)
where
    F: FnOnce() -> T,
    T: 'static,
{
    if !started::<T>() {
        return;
    }
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    finish(r);
}

/// Runs a spawned greenlet's body, which `get` gives, and completes its
/// join state with its value, or with the error a panic or a kill turned
/// into. Nothing sized like a message, a result or an error lives in the
/// base frame while the body runs, and the body itself is on the stack
/// once: got inside the `catch_unwind` that calls it.
#[inline(never)]
fn run_caught<F, T>(get: impl FnOnce() -> Spawned<F, T>)
where
    F: FnOnce() -> T,
    T: 'static,
{
    if !started::<T>() {
        drop(get());
        return;
    }
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        let Spawned { live, f, .. } = get();
        let _live = live;
        f()
    }));
    finish(r);
}

/// Completes the running greenlet's join state with what its body ended
/// with.
#[inline(never)]
fn finish<T: 'static>(r: std::thread::Result<T>) {
    complete_current(match r {
        Ok(v) => match deferred_kill() {
            // Killed inside a patched libc call, and returned before the
            // kill could be raised: it still ends as killed.
            Some(e) => Err(e),
            None => Ok(v),
        },
        Err(p) => Err(unwound(p)),
    });
}

/// Completes the running greenlet's join state. Its record is alive while
/// this runs: a started greenlet owns its record until its body returns
/// (`greenlet/inner.rs`, "Ownership"), and this runs inside the body.
fn complete_current<T: 'static>(result: Result<T, Error>) {
    join_state::complete(&greenlet::current_rc(), result);
}

/// The panic message the hook recorded for the running greenlet, if any.
pub(super) fn take_last_panic() -> Option<String> {
    LAST_PANIC.with(|l| l.borrow_mut().take())
}

/// The error of a kill that landed inside a patched libc call and could
/// not be raised there, if one did.
#[inline(never)]
fn deferred_kill() -> Option<Error> {
    if greenlet::with_current(|c| c.ext.deferred_exit.replace(false)) {
        Some(greenlet::with_current(|c| c.ext.take_deferred_error()).unwrap_or(Error::Killed))
    } else {
        None
    }
}

/// What a spawned greenlet whose body unwound with `p` ends with.
#[inline(never)]
fn unwound(p: Box<dyn std::any::Any + Send>) -> Error {
    if p.is::<GreenletExit>() {
        return Error::Killed;
    }
    if p.is::<ThrownError>() {
        return match p.downcast::<ThrownError>() {
            Ok(t) => t.0,
            Err(_) => Error::Killed,
        };
    }
    // Killed inside a patched libc call, whose caller panicked at the
    // `ECANCELED` it got (std's `thread::sleep` does): that unwind is the
    // kill's.
    if greenlet::with_current(|c| c.ext.deferred_exit.replace(false)) {
        greenlet::with_current(|c| c.ext.cancelled.set(false));
        take_last_panic();
        return greenlet::with_current(|c| c.ext.take_deferred_error()).unwrap_or(Error::Killed);
    }
    let message = take_last_panic().unwrap_or_else(|| panic_message(p.as_ref()));
    greenlet::with_current(|c| super::trace::panicked(c, &message));
    Error::Panicked(Panic::new(Greenlet::current().name(), message, p))
}

#[track_caller]
fn spawn_at<F, T>(b: Builder, start: Start, f: F) -> Result<JoinHandle<T>, Error>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let hub = super::get();
    install_panic_hook();
    let name = b.name.map(String::into_boxed_str);
    let stack_size = b.stack_size;
    let copy = b.copy.unwrap_or_else(greenlet::copy_default);
    let record = move || Inner::new(name, true, None, Expect::of::<()>());
    // Counts it alive for the blocked-hub detector until the body is
    // dropped: run to its end, or dropped unrun (also if `create` fails;
    // see `Spawned::live`).
    hub.probe.add_live(1);
    let live = Live;
    let at = std::panic::Location::caller();
    let inner = greenlet::create(
        record,
        stack_size,
        b.clean_stack,
        copy,
        at,
        Spawned {
            live,
            f,
            _result: PhantomData,
        },
    )
    .map_err(Error::spawn)?;
    let core = &inner.ext.join;
    core.handle_alive.set(true);
    core.started.set(!matches!(start, Start::Never));
    // Owned by the scheduler from now on. Not queued yet, it is parked
    // with generation 1: what starts it is a token of that park (a timer,
    // or `start`), and a kill before that bumps the generation, so a late
    // start does nothing.
    inner.ext.park_gen.set(1);
    inner.state.set(State::Blocked);
    let until = if let Start::At(at) = start {
        Some(at)
    } else {
        None
    };
    inner
        .ext
        .note_park(WaitingOn::Start, until, hub.clock.get());
    super::trace::spawned(&inner);
    match start {
        Start::Now => {
            inner.ext.queued.set(true);
            hub.ready.push(inner.clone());
        }
        Start::At(at) => {
            hub.timers
                .insert(at, Token::new(inner.clone(), 1), Woke::Ready);
        }
        Start::Never => {}
    }
    Ok(JoinHandle {
        g: Greenlet::from_inner(inner),
        _marker: PhantomData,
    })
}

/// What a link callback sees: the greenlet that finished and its result
/// (gevent passes the greenlet itself).
pub struct Finished<'a, T> {
    greenlet: &'a Greenlet,
    result: &'a Result<T, Error>,
}

impl<T> fmt::Debug for Finished<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finished")
            .field("name", &self.greenlet.name())
            .field("successful", &self.result.is_ok())
            .finish()
    }
}

impl<'a, T> Finished<'a, T> {
    /// The greenlet that finished.
    pub fn greenlet(&self) -> &'a Greenlet {
        self.greenlet
    }

    /// Its name.
    pub fn name(&self) -> String {
        self.greenlet.name()
    }

    /// Its result ([`Error::ResultTaken`] if a join took it before the
    /// callback was added).
    pub fn result(&self) -> &'a Result<T, Error> {
        self.result
    }

    /// Its value, if it finished successfully (gevent's `value`).
    pub fn value(&self) -> Option<&'a T> {
        self.result.as_ref().ok()
    }

    /// Its error, if it failed (gevent's `exception`).
    pub fn error(&self) -> Option<&'a Error> {
        self.result.as_ref().err()
    }

    /// Whether it returned a value (gevent's `successful()`).
    pub fn is_successful(&self) -> bool {
        self.result.is_ok()
    }
}

/// A handle to a spawned greenlet: join it, kill it, or ask about it.
///
/// Dropping the handle detaches the greenlet (it keeps running).
///
/// # Send
/// Not `Send`: the greenlet lives on this thread's hub.
///
/// ```compile_fail
/// let h = greenhouse::spawn(|| 1);
/// std::thread::spawn(move || h.join());
/// ```
pub struct JoinHandle<T> {
    /// Counted: a greenlet suspended in a switch stays reachable while
    /// its join handle exists.
    g: Greenlet,
    /// Its result is a `T`; not `Send` (the greenlet lives on this
    /// thread's hub).
    _marker: PhantomData<Typed<T>>,
}

/// A [`JoinHandle`]'s marker: its result is a `T` (covariant, `Unpin` and
/// owning no `T` itself), and it is not `Send`.
type Typed<T> = (fn() -> T, *const ());

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("name", &self.g.name())
            .field("ready", &self.core().done.get())
            .finish()
    }
}

impl<T: 'static> JoinHandle<T> {
    fn failed(e: Error) -> JoinHandle<T> {
        let g = Rc::new(Inner::new(None, true, None, Expect::of::<()>()));
        g.state.set(State::Dead);
        let core = &g.ext.join;
        core.put::<T>(Err(e));
        core.done.set(true);
        core.handle_alive.set(true);
        JoinHandle {
            g: Greenlet::from_inner(g),
            _marker: PhantomData,
        }
    }

    /// Waits for the greenlet to finish and returns its result.
    ///
    /// # Errors
    /// - [`Error::Panicked`] with the panic message and the greenlet's name;
    /// - [`Error::Killed`] if it was killed;
    /// - [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expired;
    /// - [`Error::Deadlock`] if nothing can ever finish it;
    /// - [`Error::Invalid`] when a greenlet joins itself;
    /// - [`Error::ResultTaken`] if `join_timeout` already took the result.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = greenhouse::spawn(|| -> u8 { panic!("boom") });
    /// let err = h.join().unwrap_err();
    /// assert!(err.to_string().contains("boom"));
    /// ```
    pub fn join(self) -> Result<T, Error> {
        self.wait_until(None)?;
        self.take()
    }

    /// Like [`join`](Self::join), giving up after `timeout` with
    /// [`Error::TimedOut`]; the handle stays usable then.
    ///
    /// # Errors
    /// As for `join`, plus `TimedOut`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut h = greenhouse::spawn(|| greenhouse::sleep(Duration::from_millis(50)));
    /// assert_eq!(h.join_timeout(Duration::from_millis(1)), Err(greenhouse::Error::TimedOut));
    /// assert_eq!(h.join_timeout(Duration::from_secs(5)), Ok(()));
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<T, Error> {
        self.wait_until(deadline_in(timeout))?;
        self.take()
    }

    pub(crate) fn take(&self) -> Result<T, Error> {
        let core = self.core();
        match core.take::<T>() {
            Some(r) => {
                core.taken.set(true);
                r
            }
            None => Err(Error::ResultTaken),
        }
    }

    /// Registers `f` to run as soon as the greenlet finishes, with the
    /// greenlet and its result (gevent's `link`, `concurrent.futures`'
    /// `add_done_callback`). Returns a key for [`unlink`](Self::unlink).
    ///
    /// Callbacks run in the order they were added, on the hub's thread, on
    /// the finishing greenlet's own stack right after its function returned
    /// (so a callback may block). If the greenlet has already finished, `f`
    /// runs now, in the caller. The result stays available to
    /// [`join`](Self::join). A panic in `f` is reported on stderr and goes
    /// no further.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// let seen = Rc::new(RefCell::new(String::new()));
    /// let s = seen.clone();
    /// let h = greenhouse::Builder::new().name("answer").spawn(|| 21 * 2)?;
    /// h.link(move |done| *s.borrow_mut() = format!("{} -> {:?}", done.name(), done.value()));
    /// assert_eq!(h.join(), Ok(42));
    /// assert_eq!(*seen.borrow(), "answer -> Some(42)");
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn link(&self, f: impl FnOnce(&Finished<'_, T>) + 'static) -> LinkKey {
        self.link_slot(Box::new(move |greenlet, core| {
            let lent = core.lend::<T>();
            let taken = Err(Error::ResultTaken);
            f(&Finished {
                greenlet,
                result: lent.result().unwrap_or(&taken),
            });
        }))
    }

    /// Like [`link`](Self::link), but `f` runs only if the greenlet returns
    /// a value (gevent's `link_value`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let ok = Rc::new(Cell::new(0));
    /// let (a, b) = (ok.clone(), ok.clone());
    /// let good = greenhouse::spawn(|| 1);
    /// let bad = greenhouse::spawn(|| -> i32 { panic!("no") });
    /// good.link_value(move |d| a.set(a.get() + d.value().unwrap()));
    /// bad.link_value(move |_| b.set(100));
    /// let _ = (good.join(), bad.join());
    /// assert_eq!(ok.get(), 1);
    /// ```
    pub fn link_value(&self, f: impl FnOnce(&Finished<'_, T>) + 'static) -> LinkKey {
        self.link(move |d| {
            if d.is_successful() {
                f(d)
            }
        })
    }

    /// Like [`link`](Self::link), but `f` runs only if the greenlet fails:
    /// it panicked, was killed, or its result was an error (gevent's
    /// `link_exception`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// let why = Rc::new(RefCell::new(None));
    /// let w = why.clone();
    /// let h = greenhouse::spawn(|| greenhouse::sleep(std::time::Duration::from_secs(60)));
    /// h.link_exception(move |d| *w.borrow_mut() = d.error().cloned());
    /// h.kill()?;
    /// assert_eq!(*why.borrow(), Some(greenhouse::Error::Killed));
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn link_exception(&self, f: impl FnOnce(&Finished<'_, T>) + 'static) -> LinkKey {
        self.link(move |d| {
            if !d.is_successful() {
                f(d)
            }
        })
    }

    /// Like [`link`](Self::link), but the callback takes the result (a
    /// later `join` gets [`Error::ResultTaken`]).
    pub(crate) fn link_take(&self, f: impl FnOnce(Result<T, Error>) + 'static) -> LinkKey {
        self.link_slot(Box::new(move |_, core| {
            f(core.take::<T>().unwrap_or(Err(Error::ResultTaken)));
        }))
    }
}

impl<T> JoinHandle<T> {
    /// Its join state, in its record.
    fn core(&self) -> &JoinCore {
        &self.g.inner().ext.join
    }

    pub(super) fn wait_until(&self, deadline: Option<Instant>) -> Result<(), Error> {
        let core = self.core();
        if core.done.get() {
            return Ok(());
        }
        if greenlet::current_ptr() == Rc::as_ptr(self.g.inner()) {
            return Err(Error::Invalid("a greenlet cannot join itself"));
        }
        let done = &core.done;
        core.waiters
            .wait_until(deadline, WaitingOn::Join(self.g.inner().id), || done.get())
            .map_err(Woke::error)
    }

    /// Kills the greenlet: raises [`GreenletExit`] at its suspension point
    /// (its destructors run) and waits until it is dead. A greenlet that has
    /// not started yet dies without running. Killing a finished greenlet
    /// does nothing; killing yourself unwinds at once.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if an armed [`Timeout`](crate::Timeout) expires
    /// while waiting (it may catch `GreenletExit` and run on).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let h = greenhouse::spawn(|| greenhouse::sleep(Duration::from_secs(60)));
    /// greenhouse::yield_now(); // let it start sleeping
    /// h.kill().unwrap();
    /// assert_eq!(h.join(), Err(greenhouse::Error::Killed));
    /// ```
    pub fn kill(&self) -> Result<(), Error> {
        self.kill_nowait();
        self.wait_until(None)
    }

    /// Raises [`GreenletExit`] in the greenlet without waiting for it to die.
    pub fn kill_nowait(&self) {
        if !self.core().done.get() {
            kill_nowait(self.g.inner(), None);
        }
    }

    /// Kills the greenlet *with an error* (gevent's
    /// `kill(exception=...)`): raises [`ThrownError`] at its suspension
    /// point, so that, unless it catches it, it ends unsuccessful with
    /// `error` (joiners and [`link_exception`](Self::link_exception)
    /// callbacks see it; [`kill`](Self::kill) would give
    /// [`Error::Killed`]). Waits until it is dead. A greenlet that has not
    /// started dies with `error` without running.
    ///
    /// # Errors
    /// As for [`kill`](Self::kill).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use greenhouse::Error;
    ///
    /// let h = greenhouse::spawn(|| greenhouse::sleep(Duration::from_secs(60)));
    /// greenhouse::yield_now();
    /// h.kill_with(Error::custom(std::io::Error::other("shutting down")))?;
    /// let err = h.join().unwrap_err();
    /// assert_eq!(err.to_string(), "shutting down");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn kill_with(&self, error: Error) -> Result<(), Error> {
        self.kill_with_nowait(error);
        self.wait_until(None)
    }

    /// [`kill_with`](Self::kill_with) without waiting for it to die.
    pub fn kill_with_nowait(&self, error: Error) {
        if !self.core().done.get() {
            kill_nowait(self.g.inner(), Some(error));
        }
    }

    /// Removes a callback that has not run yet (gevent's `unlink`).
    /// Returns whether it was still registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let h = greenhouse::spawn(|| ());
    /// let key = h.link(|_| unreachable!("unlinked before the greenlet ran"));
    /// assert!(h.unlink(key));
    /// assert!(!h.unlink(key));
    /// h.join()?;
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn unlink(&self, key: LinkKey) -> bool {
        let Some(extra) = join_state::extra_if(self.g.inner()) else {
            return false;
        };
        let mut cbs = extra.links.borrow_mut();
        match cbs.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let (_, cb) = cbs.remove(i);
                drop(cbs);
                drop(cb);
                true
            }
            None => false,
        }
    }

    /// Runs `f` when the greenlet finishes, unless unlinked first (the
    /// caller checks it has not finished yet).
    pub(crate) fn watch(&self, f: Notice) -> LinkKey {
        let key = self.next_key();
        join_state::extra(self.g.inner())
            .links
            .borrow_mut()
            .push((key, Link::Notice(f)));
        key
    }

    fn next_key(&self) -> LinkKey {
        let extra = join_state::extra(self.g.inner());
        let key = LinkKey(extra.next_link.get());
        extra.next_link.set(key.0 + 1);
        key
    }

    fn link_slot(&self, cb: Callback) -> LinkKey {
        let key = self.next_key();
        if self.core().done.get() {
            join_state::run_callback(self.core(), &self.g, cb);
        } else {
            join_state::extra(self.g.inner())
                .links
                .borrow_mut()
                .push((key, Link::Callback(cb)));
        }
        key
    }

    /// Schedules a greenlet made with [`Builder::create`] to start at the
    /// hub's next turn (gevent's `start`). Does nothing if it was started
    /// already, or killed.
    pub fn start(&self) {
        if self.begin() {
            Token::new(self.g.inner().clone(), 1).wake_now();
        }
    }

    /// Schedules a greenlet made with [`Builder::create`] to start after
    /// `delay` (gevent's `start_later`). Does nothing if it was started
    /// already, or killed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let t0 = Instant::now();
    /// let h = greenhouse::Builder::new().create(move || t0.elapsed())?;
    /// h.start_later(Duration::from_millis(20));
    /// h.start(); // already scheduled: no effect
    /// assert!(h.join()? >= Duration::from_millis(20));
    /// # Ok::<(), greenhouse::Error>(())
    /// ```
    pub fn start_later(&self, delay: Duration) {
        if self.begin() {
            let at = super::watcher::saturating_deadline(delay);
            let token = Token::new(self.g.inner().clone(), 1);
            super::with(|hub| {
                hub.timers.insert(at, token, Woke::Ready);
            });
        }
    }

    /// Marks it started; false if it was already, or cannot start.
    fn begin(&self) -> bool {
        let g = self.g.inner();
        let core = self.core();
        let startable = !core.started.get()
            && !core.done.get()
            && g.state.get() == State::Blocked
            && !g.ext.queued.get()
            && g.ext.park_gen.get() == 1;
        if startable {
            core.started.set(true);
        }
        startable
    }

    /// The error it failed with, if it has finished and failed (a result
    /// already taken by a join counts as [`Error::ResultTaken`]).
    pub(super) fn failure(&self) -> Option<Error> {
        let core = self.core();
        if !core.done.get() {
            return None;
        }
        if !core.has_result() {
            return Some(Error::ResultTaken);
        }
        core.with_error(|e| e.cloned())
    }

    /// Wakes `waker` when it finishes (the handle polled as a `Future`;
    /// the latest waker replaces the one before).
    pub(crate) fn set_waker(&self, waker: &std::task::Waker) {
        let mut w = join_state::extra(self.g.inner()).waker.borrow_mut();
        match w.as_ref() {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }

    /// The list woken when it finishes (for `hub::wait`).
    pub(super) fn waiters(&self) -> &WaitList {
        &self.core().waiters
    }

    /// Whether it has been scheduled to run (gevent's `started`): true for
    /// a spawned greenlet, and for a created one once started.
    pub fn is_started(&self) -> bool {
        self.core().started.get()
    }

    /// Whether it has finished and will not run again (gevent's `dead`).
    /// Same as [`is_ready`](Self::is_ready) for a greenlet made by this
    /// crate's `spawn`.
    pub fn is_dead(&self) -> bool {
        self.core().done.get()
    }

    /// Whether the greenlet has finished (its result is available).
    pub fn is_ready(&self) -> bool {
        self.core().done.get()
    }

    /// The greenlet's name.
    pub fn name(&self) -> String {
        self.g.name()
    }

    /// A [`Greenlet`] handle to the same greenlet.
    pub fn greenlet(&self) -> Greenlet {
        self.g.clone()
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let core = self.core();
        core.handle_alive.set(false);
        if core.done.get() {
            if !core.taken.get() {
                core.with_error(join_state::report_if_panicked);
            }
            // Nobody can read it any more.
            core.discard();
        }
    }
}

/// Raises [`GreenletExit`] (or, with an error, [`ThrownError`]) in `g`
/// through the hub without waiting; killing the current greenlet unwinds
/// at once. Shared by `JoinHandle` and by owners that keep no typed handle
/// (`pool`).
pub(crate) fn kill_nowait(g: &Rc<Inner>, error: Option<Error>) {
    if g.is_dead() {
        return;
    }
    if greenlet::current_ptr() == Rc::as_ptr(g) {
        greenlet::raise(error);
    }
    super::with(|hub| scheduler::throw_into(&hub.ready, g, error));
}

/// Raises [`GreenletExit`] in every spawned greenlet of this thread that
/// is still alive (a [`Runtime`](crate::Runtime) hub shutting down).
pub(crate) fn kill_all_spawned() {
    for g in greenlet::live_records() {
        if g.spawned && !g.is_dead() && greenlet::current_ptr() != Rc::as_ptr(&g) {
            kill_nowait(&g, None);
        }
    }
}

/// How many spawned greenlets of this thread are still alive.
pub(crate) fn live_spawned() -> usize {
    greenlet::live_records()
        .iter()
        .filter(|g| g.spawned && !g.is_dead())
        .count()
}
