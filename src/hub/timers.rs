//! Timers: a hierarchical timing wheel in front of a small heap.
//!
//! A deadline is bucketed by its millisecond *tick* into a wheel of
//! [`LEVELS`] levels of 64 slots, as in tokio and the Linux kernel: a
//! slot of level `L` spans `64^L` ticks. Each slot is an intrusive FIFO
//! list through a slab of entries, so insert and cancel are O(1) and
//! allocate nothing once the slab has grown.
//!
//! The wheel has a cursor, `elapsed`. Every timer whose tick is at or
//! before the cursor sits in `near`, a binary heap ordered by (deadline,
//! sequence): it fires at its exact deadline (epoll_pwait2 waits to the
//! nanosecond), and equal deadlines fire in insertion order. Every other
//! timer sits in the wheel, strictly after the cursor, so the head of
//! `near` is the earliest timer whenever `near` is not empty. When it is
//! empty, the cursor jumps to the earliest non-empty slot and moves that
//! slot's timers down (to a lower level, or into `near` once their tick is
//! reached). A timer is moved at most once per level, and the cursor never
//! passes the earliest live timer's tick, so `near` holds about one tick's
//! worth of timers.
//!
//! The cursor moves only on demand, never with the clock: a deadline equal
//! to "now" counts as due, and a timer is never late because of the wheel.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::scheduler::{ReadyQueue, Token};
use crate::greenlet::Woke;

/// Bits of a tick number per level (64 slots).
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
/// Levels: the wheel spans `64^6` ticks (about 2.2 years); a timer further
/// out waits in the top level and moves down again when its slot comes.
const LEVELS: usize = 6;
const MAX_SPAN: u64 = 1 << (BITS * LEVELS as u32);
/// One tick, in nanoseconds.
const TICK_NS: u128 = 1_000_000;
/// End of a list.
const NIL: u32 = u32::MAX;

/// Identifies one pending timer (for cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

impl TimerKey {
    /// The key as one word (index high, generation low).
    pub(crate) fn to_bits(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }

    /// The key [`to_bits`](Self::to_bits) made `bits` of.
    pub(crate) fn from_bits(bits: u64) -> TimerKey {
        TimerKey {
            index: (bits >> 32) as u32,
            generation: bits as u32,
        }
    }
}

/// The hub's timers: each wakes its token with its own outcome
/// (`Deadline` or `TimedOut` for a park, `Ready` for a delayed spawn).
pub(crate) struct Timers {
    wheel: RefCell<Wheel<(Token, Woke)>>,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            wheel: RefCell::new(Wheel::new(Instant::now())),
        }
    }
}

impl Timers {
    /// Wakes `token` with `outcome` at `at`.
    pub(crate) fn insert(&self, at: Instant, token: Token, outcome: Woke) -> TimerKey {
        self.wheel.borrow_mut().insert(at, (token, outcome))
    }

    /// Removes a timer; returns its token if it had not fired yet.
    pub(crate) fn cancel(&self, key: TimerKey) -> Option<Token> {
        self.wheel.borrow_mut().cancel(key).map(|(t, _)| t)
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.wheel.borrow_mut().earliest()
    }

    /// Wakes every timer due at `now`, in deadline order.
    pub(crate) fn fire_due(&self, now: Instant, ready: &ReadyQueue) -> usize {
        let mut fired = 0;
        loop {
            // The borrow ends before the wake: waking (and dropping the
            // token) touches only the ready queue and the greenlet record.
            let due = self.wheel.borrow_mut().pop_due(now);
            let Some((token, outcome)) = due else {
                break;
            };
            token.wake(ready, outcome);
            fired += 1;
        }
        fired
    }

    /// Timers pending (cancelled ones excluded).
    pub(crate) fn len(&self) -> usize {
        self.wheel.borrow().len()
    }

    /// Drops every timer (thread teardown), outside the borrow.
    pub(crate) fn clear(&self) {
        let base = self.wheel.borrow().base;
        let old = std::mem::replace(&mut *self.wheel.borrow_mut(), Wheel::new(base));
        drop(old);
    }
}

/// Where an entry of the slab is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// On the free list.
    Free,
    /// In `slots[level][slot]`.
    Wheel { level: u8, slot: u8 },
    /// In the heap (live, or cancelled and waiting to be popped).
    Near,
}

/// One timer: 56 bytes with a `(Token, Woke)` value, kept small because
/// every sleeping greenlet has one. Its tick is computed from `at` when it
/// is placed.
struct Entry<T> {
    /// The deadline, in nanoseconds from the wheel's base (`Wheel::ns_of`).
    at: i64,
    seq: u64,
    /// `None` once cancelled (or free).
    value: Option<T>,
    generation: u32,
    place: Place,
    prev: u32,
    next: u32,
}

