//! Copy-stack greenlets: many greenlets share a few run stacks, and a
//! suspended greenlet's live stack bytes wait on the heap until it runs.
//!
//! A copy-stack greenlet is bound, when it is created, to one of this
//! thread's run stacks (`RUNS_PER_SIZE` per stack size, chosen round
//! robin) and runs there for its whole life, always at the same addresses.
//! At most one greenlet's bytes occupy a run stack at a time: its
//! *resident*. Resuming a greenlet that is not resident ([`enter`], from
//! the trampoline) first saves the resident's live bytes, from its stack
//! pointer at suspension to the top of the run stack, into the resident's
//! heap buffer, then writes the greenlet's own saved bytes back where they
//! were. So a greenlet resumed before another greenlet needs its run stack
//! costs no copy, and a parked greenlet costs its live bytes (a few hundred
//! for one parked in `sleep`), not a page.
//!
//! The coroutine itself is created at the first run, on the run stack:
//! corosensei writes the closure onto the stack when it creates a
//! coroutine, and that must not land on another greenlet's bytes.
//!
//! # Where a suspended greenlet's stack ends
//!
//! Every suspension of a copy-stack greenlet goes through [`switch_out`],
//! which records its own stack pointer and calls corosensei's suspend.
//! What corosensei pushes below that point (its own frames, the saved
//! registers) is measured once per process ([`depth`]): a probe coroutine
//! on a stack filled with a pattern suspends through the same
//! `switch_out`, and the lowest byte that changed tells how deep the
//! switch writes. A margin is added (much more under AddressSanitizer,
//! whose frames may vary).
//!
//! # Soundness: nothing points into a greenlet's bytes while they are out
//!
//! While a greenlet's bytes are saved, another greenlet's occupy the same
//! addresses, so a pointer into the first greenlet's stack would see the
//! second's data. Every pointer into a greenlet's stack must therefore be
//! used only by that greenlet itself, while it runs:
//!
//! - **Greenhouse's own records** hold no pointer into any stack across a
//!   suspension: greenlet records, wait lists, timers, reactor entries,
//!   futex and pthread waiter entries are on the heap, keyed by address at
//!   most. Two exceptions are handled here: a value passed by `switch` is
//!   normally taken from the sender's stack by the receiver (`Transfer`),
//!   so a copy-stack sender boxes it instead; and the pointers a greenlet
//!   keeps into its own stack (its yielder, a generator's forwarder) are
//!   used only while it runs, after [`enter`] restored its bytes.
//! - **Generators** run on page stacks of their own. One resumed by a
//!   copy-stack greenlet may hold references into that greenlet's frames,
//!   but it runs only inside the greenlet, hence only while it is resident.
//! - **Other greenlets' code** cannot be handed a reference into a
//!   greenlet's stack through greenhouse: spawned closures, switched
//!   values, queue and channel items, thread-locals are `'static`.
//! - **What safe Rust cannot rule out**: a scoped thread
//!   (`std::thread::scope`) that borrows the greenlet's locals while the
//!   greenlet blocks inside the scope, a scoped thread-local
//!   (`scoped_tls`) set across a blocking call and read by another
//!   greenlet, and under monkey patching any blocking call whose other
//!   side writes into the waiting frame from another thread or greenlet:
//!   std's rendezvous channel (`sync_channel(0)` keeps the receiver's slot
//!   on its stack), a C library whose worker thread fills a buffer on the
//!   caller's stack. Each is sound with a
//!   stack of its own and not with a shared one, and none can be detected
//!   (the scoped thread may be an existing pool thread). That is why the
//!   mode is requested through an `unsafe` method whose contract excludes
//!   them ([`Builder::copy_stack`](crate::Builder::copy_stack)).
//!
//! A greenlet cannot be *pinned* to its run stack instead (kept resident
//! while it waits): a run stack is shared by address, so every other
//! greenlet bound to it would wait too, and would deadlock when the pinned
//! one waits for one of them (a std `Mutex` held across a `sleep` is
//! enough).
//!
//! **Ownership:** `RUNS` owns the run stacks (never freed) and a strong
//! reference to each resident, dropped when the resident dies
//! ([`leave`]) or is replaced. A saved buffer belongs to its greenlet's
//! record.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::OnceLock;

