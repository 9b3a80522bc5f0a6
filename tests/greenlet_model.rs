//! A seeded, randomized model test of greenlet semantics.
//!
//! Thousands of random sequences of create / switch / throw / set_parent /
//! drop handle / yield / sleep / spawn / kill / Timeout run against
//! greenhouse, across up to 50 greenlets. A small reference model predicts,
//! at every step, who runs next, what each switch returns, who is dead and
//! which destructors have run; the real runtime must agree at every step.
//!
//! Every operation is executed by whichever greenlet is running (main or a
//! *puppet*): all of them run the same interpreter loop, `World::run`.
//! Odd seeds run every greenlet on copy stacks (`set_copy_stacks`).
//! `GREENHOUSE_MODEL_SEQS` sets the number of sequences (default 1,500);
//! `GREENHOUSE_MODEL_SEED` runs a single seed in both modes (to reproduce
//! a failure).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use greenhouse::{Error, Greenlet, GreenletState, JoinHandle};

const MAX_GREENLETS: usize = 50;
const STEPS: usize = 80;

/// Who: `None` is main, `Some(i)` is puppet `i`.
type Who = Option<usize>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    NotStarted,
    Suspended,
    Running,
    Dead,
}

/// The model's view of one puppet.
#[derive(Debug)]
struct M {
    st: St,
    parent: Who,
    /// Its user code ran (so its destructor guard exists or has run).
    started: bool,
    /// The puppet it holds a handle to across its pending switch or throw.
    frame_ref: Option<usize>,
}

/// What a greenlet's body ended with, on its way to an ancestor.
#[derive(Clone, Copy, Debug)]
enum Out {
    Returned(u64),
    /// `GreenletExit`, or a `Killed` failure passed on by an unstarted
    /// ancestor: either way a receiving switch sees `Err(Killed)`.
    Killed,
}

struct Model {
    g: Vec<M>,
    main_frame_ref: Option<usize>,
    /// Who must be resumed next, and with what.
    expect: Option<(Who, Result<u64, Error>)>,
}

impl Model {
    fn holds_ref(&self, j: usize, handles: &[bool]) -> bool {
        handles[j]
            || self.main_frame_ref == Some(j)
            || self.g.iter().any(|m| m.frame_ref == Some(j))
    }

    /// Whether puppet `c`'s record is alive (so its parent link counts): a
    /// handle or frame refers to it, it has frames, or a live child's
    /// parent link refers to it (a dead child's record passes its parent
    /// on: a result travels past dead ancestors).
    fn record_alive(&self, c: usize, handles: &[bool]) -> bool {
        self.holds_ref(c, handles)
            || matches!(self.g[c].st, St::Suspended | St::Running)
            || self.has_live_child(c, handles)
    }

    fn has_live_child(&self, j: usize, handles: &[bool]) -> bool {
        (0..self.g.len()).any(|c| self.g[c].parent == Some(j) && self.record_alive(c, handles))
    }

    fn unreachable(&self, j: usize, handles: &[bool]) -> bool {
        !self.holds_ref(j, handles) && !self.has_live_child(j, handles)
    }

    /// The hub's scheduling point: every suspended greenlet that nobody can
    /// switch to is killed (repeatedly: a death may free others).
    fn reap(&mut self, handles: &[bool]) {
        loop {
            let doomed: Vec<usize> = (0..self.g.len())
                .filter(|&j| self.g[j].st == St::Suspended && self.unreachable(j, handles))
                .collect();
            if doomed.is_empty() {
                return;
            }
            for j in doomed {
                self.g[j].st = St::Dead;
                self.g[j].frame_ref = None;
            }
        }
    }

