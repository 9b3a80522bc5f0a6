//! The hub's dump: every live greenlet of this thread, what it waits for,
//! where it was spawned, and the backtrace of its suspended stack
//! (gevent's `print_run_info` and `GreenletTree`, Go's goroutine dump).
//!
//! Nothing here is on a hot path. A park costs three stores into the
//! greenlet's [`Slot`](super::Slot) (`note_park`: what, until when, and
//! the hub's tick clock); the greenlet layer keeps a registry of records
//! (one slab push per greenlet) and where each was created
//! (`#[track_caller]`).
//!
//! A suspended greenlet's backtrace is taken on its own stack: the
//! trampoline resumes it into [`capture`] (`greenlet::run_on_stack`),
//! which walks the frames below it with the unwinder and suspends back.
//! None of the greenlet's code runs and nothing about it changes: not its
//! state, its inbox or its park. Frames are symbolized only when shown,
//! once per distinct address.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::os::fd::RawFd;
use std::panic::Location;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::greenlet::{self, Inner, State};

/// What a parked greenlet waits for (as the dump shows it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitingOn {
    /// To start: created and not started, or spawned with a delay.
    #[default]
    Start,
    /// A `sleep` (or, under monkey patching, a blocking sleep or `poll`
    /// without file descriptors).
    Sleep,
    /// Its turn after [`yield_now`](crate::yield_now).
    Yield,
    /// A file descriptor to become readable.
    Readable(RawFd),
    /// A file descriptor to become writable.
    Writable(RawFd),
    /// A greenlet to finish ([`JoinHandle::join`](crate::JoinHandle::join)),
    /// by id.
    Join(u64),
    /// Any of several greenlets to finish ([`joinall`](crate::joinall),
    /// [`JoinAll`](crate::JoinAll)).
    JoinAny,
    /// Any of several objects ([`iwait`](crate::iwait), [`wait`](crate::wait())).
    Objects,
    /// A synchronization primitive: `"Event"`, `"AsyncResult"`,
    /// `"Semaphore"`, `"Lock"`, `"Queue::get"`, `"Pool slot"`, ...
    Primitive(&'static str),
    /// Another thread: a [thread pool](crate::threadpool) job finishing.
    OtherThread,
    /// A future ([`wait_future`](crate::wait_future)).
    Future,
}

impl WaitingOn {
    /// The same kind of wait with its particulars (fd, greenlet id)
    /// dropped: what the grouped view merges on.
    fn kind(self) -> WaitingOn {
        match self {
            WaitingOn::Readable(_) => WaitingOn::Readable(-1),
            WaitingOn::Writable(_) => WaitingOn::Writable(-1),
            WaitingOn::Join(_) => WaitingOn::Join(0),
            w => w,
        }
    }
}

impl fmt::Display for WaitingOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitingOn::Start => f.write_str("start"),
            WaitingOn::Sleep => f.write_str("sleep"),
            WaitingOn::Yield => f.write_str("its turn (yield)"),
            WaitingOn::Readable(fd) if *fd < 0 => f.write_str("readable fd"),
            WaitingOn::Readable(fd) => write!(f, "readable fd {fd}"),
            WaitingOn::Writable(fd) if *fd < 0 => f.write_str("writable fd"),
            WaitingOn::Writable(fd) => write!(f, "writable fd {fd}"),
            WaitingOn::Join(0) => f.write_str("join"),
            WaitingOn::Join(id) => write!(f, "join of greenlet {id}"),
            WaitingOn::JoinAny => f.write_str("joinall"),
            WaitingOn::Objects => f.write_str("wait on objects"),
            WaitingOn::Primitive(p) => f.write_str(p),
            WaitingOn::OtherThread => f.write_str("another thread"),
            WaitingOn::Future => f.write_str("a future"),
        }
    }
}

/// Where a greenlet is in its life, as the dump sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GreenletState {
    /// Executing now: the greenlet that took the dump.
    Running,
    /// In the hub's ready queue (woken, yielded, or spawned and about to
    /// start).
    Ready,
    /// Parked in the hub, waiting for [`GreenletInfo::waiting_on`].
    Parked,
    /// Waiting in an explicit [`switch`](crate::Greenlet::switch).
    Suspended,
    /// Created with [`Greenlet::new`](crate::Greenlet::new), never switched to.
    NotStarted,
}

