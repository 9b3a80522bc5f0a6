//! The blocked-hub detector: notices a greenlet that runs too long without
//! returning to the hub, and reports it with its backtrace.
//!
//! The hub pays one counter store per turn (`Probe::ticks`, bumped by
//! `Schedule::next`) and two stores around each poll (`Probe::polling`):
//! no clock read, no system call. A monitor thread (one per process,
//! started with the first hub) samples every hub's counter. When a counter
//! has not moved for the threshold while its hub is not polling and has
//! spawned greenlets alive (they are what a blocked hub starves), the
//! monitor asks the hub's thread for a backtrace with `SIGURG` (Go's
//! preemption signal, ignored by default, so a stray one is harmless). The
//! handler runs on the thread's alternate signal stack, records the
//! running greenlet's id and name and up to 64 return addresses with
//! `_Unwind_Backtrace` into the probe (no allocation, no lock:
//! `_Unwind_Find_FDE` finds frames through glibc's lock-free
//! `_dl_find_object`), and the monitor thread symbolizes and reports them.
//! When the counter moves again, a second report gives the total time.
//!
//! **Ownership:** the registry owns every `Probe` (`Arc`); a hub holds one
//! too and unregisters on drop, under the registry's lock, and a
//! thread-local guard unregisters it at the latest when the thread's
//! thread-locals are torn down, so before the thread can exit. The monitor signals a thread only under that lock and
//! only while its probe is registered, so it never signals a thread that
//! has gone. The handler reaches the probe through a thread-local pointer
//! cleared before unregistering.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use crate::greenlet;

/// Return addresses kept per capture.
const MAX_FRAMES: usize = 64;
/// Bytes of the greenlet's name kept per capture.
const MAX_NAME: usize = 64;

/// What a hub shares with the monitor.
pub(crate) struct Probe {
    /// Bumped at every hub turn.
    pub(crate) ticks: AtomicU64,
    /// The hub is waiting in the poller (not blocked by a greenlet).
    pub(crate) polling: AtomicBool,
    /// Spawned greenlets alive on this hub.
    pub(crate) live: AtomicUsize,
    thread: libc::pthread_t,
    thread_name: String,
    /// Set by the monitor, cleared by the handler: capture now.
    requested: AtomicBool,
    /// Set by the monitor when the dump signal came: the hub prints its
    /// dump at its next tick boundary and clears it (`dump.rs`).
    pub(crate) dump_requested: AtomicBool,
    /// Set by the monitor with a `SIGURG` that only wakes the hub's poll
    /// (it returns `EINTR`); the handler clears it and does nothing else.
    wake: AtomicBool,
    /// Set by the handler when the capture below is complete.
    captured: AtomicBool,
    gid: AtomicU64,
    name_len: AtomicUsize,
    name: [AtomicU8; MAX_NAME],
    frames_len: AtomicUsize,
    frames: [AtomicUsize; MAX_FRAMES],
}

impl Probe {
    /// One store: only the hub's thread writes the counter.
    #[inline]
    pub(crate) fn tick(&self) {
        self.ticks.store(
            self.ticks.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn set_polling(&self, on: bool) {
        self.polling.store(on, Ordering::Relaxed);
    }

    /// Whether the hub says it is waiting (or otherwise not to be reported).
    pub(crate) fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }

    /// A spawned greenlet was born (+1) or ended (-1); hub thread only.
    #[inline]
    pub(crate) fn add_live(&self, delta: isize) {
        let n = self.live.load(Ordering::Relaxed);
        self.live
            .store(n.wrapping_add_signed(delta), Ordering::Relaxed);
    }
}

/// A report of the detector, given to the hook set with
/// [`set_blocked_hook`] (and printed on stderr when no hook is set).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlockedReport {
    /// The hub's thread name (`<unnamed>` if it has none).
    pub thread: String,
    /// The greenlet that was running (`main` for the thread's own stack).
    pub greenlet: String,
    /// Its id.
    pub id: u64,
    /// How long it had run without returning to the hub: when `finished`,
    /// the total; otherwise, so far.
    pub running_for: Duration,
    /// `false`: it is still running (the backtrace is where it was);
    /// `true`: it has finally yielded (no backtrace).
    pub finished: bool,
    /// Its stack at the moment of the first report, one frame per line.
    pub backtrace: String,
}