    /// Delivers a finished greenlet's outcome to its nearest live ancestor.
    fn deliver(&mut self, from: Who, out: Out) {
        let mut p = from;
        loop {
            let Some(i) = p else {
                // Main is always waiting in a switch while a puppet runs.
                self.expect = Some((None, result_of(out)));
                return;
            };
            match self.g[i].st {
                St::Dead => p = self.g[i].parent,
                St::Suspended => {
                    self.expect = Some((Some(i), result_of(out)));
                    return;
                }
                St::NotStarted => match out {
                    Out::Returned(v) => {
                        self.expect = Some((Some(i), Ok(v)));
                        return;
                    }
                    Out::Killed => {
                        // It starts with a failure: it dies without running.
                        self.g[i].st = St::Dead;
                        p = self.g[i].parent;
                    }
                },
                St::Running => unreachable!("an ancestor cannot be running"),
            }
        }
    }
}

fn result_of(out: Out) -> Result<u64, Error> {
    match out {
        Out::Returned(v) => Ok(v),
        Out::Killed => Err(Error::Killed),
    }
}

/// Sets its flag when dropped: proves destructors ran.
struct Guard(Rc<Cell<bool>>);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

struct Worker {
    handle: JoinHandle<Result<u64, Error>>,
    value: u64,
    killed: bool,
    timed_out: bool,
    dropped: Rc<Cell<bool>>,
}

struct World {
    seed: u64,
    rng: Cell<u64>,
    steps: Cell<usize>,
    /// Handles held by the test (not by frames): `Rc` so that a frame can
    /// borrow one across a switch without holding the `RefCell`.
    reg: RefCell<Vec<Option<Rc<Greenlet>>>>,
    dropped: RefCell<Vec<Rc<Cell<bool>>>>,
    model: RefCell<Model>,
    workers: RefCell<Vec<Worker>>,
    /// Checks so far (every tenth takes a dump, every hundredth with
    /// backtraces).
    dumps: Cell<u64>,
    trace: RefCell<Vec<String>>,
}

enum Op {
    Create,
    Switch(Who, u64),
    Throw(Who),
    SetParent(usize, Who),
    DropHandle(usize),
    Yield,
    Sleep,
    Return(u64),
    Spawn { ms: u64, timeout: bool },
    Kill(usize),
}

impl World {
    fn rand(&self, n: u64) -> u64 {
        // xorshift64*
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }

    fn pick(&self) -> Who {
        let n = self.model.borrow().g.len() as u64;
        match self.rand(n + 1) {
            0 => None,
            k => Some(k as usize - 1),
        }
    }

    fn handles(&self) -> Vec<bool> {
        let reg = self.reg.borrow();
        let n = self.model.borrow().g.len();
        (0..n)
            .map(|i| reg.get(i).is_some_and(Option::is_some))
            .collect()
    }

    fn fail(&self, what: String) -> ! {
        let trace = self.trace.borrow().join("\n  ");
        panic!(
            "seed {}: {what}\n  trace:\n  {trace}\n(rerun with GREENHOUSE_MODEL_SEED={})",
            self.seed, self.seed
        );
    }

    /// The greenlet `who` was resumed with `got`: it must be what the model
    /// predicted.
    fn arrive(&self, who: Who, got: Result<u64, Error>) {
        let expect = self.model.borrow_mut().expect.take();
        if expect != Some((who, got.clone())) {
            self.fail(format!(
                "{who:?} resumed with {got:?}; model expected {expect:?}"
            ));
        }
        let mut m = self.model.borrow_mut();
        match who {
            None => m.main_frame_ref = None,
            Some(i) => {
                m.g[i].st = St::Running;
                m.g[i].started = true;
                m.g[i].frame_ref = None;
            }
        }
    }

    /// Every destructor flag and `is_dead` agree with the model.
    fn check(&self) {
        let m = self.model.borrow();
        for (i, g) in m.g.iter().enumerate() {
            let ran = self.dropped.borrow()[i].get();
            let want = g.started && g.st == St::Dead;
            if ran != want {
                self.fail(format!(
                    "puppet {i} ({g:?}): destructor ran = {ran}, model says {want}"
                ));
            }
            if let Some(Some(h)) = self.reg.borrow().get(i) {
                if h.is_dead() != (g.st == St::Dead) {
                    self.fail(format!(
                        "puppet {i}: is_dead = {}, model {g:?}",
                        h.is_dead()
                    ));
                }
            }
        }
        drop(m);
        // Every few steps, from whoever runs, the hub's dump (which resumes
        // every suspended puppet into a stack walk) must list exactly the
        // puppets the model says are alive, in the state it says; what
        // follows must go on as the model predicts, so the walk disturbed
        // nothing.
        let n = self.dumps.get() + 1;
        self.dumps.set(n);
        if n % 10 == 0 {
            self.check_dump(n % 100 == 0);
        }
    }

