//! Parking and waking: the ready queue, wake tokens and wait lists.
//!
//! A greenlet blocks by registering a [`Token`] wherever its wake-up will
//! come from (a [`WaitList`], a timer, the reactor) and calling [`park`].
//! A token wakes only the park it was made for: every park bumps the
//! greenlet's generation, so a late or duplicate wake is ignored.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic;
use std::rc::Rc;
use std::time::Instant;

use crate::greenlet::{self, GreenletExit, Inner, Msg, State, Wake};

/// How a [`park`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Somebody woke the token (the awaited thing happened).
    Ready,
    /// The operation's own deadline passed.
    Deadline,
    /// An armed `Timeout` scope expired.
    TimedOut,
    /// Nothing could ever wake it.
    Deadlock,
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

    /// A token for the current greenlet's next [`park`].
    pub(crate) fn for_next_park() -> Token {
        let g = greenlet::current_rc();
        let generation = g.park_gen.get() + 1;
        Token { g, generation }
    }

    /// Makes the parked greenlet ready with `wake`. Returns false if that
    /// park is over (woken, timed out, killed) — nothing happens then.
    pub(crate) fn wake(&self, ready: &ReadyQueue, wake: Wake) -> bool {
        let g = &self.g;
        if g.state.get() != State::Parked || g.park_gen.get() != self.generation {
            return false;
        }
        g.state.set(State::Ready);
        g.put_msg(Msg::Wake(wake));
        ready.push(self.g.clone());
        true
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

/// Arranges for `g` to be resumed with `GreenletExit` raised at its
/// suspension point, whatever it is doing. Returns false if it is dead or
/// running (the caller handles a self-kill).
pub(crate) fn throw_into(ready: &ReadyQueue, g: &Rc<Inner>) -> bool {
    match g.state.get() {
        State::Dead | State::Running => false,
        State::Ready => {
            g.put_msg(Msg::Throw);
            true
        }
        State::Parked | State::Suspended | State::NotStarted => {
            // Bump the generation so no stale token can wake it again.
            g.park_gen.set(g.park_gen.get() + 1);
            g.state.set(State::Ready);
            g.put_msg(Msg::Throw);
            ready.push(g.clone());
            true
        }
    }
}

/// Parks the current greenlet until a token wakes it, `deadline` passes or
/// an armed `Timeout` scope expires. Raises `GreenletExit` if killed.
#[inline]
pub(crate) fn park(deadline: Option<Instant>) -> Woke {
    super::with(|hub| park_on(hub, deadline))
}

fn park_on(hub: &super::Hub, deadline: Option<Instant>) -> Woke {
    let cur = greenlet::current_rc();
    let generation = cur.park_gen.get() + 1;
    cur.park_gen.set(generation);
    let scope = super::timeout::scope_deadline(&cur);
    let (eff, from_scope) = match (deadline, scope) {
        (Some(d), Some(s)) if s <= d => (Some(s), true),
        (Some(d), _) => (Some(d), false),
        (None, Some(s)) => (Some(s), true),
        (None, None) => (None, false),
    };
    let woke_by_timer = |cur: &Inner| {
        if from_scope {
            super::timeout::mark_fired(cur);
            Woke::TimedOut
        } else {
            Woke::Deadline
        }
    };
    if let Some(e) = eff {
        if e <= Instant::now() {
            return woke_by_timer(&cur);
        }
    }
    let timer = eff.map(|e| {
        hub.timers.insert(
            e,
            Token {
                g: cur.clone(),
                generation,
            },
        )
    });
    // Cancels the timer on every exit path, including a kill's unwind.
    struct CancelTimer<'a>(&'a super::Hub, Option<super::timers::TimerKey>);
    impl Drop for CancelTimer<'_> {
        fn drop(&mut self) {
            if let Some(k) = self.1.take() {
                drop(self.0.timers.cancel(k));
            }
        }
    }
    let _cancel = CancelTimer(hub, timer);
    cur.state.set(State::Parked);
    let msg = greenlet::suspend(None);
    if let Some(w) = msg.as_wake() {
        // A wake-up owns nothing: skip the generic drop of the message.
        std::mem::forget(msg);
        return match w {
            Wake::Ready => Woke::Ready,
            Wake::Timer => woke_by_timer(&cur),
            Wake::Deadlock => Woke::Deadlock,
        };
    }
    match msg {
        Msg::Wake(Wake::Ready) => Woke::Ready,
        Msg::Wake(Wake::Timer) => woke_by_timer(&cur),
        Msg::Wake(Wake::Deadlock) => Woke::Deadlock,
        Msg::Throw => {
            drop(_cancel);
            drop(cur);
            panic::resume_unwind(Box::new(GreenletExit))
        }
        // An explicit switch cannot reach a parked greenlet; treat anything
        // else as a spurious wake-up (callers re-check their condition).
        _ => Woke::Ready,
    }
}