impl std::fmt::Display for BlockedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.finished {
            write!(
                f,
                "greenhouse: greenlet '{}' (id {}) on thread '{}' gave the hub back after {} ms",
                self.greenlet,
                self.id,
                self.thread,
                self.running_for.as_millis()
            )
        } else {
            write!(
                f,
                "greenhouse: greenlet '{}' (id {}) on thread '{}' has blocked the hub for {} ms:\n{}",
                self.greenlet,
                self.id,
                self.thread,
                self.running_for.as_millis(),
                self.backtrace
            )
        }
    }
}

type Hook = Box<dyn Fn(&BlockedReport) + Send + Sync>;

/// Process-wide settings and the registry of hubs.
struct Monitor {
    probes: Mutex<Vec<Arc<Probe>>>,
    /// Threshold in microseconds; 0 = off.
    threshold_us: AtomicU64,
    hook: Mutex<Option<Arc<Hook>>>,
}

fn monitor() -> &'static Monitor {
    static M: OnceLock<Monitor> = OnceLock::new();
    M.get_or_init(|| {
        let ms = std::env::var("GREENHOUSE_BLOCKED_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(100);
        Monitor {
            probes: Mutex::new(Vec::new()),
            threshold_us: AtomicU64::new(ms.saturating_mul(1000)),
            hook: Mutex::new(None),
        }
    })
}

/// Sets how long a greenlet may run without returning to the hub before
/// the detector reports it (default 100 ms, or `GREENHOUSE_BLOCKED_MS`
/// milliseconds from the environment); `None` (or
/// `GREENHOUSE_BLOCKED_MS=0`) turns the detector off. Process-wide.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// greenhouse::set_blocked_threshold(Some(Duration::from_millis(250)));
/// assert_eq!(greenhouse::blocked_threshold(), Some(Duration::from_millis(250)));
/// ```
pub fn set_blocked_threshold(threshold: Option<Duration>) {
    let us = threshold.map_or(0, |t| (t.as_micros() as u64).max(1));
    monitor().threshold_us.store(us, Ordering::Relaxed);
    if us > 0 {
        start_thread();
    }
}

/// The detector's threshold; `None` when it is off.
pub fn blocked_threshold() -> Option<Duration> {
    match monitor().threshold_us.load(Ordering::Relaxed) {
        0 => None,
        us => Some(Duration::from_micros(us)),
    }
}

/// Sends the detector's reports to `hook` (called on the monitor's
/// thread) instead of stderr. Process-wide.
///
/// # Examples
///
/// ```
/// greenhouse::set_blocked_hook(|r: &greenhouse::BlockedReport| {
///     eprintln!("{r}"); // or a log, a metric
/// });
/// greenhouse::clear_blocked_hook(); // back to stderr
/// ```
pub fn set_blocked_hook(hook: impl Fn(&BlockedReport) + Send + Sync + 'static) {
    let hook: Hook = Box::new(hook);
    *monitor().hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
}

/// Sends the detector's reports to stderr again.
pub fn clear_blocked_hook() {
    *monitor().hook.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

thread_local! {
    /// This thread's probe, for the signal handler (no destructor, so it
    /// stays readable from a handler until the thread is gone).
    static PROBE: Cell<*const Probe> = const { Cell::new(std::ptr::null()) };
    /// Unregisters the probe when the thread's thread-locals are torn
    /// down, even if the hub itself outlives them (an `Rc` cycle through
    /// it): a registered probe must always belong to a live thread.
    static EXIT: ExitGuard = const { ExitGuard(std::cell::RefCell::new(None)) };
}

/// See `EXIT`.
struct ExitGuard(std::cell::RefCell<Option<Arc<Probe>>>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.borrow_mut().take() {
            unregister(&p);
        }
    }
}

