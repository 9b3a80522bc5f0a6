//! Pooled, guard-paged stacks for greenlets.
//!
//! Stacks are carved out of large anonymous mappings ("slabs"). Below every
//! stack sits one guard page. On Linux ≥ 6.13 the guard is installed with
//! `madvise(MADV_GUARD_INSTALL)`, which does **not** split the mapping, so a
//! slab of 60+ stacks costs one entry of the kernel's per-process map table
//! (`vm.max_map_count`, 65,530 by default) instead of two per stack. Older
//! kernels fall back to `mprotect(PROT_NONE)`; when that runs out of map
//! entries, allocation fails with an error naming `vm.max_map_count`.
//!
//! A finished greenlet's stack goes back to a per-thread free list and is
//! reused by the next spawn without any system call.
//!
//! **Architecture Invariant:** this module knows nothing about greenlets.
//! The overflow reporter asks the layer above for a name through a hook.

mod copy;
mod overflow;
mod slab;

use std::cell::RefCell;
use std::io;

pub(crate) use copy::{
    GreenletStack, RunView, fill, lowest_not, restore, save, stack_pointer, take_run,
};
#[cfg(feature = "monkey")]
pub(crate) use overflow::write_stderr;
pub(crate) use overflow::{chain as chain_signal, ensure_thread_ready, fmt_usize, set_name_hook};
pub(crate) use slab::page_size;

/// The default usable stack size of a greenlet, in bytes: 256 KiB.
///
/// Only the pages a greenlet actually touches use memory (an idle greenlet
/// parked in `sleep` touches one or two pages), so a generous default costs
/// address space, not RAM. Change it per greenlet with
/// [`Builder::stack_size`](crate::Builder::stack_size).
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Smallest accepted stack size; smaller requests are rounded up to it.
pub(crate) const MIN_STACK_SIZE: usize = 16 * 1024;

/// The largest stack one greenlet may ask for: 1 TiB.
pub(crate) const MAX_STACK_SIZE: usize = 1 << 40;

/// How many most recently freed stacks per size class keep their memory
/// when the pool trims.
const HOT_STACKS: usize = 256;

/// The pool trims a size class when more free stacks than this still hold
/// memory: every free stack but the [`HOT_STACKS`] most recent gives its
/// pages back, in one batched system call per 1,024 stacks. So freeing a
/// stack costs no system call; the pool keeps at most this many touched
/// free stacks per size class.
const TRIM_AT: usize = 1024;

/// A stack handed out by the pool. Dropping it returns it to the pool.
#[derive(Debug)]
pub(crate) struct PooledStack {
    /// Highest address (exclusive): where the stack starts growing down.
    top: usize,
    /// Lowest usable address; the guard page is `[bottom - page, bottom)`.
    bottom: usize,
}

// SAFETY: `top` and `bottom` delimit a private, readable and writable region
// of a slab that lives for the rest of the process (slabs are never
// unmapped), with a guard page right below `bottom`. Both are page aligned,
// hence aligned to `STACK_ALIGNMENT` (16). The region is used by at most one
// coroutine at a time: the pool hands it out once and gets it back only when
// the `PooledStack` is dropped, which corosensei does after the coroutine
// finished (or never, when a suspended coroutine is leaked).
unsafe impl corosensei::stack::Stack for PooledStack {
    #[inline]
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.top).expect("stack top is never zero")
    }

    #[inline]
    fn limit(&self) -> corosensei::stack::StackPointer {
        // corosensei wants the limit to include the guard page.
        corosensei::stack::StackPointer::new(self.bottom - page_size())
            .expect("stack limit is never zero")
    }
}

impl PooledStack {
    /// `(top, bottom)`: the usable range, `bottom` inclusive.
    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.top, self.bottom)
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        let (top, bottom) = (self.top, self.bottom);
        // During thread teardown the pool may be gone: the range then stays
        // mapped but unused, which is harmless.
        let _ = POOL.try_with(|pool| pool.borrow_mut().give_back(top, bottom));
    }
}

/// One size class: stacks of exactly `size` usable bytes.
///
/// `free` is a LIFO (the most recently freed stack is reused first, while
/// its pages are warm); `free[..clean]` hold no memory (fresh, or
/// released by a trim), the rest were used since.
#[derive(Debug)]
struct Class {
    size: usize,
    free: Vec<(usize, usize)>,
    clean: usize,
}

impl Class {
    /// Releases every touched free stack but the most recent ones.
    fn trim(&mut self, keep: usize) {
        let end = self.free.len().saturating_sub(keep);
        if end > self.clean {
            slab::release(&self.free[self.clean..end]);
            self.clean = end;
        }
    }
}

#[derive(Debug, Default)]
struct Pool {
    classes: Vec<Class>,
}

impl Pool {
    fn take(&mut self, size: usize, clean: bool) -> io::Result<PooledStack> {
        let idx = match self.classes.iter().position(|c| c.size == size) {
            Some(i) => i,
            None => {
                self.classes.push(Class {
                    size,
                    free: Vec::new(),
                    clean: 0,
                });
                self.classes.len() - 1
            }
        };
        let class = &mut self.classes[idx];
        if class.free.is_empty() {
            slab::carve(size, &mut class.free)?;
            class.clean = class.free.len();
        }
        let (top, bottom) = class.free.pop().expect("carve added stacks");
        if clean && class.free.len() >= class.clean {
            // Used since its memory was last released: release it now.
            slab::release(&[(top, bottom)]);
        }
        class.clean = class.clean.min(class.free.len());
        Ok(PooledStack { top, bottom })
    }

    fn give_back(&mut self, top: usize, bottom: usize) {
        let size = top - bottom;
        if let Some(class) = self.classes.iter_mut().find(|c| c.size == size) {
            class.free.push((top, bottom));
            if class.free.len() - class.clean > TRIM_AT {
                class.trim(HOT_STACKS);
            }
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Rounds a requested stack size up to whole pages, at least [`MIN_STACK_SIZE`].
pub(crate) fn round_size(size: usize) -> usize {
    let page = page_size();
    size.max(MIN_STACK_SIZE).div_ceil(page) * page
}

/// Takes a stack of at least `size` usable bytes from this thread's pool.
///
/// # Errors
/// `InvalidInput` for a size above [`MAX_STACK_SIZE`] (which also keeps
/// the slab arithmetic from overflowing).
/// Fails when the kernel refuses a new slab (`ENOMEM`), or when the
/// `mprotect` fallback runs out of map entries; the error names
/// `vm.max_map_count` in that case.
///
/// With `clean`, the stack holds no memory when handed out (a reused one
/// is released first: one `madvise`), so that [`touched`] then measures
/// only what its new user touched.
pub(crate) fn take(size: usize, clean: bool) -> io::Result<PooledStack> {
    if size > MAX_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a stack of {size} bytes is more than the {MAX_STACK_SIZE}-byte maximum"),
        ));
    }
    let size = round_size(size);
    POOL.try_with(|pool| pool.borrow_mut().take(size, clean))
        .unwrap_or_else(|_| Err(io::Error::other("thread is exiting: no stack pool")))
}

/// Bytes of the stack `(top, bottom)` (see [`PooledStack::bounds`]) that
/// hold memory, counted from the top down to the deepest touched page: the
/// stack's high-water mark, to a page, since its memory was last released.
///
/// # Errors
/// What `mincore` reports.
pub(crate) fn touched((top, bottom): (usize, usize)) -> io::Result<usize> {
    slab::touched(top, bottom)
}

/// How guard pages are installed in this process (for diagnostics and tests).
pub(crate) fn guard_mode() -> &'static str {
    slab::guard_mode().name()
}