use corosensei::{Coroutine, CoroutineResult};

use super::inner::{Coro, CoroSlot, GreenletYielder, Inner, Resume, State};
use crate::stack::{self, GreenletStack, RunView};

/// Run stacks per stack size on one thread. Two greenlets that switch back
/// and forth on different run stacks copy nothing.
const RUNS_PER_SIZE: usize = 4;

/// A copy-stack greenlet that has not run yet: its body, and what makes
/// its coroutine on its run stack at its first run ([`enter`]).
///
/// The body waits in a heap buffer of its size, which becomes the
/// greenlet's saved buffer when it starts (its first park's save replaces
/// it, unless it is large enough). The coroutine's function captures
/// nothing: the body is taken out of the record when it starts, before it
/// can suspend ([`take_body`]). corosensei keeps the function it is
/// given twice on the new stack (where it puts it before the first resume,
/// and in its base frame), and both copies stay there while the greenlet
/// lives, so a body that captured a socket and an address would otherwise
/// cost a copy-stack greenlet their size three times over at every park.
pub(crate) struct Start {
    /// The body's bytes (unaligned) at the start.
    buf: Box<[MaybeUninit<u8>]>,
    /// Makes the coroutine that runs a body of this type.
    make: fn(GreenletStack) -> Coro,
    /// Drops the body unrun; `None` once it was handed to its record.
    drop_body: Option<unsafe fn(*mut MaybeUninit<u8>)>,
}

impl Start {
    /// Holds `body` until its greenlet first runs.
    pub(crate) fn new<B: super::Body>(body: B) -> Start {
        let mut buf = Box::new_uninit_slice(std::mem::size_of::<B>());
        // SAFETY: `buf` has room for a `B` (its length is at least that
        // size); the write is unaligned, as the buffer is bytes.
        unsafe { buf.as_mut_ptr().cast::<B>().write_unaligned(body) };
        Start {
            buf,
            make: make::<B>,
            drop_body: Some(drop_body::<B>),
        }
    }

    /// Hands the body over to `cp` (the record's saved buffer, marked
    /// [`BODY`]) and makes the coroutine that will take it, on `stack`.
    fn begin(mut self, cp: &Copied, stack: GreenletStack) -> Coro {
        self.drop_body = None;
        cp.saved.set(std::mem::take(&mut self.buf));
        cp.out.set(BODY);
        (self.make)(stack)
    }
}

impl Drop for Start {
    fn drop(&mut self) {
        if let Some(drop_body) = self.drop_body.take() {
            // SAFETY: still armed, so `buf` holds the body `new` wrote
            // with this function's type, never read (`begin` disarms
            // before handing it over).
            unsafe { drop_body(self.buf.as_mut_ptr()) };
        }
    }
}

/// Drops the `B` at `p`.
///
/// # Safety
/// `p` holds a `B` (unaligned) that nothing else reads or drops.
unsafe fn drop_body<B>(p: *mut MaybeUninit<u8>) {
    // SAFETY: the caller's contract.
    drop(unsafe { p.cast::<B>().read_unaligned() });
}

/// The coroutine of a greenlet whose body is a `B`.
fn make<B: super::Body>(stack: GreenletStack) -> Coro {
    Coro::with_stack(
        stack,
        #[inline(always)]
        |y: &GreenletYielder, _: Resume| super::run(y, take_body::<B>),
    )
}