    fn check_dump(&self, backtraces: bool) {
        let d = if backtraces {
            greenhouse::dump()
        } else {
            greenhouse::dump_brief()
        };
        let m = self.model.borrow();
        for (i, g) in m.g.iter().enumerate() {
            let Some(Some(h)) = self.reg.borrow().get(i).cloned() else {
                continue;
            };
            if h.stack_usage().is_some_and(|u| u.saved > 0) {
                MOVED_OUT.with(|c| c.set(c.get() + 1));
            }
            let info = d.get(h.id());
            let ok = match (g.st, info.map(|x| x.state)) {
                (St::Dead, None) => true,
                (St::NotStarted, Some(GreenletState::NotStarted)) => true,
                (St::Running, Some(GreenletState::Running)) => true,
                // Suspended in a switch, or parked in the hub in a
                // sleep or yield it made meanwhile.
                (St::Suspended, Some(s)) => s != GreenletState::NotStarted,
                _ => false,
            };
            if !ok {
                self.fail(format!(
                    "puppet {i}: the dump says {:?}, model {g:?}",
                    info.map(|x| x.state)
                ));
            }
        }
    }

    fn choose(&self, me: Who) -> Op {
        if self.steps.get() >= STEPS {
            // Wind down: hand control back to main.
            return match me {
                None => Op::Yield,
                Some(_) => Op::Switch(None, self.rand(1000)),
            };
        }
        self.steps.set(self.steps.get() + 1);
        let n = self.model.borrow().g.len();
        loop {
            let op = match self.rand(100) {
                0..15 if n < MAX_GREENLETS => Op::Create,
                15..45 => Op::Switch(self.pick(), self.rand(1000)),
                45..53 => Op::Throw(self.pick()),
                53..59 if n > 0 => Op::SetParent(self.rand(n as u64) as usize, self.pick()),
                59..69 if n > 0 => Op::DropHandle(self.rand(n as u64) as usize),
                69..76 => Op::Yield,
                76..79 => Op::Sleep,
                79..88 if me.is_some() => Op::Return(self.rand(1000)),
                88..95 => Op::Spawn {
                    ms: self.rand(3),
                    timeout: self.rand(4) == 0,
                },
                95..100 if !self.workers.borrow().is_empty() => {
                    Op::Kill(self.rand(self.workers.borrow().len() as u64) as usize)
                }
                _ => continue,
            };
            return op;
        }
    }

    /// The interpreter every greenlet runs. Returns a puppet's return value
    /// (main returns when its steps are done).
    fn run(self: &Rc<Self>, me: Who) -> u64 {
        loop {
            self.check();
            let op = self.choose(me);
            match op {
                Op::Create => self.create(me),
                Op::Switch(j, v) => self.switch(me, j, v),
                Op::Throw(j) => self.throw(me, j),
                Op::SetParent(j, p) => self.set_parent(j, p),
                Op::DropHandle(j) => {
                    self.trace
                        .borrow_mut()
                        .push(format!("{me:?}: drop handle {j}"));
                    let h = self.reg.borrow_mut()[j].take();
                    drop(h);
                }
                Op::Yield | Op::Sleep => {
                    let sleep = matches!(op, Op::Sleep);
                    self.trace
                        .borrow_mut()
                        .push(format!("{me:?}: yield (sleep {sleep})"));
                    if me.is_none() && self.steps.get() >= STEPS {
                        return 0;
                    }
                    let handles = self.handles();
                    self.model.borrow_mut().reap(&handles);
                    if sleep {
                        greenhouse::sleep(Duration::from_millis(1));
                    } else {
                        greenhouse::yield_now();
                    }
                }
                Op::Return(v) => {
                    self.trace.borrow_mut().push(format!("{me:?}: return {v}"));
                    let i = me.expect("only puppets return");
                    let mut m = self.model.borrow_mut();
                    m.g[i].st = St::Dead;
                    let parent = m.g[i].parent;
                    m.deliver(parent, Out::Returned(v));
                    return v;
                }
                Op::Spawn { ms, timeout } => self.spawn_worker(ms, timeout),
                Op::Kill(w) => {
                    self.trace
                        .borrow_mut()
                        .push(format!("{me:?}: kill worker {w}"));
                    let mut ws = self.workers.borrow_mut();
                    ws[w].handle.kill_nowait();
                    ws[w].killed = true;
                }
            }
        }
    }

