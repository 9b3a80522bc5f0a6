//! Parking and waking: the ready queue, wake tokens and wait lists.
//!
//! A greenlet blocks by registering a [`Token`] wherever its wake-up will
//! come from (a [`WaitList`], a timer, the reactor) and calling [`park`].
//! A token wakes only the park it was made for: every park bumps the
//! greenlet's generation, so a late or duplicate wake is ignored.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use super::dump::WaitingOn;
use crate::error::Error;
pub(crate) use crate::greenlet::Woke;
use crate::greenlet::{self, Inner, Msg, State};

impl Woke {
    /// The error for a park that ended without what it waited for: any
    /// deadline is `TimedOut`.
    pub(crate) fn error(self) -> Error {
        match self {
            Woke::Deadlock => Error::Deadlock,
            Woke::Ready | Woke::Deadline | Woke::TimedOut => Error::TimedOut,
        }
    }
}

/// Maps the outcome of a wait with its own timeout: that timeout passing is
/// `Ok(None)`; an armed `Timeout` scope or a deadlock is an error.
pub(crate) fn own_timeout<T>(r: Result<T, Woke>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Woke::Deadline) => Ok(None),
        Err(w) => Err(w.error()),
    }
}

/// Permission to wake one particular park of one greenlet.
pub(crate) struct Token {
    g: Rc<Inner>,
    generation: u64,
}

impl Token {
    /// A token for park number `generation` of `g`.
    pub(crate) fn new(g: Rc<Inner>, generation: u64) -> Token {
        Token { g, generation }
    }

    /// Makes the parked greenlet ready with `wake`. Returns false if that
    /// park is over (woken, timed out, killed) — nothing happens then.
    pub(crate) fn wake(&self, ready: &ReadyQueue, wake: Woke) -> bool {
        let g = &self.g;
        let parked = g.state.get() == State::Blocked && !g.ext.queued.get();
        if !parked || g.ext.park_gen.get() != self.generation {
            return false;
        }
        g.ext.queued.set(true);
        super::trace::woke(g, wake);
        g.put_msg(Msg::Wake(wake));
        ready.push(self.g.clone());
        true
    }

    /// Whether the park this token wakes was woken and has not run since
    /// (it sits in the ready queue).
    pub(crate) fn is_queued(&self) -> bool {
        let g = &self.g;
        g.state.get() == State::Blocked
            && g.ext.queued.get()
            && g.ext.park_gen.get() == self.generation
    }

    /// Another token for the same park.
    pub(crate) fn duplicate(&self) -> Token {
        Token::new(self.g.clone(), self.generation)
    }

    /// [`wake`](Self::wake) with `Woke::Ready` through this thread's hub.
    pub(crate) fn wake_now(&self) -> bool {
        super::with(|hub| self.wake(&hub.ready, Woke::Ready))
    }
}

/// FIFO of greenlets ready to run; each has its message in `pending`.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    queue: RefCell<VecDeque<Rc<Inner>>>,
}

impl ReadyQueue {
    pub(crate) fn push(&self, g: Rc<Inner>) {
        self.queue.borrow_mut().push_back(g);
    }