/// The running greenlet's body, moved out of its saved buffer onto its
/// stack: the getter its coroutine gives `run`, which calls it (through
/// [`Body::run_got`](super::Body::run_got)) before anything that can
/// suspend.
///
/// The buffer holds a `B`: only [`make::<B>`](make) makes a coroutine
/// that calls this, from the [`Start`] that wrote that `B` ([`Start::new`]
/// pairs them), and `begin` handed the buffer to the same record, marked
/// [`BODY`]. The record is the running greenlet's: a coroutine runs only
/// while its record is current (the trampoline sets it before every
/// resume). Nothing replaced the buffer since: it is only replaced by a
/// save of the greenlet's stack (which happens after it ran and
/// suspended; `enter_copied` refuses to save a resident still marked
/// `BODY`) and freed when it dies.
#[inline(always)]
fn take_body<B>() -> B {
    super::inner::with_current(|g| {
        let cp = g.copied.get().filter(|cp| cp.out.get() == BODY);
        let Some(cp) = cp else {
            // Unreachable (see above); a read would be undefined.
            abort_with("a copy-stack greenlet started without its body")
        };
        let buf = cp.saved.take();
        // SAFETY: `buf` holds a `B` written by `Start::new` and never read
        // (the argument above; `out` goes back to 0 below, so this runs
        // once).
        let body = unsafe { buf.as_ptr().cast::<B>().read_unaligned() };
        cp.saved.set(buf);
        cp.out.set(0);
        body
    })
}

/// Reports a broken invariant of this module and aborts the process (out
/// of line: it stays out of the frames it is called from).
#[cold]
#[inline(never)]
fn abort_with(what: &str) -> ! {
    eprintln!("greenhouse: {what}");
    std::process::abort()
}

/// `Copied::out` while the saved buffer holds a body its coroutine has not
/// taken yet ([`take_body`]).
const BODY: u32 = u32::MAX;

/// What a copy-stack greenlet's record adds. Every record has one, inline
/// (a separate allocation cost a copy-stack greenlet more than these 32
/// bytes cost the others); a greenlet with a stack of its own has `run ==
/// OWN` and [`Copied::get`] hides it.
pub(crate) struct Copied {
    /// Its run stack: an index into `RUNS`.
    run: u32,
    /// `switch_out`'s stack pointer at its last suspension.
    sp: Cell<usize>,
    /// Its live bytes while another greenlet is resident (the first `out`
    /// bytes). Taken out and put back around each use: a `Cell` is a word
    /// smaller than a `RefCell`, and every record has one.
    saved: Cell<Box<[MaybeUninit<u8>]>>,
    /// How many bytes at the start of `saved` hold its stack, with the
    /// [`SPARSE`] bit when they are in the sparse form (zero runs left
    /// out); 0 while it is resident (its bytes in place), [`BODY`] before
    /// it started. The buffer is reused from park to park, so it may be
    /// longer.
    out: Cell<u32>,
}

/// The bit of `Copied::out` that marks saved bytes in the sparse form
/// (zero runs left out, `stack::save`); the rest is the stored length.
const SPARSE: u32 = 1 << 31;

/// `Copied::run` of a greenlet with a stack of its own.
const OWN: u32 = u32::MAX;

impl Copied {
    /// The part of a record of a greenlet with a stack of its own.
    pub(crate) fn own() -> Copied {
        Copied {
            run: OWN,
            sp: Cell::new(0),
            saved: Cell::new(Box::default()),
            out: Cell::new(0),
        }
    }

    /// This, if the greenlet is a copy-stack greenlet.
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&Copied> {
        (self.run != OWN).then_some(self)
    }
    /// Where [`switch_out`] records its stack pointer.
    #[inline]
    pub(crate) fn sp(&self) -> &Cell<usize> {
        &self.sp
    }

    /// Bytes its stack holds on the heap now (0 while resident, and
    /// before it started).
    pub(crate) fn saved_len(&self) -> usize {
        match self.out.get() {
            BODY => 0,
            n => (n & !SPARSE) as usize,
        }
    }

    /// Whether its saved bytes are in the sparse form (`stack::save`).
    fn sparse(&self) -> bool {
        let out = self.out.get();
        out != BODY && out & SPARSE != 0
    }
}

struct Run {
    view: RunView,
    size: usize,
    resident: Option<Rc<Inner>>,
}

thread_local! {
    /// Whether greenlets made on this thread without a choice get copy
    /// stacks (`hub::set_copy_stacks`).
    static DEFAULT: Cell<bool> = const { Cell::new(false) };
    static RUNS: RefCell<Vec<Run>> = const { RefCell::new(Vec::new()) };
    /// Round-robin counter for binding new greenlets.
    static NEXT: Cell<usize> = const { Cell::new(0) };
}

