//! What `StreamServer` and `DatagramServer` share: one loop greenlet that
//! takes work in (accepts connections, receives datagrams) and a crew of
//! handler greenlets it spawns, with an optional bound, and stopping them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::hub::dump::WaitingOn;
use crate::hub::scheduler::{WaitList, Woke};
use crate::{Builder, JoinHandle};

/// Work taken in a row before the loop lets the hub turn (gevent's
/// `max_accept`): a burst of thousands of connections or datagrams must
/// not starve the handlers already running (the blocked-hub detector
/// caught 5,000 accepts in a row holding the hub for 278 ms).
const MAX_IN_A_ROW: usize = 100;

#[derive(Default)]
pub(super) struct Crew {
    max: Cell<Option<usize>>,
    looper: RefCell<Option<JoinHandle<()>>>,
    handlers: RefCell<HashMap<u64, JoinHandle<()>>>,
    next_id: Cell<u64>,
    /// Pieces of work taken in since the start.
    pub(super) taken: Cell<u64>,
    pub(super) live: Cell<usize>,
    /// Woken whenever a handler ends (a place frees up).
    ended: WaitList,
    /// Woken when the loop ends.
    finished: WaitList,
    pub(super) running: Cell<bool>,
    stopped: Cell<bool>,
    /// A `stop` is under way (waiting for or killing the handlers).
    stopping: Cell<bool>,
    /// Why the loop ended, if it failed.
    failure: RefCell<Option<io::Error>>,
    in_a_row: Cell<usize>,
}

impl Crew {
    /// At most `max` handlers at once (at least 1); `None`: no bound.
    pub(super) fn set_max(&self, max: Option<usize>) {
        self.max.set(max.map(|m| m.max(1)));
        self.ended.wake_all_now();
    }

    /// Starts `body` as the loop greenlet, named `name`.
    pub(super) fn start(
        self: &Rc<Self>,
        name: String,
        body: impl FnOnce() + 'static,
    ) -> io::Result<()> {
        if self.stopped.get() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the server was stopped",
            ));
        }
        if self.running.get() {
            return Ok(());
        }
        let me = self.clone();
        let h = Builder::new()
            .name(name)
            .spawn(move || {
                let _done = LoopDone(&me);
                body();
            })
            .map_err(io::Error::from)?;
        self.running.set(true);
        *self.looper.borrow_mut() = Some(h);
        Ok(())
    }

    /// Called by the loop before taking work in: lets the hub turn now and
    /// then, and waits while the bound is reached. False if nothing can
    /// ever free a place (the loop should end).
    pub(super) fn before_taking(&self) -> bool {
        let n = self.in_a_row.get() + 1;
        if n > MAX_IN_A_ROW {
            self.in_a_row.set(0);
            crate::hub::scheduler::yield_now();
        } else {
            self.in_a_row.set(n);
        }
        while self.max.get().is_some_and(|m| self.live.get() >= m) {
            if self
                .ended
                .wait(None, WaitingOn::Primitive("server: handler slot"))
                != Woke::Ready
            {
                return false;
            }
        }
        true
    }

    /// The loop ends with `e`.
    pub(super) fn fail(&self, e: io::Error) {
        *self.failure.borrow_mut() = Some(e);
    }

    /// Runs `f` as a handler greenlet; it leaves the crew however it ends.
    pub(super) fn spawn_handler(self: &Rc<Self>, f: impl FnOnce() + 'static) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.taken.set(self.taken.get() + 1);
        self.live.set(self.live.get() + 1);
        let done = HandlerDone {
            crew: self.clone(),
            id,
        };
        let h = crate::spawn(
            // Inlined where the body is called (`spawn::run_caught`): one
            // frame and one copy of the captures fewer on a parked stack.
            #[inline(always)]
            move || {
                let _done = done;
                f();
            },
        );
        self.handlers.borrow_mut().insert(id, h);
    }

    /// Waits until the loop has ended and, if a `stop` ended it, until that
    /// `stop` is done: the handlers finished or were killed (gevent's
    /// `serve_forever` returns only then too). Starting it is the caller's.
    pub(super) fn wait_finished(&self) -> io::Result<()> {
        while self.running.get() || self.stopping.get() {
            match self
                .finished
                .wait(None, WaitingOn::Primitive("server: handlers to finish"))
            {
                Woke::Ready => {}
                Woke::Deadline | Woke::TimedOut => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
                Woke::Deadlock => return Err(crate::Error::Deadlock.into()),
            }
        }
        match self.failure.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Kills the loop, then calls `after_loop` (closing the listener), waits
    /// up to `timeout` for the handlers (`None`: not at all), and kills the
    /// rest (all but the caller, if it is one of them).
    pub(super) fn stop(
        &self,
        timeout: Option<Duration>,
        after_loop: impl FnOnce(),
    ) -> io::Result<()> {
        /// Ends the `stop` on every path, waking `wait_finished`.
        struct Stopping<'a>(&'a Crew);
        impl Drop for Stopping<'_> {
            fn drop(&mut self) {
                self.0.stopping.set(false);
                self.0.finished.wake_all_now();
            }
        }
        self.stopped.set(true);
        self.stopping.set(true);
        let _stopping = Stopping(self);
        let looper = self.looper.borrow_mut().take();
        if let Some(l) = looper {
            l.kill().map_err(io::Error::from)?;
        }
        self.running.set(false);
        after_loop();
        self.finished.wake_all_now();
        if let Some(t) = timeout {
            let deadline = crate::hub::watcher::saturating_deadline(t);
            while self.live.get() > 0 && Instant::now() < deadline {
                if self.ended.wait(
                    Some(deadline),
                    WaitingOn::Primitive("server: handlers to finish"),
                ) == Woke::TimedOut
                {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
            }
        }
        let me = crate::Greenlet::current();
        let rest: Vec<JoinHandle<()>> = {
            let mut hs = self.handlers.borrow_mut();
            let ids: Vec<u64> = hs
                .iter()
                .filter(|(_, h)| h.greenlet() != me)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| hs.remove(&id)).collect()
        };
        crate::killall(&rest).map_err(io::Error::from)
    }
}

/// Marks the loop finished on every exit path (return, error, kill).
struct LoopDone<'a>(&'a Crew);

impl Drop for LoopDone<'_> {
    fn drop(&mut self) {
        self.0.running.set(false);
        self.0.finished.wake_all_now();
    }
}

/// Ends one handler's bookkeeping, however it ends.
struct HandlerDone {
    crew: Rc<Crew>,
    id: u64,
}

impl Drop for HandlerDone {
    fn drop(&mut self) {
        let c = &self.crew;
        c.live.set(c.live.get() - 1);
        let me = c.handlers.borrow_mut().remove(&self.id);
        drop(me);
        c.ended.wake_all_now();
    }
}