/// Head and tail of one slot's list.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// The timer structure, generic over what a timer carries (so that it can
/// be tested alone).
pub(crate) struct Wheel<T> {
    /// Tick 0.
    base: Instant,
    /// The cursor: every timer with `tick <= elapsed` is in `near`.
    elapsed: u64,
    entries: Vec<Entry<T>>,
    free: u32,
    slots: [[List; SLOTS]; LEVELS],
    /// Bit `s` of `occupied[l]`: `slots[l][s]` is not empty.
    occupied: [u64; LEVELS],
    /// (deadline in ns from `base`, sequence, index), earliest first.
    near: BinaryHeap<Reverse<(i64, u64, u32)>>,
    seq: u64,
    live: usize,
}

impl<T> Wheel<T> {
    pub(crate) fn new(base: Instant) -> Wheel<T> {
        Wheel {
            base,
            elapsed: 0,
            entries: Vec::new(),
            free: NIL,
            slots: [[EMPTY; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            near: BinaryHeap::new(),
            seq: 0,
            live: 0,
        }
    }

    /// Live timers.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// `at` in nanoseconds from the base (negative before it), exact
    /// within 292 years either way, saturating beyond.
    fn ns_of(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.base) {
            Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            None => i64::try_from(self.base.duration_since(at).as_nanos()).map_or(i64::MIN, |n| -n),
        }
    }

    /// The instant `ns` nanoseconds from the base (inverse of `ns_of`).
    fn instant_of(&self, ns: i64) -> Instant {
        let d = std::time::Duration::from_nanos(ns.unsigned_abs());
        let at = if ns >= 0 {
            self.base.checked_add(d)
        } else {
            self.base.checked_sub(d)
        };
        at.unwrap_or(self.base)
    }

    /// The tick of a deadline (tick 0 for one before the base).
    fn tick_of(ns: i64) -> u64 {
        u64::try_from(ns).map_or(0, |ns| ns / TICK_NS as u64)
    }

    /// Adds a timer firing `value` at `at`.
    pub(crate) fn insert(&mut self, at: Instant, value: T) -> TimerKey {
        let at = self.ns_of(at);
        let tick = Self::tick_of(at);
        let seq = self.seq;
        self.seq += 1;
        self.live += 1;
        if self.near.is_empty() && self.occupied == [0; LEVELS] {
            // Nothing pending: bring the cursor to this timer, so that it
            // never lags far behind the clock.
            self.elapsed = tick;
        }
        let entry = Entry {
            at,
            seq,
            value: Some(value),
            generation: 0,
            place: Place::Free,
            prev: NIL,
            next: NIL,
        };
        let index = if self.free != NIL {
            let i = self.free;
            let e = &mut self.entries[i as usize];
            self.free = e.next;
            let generation = e.generation;
            *e = Entry {
                generation,
                ..entry
            };
            i
        } else {
            let i = u32::try_from(self.entries.len()).expect("more than 4 billion timers");
            self.entries.push(entry);
            i
        };
        self.place(index);
        TimerKey {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Removes a pending timer; returns its value if it had not fired.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let e = self.entries.get_mut(key.index as usize)?;
        if e.generation != key.generation {
            return None;
        }
        let value = e.value.take()?;
        self.live -= 1;
        match e.place {
            Place::Wheel { level, slot } => {
                self.unlink(key.index, level as usize, slot as usize);
                self.release(key.index);
            }
            // The heap still holds it; it is freed when popped.
            Place::Near => {}
            Place::Free => unreachable!("a free entry holds no value"),
        }
        Some(value)
    }

    /// The earliest live deadline.
    pub(crate) fn earliest(&mut self) -> Option<Instant> {
        loop {
            match self.near.peek() {
                Some(&Reverse((at, _, i))) => {
                    if self.entries[i as usize].value.is_some() {
                        return Some(self.instant_of(at));
                    }
                    // Cancelled: drop it now that it surfaced.
                    self.near.pop();
                    self.release(i);
                }
                None => {
                    if !self.cascade() {
                        return None;
                    }
                }
            }
        }
    }

    /// Takes the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.earliest()? > now {
            return None;
        }
        let Reverse((_, _, i)) = self.near.pop()?;
        let value = self.entries[i as usize].value.take();
        self.release(i);
        self.live -= 1;
        value
    }