/// Whether greenlets made on this thread without a choice of their own
/// get copy stacks.
pub(crate) fn default() -> bool {
    DEFAULT.try_with(Cell::get).unwrap_or(false)
}

/// Sets [`default`] for this thread.
pub(crate) fn set_default(on: bool) {
    let _ = DEFAULT.try_with(|d| d.set(on));
}

/// Binds a new copy-stack greenlet of `size` to a run stack (making one if
/// this size has fewer than `RUNS_PER_SIZE`), and returns its record part
/// and the run stack's bounds.
///
/// # Errors
/// When no run stack can be allocated, or the thread is exiting.
pub(crate) fn bind(size: usize) -> io::Result<(Copied, (usize, usize))> {
    let size = stack::round_size(size);
    depth();
    let (run, bounds) = RUNS
        .try_with(|runs| -> io::Result<(u32, (usize, usize))> {
            let mut runs = runs.borrow_mut();
            let mine: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].size == size).collect();
            let i = if mine.len() < RUNS_PER_SIZE {
                let view = stack::take_run(size)?;
                runs.push(Run {
                    view,
                    size,
                    resident: None,
                });
                runs.len() - 1
            } else {
                let n = NEXT.with(|c| c.replace(c.get().wrapping_add(1)));
                mine[n % mine.len()]
            };
            let i = u32::try_from(i)
                .ok()
                .filter(|&i| i != OWN)
                .ok_or_else(|| io::Error::other("too many run stacks"))?;
            Ok((i, runs[i as usize].view.bounds()))
        })
        .unwrap_or_else(|_| Err(io::Error::other("thread is exiting: no run stacks")))?;
    let copied = Copied {
        run,
        sp: Cell::new(0),
        saved: Cell::new(Box::default()),
        out: Cell::new(0),
    };
    Ok((copied, bounds))
}

/// Makes `g`'s bytes the resident ones on its run stack, saving the
/// previous resident's first, and creates its coroutine at its first run.
/// Returns false, changing nothing, when that is impossible: the resident
/// is running (a nested resume from a greenlet on the same run stack), or
/// the thread is exiting. Page-stack greenlets return true at once.
#[inline]
pub(crate) fn enter(g: &Rc<Inner>) -> bool {
    match g.copied.get() {
        None => true,
        Some(cp) => enter_copied(g, cp),
    }
}

#[inline(never)]
fn enter_copied(g: &Rc<Inner>, cp: &Copied) -> bool {
    RUNS.try_with(|runs| {
        let mut runs = runs.borrow_mut();
        let run = &mut runs[cp.run as usize];
        let (top, bottom) = run.view.bounds();
        if let Some(r) = &run.resident {
            if Rc::ptr_eq(r, g) {
                return true;
            }
            if r.state.get() == State::Running {
                return false;
            }
            let rc = r
                .copied
                .get()
                .expect("only copy-stack greenlets are resident");
            if rc.out.get() == BODY {
                // Made but never resumed: impossible (`drive` resumes a
                // greenlet right after `enter`), and saving would lose
                // the body `take_body` has yet to read.
                abort_with("a copy-stack greenlet was displaced before it started");
            }
            let low = rc.sp.get().saturating_sub(depth()).max(bottom);
            let mut saved = rc.saved.take();
            // SAFETY: `[low, top)` is inside the run stack, and nothing runs
            // on it: its resident `r` is suspended (not running, checked
            // above; a resident has run and suspended through
            // `switch_out`, or it died and `leave` cleared it), and `g`
            // runs only after this returns.
            let kept = unsafe { stack::save(low, top, &mut saved) };
            rc.saved.set(saved);
            // A stack's live bytes are far fewer than 2 GiB (and never
            // none here: `low` is below the resident's frames).
            let len = u32::try_from(kept.stored)
                .ok()
                .filter(|&l| l < SPARSE)
                .expect("a stack's live bytes fit in 31 bits");
            rc.out.set(if kept.sparse { len | SPARSE } else { len });
        }
        run.resident = Some(g.clone());
        let len = cp.saved_len();
        if len != 0 {
            let saved = cp.saved.take();
            // SAFETY: `g`'s bytes came from this run stack's top, where
            // they go back; nothing runs there (the previous resident's
            // bytes were saved just above).
            unsafe { stack::restore((top, bottom), &saved[..len], cp.sparse()) };
            cp.saved.set(saved);
            cp.out.set(0);
        } else {
            // Its first run: make its coroutine (nothing runs yet).
            let mut slot = g.coro.borrow_mut();
            if matches!(*slot, CoroSlot::Start(_)) {
                if let CoroSlot::Start(start) = std::mem::replace(&mut *slot, CoroSlot::Empty) {
                    *slot = CoroSlot::Made(start.begin(cp, GreenletStack::Run(run.view)));
                }
            }
        }
        true
    })
    .unwrap_or(false)
}

