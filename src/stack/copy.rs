//! Run stacks for copy-stack greenlets, and moving live stack bytes to and
//! from the heap.
//!
//! A *run stack* is a pooled, guard-paged stack that is never given back:
//! many coroutines run on it, one at a time. Each holds a [`RunView`] of it
//! as its corosensei stack. The layer above decides whose bytes occupy the
//! run stack and moves the others' live bytes out ([`save`]) and back
//! ([`restore`]) at the same addresses, so a coroutine's frames find
//! themselves exactly where they were.
//!
//! **Architecture Invariant:** this module moves bytes; it does not know
//! whose they are. That nothing points into bytes while they are moved out
//! is the greenlet layer's argument (`greenlet/copy.rs`).

use std::io;
use std::mem::MaybeUninit;

use super::PooledStack;

/// One run stack, as a coroutine's stack: its bounds, nothing owned.
///
/// Many coroutines hold a view of the same run stack. The memory outlives
/// them all: [`take_run`] never returns a run stack to the pool, and slabs
/// are never unmapped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunView {
    top: usize,
    bottom: usize,
}

impl RunView {
    /// `(top, bottom)`: the usable range, `bottom` inclusive.
    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.top, self.bottom)
    }
}

// SAFETY: as for `PooledStack`: `top` and `bottom` delimit a private,
// readable and writable, page-aligned region of a slab that is never
// unmapped, with a guard page right below `bottom`. The region is shared by
// several coroutines, but never used by two at once: the layer above
// restores a coroutine's live bytes into it before every resume and saves
// the previous occupant's first (greenlet/copy.rs, `enter`), which is
// what corosensei needs: that the memory the coroutine left holds what it
// left there whenever it runs.
unsafe impl corosensei::stack::Stack for RunView {
    #[inline]
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.top).expect("stack top is never zero")
    }

    #[inline]
    fn limit(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.bottom - super::page_size())
            .expect("stack limit is never zero")
    }
}

/// The stack a greenlet's coroutine runs on: its own, or a view of a
/// shared run stack.
#[derive(Debug)]
pub(crate) enum GreenletStack {
    /// A page stack of its own, back to the pool when the coroutine goes.
    Own(PooledStack),
    /// A run stack shared with other copy-stack greenlets.
    Run(RunView),
}

// SAFETY: each variant upholds the trait's contract (see their impls); this
// only forwards to them.
unsafe impl corosensei::stack::Stack for GreenletStack {
    #[inline]
    fn base(&self) -> corosensei::stack::StackPointer {
        match self {
            GreenletStack::Own(s) => s.base(),
            GreenletStack::Run(s) => s.base(),
        }
    }

    #[inline]
    fn limit(&self) -> corosensei::stack::StackPointer {
        match self {
            GreenletStack::Own(s) => s.limit(),
            GreenletStack::Run(s) => s.limit(),
        }
    }
}

/// Takes a stack of at least `size` usable bytes to serve as a run stack for
/// the rest of the thread's life.
///
/// # Errors
/// As [`take`](super::take).
pub(crate) fn take_run(size: usize) -> io::Result<RunView> {
    let s = super::take(size, false)?;
    let (top, bottom) = s.bounds();
    // Never given back: views of it may outlive any owner we could name.
    std::mem::forget(s);
    Ok(RunView { top, bottom })
}

/// The stack pointer of the calling function (after its prologue).
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer register; touches no memory.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    // SAFETY: as above.
    #[cfg(any(target_arch = "riscv64", target_arch = "riscv32"))]
    unsafe {
        std::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "riscv32"
    )))]
    {
        // A local's address: within this frame, at a fixed offset from
        // the stack pointer, which is all the calibration needs.
        let probe = 0u8;
        sp = std::hint::black_box(&probe) as *const u8 as usize;
    }
    sp
}

#[cfg(greenhouse_asan)]
unsafe extern "C" {
    fn __asan_unpoison_memory_region(addr: *const std::ffi::c_void, size: usize);
}

/// Clears AddressSanitizer's marks on `[low, top)`: the frames that made
/// them are not the ones that will run there next.
#[inline]
fn unpoison(low: usize, top: usize) {
    #[cfg(greenhouse_asan)]
    // SAFETY: a range of our own mapped memory; only ASan's shadow changes.
    unsafe {
        __asan_unpoison_memory_region(low as *const std::ffi::c_void, top - low)
    };
    let _ = (low, top);
}

/// Copies the bytes of `[low, top)` into the start of `buf`, which is
/// replaced by a new buffer of exactly that size when it is too small or
/// much too big (a deep stack's buffer is not kept for a shallow one).
/// Returns the number of bytes copied.
///
/// # Safety
/// `[low, top)` lies inside one run stack, and no coroutine is running on
/// that run stack.
pub(crate) unsafe fn save(low: usize, top: usize, buf: &mut Box<[MaybeUninit<u8>]>) -> usize {
    let len = top - low;
    if buf.len() < len || buf.len() > 2 * len + 256 {
        *buf = Box::new_uninit_slice(len);
    }
    unpoison(low, top);
    // SAFETY: the caller's contract: `[low, top)` is mapped, readable
    // memory that nothing writes meanwhile; `buf` has room for `len` bytes.
    // The copy is untyped, so uninitialized bytes (frame padding) are fine.
    unsafe {
        std::ptr::copy_nonoverlapping(low as *const MaybeUninit<u8>, buf.as_mut_ptr(), len);
    }
    len
}

/// Writes `buf` back to `[top - buf.len(), top)` on the run stack
/// `(top, bottom)`.
///
/// # Safety
/// `(top, bottom)` are a run stack's bounds, `buf` fits in it, and no
/// coroutine is running on that run stack.
pub(crate) unsafe fn restore((top, bottom): (usize, usize), buf: &[MaybeUninit<u8>]) {
    let low = top - buf.len();
    // All of it: marks left below `low` by the previous occupant's deeper
    // frames would be taken for this one's.
    unpoison(bottom, top);
    // SAFETY: the caller's contract: mapped, writable memory that no
    // running code uses; `buf` does not overlap it (heap).
    unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr(), low as *mut MaybeUninit<u8>, buf.len());
    }
}

/// Fills `[bottom, top)` with `byte` (the calibration's pattern).
///
/// # Safety
/// `[bottom, top)` is a stack nobody runs on.
pub(crate) unsafe fn fill(bottom: usize, top: usize, byte: u8) {
    unpoison(bottom, top);
    // SAFETY: the caller's contract.
    unsafe { std::ptr::write_bytes(bottom as *mut u8, byte, top - bottom) };
}

/// The lowest address in `[bottom, top)` whose byte is not `byte`, or `top`.
///
/// # Safety
/// `[bottom, top)` is a stack nobody runs on.
pub(crate) unsafe fn lowest_not(bottom: usize, top: usize, byte: u8) -> usize {
    unpoison(bottom, top);
    let mut a = bottom;
    while a < top {
        // SAFETY: the caller's contract: mapped, readable memory. Read as
        // a volatile byte so a pattern check cannot be optimised into
        // assumptions about bytes that other code wrote.
        if unsafe { std::ptr::read_volatile(a as *const u8) } != byte {
            return a;
        }
        a += 1;
    }
    top
}