/// Registers the current thread's new hub.
pub(crate) fn register() -> Arc<Probe> {
    let thread_name = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    let probe = Arc::new(Probe {
        ticks: AtomicU64::new(0),
        polling: AtomicBool::new(false),
        live: AtomicUsize::new(0),
        // SAFETY: pthread_self has no preconditions.
        thread: unsafe { libc::pthread_self() },
        thread_name,
        requested: AtomicBool::new(false),
        dump_requested: AtomicBool::new(false),
        wake: AtomicBool::new(false),
        captured: AtomicBool::new(false),
        gid: AtomicU64::new(0),
        name_len: AtomicUsize::new(0),
        name: [const { AtomicU8::new(0) }; MAX_NAME],
        frames_len: AtomicUsize::new(0),
        frames: [const { AtomicUsize::new(0) }; MAX_FRAMES],
    });
    crate::stack::ensure_thread_ready(); // the alternate signal stack
    install_handler();
    // A hub made while the thread's thread-locals are torn down is not
    // watched: nothing would unregister it before the thread is gone.
    if EXIT
        .try_with(|e| *e.0.borrow_mut() = Some(probe.clone()))
        .is_err()
    {
        return probe;
    }
    PROBE.with(|p| p.set(Arc::as_ptr(&probe)));
    let m = monitor();
    m.probes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(probe.clone());
    if m.threshold_us.load(Ordering::Relaxed) > 0 {
        start_thread();
    }
    probe
}

/// Unregisters the current thread's hub (its `Drop`).
pub(crate) fn unregister(probe: &Arc<Probe>) {
    let _ = PROBE.try_with(|p| p.set(std::ptr::null()));
    let mut probes = monitor().probes.lock().unwrap_or_else(|e| e.into_inner());
    probes.retain(|p| !Arc::ptr_eq(p, probe));
}

pub(crate) fn start_thread() {
    static START: Once = Once::new();
    START.call_once(|| {
        let started = std::thread::Builder::new()
            .name("greenhouse-monitor".into())
            .spawn(watch);
        RUNNING.store(started.is_ok(), Ordering::Relaxed);
    });
}

/// The monitor thread was started (it runs for the process's life).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Threads of greenhouse's own that never touch the program's locks: the
/// monitor, if it runs (for `remote::only_thread`).
pub(crate) fn own_threads() -> usize {
    usize::from(RUNNING.load(Ordering::Relaxed))
}

/// What the monitor remembers of one hub between samples.
struct Seen {
    probe: Arc<Probe>,
    ticks: u64,
    since: Instant,
    /// The incident already reported: (greenlet, id, first sample).
    reported: Option<(String, u64)>,
    /// When a dump was asked of it and not yet printed.
    dump_asked: Option<Instant>,
}

/// The monitor thread: samples every hub, forever.
fn watch() {
    let m = monitor();
    let mut seen: Vec<Seen> = Vec::new();
    loop {
        let us = m.threshold_us.load(Ordering::Relaxed);
        let period = if us == 0 {
            Duration::from_millis(100)
        } else {
            Duration::from_micros((us / 4).clamp(1_000, 25_000))
        };
        std::thread::sleep(period);
        let now = Instant::now();
        let probes: Vec<Arc<Probe>> = m.probes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        seen.retain(|s| probes.iter().any(|p| Arc::ptr_eq(p, &s.probe)));
        if take_dump_signal() {
            ask_for_dumps(&probes, &mut seen, now);
        }
        for s in &mut seen {
            late_dump(s, now);
        }
        for p in probes {
            let ticks = p.ticks.load(Ordering::Relaxed);
            let idx = match seen.iter().position(|s| Arc::ptr_eq(&s.probe, &p)) {
                Some(i) => i,
                None => {
                    seen.push(Seen {
                        probe: p,
                        ticks,
                        since: now,
                        reported: None,
                        dump_asked: None,
                    });
                    continue;
                }
            };
            let s = &mut seen[idx];
            let quiet = p.polling.load(Ordering::Relaxed) || p.live.load(Ordering::Relaxed) == 0;
            if ticks != s.ticks || quiet {
                if let Some((greenlet, id)) = s.reported.take() {
                    report(&BlockedReport {
                        thread: p.thread_name.clone(),
                        greenlet,
                        id,
                        running_for: now - s.since,
                        finished: true,
                        backtrace: String::new(),
                    });
                }
                s.ticks = ticks;
                s.since = now;
                continue;
            }
            if us == 0 || s.reported.is_some() || now - s.since < Duration::from_micros(us) {
                continue;
            }
            let (greenlet, id, backtrace) = capture(&p);
            report(&BlockedReport {
                thread: p.thread_name.clone(),
                greenlet: greenlet.clone(),
                id,
                running_for: now - s.since,
                finished: false,
                backtrace,
            });
            s.reported = Some((greenlet, id));
        }
    }
}