/// `g` died (or its record goes): it no longer occupies its run stack.
pub(crate) fn leave(g: &Inner) {
    let Some(cp) = g.copied.get() else {
        return;
    };
    cp.out.set(0);
    drop(cp.saved.take());
    let _ = RUNS.try_with(|runs| {
        let old = {
            let mut runs = runs.borrow_mut();
            let run = &mut runs[cp.run as usize];
            if run.resident.as_ref().is_some_and(|r| std::ptr::eq(&**r, g)) {
                run.resident.take()
            } else {
                None
            }
        };
        drop(old); // outside the borrow: it may be the record's last count
    });
}

/// Suspends a copy-stack greenlet, recording where its stack ends.
///
/// The one way a copy-stack greenlet suspends (the trampoline's `suspend`
/// and `on_stack` call it), and the function [`depth`] measures: out of
/// line, so its frame is the same wherever it is called from.
#[inline(never)]
pub(crate) fn switch_out(
    y: &GreenletYielder,
    target: Option<Rc<Inner>>,
    sp: &Cell<usize>,
) -> Resume {
    sp.set(stack::stack_pointer());
    y.suspend(target)
}

/// How many bytes below `switch_out`'s stack pointer a suspension uses,
/// margin included. Measured once per process.
fn depth() -> usize {
    static DEPTH: OnceLock<usize> = OnceLock::new();
    *DEPTH.get_or_init(|| {
        // The switch path is the same code every time, so the measurement
        // is exact but for a written byte that happened to equal both
        // patterns' bytes (a register's low byte, in both runs): the margin
        // covers that (at most one word) and alignment; nothing below the
        // suspension's last push is read when it resumes (no red zone: it
        // is not a leaf). Every parked copy-stack greenlet pays it. ASan's
        // frames are larger and its instrumentation may touch more.
        let margin = if cfg!(greenhouse_asan) { 32 * 1024 } else { 16 };
        let measured = [0x5a, 0xa5]
            .into_iter()
            .map(measure)
            .max()
            .flatten()
            // Without a probe stack, assume a generous depth.
            .unwrap_or(4096);
        (measured + margin).next_multiple_of(16)
    })
}

/// One probe: the depth below `switch_out`'s stack pointer that a
/// suspension wrote, on a stack filled with `pattern`.
fn measure(pattern: u8) -> Option<usize> {
    let st = stack::take(stack::MIN_STACK_SIZE, false).ok()?;
    let (top, bottom) = st.bounds();
    // SAFETY: a stack from the pool that nothing runs on yet.
    unsafe { stack::fill(bottom, top, pattern) };
    let sp = Rc::new(Cell::new(0));
    let seen = sp.clone();
    let mut probe: Coro = Coroutine::with_stack(
        GreenletStack::Own(st),
        move |y: &GreenletYielder, _: Resume| {
            switch_out(y, None, &seen);
            None
        },
    );
    let CoroutineResult::Yield(_) = probe.resume(None) else {
        return None;
    };
    // SAFETY: the probe is suspended: nothing runs on its stack.
    let lowest = unsafe { stack::lowest_not(bottom, top, pattern) };
    let depth = sp.get().checked_sub(lowest);
    let _ = probe.resume(None); // it returns; dropping it frees the stack
    depth
}