impl fmt::Display for GreenletState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GreenletState::Running => "running",
            GreenletState::Ready => "ready",
            GreenletState::Parked => "parked",
            GreenletState::Suspended => "suspended in a switch",
            GreenletState::NotStarted => "not started",
        })
    }
}

/// The return addresses of a greenlet's stack, innermost first,
/// symbolized when shown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StackTrace {
    ips: Rc<[usize]>,
}

/// One symbolized frame (an inlined call is a frame of its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function, demangled without its hash (`"?"` if unknown).
    pub function: String,
    /// Source file and line, when debug information has them.
    pub location: Option<(String, u32)>,
}

impl StackTrace {
    /// The frames, innermost first, without greenhouse's own scheduling
    /// frames and the runtime glue below a greenlet's body.
    pub fn frames(&self) -> Vec<Frame> {
        let _quiet = Quiet::new();
        shown(self.ips.iter().flat_map(|&ip| symbolize(ip)))
    }

    /// The raw return addresses, innermost first.
    pub fn addresses(&self) -> &[usize] {
        &self.ips
    }
}

impl fmt::Display for StackTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_frames(f, &self.frames(), "")
    }
}

fn write_frames(out: &mut impl fmt::Write, frames: &[Frame], indent: &str) -> fmt::Result {
    for fr in frames {
        writeln!(out, "{indent}  {}", fr.function)?;
        if let Some((file, line)) = &fr.location {
            writeln!(out, "{indent}      at {file}:{line}")?;
        }
    }
    Ok(())
}

/// Frames that say nothing about where the user's code is: the capture
/// itself, the trampoline, and the closure-calling glue around a body.
/// (The body's own frame, `greenlet::create::{{closure}}` or
/// `spawn_at::{{closure}}`, stays: without debug information a closure
/// inlined into it is known only by that name.)
fn hidden(function: &str) -> bool {
    const HIDE: &[&str] = &[
        "backtrace::",
        "greenhouse::hub::dump::",
        "greenhouse::greenlet::trampoline::",
        "corosensei::",
        "stack_init_trampoline",
        "core::ops::function::",
        "std::panicking::",
        "std::panic::catch_unwind",
        "__rust_try",
        "std::sys::backtrace::",
    ];
    HIDE.iter().any(|h| function.starts_with(h))
        // Call shims: `<fn() as core::ops::function::FnOnce<()>>::call_once`.
        || (function.starts_with('<') && function.contains(" as core::ops::function::Fn"))
}

/// The parking machinery above the call that parked (`sleep`,
/// `Event::wait`, a socket read): hidden while it is on top.
fn parking(function: &str) -> bool {
    const TOP: &[&str] = &[
        "greenhouse::hub::scheduler::park",
        "greenhouse::hub::scheduler::suspend_",
        "greenhouse::hub::with",
        "std::thread::local::LocalKey",
        "greenhouse::hub::scheduler::WaitList::wait",
        "greenhouse::sync::waiters::Handoff",
    ];
    TOP.iter().any(|h| function.starts_with(h))
}

/// The frames worth showing: without hidden ones and the parking
/// machinery on top.
fn shown(frames: impl IntoIterator<Item = Frame>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for f in frames {
        if hidden(&f.function) || (out.is_empty() && parking(&f.function)) {
            continue;
        }
        out.push(f);
    }
    out
}

/// Symbolizes one return address (several frames if calls were inlined),
/// the call itself rather than the instruction after it.
pub(crate) fn symbolize(ip: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    backtrace::resolve(ip as *mut std::ffi::c_void, |sym| {
        let function = sym
            .name()
            .map_or_else(|| "?".to_string(), |n| format!("{n:#}"));
        let location = match (sym.filename(), sym.lineno()) {
            (Some(file), Some(line)) => Some((file.display().to_string(), line)),
            _ => None,
        };
        out.push(Frame { function, location });
    });
    if out.is_empty() {
        out.push(Frame {
            function: format!("{ip:#x}"),
            location: None,
        });
    }
    out
}