/// The dump signal came: every hub prints its dump at its next tick
/// boundary; a hub asleep in its poll is woken for it.
fn ask_for_dumps(probes: &[Arc<Probe>], seen: &mut Vec<Seen>, now: Instant) {
    for p in probes {
        p.dump_requested.store(true, Ordering::Release);
        match seen.iter_mut().find(|s| Arc::ptr_eq(&s.probe, p)) {
            Some(s) => s.dump_asked = Some(now),
            None => seen.push(Seen {
                probe: p.clone(),
                ticks: p.ticks.load(Ordering::Relaxed),
                since: now,
                reported: None,
                dump_asked: Some(now),
            }),
        }
        if p.polling.load(Ordering::Relaxed) {
            p.wake.store(true, Ordering::Release);
            // Under the registry's lock: a registered probe's thread is alive.
            let probes = monitor().probes.lock().unwrap_or_else(|e| e.into_inner());
            if probes.iter().any(|q| Arc::ptr_eq(q, p)) {
                // SAFETY: the thread is alive (above); SIGURG's handler is
                // ours, and with `wake` set it only returns.
                unsafe { libc::pthread_kill(p.thread, libc::SIGURG) };
            }
        }
    }
}

/// Says so once if a hub has not printed its dump a second after the
/// signal: something is keeping it from its tick boundary.
fn late_dump(s: &mut Seen, now: Instant) {
    let Some(at) = s.dump_asked else { return };
    if !s.probe.dump_requested.load(Ordering::Acquire) {
        s.dump_asked = None;
    } else if now - at >= Duration::from_secs(1) {
        s.dump_asked = None;
        eprintln!(
            "greenhouse: the hub of thread '{}' has not reached a safe point for its dump \
             in 1 s: a greenlet is blocking it (the blocked-hub detector names it)",
            s.probe.thread_name
        );
    }
}

fn report(r: &BlockedReport) {
    super::trace::blocked(r);
    let hook = monitor()
        .hook
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match hook {
        Some(h) => h(r),
        None => eprintln!("{r}"),
    }
}

/// Asks the hub's thread for its running greenlet and stack; waits up to
/// 100 ms for the handler.
fn capture(p: &Arc<Probe>) -> (String, u64, String) {
    p.captured.store(false, Ordering::Relaxed);
    p.requested.store(true, Ordering::Release);
    {
        // Under the registry's lock: a registered probe's thread is alive.
        let probes = monitor().probes.lock().unwrap_or_else(|e| e.into_inner());
        if !probes.iter().any(|q| Arc::ptr_eq(q, p)) {
            return ("?".into(), 0, String::new());
        }
        // SAFETY: the thread is alive (above); SIGURG's handler is ours.
        unsafe { libc::pthread_kill(p.thread, libc::SIGURG) };
    }
    let t0 = Instant::now();
    while !p.captured.load(Ordering::Acquire) {
        if t0.elapsed() > Duration::from_millis(100) {
            p.requested.store(false, Ordering::Relaxed);
            return (
                "?".into(),
                0,
                "(no backtrace: the thread did not answer)".into(),
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let id = p.gid.load(Ordering::Relaxed);
    let n = p.name_len.load(Ordering::Relaxed).min(MAX_NAME);
    let bytes: Vec<u8> = p.name[..n]
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    let name = if n == 0 {
        format!("Greenlet-{id}")
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let frames = p.frames_len.load(Ordering::Relaxed).min(MAX_FRAMES);
    let mut lines = Vec::new();
    let mut handler_at = None;
    for f in &p.frames[..frames] {
        for fr in super::dump::symbolize(f.load(Ordering::Relaxed)) {
            let mut line = fr.function;
            if line.ends_with("monitor::on_sigurg") {
                handler_at = Some(lines.len());
            }
            if let Some((file, l)) = fr.location {
                line.push_str(&format!("\n        at {file}:{l}"));
            }
            lines.push(line);
        }
    }
    // Start at the interrupted code: skip the handler and the kernel's
    // signal return trampoline after it.
    let skip = handler_at.map_or(0, |h| h + 2);
    let mut bt = String::new();
    for (i, line) in lines.iter().skip(skip).enumerate() {
        bt.push_str(&format!("  {i:>2}: {line}\n"));
    }
    (name, id, bt)
}

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain sigaction calls with fully initialised structs; the
        // handler only touches thread-locals without destructors, atomics
        // and the unwinder (see `on_sigurg`).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigurg as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGURG, &sa, &mut old) == 0 {
                let _ = PREVIOUS.set(old);
            }
        }
    });
}