    /// Puts entry `i` where its tick says: `near`, or a wheel slot.
    fn place(&mut self, i: u32) {
        let e = &self.entries[i as usize];
        let tick = Self::tick_of(e.at);
        if tick <= self.elapsed {
            let key = (e.at, e.seq, i);
            self.entries[i as usize].place = Place::Near;
            self.near.push(Reverse(key));
            return;
        }
        // A tick beyond the wheel's span waits in the top level for now.
        let tick = tick.min(self.elapsed + (MAX_SPAN - 1));
        let level = level_for(self.elapsed, tick);
        let slot = ((tick >> (BITS * level as u32)) as usize) & (SLOTS - 1);
        let list = &mut self.slots[level][slot];
        let tail = list.tail;
        list.tail = i;
        if tail == NIL {
            list.head = i;
        } else {
            self.entries[tail as usize].next = i;
        }
        let e = &mut self.entries[i as usize];
        e.prev = tail;
        e.next = NIL;
        e.place = Place::Wheel {
            level: level as u8,
            slot: slot as u8,
        };
        self.occupied[level] |= 1 << slot;
    }

    fn unlink(&mut self, i: u32, level: usize, slot: usize) {
        let (prev, next) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next)
        };
        let list = &mut self.slots[level][slot];
        if prev == NIL {
            list.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        let list = &mut self.slots[level][slot];
        if next == NIL {
            list.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if self.slots[level][slot].head == NIL {
            self.occupied[level] &= !(1 << slot);
        }
    }

    /// Returns entry `i` to the free list.
    fn release(&mut self, i: u32) {
        let e = &mut self.entries[i as usize];
        e.place = Place::Free;
        e.value = None;
        e.generation = e.generation.wrapping_add(1);
        e.next = self.free;
        self.free = i;
    }

    /// Moves the cursor to the earliest non-empty slot and redistributes
    /// its timers. Returns false if the wheel is empty.
    fn cascade(&mut self) -> bool {
        let Some((level, slot, start)) = self.next_slot() else {
            return false;
        };
        self.elapsed = start;
        let list = std::mem::replace(&mut self.slots[level][slot], EMPTY);
        self.occupied[level] &= !(1 << slot);
        let mut i = list.head;
        while i != NIL {
            let next = self.entries[i as usize].next;
            self.place(i);
            i = next;
        }
        true
    }

    /// The earliest non-empty slot after the cursor: (level, slot, first
    /// tick it covers). Levels are searched lowest first: a level-`L` timer
    /// lies beyond the cursor's current `64^L` block, so after every lower
    /// level's.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        (0..LEVELS).find_map(|level| {
            let occupied = self.occupied[level];
            if occupied == 0 {
                return None;
            }
            let shift = BITS * level as u32;
            let slot_span = 1u64 << shift;
            let level_span = slot_span << BITS;
            let now_slot = self.elapsed >> shift;
            let zeros = occupied
                .rotate_right((now_slot % SLOTS as u64) as u32)
                .trailing_zeros();
            let slot = (zeros as usize + now_slot as usize) % SLOTS;
            let level_start = self.elapsed & !(level_span - 1);
            let mut start = level_start + slot as u64 * slot_span;
            if start <= self.elapsed && level > 0 {
                // A top-level slot that wrapped round (a timer beyond the
                // span): it belongs to the next round of this level.
                start += level_span;
            }
            Some((level, slot, start.max(self.elapsed)))
        })
    }
}

