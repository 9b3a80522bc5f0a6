//! Greenlet-local storage (gevent's `gevent.local`): one value per
//! greenlet, created on first use and dropped when that greenlet ends.
//!
//! Values live in the greenlet's own record (a short list keyed by the
//! [`Local`]'s number), so lookups touch no global map, and a greenlet's
//! values are dropped on its own stack right after its function returns
//! (killed or not). The main greenlet's values are dropped at thread exit.

use std::any::Any;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::greenlet;

/// A key to a value of type `T` that every greenlet sees separately, like
/// `thread_local!` but per greenlet. Cheap to clone: clones name the same
/// values. Put one in a `thread_local!` (or pass it around) to share it.
///
/// `!Send`, like everything tied to a hub.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use greenhouse::local::Local;
///
/// let request_id = Local::new(|| Cell::new(0u32));
/// let hs: Vec<_> = (1..=3)
///     .map(|i| {
///         let id = request_id.clone();
///         greenhouse::spawn(move || {
///             id.with(|v| v.set(i));
///             greenhouse::yield_now(); // the others set theirs meanwhile
///             id.with(Cell::get)
///         })
///     })
///     .collect();
/// let seen: Vec<u32> = hs.into_iter().map(|h| h.join().unwrap()).collect();
/// assert_eq!(seen, [1, 2, 3]);
/// assert_eq!(request_id.with(Cell::get), 0); // main has its own
/// ```
pub struct Local<T> {
    key: u64,
    init: Rc<dyn Fn() -> T>,
}

impl<T> Clone for Local<T> {
    fn clone(&self) -> Self {
        Local {
            key: self.key,
            init: self.init.clone(),
        }
    }
}

impl<T> fmt::Debug for Local<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local").field("key", &self.key).finish()
    }
}

impl<T: Default + 'static> Default for Local<T> {
    fn default() -> Self {
        Local::new(T::default)
    }
}

impl<T: 'static> Local<T> {
    /// A new key; `init` makes each greenlet's value on its first access.
    pub fn new(init: impl Fn() -> T + 'static) -> Local<T> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Local {
            key: NEXT.fetch_add(1, Ordering::Relaxed),
            init: Rc::new(init),
        }
    }

    fn find(&self) -> Option<Rc<T>> {
        let found = greenlet::with_current(|c| {
            c.ext
                .cold_if()?
                .locals
                .borrow()
                .iter()
                .find(|(k, _)| *k == self.key)
                .map(|(_, v)| v.clone())
        })?;
        found.downcast::<T>().ok()
    }

    fn get_or_init(&self) -> Rc<T> {
        if let Some(v) = self.find() {
            return v;
        }
        // Not borrowed while `init` runs: it may use other locals.
        let v = Rc::new((self.init)());
        self.store(v.clone());
        v
    }

    fn store(&self, v: Rc<T>) {
        // Values die with their greenlet (on its own stack, when its body
        // ends): the greenlet layer runs this hook then.
        greenlet::set_exit_hook(|g| g.ext.drop_locals());
        let old = greenlet::with_current(|c| {
            let mut locals = c.ext.cold().locals.borrow_mut();
            match locals.iter_mut().find(|(k, _)| *k == self.key) {
                Some((_, slot)) => Some(std::mem::replace(slot, v as Rc<dyn Any>)),
                None => {
                    locals.push((self.key, v as Rc<dyn Any>));
                    None
                }
            }
        });
        drop(old); // outside the borrow: its destructor may use locals
    }

    /// Runs `f` with the current greenlet's value (made by `init` on first
    /// use). Use a `Cell` or `RefCell` inside for mutation.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.get_or_init())
    }

    /// Replaces the current greenlet's value.
    pub fn set(&self, value: T) {
        self.store(Rc::new(value));
    }

    /// Whether the current greenlet has a value yet.
    pub fn is_set(&self) -> bool {
        self.find().is_some()
    }

    /// Removes the current greenlet's value and returns it (`None` if it
    /// had none, or if a `with` on it is still running further up).
    pub fn take(&self) -> Option<T> {
        let v = greenlet::with_current(|c| {
            let mut locals = c.ext.cold_if()?.locals.borrow_mut();
            let at = locals.iter().position(|(k, _)| *k == self.key)?;
            Some(locals.swap_remove(at).1)
        })?;
        Rc::try_unwrap(v.downcast::<T>().ok()?).ok()
    }
}