    pub(crate) fn pop(&self) -> Option<Rc<Inner>> {
        self.queue.borrow_mut().pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Drops every queued greenlet (thread teardown).
    pub(crate) fn clear(&self) {
        let q = std::mem::take(&mut *self.queue.borrow_mut());
        drop(q);
    }
}

/// Arranges for `g` to be resumed with `GreenletExit` (or, given an
/// error, `ThrownError`) raised at its suspension point, whatever it is
/// doing. Returns false if it is dead or running (the caller handles a
/// self-kill).
pub(crate) fn throw_into(ready: &ReadyQueue, g: &Rc<Inner>, error: Option<Error>) -> bool {
    if !matches!(g.state.get(), State::Dead | State::Running) {
        super::trace::killed(g, error.is_some());
    }
    let msg = || match error {
        None => Msg::Throw,
        Some(e) => Msg::ThrowError(Box::new(e)),
    };
    match g.state.get() {
        State::Dead | State::Running => false,
        State::Blocked if g.ext.queued.get() => {
            g.put_msg(msg());
            true
        }
        State::Blocked | State::Suspended | State::NotStarted => {
            // Bump the generation so no stale token can wake it again.
            g.ext.park_gen.set(g.ext.park_gen.get() + 1);
            g.state.set(State::Blocked);
            g.ext.queued.set(true);
            g.put_msg(msg());
            ready.push(g.clone());
            true
        }
    }
}

/// Parks the current greenlet until a token wakes it, `deadline` passes or
/// an armed `Timeout` scope expires. Raises `GreenletExit` if killed.
#[cfg(feature = "monkey")]
#[inline]
pub(crate) fn park(deadline: Option<Instant>, on: WaitingOn) -> Woke {
    park_with(deadline, on, |_| {})
}

/// Like [`park`], handing `register` the token that wakes this park (the
/// caller files it wherever the wake-up will come from). `register` is not
/// called if the deadline has already passed.
#[inline]
pub(crate) fn park_with(
    deadline: Option<Instant>,
    on: WaitingOn,
    register: impl FnOnce(Token),
) -> Woke {
    note_waiting(on);
    park_on(deadline, true, register)
}

/// Like [`park_with`], but an armed `Timeout` scope does not end this park
/// (only the token, `deadline` or a kill do). For waits whose caller
/// retries at once when they end early: a futex wait inside std's
/// `Mutex::lock` would otherwise spin on a fired scope (`monkey/futex.rs`).
#[cfg(feature = "monkey")]
pub(crate) fn park_unscoped_with(
    deadline: Option<Instant>,
    on: WaitingOn,
    register: impl FnOnce(Token),
) -> Woke {
    note_waiting(on);
    park_on(deadline, false, register)
}

/// Notes what the current greenlet's coming park waits for (the dump's
/// `waiting`), in the caller: a `WaitingOn` is three words, which passed to
/// `park_on` would take a slot in every parked caller's frame.
#[inline(always)]
fn note_waiting(on: WaitingOn) {
    greenlet::with_current(|c| c.ext.waiting.set(on));
}

/// The park itself, for [`park_with`] and `park_unscoped_with` (what it
/// waits for already noted): prepares it, then suspends.
#[inline(never)]
fn park_on(deadline: Option<Instant>, scoped: bool, register: impl FnOnce(Token)) -> Woke {
    let prepared = prepare_park(deadline, scoped, register);
    if let Some(woke) = prepared.ended() {
        return woke;
    }
    // The suspension, in a function of its own per stack kind, called last
    // (a sibling call: this frame is gone before the switch).
    if greenlet::with_current(|c| c.copied.get().is_some()) {
        suspend_copied(prepared)
    } else {
        suspend_paged(prepared)
    }
}

/// A copy-stack greenlet's park: this frame is what the greenlet keeps
/// (and copies) below its caller's. Only the one-word `prepared` lives
/// across the out-of-line switch, the wake-up comes back in a byte, and
/// everything after is out of line, so it saves few registers.
///
/// No guard cancels the timer if the suspension unwinds: it never does.
/// A kill comes back as `Resumed::Thrown` and is raised by `end_park`
/// after the timer is dropped; corosensei unwinds a suspended coroutine
/// only when it is dropped or unwound by force, and a parked greenlet's
/// coroutine is neither (its record outlives the park, owned by its body
/// frame; one left at thread teardown is leaked, not unwound: inner.rs,
/// `doom`; a generator is unwound by force only at a yield, not at a park
/// (`Generator::close`)). Were it to happen, the timer would only fire
/// late for a stale park, which ignores it.
#[inline(never)]
fn suspend_copied(prepared: Prepared) -> Woke {
    let resumed = greenlet::suspend_wake::<false>();
    end_park(prepared, resumed)
}

/// A page-stack greenlet's park (as [`suspend_copied`]), with the switch
/// inline: an out-of-line switch costs a page-stack park and resume about
/// 15 ns (measured with `benches/switch.rs`), a return the CPU mispredicts
/// after the stack changed under it; the bigger frame costs nothing here.
#[inline(never)]
fn suspend_paged(prepared: Prepared) -> Woke {
    let resumed = greenlet::suspend_wake::<true>();
    end_park(prepared, resumed)
}

/// How [`prepare_park`] left a park, in one word (returned in a
/// register, kept in one across the suspension): 0 for a park without a
/// timer, `1 + w` for a park that ended before it began with `Woke` `w`,
/// and `ENDED_MAX + 1 + key` for a park whose timer is `key`.
#[derive(Clone, Copy)]
struct Prepared(u64);

impl Prepared {
    /// Every `Woke`, by its encoding minus one (its discriminant: the
    /// assertion below holds the order).
    const WOKES: [Woke; 4] = [Woke::Ready, Woke::Deadline, Woke::TimedOut, Woke::Deadlock];
    /// The encodings above 0 that say how a park ended early.
    const ENDED_MAX: u64 = Self::WOKES.len() as u64;