/// One greenlet in a [`Dump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GreenletInfo {
    /// Its id ([`Greenlet::id`](crate::Greenlet::id)).
    pub id: u64,
    /// Its name (`Greenlet-<id>` unless it was given one).
    pub name: String,
    /// Whether it is the thread's main greenlet.
    pub is_main: bool,
    /// Spawned into the hub (`spawn`, a pool, a server) rather than made
    /// with `Greenlet::new`.
    pub spawned: bool,
    /// Where it is in its life.
    pub state: GreenletState,
    /// What it waits for, when [`Parked`](GreenletState::Parked); for a
    /// [`Ready`](GreenletState::Ready) greenlet, what it waited for last.
    pub waiting_on: Option<WaitingOn>,
    /// When that wait gives up (its own timeout, a `Timeout` scope, or a
    /// delayed start), if ever.
    pub deadline: Option<Instant>,
    /// How long it has been parked or ready, to the hub's tick (its clock
    /// is read at tick boundaries, so this can be short by up to one tick).
    pub since: Option<Duration>,
    /// The greenlet a result goes to (`Greenlet::new`'s parent); `None`
    /// for main and for spawned greenlets, whose parent is the hub.
    pub parent: Option<u64>,
    /// The greenlet that created or spawned it (0: none, e.g. main).
    pub spawned_by: u64,
    /// Where in the source it was created or spawned.
    pub spawned_at: Option<&'static Location<'static>>,
    /// Its stack where it is suspended (or, for the running greenlet,
    /// where it took the dump). `None` for greenlets that never ran, for
    /// main when another greenlet takes the dump (main's stack is running
    /// the hub), for a copy-stack greenlet when a greenlet on the same run
    /// stack takes the dump (its bytes cannot be put back while that one
    /// runs there; a dump taken from main has them all), and in a
    /// [`dump_brief`].
    pub backtrace: Option<StackTrace>,
}

impl GreenletInfo {
    /// The one-line description used by both views.
    fn headline(&self, now: Instant) -> String {
        let mut s = format!("{} (id {}) {}", self.name, self.id, self.state);
        if let Some(w) = self.waiting_on {
            match self.state {
                GreenletState::Parked => {
                    let _ = write!(s, " on {w}");
                }
                GreenletState::Ready if w == WaitingOn::Start => s.push_str(" to start"),
                _ => {}
            }
        }
        if let Some(d) = self.deadline {
            let _ = match d.checked_duration_since(now) {
                Some(left) => write!(s, ", deadline in {left:.1?}"),
                None => write!(s, ", deadline passed"),
            };
        }
        if let Some(t) = self.since {
            let _ = write!(s, ", for {t:.1?}");
        }
        if let Some(at) = self.spawned_at {
            let verb = if self.spawned { "spawned" } else { "created" };
            let _ = write!(s, "; {verb} at {}:{}", at.file(), at.line());
        }
        s
    }

    fn tree_parent(&self) -> u64 {
        self.parent.unwrap_or(self.spawned_by)
    }
}

/// A snapshot of this thread's hub: every live greenlet. Shown as a tree
/// (by parent, or by spawner for spawned greenlets) when small, grouped by
/// identical stacks when large; both views are available.
pub struct Dump {
    greenlets: Vec<GreenletInfo>,
    taken: Instant,
    thread: String,
}

/// Above this many greenlets, `Display` shows the grouped view.
const TREE_LIMIT: usize = 200;

impl Dump {
    /// Every live greenlet, main first, then by id.
    pub fn greenlets(&self) -> &[GreenletInfo] {
        &self.greenlets
    }

    /// The greenlet with this id, if it was alive.
    pub fn get(&self, id: u64) -> Option<&GreenletInfo> {
        self.greenlets.iter().find(|g| g.id == id)
    }

    /// How many greenlets it holds (main included).
    pub fn len(&self) -> usize {
        self.greenlets.len()
    }

    /// Always false: main is always there.
    pub fn is_empty(&self) -> bool {
        self.greenlets.is_empty()
    }