    fn create(self: &Rc<Self>, me: Who) {
        let i = self.model.borrow().g.len();
        self.trace.borrow_mut().push(format!("{me:?}: create {i}"));
        let flag = Rc::new(Cell::new(false));
        let world = self.clone();
        let f = flag.clone();
        let g = Greenlet::with_stack_size(32 * 1024, move |arg: u64| {
            let _guard = Guard(f);
            world.arrive(Some(i), Ok(arg));
            world.run(Some(i))
        })
        .unwrap();
        self.dropped.borrow_mut().push(flag);
        self.reg.borrow_mut().push(Some(Rc::new(g)));
        self.model.borrow_mut().g.push(M {
            st: St::NotStarted,
            parent: me,
            started: false,
            frame_ref: None,
        });
    }

    /// A handle to `j` for the duration of one call, or `None` if the test
    /// dropped it.
    fn target(&self, j: Who) -> Option<Rc<Greenlet>> {
        match j {
            None => Some(Rc::new(Greenlet::main())),
            Some(j) => self.reg.borrow()[j].clone(),
        }
    }

    fn switch(&self, me: Who, j: Who, v: u64) {
        let Some(target) = self.target(j) else { return };
        self.trace
            .borrow_mut()
            .push(format!("{me:?}: switch {j:?} {v}"));
        let immediate = {
            let mut m = self.model.borrow_mut();
            if j == me {
                Some(Ok(v))
            } else if j.is_some_and(|j| m.g[j].st == St::Dead) {
                Some(Err(Error::Dead))
            } else {
                self.suspend(&mut m, me, j);
                m.expect = Some((j, Ok(v)));
                None
            }
        };
        let got = target.switch::<u64, u64>(v);
        drop(target);
        match immediate {
            Some(want) if got != want => self.fail(format!("switch to self/dead: {got:?}")),
            Some(_) => {}
            None => self.arrive(me, got),
        }
    }

    fn suspend(&self, m: &mut Model, me: Who, j: Who) {
        match me {
            None => m.main_frame_ref = j,
            Some(i) => {
                m.g[i].st = St::Suspended;
                m.g[i].frame_ref = j;
            }
        }
    }

    fn throw(&self, me: Who, j: Who) {
        if j.is_none() {
            return; // main is never thrown into by this test
        }
        let Some(target) = self.target(j) else { return };
        self.trace.borrow_mut().push(format!("{me:?}: throw {j:?}"));
        let i = j.unwrap();
        let immediate = {
            let mut m = self.model.borrow_mut();
            match m.g[i].st {
                St::Dead => Some(Err(Error::Dead)),
                St::Running => {
                    // Throwing into yourself unwinds at once: we die here.
                    m.g[i].st = St::Dead;
                    m.g[i].frame_ref = None;
                    let parent = m.g[i].parent;
                    m.deliver(parent, Out::Killed);
                    None
                }
                St::NotStarted | St::Suspended => {
                    self.suspend(&mut m, me, j);
                    m.g[i].st = St::Dead;
                    m.g[i].frame_ref = None;
                    let parent = m.g[i].parent;
                    m.deliver(parent, Out::Killed);
                    None
                }
            }
        };
        let got = target.throw::<u64>();
        drop(target);
        match immediate {
            Some(want) if got != want => self.fail(format!("throw to a dead greenlet: {got:?}")),
            Some(_) => {}
            None => self.arrive(me, got),
        }
    }