    fn timer(key: Option<super::timers::TimerKey>) -> Prepared {
        // A key's bits are below `u64::MAX - ENDED_MAX` (its index is never
        // `u32::MAX`, the wheel's end-of-list mark), so this cannot wrap.
        Prepared(key.map_or(0, |k| k.to_bits() + Self::ENDED_MAX + 1))
    }

    fn ended_with(w: Woke) -> Prepared {
        Prepared(1 + w as u64)
    }

    #[inline(always)]
    fn ended(self) -> Option<Woke> {
        match self.0 {
            0 => None,
            n if n <= Self::ENDED_MAX => Some(Self::WOKES[(n - 1) as usize]),
            _ => None,
        }
    }

    fn key(self) -> Option<super::timers::TimerKey> {
        (self.0 > Self::ENDED_MAX)
            .then(|| super::timers::TimerKey::from_bits(self.0 - Self::ENDED_MAX - 1))
    }
}

// `Prepared::WOKES[i]` is the `Woke` whose discriminant is `i`.
const _: () = {
    let mut i = 0;
    while i < Prepared::WOKES.len() {
        assert!(Prepared::WOKES[i] as usize == i);
        i += 1;
    }
};

/// Everything [`park_on`] does after its greenlet is resumed: drops the
/// park's timer unless it fired, raises a throw, notes a fired `Timeout`
/// scope.
#[inline(never)]
fn end_park(prepared: Prepared, resumed: greenlet::Resumed) -> Woke {
    let timer = prepared.key();
    // Only this park's own timer wakes it with `Deadline` or `TimedOut` (a
    // token of an older park is ignored), and a timer that fired is gone:
    // cancelling it would only touch its stale slab entry (a cache miss
    // per sleeper in a big sleep).
    let fired = matches!(
        resumed,
        greenlet::Resumed::Woke(Woke::Deadline | Woke::TimedOut)
    );
    if let (Some(k), false) = (timer, fired) {
        drop(super::with(|hub| hub.timers.cancel(k)));
    }
    match resumed {
        greenlet::Resumed::Thrown => greenlet::raise_thrown(),
        greenlet::Resumed::Woke(Woke::TimedOut) => {
            super::timeout::mark_fired(&greenlet::current_rc());
            Woke::TimedOut
        }
        greenlet::Resumed::Woke(w) => w,
        // An explicit switch cannot reach a parked greenlet; anything but a
        // wake-up is spurious (callers re-check their condition).
        greenlet::Resumed::Other => Woke::Ready,
    }
}

/// Everything [`park_on`] does before it suspends: the new park
/// generation, the effective deadline, the registration, the timer, the
/// dump's and tracing's notes. Returns the timer, or how the park ended
/// before it began (the deadline had passed), in one word. Out of line:
/// the frame that stays on a parked greenlet's stack is then only
/// [`suspend_copied`]'s (or [`suspend_paged`]'s), which matters to
/// copy-stack greenlets (their parked stack is copied).
#[inline(never)]
fn prepare_park(deadline: Option<Instant>, scoped: bool, register: impl FnOnce(Token)) -> Prepared {
    let cur = &greenlet::current_rc();
    raise_deferred_exit(cur);
    let generation = cur.ext.park_gen.get() + 1;
    cur.ext.park_gen.set(generation);
    let scope = if scoped {
        super::timeout::scope_deadline(cur)
    } else {
        None
    };
    let (eff, from_scope) = match (deadline, scope) {
        (Some(d), Some(s)) if s <= d => (Some(s), true),
        (Some(d), _) => (Some(d), false),
        (None, Some(s)) => (Some(s), true),
        (None, None) => (None, false),
    };
    if let Some(e) = eff {
        if e <= Instant::now() {
            return Prepared::ended_with(if from_scope {
                super::timeout::mark_fired(cur);
                Woke::TimedOut
            } else {
                Woke::Deadline
            });
        }
    }
    register(Token::new(cur.clone(), generation));
    // The timer wakes the park with its own meaning: the scope's expiry or
    // the operation's deadline.
    let on_fire = if from_scope {
        Woke::TimedOut
    } else {
        Woke::Deadline
    };
    let timer = super::with(|hub| {
        cur.ext.note_park_times(eff, hub.clock.get());
        eff.map(|e| {
            hub.timers
                .insert(e, Token::new(cur.clone(), generation), on_fire)
        })
    });
    super::trace::parked(cur.ext.waiting.get(), eff);
    cur.state.set(State::Blocked);
    cur.ext.queued.set(false);
    Prepared::timer(timer)
}

/// Raises `GreenletExit` now for a kill that landed where it could not
/// unwind (see `Slot::deferred_exit`).
#[inline]
fn raise_deferred_exit(cur: &Inner) {
    // Not while the greenlet may be unwinding already because a patched
    // sleep reported the kill as `ECANCELED` and its caller panicked (std's
    // `thread::sleep` does, `monkey/sleep.rs`): a second panic from a
    // destructor would abort. Its base reports the kill when the unwind
    // arrives.
    if cur.ext.deferred_exit.get() && !(cur.ext.cancelled.get() && std::thread::panicking()) {
        cur.ext.deferred_exit.set(false);
        cur.ext.cancelled.set(false);
        greenlet::raise(cur.ext.take_deferred_error());
    }
}

/// Puts the current greenlet at the back of the ready queue and runs every
/// greenlet queued before it (gevent's `sleep(0)`).
pub(crate) fn yield_now() {
    let cur = greenlet::current_rc();
    raise_deferred_exit(&cur);
    cur.ext.park_gen.set(cur.ext.park_gen.get() + 1);
    cur.state.set(State::Blocked);
    cur.ext.queued.set(true);
    cur.put_msg(Msg::Wake(Woke::Ready));
    super::with(|hub| {
        cur.ext.note_park(WaitingOn::Yield, None, hub.clock.get());
        hub.ready.push(cur);
    });
    if greenlet::suspend_wake::<true>() == greenlet::Resumed::Thrown {
        greenlet::raise_thrown();
    }
}

/// A FIFO list of parked greenlets waiting for one condition.
///
/// Every entry is removed by a guard when its park ends, whatever the
/// reason (woken, timed out, killed), so a list never holds stale waiters.
/// An entry is found by its greenlet: a greenlet waits in one place at a
/// time. The first waiter is stored inline: a join allocates nothing.
#[derive(Default)]
pub(crate) struct WaitList {
    /// The oldest waiter, if any. A `Cell` (taken and put back): a word
    /// smaller than a `RefCell`.
    head: Cell<Option<Token>>,
    /// Later waiters, oldest first; allocated when a second waiter comes
    /// (a list is embedded in every join state and primitive, and most
    /// never have two waiters). Boxed on purpose: one word while unused
    /// where a `VecDeque` is four; in a `Cell`, taken and put back
    /// (`with_rest`), a word smaller than a `RefCell`.
    #[allow(clippy::box_collection)]
    rest: Cell<Option<Box<VecDeque<Token>>>>,
}

impl WaitList {
    /// Parks the current greenlet in this list until woken or `deadline`.
    #[inline]
    pub(crate) fn wait(&self, deadline: Option<Instant>, on: WaitingOn) -> Woke {
        // One word on the parked frame: the greenlet is found again when
        // the park ends, on the same stack and so the same current greenlet
        // (a generator's stage parks as the greenlet that resumed it).
        struct Remove<'a>(&'a WaitList);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let removed = self.0.remove(greenlet::with_current(|c| c as *const Inner));
                drop(removed);
            }
        }
        let _remove = Remove(self);
        park_with(deadline, on, |token| self.push(token))
    }

    /// Waits in this list until `done()` holds (checked first, and after
    /// every wake-up), `deadline` passes, or an armed `Timeout` expires.
    #[inline] // into the primitive's wait: one frame fewer on a parked stack
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        on: WaitingOn,
        done: impl Fn() -> bool,
    ) -> Result<(), Woke> {
        while !done() {
            match self.wait(deadline, on) {
                Woke::Ready => {}
                w => return Err(w),
            }
        }
        Ok(())
    }

    /// Files `token` at the back (a wait of several lists at once, see
    /// `hub::wait`); the waiter removes it with
    /// [`remove_current`](Self::remove_current) when its park ends.
    pub(crate) fn push(&self, token: Token) {
        let head = self.head.take();
        if head.is_none() && self.rest_len() == 0 {
            self.head.set(Some(token));
        } else {
            self.head.set(head);
            self.with_rest(|r| r.get_or_insert_with(Box::default).push_back(token));
        }
    }

    fn remove(&self, g: *const Inner) -> Option<Token> {
        let head = self.head.take();
        if head.as_ref().is_some_and(|t| Rc::as_ptr(&t.g) == g) {
            let next = self.with_rest(|r| r.as_mut().and_then(|r| r.pop_front()));
            self.head.set(next);
            return head;
        }
        self.head.set(head);
        self.with_rest(|rest| {
            let rest = rest.as_mut()?;
            let at = rest.iter().position(|t| Rc::as_ptr(&t.g) == g)?;
            rest.remove(at)
        })
    }

    /// Runs `f` on the waiters behind the first, taken out of their cell
    /// meanwhile. `f` only moves tokens in and out (it drops none), so no
    /// user code runs while the cell is empty.
    fn with_rest<R>(&self, f: impl FnOnce(&mut Option<Box<VecDeque<Token>>>) -> R) -> R {
        let mut rest = self.rest.take();
        let r = f(&mut rest);
        self.rest.set(rest);
        r
    }

    /// How many waiters wait behind the first.
    fn rest_len(&self) -> usize {
        self.with_rest(|r| r.as_ref().map_or(0, |r| r.len()))
    }

    /// Takes the waiters behind the first (the list keeps its allocation).
    fn take_rest(&self) -> VecDeque<Token> {
        self.with_rest(|r| r.as_mut().map(|r| std::mem::take(&mut **r)))
            .unwrap_or_default()
    }

    /// Removes the current greenlet's entry, if any.
    pub(crate) fn remove_current(&self) {
        let removed = self.remove(greenlet::with_current(|c| c as *const Inner));
        drop(removed);
    }

    /// Wakes every waiter (they leave the list now), oldest first, and
    /// keeps the tokens of those it woke in `woken`.
    pub(crate) fn wake_all_into(&self, ready: &ReadyQueue, woken: &mut Vec<Token>) {
        let first = self.head.take();
        let rest = self.take_rest();
        for t in first.into_iter().chain(rest) {
            if t.wake(ready, Woke::Ready) {
                woken.push(t);
            }
        }
    }

    /// Wakes every waiter (they leave the list now), oldest first.
    pub(crate) fn wake_all(&self, ready: &ReadyQueue) -> usize {
        let Some(first) = self.head.take() else {
            return 0;
        };
        let mut woken = usize::from(first.wake(ready, Woke::Ready));
        drop(first);
        if self.rest_len() != 0 {
            let rest = self.take_rest();
            woken += rest.iter().filter(|t| t.wake(ready, Woke::Ready)).count();
        }
        woken
    }

    /// [`wake_all`](Self::wake_all) through this thread's hub.
    pub(crate) fn wake_all_now(&self) -> usize {
        super::with(|hub| self.wake_all(&hub.ready))
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(!self.is_empty()) + self.rest_len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        let head = self.head.take();
        let empty = head.is_none();
        self.head.set(head);
        empty
    }
}

#[cfg(test)]
mod tests {
    use super::super::timers::TimerKey;
    use super::Prepared;

    #[test]
    fn a_prepared_park_says_one_thing() {
        let none = Prepared::timer(None);
        assert_eq!((none.ended(), none.key()), (None, None));
        for w in Prepared::WOKES {
            let p = Prepared::ended_with(w);
            assert_eq!((p.ended(), p.key()), (Some(w), None));
        }
        let extremes = [0, 1, (u64::from(u32::MAX - 1) << 32) | u64::from(u32::MAX)];
        for bits in extremes {
            let k = TimerKey::from_bits(bits);
            assert_eq!(k.to_bits(), bits);
            let p = Prepared::timer(Some(k));
            assert_eq!((p.ended(), p.key()), (None, Some(k)));
        }
    }
}
