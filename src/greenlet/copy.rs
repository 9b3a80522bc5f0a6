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

/// Creates a copy-stack greenlet's coroutine on its run stack.
pub(crate) type Start = Box<dyn StartFn>;

/// What [`Start`] does: makes the coroutine, consuming the box.
pub(crate) trait StartFn {
    /// The coroutine, on `stack`, that runs what the box holds.
    fn start(self: Box<Self>, stack: GreenletStack) -> Coro;
}

/// A greenlet's body, boxed until its coroutine first runs ([`Start`]).
///
/// The coroutine's function is the box itself, one word: corosensei keeps
/// the function it is given twice on the new stack (where it puts it
/// before the first resume, and in its base frame), and both copies stay
/// there while the greenlet lives, so a body that captured a socket and an
/// address would cost a copy-stack greenlet their size three times over
/// at every park. Moved out of the box when the coroutine starts, the body
/// is on the stack once (and the box is freed).
pub(crate) struct StartBody<R>(pub(crate) R);

impl<B: FnOnce() -> super::payload::Outcome + 'static> StartFn for StartBody<B> {
    fn start(self: Box<Self>, stack: GreenletStack) -> Coro {
        Coro::with_stack(
            stack,
            #[inline(always)]
            move |y: &GreenletYielder, _: Resume| {
                let StartBody(body) = *self;
                super::run(y, body)
            },
        )
    }
}

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
    /// How many bytes at the start of `saved` are its stack; 0 while it is
    /// resident (its bytes in place). The buffer is reused from park to
    /// park, so it may be longer.
    out: Cell<u32>,
}

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

    /// Bytes its stack holds on the heap now (0 while resident).
    pub(crate) fn saved_len(&self) -> usize {
        if self.out.get() != 0 {
            self.out.get() as usize
        } else {
            0
        }
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
            let low = rc.sp.get().saturating_sub(depth()).max(bottom);
            let mut saved = rc.saved.take();
            // SAFETY: `[low, top)` is inside the run stack, and nothing runs
            // on it: its resident `r` is suspended (not running, checked
            // above; a resident has run and suspended through
            // `switch_out`, or it died and `leave` cleared it), and `g`
            // runs only after this returns.
            let len = unsafe { stack::save(low, top, &mut saved) };
            rc.saved.set(saved);
            // A stack is far smaller than 4 GiB (and never empty here:
            // `low` is below the resident's frames).
            rc.out
                .set(u32::try_from(len).expect("a stack's live bytes fit in 32 bits"));
        }
        run.resident = Some(g.clone());
        let len = cp.out.get() as usize;
        if len != 0 {
            let saved = cp.saved.take();
            // SAFETY: `g`'s bytes came from this run stack's top, where
            // they go back; nothing runs there (the previous resident's
            // bytes were saved just above).
            unsafe { stack::restore((top, bottom), &saved[..len]) };
            cp.saved.set(saved);
            cp.out.set(0);
        } else {
            // Its first run: make its coroutine (nothing runs yet).
            let mut slot = g.coro.borrow_mut();
            if matches!(*slot, CoroSlot::Start(_)) {
                if let CoroSlot::Start(start) = std::mem::replace(&mut *slot, CoroSlot::Empty) {
                    *slot = CoroSlot::Made(start.start(GreenletStack::Run(run.view)));
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