    fn set_parent(&self, j: usize, p: Who) {
        let Some(g) = self.target(Some(j)) else {
            return;
        };
        let Some(parent) = self.target(p) else { return };
        self.trace
            .borrow_mut()
            .push(format!("set_parent {j} {p:?}"));
        let want = {
            let mut m = self.model.borrow_mut();
            let mut cur = p;
            let mut cycle = false;
            while let Some(c) = cur {
                if c == j {
                    cycle = true;
                    break;
                }
                cur = m.g[c].parent;
            }
            if cycle {
                Err(Error::ParentCycle)
            } else {
                m.g[j].parent = p;
                Ok(())
            }
        };
        let got = g.set_parent(&parent);
        if got != want {
            self.fail(format!("set_parent({j}, {p:?}) = {got:?}, model {want:?}"));
        }
    }

    fn spawn_worker(&self, ms: u64, timeout: bool) {
        let value = self.rand(1000);
        let w = self.workers.borrow().len();
        self.trace
            .borrow_mut()
            .push(format!("spawn worker {w} ({ms} ms, timeout {timeout})"));
        let dropped = Rc::new(Cell::new(false));
        // Owned by the closure: it drops even if the worker never starts.
        let guard = Guard(dropped.clone());
        let handle = greenhouse::spawn(move || {
            let _guard = guard;
            if timeout {
                // The Timeout's deadline always comes before the sleep's.
                greenhouse::with_timeout(Duration::from_millis(ms), || {
                    greenhouse::sleep(Duration::from_millis(ms + 50))
                })?;
            } else {
                greenhouse::sleep(Duration::from_millis(ms));
            }
            Ok(value)
        });
        self.workers.borrow_mut().push(Worker {
            handle,
            value,
            killed: false,
            timed_out: timeout,
            dropped,
        });
    }

    /// End of a sequence: drop every handle; the hub's next turn must kill
    /// every suspended greenlet that nothing refers to (a cycle of
    /// references, e.g. a parent suspended in a switch to its own child,
    /// keeps both, as a cycle of `Rc`s does), and every worker must end as
    /// predicted.
    fn finish(&self) {
        self.check();
        self.reg.borrow_mut().clear();
        let handles = self.handles();
        self.model.borrow_mut().reap(&handles);
        greenhouse::yield_now();
        self.check();
        for (w, wk) in std::mem::take(&mut *self.workers.borrow_mut())
            .into_iter()
            .enumerate()
        {
            let r = wk.handle.join();
            let ok = match &r {
                Ok(Ok(v)) => *v == wk.value && !wk.timed_out,
                Ok(Err(Error::TimedOut)) => wk.timed_out,
                Err(Error::Killed) => wk.killed,
                _ => false,
            };
            if !ok || !wk.dropped.get() {
                self.fail(format!(
                    "worker {w} (killed {}, timeout {}): {r:?}, destructor ran {}",
                    wk.killed,
                    wk.timed_out,
                    wk.dropped.get()
                ));
            }
        }
    }
}

thread_local! {
    /// Puppets seen with their stack bytes moved out (copy stacks), at
    /// the dump checks.
    static MOVED_OUT: Cell<u64> = const { Cell::new(0) };
}

