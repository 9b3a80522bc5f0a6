//! Timers: a `BTreeMap` keyed by `(deadline, sequence)`.
//!
//! Insert, cancel and pop are O(log n); equal deadlines fire in insertion
//! order; a deadline equal to "now" counts as due.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use super::scheduler::{ReadyQueue, Token};
use crate::greenlet::Woke;

/// Identifies one pending timer (for cancellation).
pub(crate) type TimerKey = (Instant, u64);

#[derive(Default)]
pub(crate) struct Timers {
    /// Each timer wakes its token with its own outcome: `Deadline` or
    /// `TimedOut` for a park, `Ready` for a delayed spawn.
    map: RefCell<BTreeMap<TimerKey, (Token, Woke)>>,
    seq: Cell<u64>,
}

impl Timers {
    /// Wakes `token` with `outcome` at `at`.
    pub(crate) fn insert(&self, at: Instant, token: Token, outcome: Woke) -> TimerKey {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        let key = (at, seq);
        self.map.borrow_mut().insert(key, (token, outcome));
        key
    }

    /// Removes a timer; returns its token if it had not fired yet.
    pub(crate) fn cancel(&self, key: TimerKey) -> Option<Token> {
        self.map.borrow_mut().remove(&key).map(|(t, _)| t)
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.borrow().first_key_value().map(|(k, _)| k.0)
    }

    /// Wakes every timer due at `now`, in deadline order.
    pub(crate) fn fire_due(&self, now: Instant, ready: &ReadyQueue) -> usize {
        let mut fired = 0;
        loop {
            let due = {
                let mut map = self.map.borrow_mut();
                match map.first_key_value() {
                    Some((k, _)) if k.0 <= now => map.pop_first(),
                    _ => None,
                }
            };
            let Some((_, (token, outcome))) = due else {
                break;
            };
            token.wake(ready, outcome);
            fired += 1;
        }
        fired
    }

    pub(crate) fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// Drops every timer (thread teardown).
    pub(crate) fn clear(&self) {
        let map = std::mem::take(&mut *self.map.borrow_mut());
        drop(map);
    }
}