static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// The dump signal came and the monitor has not seen it yet.
static DUMP_SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Whether the dump signal came since the last call (the monitor thread).
pub(crate) fn take_dump_signal() -> bool {
    DUMP_SIGNALLED.swap(false, Ordering::Acquire)
}

/// Installs the handler of the dump signal `sig` and starts the monitor
/// thread, which passes the request on to every hub.
pub(crate) fn install_dump_signal(sig: libc::c_int) -> std::io::Result<()> {
    // Signals the runtime uses, and those that cannot be caught.
    let ours = [libc::SIGURG, libc::SIGSEGV, libc::SIGKILL, libc::SIGSTOP];
    if !(1..=libc::SIGRTMAX()).contains(&sig) || ours.contains(&sig) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("greenhouse: signal {sig} cannot be the dump signal"),
        ));
    }
    // SAFETY: a plain sigaction call with a fully initialised struct; the
    // handler only stores to an atomic, which is async-signal-safe.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_dump_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    start_thread();
    Ok(())
}

extern "C" fn on_dump_signal(_: libc::c_int) {
    DUMP_SIGNALLED.store(true, Ordering::Release);
}

unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(ctx: *mut std::ffi::c_void, arg: *mut std::ffi::c_void) -> i32,
        arg: *mut std::ffi::c_void,
    ) -> i32;
    fn _Unwind_GetIP(ctx: *mut std::ffi::c_void) -> usize;
}

/// `_URC_NO_REASON` and `_URC_END_OF_STACK`.
const URC_NO_REASON: i32 = 0;
const URC_END_OF_STACK: i32 = 5;

extern "C" fn record_frame(ctx: *mut std::ffi::c_void, arg: *mut std::ffi::c_void) -> i32 {
    // SAFETY: `arg` is the probe `on_sigurg` passed, alive for the call;
    // `ctx` is the unwinder's own context for this frame.
    let p = unsafe { &*(arg as *const Probe) };
    let n = p.frames_len.load(Ordering::Relaxed);
    if n >= MAX_FRAMES {
        return URC_END_OF_STACK;
    }
    // SAFETY: as above.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    p.frames[n].store(ip, Ordering::Relaxed);
    p.frames_len.store(n + 1, Ordering::Relaxed);
    URC_NO_REASON
}

extern "C" fn on_sigurg(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let p = PROBE.try_with(Cell::get).unwrap_or(std::ptr::null());
    // SAFETY: a non-null PROBE points at this thread's registered probe,
    // which its hub keeps alive until it clears PROBE (unregister).
    let probe = unsafe { p.as_ref() };
    // Sent only to end the hub's poll (`ask_for_dumps`): nothing to do.
    let woken = probe.is_some_and(|p| p.wake.swap(false, Ordering::Acquire));
    let Some(probe) = probe.filter(|p| p.requested.swap(false, Ordering::Acquire)) else {
        if !woken {
            // Not ours: give it to whoever handled SIGURG before us (the
            // default for SIGURG is to ignore it).
            crate::stack::chain_signal(PREVIOUS.get(), sig, info, ctx);
        }
        return;
    };
    greenlet::with_running_identity(|id, name| {
        probe.gid.store(id, Ordering::Relaxed);
        let n = name.len().min(MAX_NAME);
        for (slot, b) in probe.name.iter().zip(&name[..n]) {
            slot.store(*b, Ordering::Relaxed);
        }
        probe.name_len.store(n, Ordering::Relaxed);
    });
    probe.frames_len.store(0, Ordering::Relaxed);
    // SAFETY: the callback and its argument follow `_Unwind_Backtrace`'s
    // contract; the probe outlives the call.
    unsafe { _Unwind_Backtrace(record_frame, p as *mut std::ffi::c_void) };
    probe.captured.store(true, Ordering::Release);
}