/// The level for a timer at `tick` seen from `elapsed`: the level of the
/// highest bit in which they differ.
fn level_for(elapsed: u64, tick: u64) -> usize {
    let masked = ((elapsed ^ tick) | (SLOTS as u64 - 1)).min(MAX_SPAN - 1);
    let significant = 63 - masked.leading_zeros() as usize;
    significant / BITS as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// Every sleeping greenlet has one entry (plus the slab's growth
    /// slack): its size is part of a parked greenlet's memory (issue 21).
    #[test]
    fn an_entry_is_seven_words() {
        assert_eq!(std::mem::size_of::<Entry<(Token, Woke)>>(), 56);
    }

    /// A small deterministic generator (no dev-dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let base = Instant::now();
        let mut w = Wheel::new(base);
        let at = base + Duration::from_millis(70);
        for v in 0..100 {
            w.insert(at, v);
        }
        assert_eq!(w.pop_due(at - Duration::from_nanos(1)), None);
        let got: Vec<_> = std::iter::from_fn(|| w.pop_due(at)).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn exact_deadline_within_a_tick() {
        let base = Instant::now();
        let mut w = Wheel::new(base);
        let late = base + Duration::from_micros(5_900);
        let early = base + Duration::from_micros(5_100);
        w.insert(base + Duration::from_secs(1), 0);
        w.insert(late, 1);
        w.insert(early, 2);
        assert_eq!(w.earliest(), Some(early));
        assert_eq!(w.pop_due(early), Some(2));
        assert_eq!(w.earliest(), Some(late));
        assert_eq!(w.pop_due(late - Duration::from_nanos(1)), None);
        assert_eq!(w.pop_due(late), Some(1));
        assert_eq!(w.earliest(), Some(base + Duration::from_secs(1)));
    }

    #[test]
    fn cancel_is_once_and_stale_keys_miss() {
        let base = Instant::now();
        let mut w = Wheel::new(base);
        w.insert(base + Duration::from_millis(1), 'z'); // the cursor's
        let k = w.insert(base + Duration::from_millis(500), 'a');
        assert_eq!(w.cancel(k), Some('a'));
        assert_eq!(w.cancel(k), None);
        // The slot is reused under a new generation.
        let k2 = w.insert(base + Duration::from_millis(5), 'b');
        assert_eq!(k2.index, k.index);
        assert_eq!(w.cancel(k), None);
        assert_eq!(w.len(), 2);
        assert_eq!(w.earliest(), Some(base + Duration::from_millis(1)));
        assert_eq!(w.pop_due(base + Duration::from_secs(9)), Some('z'));
        assert_eq!(w.pop_due(base + Duration::from_secs(9)), Some('b'));
        assert_eq!(w.cancel(k2), None, "fired timers cannot be cancelled");
        assert_eq!(w.earliest(), None);
    }

    #[test]
    fn far_deadlines_beyond_the_span() {
        let base = Instant::now();
        let mut w = Wheel::new(base);
        let year = Duration::from_secs(365 * 24 * 3600);
        let far = [base + year * 90, base + year * 3, base + year * 50];
        for (v, &at) in far.iter().enumerate() {
            w.insert(at, v);
        }
        w.insert(base, 9);
        assert_eq!(w.pop_due(base), Some(9));
        let mut sorted = far.to_vec();
        sorted.sort();
        for at in sorted {
            assert_eq!(w.earliest(), Some(at));
            assert!(w.pop_due(at).is_some());
        }
        assert_eq!(w.len(), 0);
    }

    /// Random inserts, cancels and pops against a `BTreeMap` keyed by
    /// (deadline, sequence): the same timers fire in the same order.
    #[test]
    fn matches_an_ordered_map() {
        for seed in 0..40 {
            let mut rng = Lcg(seed);
            let base = Instant::now();
            let mut w = Wheel::new(base);
            let mut model = BTreeMap::new();
            let mut keys = Vec::new();
            let mut now = base;
            let mut seq = 0u64;
            for _ in 0..3_000 {
                match rng.next() % 10 {
                    0..=4 => {
                        // Deadlines from the past to hours ahead, many equal.
                        let us = match rng.next() % 4 {
                            0 => rng.next() % 2_000,
                            1 => rng.next() % 200_000,
                            2 => (rng.next() % 50) * 1000,
                            _ => rng.next() % 20_000_000_000,
                        };
                        let at = (now + Duration::from_micros(us))
                            .checked_sub(Duration::from_micros(500))
                            .unwrap_or(now);
                        let k = w.insert(at, seq);
                        model.insert((at, seq), seq);
                        keys.push((k, at, seq));
                        seq += 1;
                    }
                    5 | 6 if !keys.is_empty() => {
                        let (k, at, s) = keys.swap_remove(rng.next() as usize % keys.len());
                        assert_eq!(w.cancel(k), model.remove(&(at, s)));
                    }
                    _ => {
                        now += Duration::from_micros(rng.next() % 3_000);
                        loop {
                            let want = match model.first_key_value() {
                                Some((&(at, _), _)) if at <= now => model.pop_first(),
                                _ => None,
                            };
                            assert_eq!(w.pop_due(now), want.map(|(_, v)| v), "seed {seed}");
                            if want.is_none() {
                                break;
                            }
                        }
                    }
                }
                assert_eq!(w.len(), model.len());
                assert_eq!(
                    w.earliest(),
                    model.first_key_value().map(|(k, _)| k.0),
                    "seed {seed}"
                );
            }
            // Everything left fires, in order, through every level.
            let end = base + Duration::from_secs(1 << 40);
            let rest: Vec<_> = std::iter::from_fn(|| w.pop_due(end)).collect();
            assert_eq!(rest, model.into_values().collect::<Vec<_>>(), "seed {seed}");
        }
    }

    #[test]
    fn level_boundaries() {
        assert_eq!(level_for(0, 1), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(63, 64), 1);
        assert_eq!(level_for(64, 127), 0);
        assert_eq!(level_for(0, MAX_SPAN - 1), LEVELS - 1);
        assert_eq!(level_for(MAX_SPAN - 1, MAX_SPAN + 5), LEVELS - 1);
    }
}