fn run_seed(seed: u64, copy: bool) {
    // SAFETY: the puppets and workers share only heap data (the `World`
    // behind an `Rc`, `u64` values); nothing lends a stack.
    unsafe { greenhouse::set_copy_stacks(copy) };
    let world = Rc::new(World {
        seed,
        rng: Cell::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        steps: Cell::new(0),
        reg: RefCell::new(Vec::new()),
        dropped: RefCell::new(Vec::new()),
        model: RefCell::new(Model {
            g: Vec::new(),
            main_frame_ref: None,
            expect: None,
        }),
        workers: RefCell::new(Vec::new()),
        dumps: Cell::new(0),
        trace: RefCell::new(Vec::new()),
    });
    world.run(None);
    world.finish();
    // SAFETY: turning the default off.
    unsafe { greenhouse::set_copy_stacks(false) };
}

#[test]
fn random_sequences_agree_with_the_model() {
    if let Some(seed) = std::env::var("GREENHOUSE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_seed(seed, false);
        run_seed(seed, true);
        return;
    }
    let seqs: u64 = std::env::var("GREENHOUSE_MODEL_SEQS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    // Odd seeds with copy stacks (`set_copy_stacks`): puppets and workers
    // share run stacks, and their frames move out and back at every turn.
    for seed in 0..seqs {
        run_seed(seed, seed % 2 == 1);
    }
    if seqs >= 100 {
        // The copy-stack seeds did move stacks out.
        assert!(MOVED_OUT.with(Cell::get) > 0);
    }
}

/// std's `Mutex` and `Condvar` across greenlets and a helper OS thread,
/// under monkey patching (issue 20): seeded random programs, checked
/// against what they must add up to.
///
/// Each sequence has 2–8 greenlets and one helper thread sharing one std
/// `Mutex<Shared>` and `Condvar`. A greenlet's program is a random list of
/// steps: increment under the lock (sometimes holding it across a
/// greenhouse sleep or yield, so others contend and park), post a ticket to
/// another greenlet, or wait on the condvar until it holds a ticket of its
/// own (`wait`, or a `wait_timeout` loop). Every greenlet posts before it
/// waits, and the helper thread posts every ticket the greenlets do not,
/// at random moments: so every program can finish, and a lost wake-up
/// shows as a hang (the watchdog) or a wrong count. Checked at the end:
/// the counter equals the increments, every ticket was taken, nobody was
/// ever inside the lock with someone else, and the hub kept running (a
/// ticker greenlet ticked).
#[cfg(feature = "monkey")]
mod std_locks {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    #[derive(Default)]
    struct Shared {
        counter: u64,
        /// Tickets waiting for each greenlet.
        tickets: Vec<u32>,
        /// Who is inside the lock (mutual exclusion check).
        inside: Option<usize>,
    }

    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Increment; hold the lock across a sleep of this many ms (0: no
        /// sleep, 1: a yield, more: a sleep).
        Inc(u8),
        /// Give greenlet `k` a ticket.
        Post(usize),
        /// Take one of our tickets, waiting for it (with `wait_timeout`
        /// steps of this many ms, or plain `wait` for 0).
        Take(u8),
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
        }
    }

    type Lock = Arc<(Mutex<Shared>, Condvar)>;

    fn enter(l: &Lock, me: usize) -> std::sync::MutexGuard<'_, Shared> {
        let mut g = l.0.lock().unwrap();
        assert_eq!(g.inside, None, "two inside the lock");
        g.inside = Some(me);
        g
    }

    fn leave(mut g: std::sync::MutexGuard<'_, Shared>) {
        g.inside = None;
    }

    fn run(l: &Lock, me: usize, steps: &[Step]) {
        for step in steps {
            match *step {
                Step::Inc(hold) => {
                    let mut g = enter(l, me);
                    g.counter += 1;
                    match hold {
                        0 => {}
                        1 => greenhouse::yield_now(),
                        ms => greenhouse::sleep(Duration::from_millis(u64::from(ms))),
                    }
                    leave(g);
                }
                Step::Post(k) => {
                    let mut g = enter(l, me);
                    g.tickets[k] += 1;
                    leave(g);
                    l.1.notify_all();
                }
                Step::Take(step_ms) => {
                    let mut g = l.0.lock().unwrap();
                    while g.tickets[me] == 0 {
                        g = if step_ms == 0 {
                            l.1.wait(g).unwrap()
                        } else {
                            let d = Duration::from_millis(u64::from(step_ms));
                            l.1.wait_timeout(g, d).unwrap().0
                        };
                    }
                    assert_eq!(g.inside, None, "two inside the lock");
                    g.tickets[me] -= 1;
                }
            }
        }
    }

    fn sequence(seed: u64) {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let n = 2 + rng.below(7) as usize;
        let lock: Lock = Arc::new((
            Mutex::new(Shared {
                tickets: vec![0; n],
                ..Shared::default()
            }),
            Condvar::new(),
        ));
        // Programs: posts (to others) first, then increments and takes.
        let mut programs: Vec<Vec<Step>> = Vec::new();
        let mut takes = vec![0u32; n];
        let mut posted = vec![0u32; n];
        let mut incs = 0u64;
        for taken in takes.iter_mut() {
            let mut p = Vec::new();
            for _ in 0..rng.below(3) {
                let k = rng.below(n as u64) as usize;
                p.push(Step::Post(k));
                posted[k] += 1;
            }
            for _ in 0..4 + rng.below(12) {
                if rng.below(3) == 0 {
                    p.push(Step::Take([0, 0, 1, 3][rng.below(4) as usize]));
                    *taken += 1;
                } else {
                    p.push(Step::Inc([0, 0, 1, 2][rng.below(4) as usize]));
                    incs += 1;
                }
            }
            programs.push(p);
        }
        // The helper thread posts what is missing, with pauses; and the
        // greenlets' extra posts stay unclaimed (counted at the end).
        let mut helper_posts = Vec::new();
        for (k, (&t, &p)) in takes.iter().zip(&posted).enumerate() {
            for _ in p..t {
                helper_posts.push((k, rng.below(3)));
            }
        }
        let extra: u32 = takes
            .iter()
            .zip(&posted)
            .map(|(&t, &p)| p.saturating_sub(t))
            .sum();
        let ticks = Rc::new(Cell::new(0u32));
        let t = ticks.clone();
        let ticker = greenhouse::spawn(move || {
            loop {
                greenhouse::sleep(Duration::from_millis(1));
                t.set(t.get() + 1);
            }
        });
        let greenlets: Vec<_> = programs
            .into_iter()
            .enumerate()
            .map(|(me, p)| {
                let l = lock.clone();
                greenhouse::spawn(move || run(&l, me, &p))
            })
            .collect();
        let l = lock.clone();
        let helper = std::thread::spawn(move || {
            for (k, pause) in helper_posts {
                if pause > 0 {
                    std::thread::sleep(Duration::from_micros(300 * pause));
                }
                l.0.lock().unwrap().tickets[k] += 1;
                l.1.notify_all();
            }
        });
        for (i, r) in greenhouse::joinall(greenlets).into_iter().enumerate() {
            if let Err(e) = r {
                panic!("seed {seed}: greenlet {i} failed: {e}");
            }
        }
        helper.join().unwrap(); // the pthread_join hook
        let g = lock.0.lock().unwrap();
        assert_eq!(g.counter, incs, "seed {seed}: increments lost");
        assert_eq!(
            g.tickets.iter().sum::<u32>(),
            extra,
            "seed {seed}: tickets left over or taken twice"
        );
        assert_eq!(g.inside, None);
        drop(g);
        let _ = ticker.kill();
    }

    #[test]
    fn random_programs_on_std_locks_add_up() {
        greenhouse::monkey::patch_all();
        // A hang (a lost wake-up) fails instead of stalling the run.
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(120));
            eprintln!("std_locks model: still running after 120 s (a lost wake-up?)");
            std::process::abort();
        });
        let seqs: u64 = std::env::var("GREENHOUSE_MODEL_SEQS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(150, |n: u64| n / 10)
            .max(1);
        if let Some(seed) = std::env::var("GREENHOUSE_MODEL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            sequence(seed);
            return;
        }
        for seed in 0..seqs {
            sequence(seed);
        }
    }
}