    /// Every greenlet under its parent (or spawner), with its stack:
    /// gevent's `GreenletTree`.
    pub fn tree(&self) -> String {
        let _quiet = Quiet::new();
        let mut out = self.header();
        let ids: HashMap<u64, usize> = self
            .greenlets
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id, i))
            .collect();
        let mut children: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (i, g) in self.greenlets.iter().enumerate() {
            let p = g.tree_parent();
            if !g.is_main && p != g.id && ids.contains_key(&p) {
                children.entry(p).or_default().push(i);
            } else {
                roots.push(i);
            }
        }
        let mut cache = Symbols::default();
        // Depth-first, iteratively (a chain of 100,000 spawns must not
        // overflow this stack): (index, prefix of its lines, whether it is
        // its parent's last child; `None` for a root).
        let mut todo: Vec<(usize, String, Option<bool>)> = roots
            .iter()
            .rev()
            .map(|&i| (i, String::new(), None))
            .collect();
        while let Some((i, prefix, last)) = todo.pop() {
            let g = &self.greenlets[i];
            let (branch, cont) = match last {
                None => ("", ""),
                Some(true) => ("+--- ", "     "),
                Some(false) => ("+--- ", ":    "),
            };
            let _ = writeln!(out, "{prefix}{branch}{}", g.headline(self.taken));
            let body = format!("{prefix}{cont}");
            let kids = children.get(&g.id).map_or(&[][..], Vec::as_slice);
            let bar = if kids.is_empty() { " " } else { ":" };
            if let Some(bt) = &g.backtrace {
                let _ = write_frames(&mut out, &cache.frames(bt), &format!("{body}{bar}"));
            }
            for (k, &c) in kids.iter().enumerate().rev() {
                todo.push((c, body.clone(), Some(k + 1 == kids.len())));
            }
        }
        out
    }

    /// Greenlets merged by state, wait, spawn site and stack, largest
    /// groups first, each stack shown once: the view for many greenlets
    /// (Go's goroutine profile). At most `ids` ids are listed per group.
    pub fn grouped(&self, ids: usize) -> String {
        type Key = (
            GreenletState,
            Option<WaitingOn>,
            bool,
            Option<&'static Location<'static>>,
            Option<StackTrace>,
        );
        let _quiet = Quiet::new();
        let mut groups: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, g) in self.greenlets.iter().enumerate() {
            let key = (
                g.state,
                g.waiting_on.map(WaitingOn::kind),
                g.spawned,
                g.spawned_at,
                g.backtrace.clone(),
            );
            groups.entry(key).or_default().push(i);
        }
        let mut groups: Vec<(Key, Vec<usize>)> = groups.into_iter().collect();
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.1[0].cmp(&b.1[0])));
        let mut out = self.header();
        let _ = writeln!(out, "{} groups", groups.len());
        let mut cache = Symbols::default();
        for ((state, waiting, spawned, at, bt), members) in &groups {
            let _ = write!(out, "\n{} x {state}", members.len());
            if let (Some(w), GreenletState::Parked) = (waiting, state) {
                let _ = write!(out, " on {w}");
            }
            if let Some(at) = at {
                let verb = if *spawned { "spawned" } else { "created" };
                let _ = write!(out, "; {verb} at {}:{}", at.file(), at.line());
            }
            let longest = members
                .iter()
                .filter_map(|&i| self.greenlets[i].since)
                .max();
            if let Some(t) = longest {
                let _ = write!(out, "; longest {t:.1?}");
            }
            out.push('\n');
            let shown: Vec<String> = members
                .iter()
                .take(ids)
                .map(|&i| {
                    let g = &self.greenlets[i];
                    format!("{} ({})", g.id, g.name)
                })
                .collect();
            let more = members.len().saturating_sub(ids);
            let _ = write!(out, "  ids: {}", shown.join(", "));
            if more > 0 {
                let _ = write!(out, ", ... {more} more");
            }
            out.push('\n');
            if let Some(bt) = bt {
                let _ = write_frames(&mut out, &cache.frames(bt), "");
            }
        }
        out
    }

    fn header(&self) -> String {
        format!(
            "greenhouse hub of thread '{}': {} greenlets\n",
            self.thread,
            self.greenlets.len()
        )
    }
}

impl fmt::Display for Dump {
    /// The tree up to 200 greenlets, the grouped view (10 ids a group)
    /// beyond.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.greenlets.len() <= TREE_LIMIT {
            f.write_str(&self.tree())
        } else {
            f.write_str(&self.grouped(10))
        }
    }
}

