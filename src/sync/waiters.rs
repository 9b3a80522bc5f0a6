//! [`Handoff`]: a FIFO of parked greenlets that things are handed to (or
//! taken from) directly, the base of every primitive here.
//!
//! Handing an item to a waiter, rather than waking it to retry, is what
//! makes wake order FIFO: a newcomer cannot barge in between the wake and
//! the waiter running. It also decides the fate of every item:
//!
//! - [`Handoff::hand`] gives an item only to a waiter that is still parked
//!   (its token still wakes it). A waiter whose park already ended (timed
//!   out, killed) is skipped and dropped from the queue.
//! - A waiter that was handed an item but is killed before it runs finds
//!   the item in its slot while unwinding, and passes it to `give_back`
//!   (the next waiter, or back into the primitive). Nothing is swallowed.
//! - A putter waits with its item in its slot; [`Handoff::take`] moves it
//!   out. If the putter gives up first, it takes its item back.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use crate::hub::dump::WaitingOn;
use crate::hub::scheduler::{Token, Woke, park_with};

struct Waiter<T> {
    token: RefCell<Option<Token>>,
    slot: RefCell<Option<T>>,
    queued: Cell<bool>,
}

/// A FIFO of parked greenlets exchanging `T`s with whoever wakes them.
pub(crate) struct Handoff<T> {
    queue: RefCell<VecDeque<Rc<Waiter<T>>>>,
    /// What its waiters wait on, as the dump shows it ("Semaphore", ...).
    what: &'static str,
}

impl<T> Handoff<T> {
    /// An empty queue whose waiters the dump shows as waiting on `what`.
    pub(crate) fn new(what: &'static str) -> Self {
        Handoff {
            queue: RefCell::new(VecDeque::new()),
            what,
        }
    }
}

/// Removes the waiter from the queue on every exit path, and hands back an
/// item that arrived for it if it leaves without taking it (a kill).
struct Leave<'a, T, G: FnMut(T)> {
    list: &'a Handoff<T>,
    me: Rc<Waiter<T>>,
    give_back: Option<G>,
}

impl<T, G: FnMut(T)> Drop for Leave<'_, T, G> {
    fn drop(&mut self) {
        if self.me.queued.replace(false) {
            let mut q = self.list.queue.borrow_mut();
            if let Some(at) = q.iter().position(|w| Rc::ptr_eq(w, &self.me)) {
                let w = q.remove(at);
                drop(q);
                drop(w);
            }
        }
        if let Some(give_back) = self.give_back.as_mut() {
            if let Some(item) = self.me.slot.borrow_mut().take() {
                give_back(item);
            }
        }
    }
}

impl<T> Handoff<T> {
    /// Parks until `done(slot)` says the exchange happened, or `deadline`.
    fn park(
        &self,
        me: &Rc<Waiter<T>>,
        deadline: Option<Instant>,
        done: impl Fn(&Option<T>) -> bool,
    ) -> Result<(), Woke> {
        loop {
            let woke = park_with(deadline, WaitingOn::Primitive(self.what), |token| {
                *me.token.borrow_mut() = Some(token);
                if !me.queued.replace(true) {
                    self.queue.borrow_mut().push_back(me.clone());
                }
            });
            if done(&me.slot.borrow()) {
                return Ok(());
            }
            if woke != Woke::Ready {
                return Err(woke);
            }
        }
    }

    /// Waits to be handed an item. A waiter killed after an item reached it
    /// passes the item to `give_back`.
    pub(crate) fn receive(
        &self,
        deadline: Option<Instant>,
        give_back: impl FnMut(T),
    ) -> Result<T, Woke> {
        let me = Rc::new(Waiter {
            token: RefCell::new(None),
            slot: RefCell::new(None),
            queued: Cell::new(false),
        });
        let _leave = Leave {
            list: self,
            me: me.clone(),
            give_back: Some(give_back),
        };
        self.park(&me, deadline, Option::is_some)?;
        let item = me.slot.borrow_mut().take();
        Ok(item.expect("the slot was checked"))
    }

    /// Waits with `item` until a taker moves it out. On a timeout, the item
    /// comes back; on a kill it is dropped with the unwinding greenlet.
    pub(crate) fn offer(&self, item: T, deadline: Option<Instant>) -> Result<(), (T, Woke)> {
        let me = Rc::new(Waiter {
            token: RefCell::new(None),
            slot: RefCell::new(Some(item)),
            queued: Cell::new(false),
        });
        let _leave = Leave::<T, fn(T)> {
            list: self,
            me: me.clone(),
            give_back: None,
        };
        match self.park(&me, deadline, Option::is_none) {
            Ok(()) => Ok(()),
            Err(woke) => {
                let item = me.slot.borrow_mut().take();
                Err((item.expect("not taken"), woke))
            }
        }
    }

    /// The oldest waiter that is still parked, now woken and out of the
    /// queue; stale entries on the way are dropped.
    fn pop_parked(&self) -> Option<Rc<Waiter<T>>> {
        loop {
            let w = self.queue.borrow_mut().pop_front()?;
            w.queued.set(false);
            let woke = w.token.borrow().as_ref().is_some_and(Token::wake_now);
            if woke {
                return Some(w);
            }
        }
    }

    /// Hands `item` to the oldest parked receiver, or returns it.
    pub(crate) fn hand(&self, item: T) -> Result<(), T> {
        match self.pop_parked() {
            Some(w) => {
                *w.slot.borrow_mut() = Some(item);
                Ok(())
            }
            None => Err(item),
        }
    }

    /// Takes the item of the oldest parked offerer (which wakes), if any.
    pub(crate) fn take(&self) -> Option<T> {
        let w = self.pop_parked()?;
        w.slot.borrow_mut().take()
    }

    /// Entries in the queue (stale ones included until they are skipped).
    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }
}