/// Puts the current greenlet at the back of the ready queue and runs every
/// greenlet queued before it (gevent's `sleep(0)`).
pub(crate) fn yield_now() {
    let cur = greenlet::current_rc();
    cur.park_gen.set(cur.park_gen.get() + 1);
    cur.state.set(State::Ready);
    cur.put_msg(Msg::Wake(Wake::Ready));
    super::with(|hub| hub.ready.push(cur));
    if let Msg::Throw = greenlet::suspend(None) {
        panic::resume_unwind(Box::new(GreenletExit));
    }
}

/// A FIFO list of parked greenlets waiting for one condition.
///
/// Every entry is removed by a guard when its park ends, whatever the
/// reason (woken, timed out, killed), so a list never holds stale waiters.
/// The first waiter is stored inline: a join (one waiter) allocates nothing.
#[derive(Default)]
pub(crate) struct WaitList {
    /// The oldest waiter, if any.
    head: RefCell<Option<(u64, Token)>>,
    /// Later waiters, oldest first.
    rest: RefCell<VecDeque<(u64, Token)>>,
}

fn next_waiter_id() -> u64 {
    thread_local! { static NEXT: Cell<u64> = const { Cell::new(1) }; }
    NEXT.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    })
}

impl WaitList {
    /// Parks the current greenlet in this list until woken or `deadline`.
    #[inline]
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Woke {
        let id = next_waiter_id();
        self.push((id, Token::for_next_park()));
        struct Remove<'a>(&'a WaitList, u64);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let removed = self.0.remove(self.1);
                drop(removed);
            }
        }
        let _remove = Remove(self, id);
        park(deadline)
    }

    fn push(&self, entry: (u64, Token)) {
        let mut head = self.head.borrow_mut();
        if head.is_none() && self.rest.borrow().is_empty() {
            *head = Some(entry);
        } else {
            self.rest.borrow_mut().push_back(entry);
        }
    }

    fn remove(&self, id: u64) -> Option<(u64, Token)> {
        let mut head = self.head.borrow_mut();
        if head.as_ref().is_some_and(|(i, _)| *i == id) {
            let out = head.take();
            *head = self.rest.borrow_mut().pop_front();
            return out;
        }
        let mut rest = self.rest.borrow_mut();
        rest.iter()
            .position(|(i, _)| *i == id)
            .and_then(|p| rest.remove(p))
    }

    /// Wakes every waiter (they leave the list now), oldest first.
    pub(crate) fn wake_all(&self, ready: &ReadyQueue) -> usize {
        let Some((_, first)) = self.head.borrow_mut().take() else {
            return 0;
        };
        let mut woken = usize::from(first.wake(ready, Wake::Ready));
        drop(first);
        if !self.rest.borrow().is_empty() {
            let rest = std::mem::take(&mut *self.rest.borrow_mut());
            woken += rest
                .iter()
                .filter(|(_, t)| t.wake(ready, Wake::Ready))
                .count();
        }
        woken
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.head.borrow().is_some()) + self.rest.borrow().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.borrow().is_none()
    }
}