impl fmt::Debug for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dump")
            .field("thread", &self.thread)
            .field("greenlets", &self.greenlets.len())
            .finish()
    }
}

/// Symbolized frames per stack, each address resolved once.
#[derive(Default)]
struct Symbols {
    by_ip: HashMap<usize, Vec<Frame>>,
}

impl Symbols {
    fn frames(&mut self, bt: &StackTrace) -> Vec<Frame> {
        let _quiet = Quiet::new();
        let mut all = Vec::new();
        for &ip in bt.ips.iter() {
            let fr = self.by_ip.entry(ip).or_insert_with(|| symbolize(ip));
            all.extend(fr.iter().cloned());
        }
        shown(all)
    }
}

/// Keeps the blocked-hub detector quiet while a dump is taken or
/// symbolized: a deliberate pause (loading debug information alone can
/// take longer than the threshold), not a greenlet blocking the hub.
struct Quiet(Option<bool>);

impl Quiet {
    fn new() -> Quiet {
        Quiet(super::try_with(|h| {
            let was = h.probe.is_polling();
            h.probe.set_polling(true);
            was
        }))
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        if let Some(was) = self.0 {
            let _ = super::try_with(|h| h.probe.set_polling(was));
        }
    }
}

/// Frames kept per stack.
const MAX_FRAMES: usize = 64;

thread_local! {
    /// The stack [`capture`] walks, `(top, bottom)`: it stops at the first
    /// frame outside it (`(0, 0)`: the thread's own stack, no limit).
    static BOUNDS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// Where [`capture`] leaves the addresses it walked.
    static CAPTURED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Walks the stack it runs on, from its caller down, into `CAPTURED`.
/// Run on a suspended greenlet's stack by `greenlet::run_on_stack`.
#[inline(never)]
fn capture() {
    let me = capture as fn() as usize;
    let (top, bottom) = BOUNDS.with(Cell::get);
    let mut seen_me = false;
    let mut ips = Vec::with_capacity(32);
    backtrace::trace(|frame| {
        if !seen_me {
            // Skip the unwinder's and this function's own frames.
            seen_me = frame.symbol_address() as usize == me;
            return true;
        }
        // The unwinder follows a coroutine's first frame onto the stack
        // that resumed it; that is not this greenlet's.
        let sp = frame.sp() as usize;
        if top != 0 && !(bottom..=top).contains(&sp) {
            return false;
        }
        let ip = frame.ip() as usize;
        if ip != 0 {
            ips.push(ip);
        }
        ips.len() < MAX_FRAMES
    });
    CAPTURED.with(|c| *c.borrow_mut() = ips);
}

/// Captures `g`'s stack, if it has one to show.
fn stack_of(g: &Rc<Inner>, running: bool) -> Option<StackTrace> {
    BOUNDS.with(|b| b.set(ordered(g.stack.get())));
    let taken = if running {
        capture();
        true
    } else {
        greenlet::run_on_stack(g, capture)
    };
    if !taken {
        return None;
    }
    let ips = CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    (!ips.is_empty()).then(|| StackTrace { ips: ips.into() })
}

/// A stack's bounds as `(high, low)`, whichever way round they are kept.
fn ordered((a, b): (usize, usize)) -> (usize, usize) {
    (a.max(b), a.min(b))
}

/// Everything the dump knows about one record (`running`: the
/// running greenlet's stack, captured already).
fn info(
    g: &Rc<Inner>,
    cur: *const Inner,
    now: Instant,
    backtraces: bool,
    running_bt: &mut Option<StackTrace>,
) -> GreenletInfo {
    let running = Rc::as_ptr(g) == cur;
    let parked_or_ready = |queued: bool| {
        if queued {
            GreenletState::Ready
        } else {
            GreenletState::Parked
        }
    };
    let state = match g.state.get() {
        _ if running => GreenletState::Running,
        State::Running => GreenletState::Running,
        State::Blocked => parked_or_ready(g.ext.queued.get()),
        State::Suspended => GreenletState::Suspended,
        State::NotStarted | State::Dead => GreenletState::NotStarted,
    };
    let in_hub = matches!(state, GreenletState::Parked | GreenletState::Ready);
    let since = if in_hub { g.ext.since() } else { None };
    GreenletInfo {
        id: g.id,
        name: g.name(),
        is_main: g.is_main,
        spawned: g.spawned,
        state,
        waiting_on: in_hub.then(|| g.ext.waiting.get()),
        deadline: if in_hub { g.ext.until() } else { None },
        since: since.map(|s| now.saturating_duration_since(s)),
        parent: g.parent_rc().map(|p| p.id),
        spawned_by: g.creator.get(),
        spawned_at: g.created_at.get(),
        backtrace: match (backtraces, running) {
            (false, _) => None,
            (true, true) => running_bt.take(),
            (true, false) => stack_of(g, false),
        },
    }
}

#[inline(never)]
fn take(backtraces: bool) -> Dump {
    let _quiet = Quiet::new();
    let now = Instant::now();
    let cur = greenlet::current_rc();
    // The caller's own stack first, from this frame down.
    let mut running_bt = if backtraces {
        stack_of(&cur, true)
    } else {
        None
    };
    let cur = Rc::as_ptr(&cur);
    let mut records = greenlet::live_records();
    records[1..].sort_by_key(|g| g.id);
    let mut greenlets = Vec::with_capacity(records.len());
    for g in &records {
        greenlets.push(info(g, cur, now, backtraces, &mut running_bt));
    }
    Dump {
        greenlets,
        taken: now,
        thread: std::thread::current()
            .name()
            .unwrap_or("<unnamed>")
            .to_string(),
    }
}

/// A snapshot of every live greenlet of this thread's hub, with the
/// backtrace of each suspended stack.
///
/// Taking it runs no greenlet's code and changes no greenlet's state: each
/// suspended greenlet is resumed only into a routine that walks its stack
/// and suspends back at once. It costs a few microseconds per greenlet
/// (about a second for 100,000); [`dump_brief`] skips the stacks.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let h = greenhouse::Builder::new()
///     .name("sleeper")
///     .spawn(|| greenhouse::sleep(Duration::from_secs(60)))?;
/// greenhouse::yield_now(); // let it start and park
/// let d = greenhouse::dump();
/// let info = d.get(h.greenlet().id()).unwrap();
/// assert_eq!(info.name, "sleeper");
/// assert_eq!(info.state, greenhouse::GreenletState::Parked);
/// assert_eq!(info.waiting_on, Some(greenhouse::WaitingOn::Sleep));
/// println!("{d}");
/// h.kill()?;
/// # Ok::<(), greenhouse::Error>(())
/// ```
pub fn dump() -> Dump {
    take(true)
}

/// Like [`dump`], without backtraces: states, waits and spawn sites only.
pub fn dump_brief() -> Dump {
    take(false)
}

/// [`dump`], formatted: the tree of greenlets with their stacks, or for
/// more than 200 greenlets, identical ones grouped (gevent's
/// `print_run_info`).
pub fn run_info() -> String {
    dump().to_string()
}

/// Prints every hub's dump on stderr when the process receives `signal`
/// (opt-in; `SIGUSR1` is the usual choice), as Go does on `SIGQUIT`:
/// `kill -USR1 <pid>` shows where every greenlet of every thread is.
///
/// Each hub prints its own, from a safe point: the next boundary between
/// two turns of its loop (a hub asleep in its poll is woken for it, within
/// the monitor's period, at most 100 ms). A hub that a greenlet keeps from
/// that point for a second is named on stderr instead; the blocked-hub
/// detector names the greenlet.
///
/// # Errors
/// `InvalidInput` for a signal that cannot be caught or that greenhouse
/// uses itself (`SIGURG`, `SIGSEGV`); the OS error if `sigaction` fails.
///
/// # Examples
///
/// ```no_run
/// greenhouse::dump_on_signal(libc::SIGUSR1)?;
/// // ... serve; then from a shell: kill -USR1 <pid>
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn dump_on_signal(signal: i32) -> std::io::Result<()> {
    super::monitor::install_dump_signal(signal)
}

/// The hub's part of [`dump_on_signal`]: called at a tick boundary when
/// the monitor has asked for a dump.
#[cold]
pub(crate) fn print_requested(probe: &super::monitor::Probe) {
    probe
        .dump_requested
        .store(false, std::sync::atomic::Ordering::Release);
    eprintln!("{}", dump());
}
