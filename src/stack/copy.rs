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

/// How a saved stack lies in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Saved {
    /// Bytes of the buffer used.
    pub(crate) stored: usize,
    /// The buffer holds the sparse form ([`save`]), not the bytes as they
    /// were.
    pub(crate) sparse: bool,
}

/// The unit in which zero runs are found: 64 aligned bytes.
const BLOCK: usize = 64;
/// A zero run is left out of a saved stack when it spans at least this
/// many bytes (four blocks): shorter ones cost more to describe and
/// restore than to copy.
const HOLE_MIN: usize = 4 * BLOCK;
/// Stacks shorter than this are copied whole, unscanned: a greenlet parked
/// in `sleep` or on an `Event` has a few hundred live bytes, with no room
/// for a hole worth its header.
const SCAN_MIN: usize = 1024;
/// The sparse form's header: the stack's length and the number of holes
/// (`u32` each); then each hole's offset from the low end and length
/// (`u32` each); then the bytes outside the holes, low to high.
const HEADER: usize = 8;
const HOLE_ENTRY: usize = 8;

/// Copies the bytes of `[low, top)` into the start of `buf`, which is
/// replaced by a new buffer of exactly the size needed when it is too
/// small or much too big (a deep stack's buffer is not kept for a shallow
/// one). Returns how the bytes were stored.
///
/// Runs of at least [`HOLE_MIN`] zero bytes (aligned 64-byte blocks) are
/// left out, on x86-64, of stacks of at least [`SCAN_MIN`] bytes: a
/// handler parked in a read with a zeroed 4 KiB buffer holding short
/// messages keeps a few hundred bytes on the heap, not 4 KiB. Such a
/// stack is stored in the sparse form ([`HEADER`]), which [`restore`]
/// reads back.
///
/// # Safety
/// `[low, top)` lies inside one run stack, and no coroutine is running on
/// that run stack.
pub(crate) unsafe fn save(low: usize, top: usize, buf: &mut Box<[MaybeUninit<u8>]>) -> Saved {
    let len = top - low;
    unpoison(low, top);
    // SAFETY: the caller's contract.
    if let Some(saved) = unsafe { save_sparse(low, top, buf) } {
        return saved;
    }
    fit(buf, len);
    // SAFETY: the caller's contract: `[low, top)` is mapped, readable
    // memory that nothing writes meanwhile; `buf` has room for `len` bytes.
    // The copy is untyped, so uninitialized bytes (frame padding) are fine.
    unsafe {
        std::ptr::copy_nonoverlapping(low as *const MaybeUninit<u8>, buf.as_mut_ptr(), len);
    }
    Saved {
        stored: len,
        sparse: false,
    }
}

/// Makes `buf` hold at least `len` bytes, and not far more.
fn fit(buf: &mut Box<[MaybeUninit<u8>]>, len: usize) {
    if buf.len() < len || buf.len() > 2 * len + 256 {
        *buf = Box::new_uninit_slice(len);
    }
}

/// The zero runs of `[low, top)` worth leaving out, as (offset from `low`,
/// length), low to high. The blocks are read as the iterator advances,
/// not when it is made.
///
/// # Safety
/// `[low, top)` is mapped, readable memory that nothing writes for as long
/// as the iterator is used (`save_sparse` consumes it at once, twice, and
/// both passes must see the same bytes).
#[cfg(target_arch = "x86_64")]
unsafe fn holes(low: usize, top: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut a = low.next_multiple_of(BLOCK);
    let mut run = a;
    std::iter::from_fn(move || {
        // Blocks lie wholly inside `[low, top)`: `top` is page-aligned,
        // so the last one ends exactly there.
        while a + BLOCK <= top {
            // SAFETY: a block inside the range (the caller's contract).
            let zero = unsafe { block_is_zero(a) };
            a += BLOCK;
            if zero {
                continue;
            }
            let (start, end) = (run, a - BLOCK);
            run = a;
            if end - start >= HOLE_MIN {
                return Some((start - low, end - start));
            }
        }
        let (start, end) = (run, a);
        run = a;
        (end - start >= HOLE_MIN).then(|| (start - low, end - start))
    })
}

/// Whether the 64 bytes at `p` are all zero. Read by the instruction
/// itself, not as Rust values: a frame's padding is uninitialized to the
/// language, and an assembly block's result is a plain integer.
///
/// # Safety
/// `[p, p + 64)` is mapped, readable memory.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_is_zero(p: usize) -> bool {
    let acc: u64;
    // SAFETY: reads the 64 bytes at `p` (the caller's contract); writes
    // only the output register and the flags.
    unsafe {
        std::arch::asm!(
            "mov {acc}, qword ptr [{p}]",
            "or {acc}, qword ptr [{p} + 8]",
            "or {acc}, qword ptr [{p} + 16]",
            "or {acc}, qword ptr [{p} + 24]",
            "or {acc}, qword ptr [{p} + 32]",
            "or {acc}, qword ptr [{p} + 40]",
            "or {acc}, qword ptr [{p} + 48]",
            "or {acc}, qword ptr [{p} + 56]",
            p = in(reg) p,
            acc = out(reg) acc,
            options(pure, readonly, nostack),
        );
    }
    acc == 0
}

/// [`save`] in the sparse form, if `[low, top)` is long enough to scan and
/// has a hole; `None` (nothing written) otherwise.
///
/// # Safety
/// As [`save`], with `[low, top)` unpoisoned.
#[cfg(target_arch = "x86_64")]
unsafe fn save_sparse(low: usize, top: usize, buf: &mut Box<[MaybeUninit<u8>]>) -> Option<Saved> {
    let len = top - low;
    if len < SCAN_MIN || top % BLOCK != 0 || u32::try_from(len).is_err() {
        return None;
    }
    let (mut n, mut hole_bytes) = (0, 0);
    // SAFETY: the caller's contract.
    for (_, size) in unsafe { holes(low, top) } {
        n += 1;
        hole_bytes += size;
    }
    if n == 0 {
        return None;
    }
    let data = HEADER + n * HOLE_ENTRY;
    let stored = data + len - hole_bytes;
    fit(buf, stored);
    let out = buf.as_mut_ptr();
    let put = |at: usize, v: usize| {
        // SAFETY: `at + 4 <= data <= stored <= buf.len()`; the value fits
        // (every offset and length is at most `len`, checked above).
        unsafe { out.add(at).cast::<u32>().write_unaligned(v as u32) };
    };
    put(0, len);
    put(4, n);
    let (mut from, mut to, mut entry) = (low, data, HEADER);
    // The same holes as above: nothing wrote the range meanwhile.
    // SAFETY: the caller's contract.
    for (offset, size) in unsafe { holes(low, top) } {
        put(entry, offset);
        put(entry + 4, size);
        entry += HOLE_ENTRY;
        let count = low + offset - from;
        // SAFETY: `[from, low + offset)` is inside `[low, top)`; the bytes
        // outside the holes total `stored - data`, so `to + count` stays
        // within the buffer; heap and stack do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(from as *const MaybeUninit<u8>, out.add(to), count)
        };
        to += count;
        from = low + offset + size;
    }
    // SAFETY: as in the loop, for the bytes above the last hole.
    unsafe {
        std::ptr::copy_nonoverlapping(from as *const MaybeUninit<u8>, out.add(to), top - from)
    };
    debug_assert_eq!(to + top - from, stored);
    Some(Saved {
        stored,
        sparse: true,
    })
}

/// Without a scanner for this architecture, every stack is copied whole.
///
/// # Safety
/// None needed; the signature matches the scanning version.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn save_sparse(_: usize, _: usize, _: &mut Box<[MaybeUninit<u8>]>) -> Option<Saved> {
    None
}

/// Writes a stack [`save`] stored in `buf` back where it was, below `top`
/// on the run stack `(top, bottom)`.
///
/// # Safety
/// `(top, bottom)` are a run stack's bounds, `buf` is what `save`
/// stored (in the form `sparse` says) for a range of that run stack ending at `top`,
/// and no coroutine is running on that run stack.
pub(crate) unsafe fn restore((top, bottom): (usize, usize), buf: &[MaybeUninit<u8>], sparse: bool) {
    // All of it: marks left by the previous occupant's deeper frames would
    // be taken for this one's.
    unpoison(bottom, top);
    let src = buf.as_ptr();
    if !sparse {
        let low = top - buf.len();
        // SAFETY: the caller's contract: mapped, writable memory that no
        // running code uses; `buf` does not overlap it (heap).
        unsafe { std::ptr::copy_nonoverlapping(src, low as *mut MaybeUninit<u8>, buf.len()) };
        return;
    }
    // SAFETY: `save_sparse` wrote these `u32`s at these offsets (all
    // within `buf`, which is what it stored).
    let get = |at: usize| unsafe { src.add(at).cast::<u32>().read_unaligned() } as usize;
    let (len, n) = (get(0), get(4));
    let low = top - len;
    let (mut to, mut from) = (low, HEADER + n * HOLE_ENTRY);
    for i in 0..n {
        let (offset, size) = (
            get(HEADER + i * HOLE_ENTRY),
            get(HEADER + i * HOLE_ENTRY + 4),
        );
        let count = low + offset - to;
        // SAFETY: the inverse of `save_sparse`'s copies: each range lies in
        // `[low, top)` on the run stack (the caller's contract) and in the
        // stored bytes; heap and stack do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.add(from), to as *mut MaybeUninit<u8>, count);
            std::ptr::write_bytes((low + offset) as *mut u8, 0, size);
        }
        from += count;
        to = low + offset + size;
    }
    // SAFETY: as in the loop, for the bytes above the last hole.
    unsafe { std::ptr::copy_nonoverlapping(src.add(from), to as *mut MaybeUninit<u8>, top - to) };
    debug_assert_eq!(from + top - to, buf.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack's contents: random bytes with zero runs of random lengths
    /// and alignments (some long enough to be left out, some not).
    fn contents(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as usize
        };
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let run = next() % 1500;
            if next() % 2 == 0 {
                v.extend(std::iter::repeat_n(0, run));
            } else {
                v.extend((0..run).map(|_| (next() % 255 + 1) as u8));
            }
        }
        v.truncate(len);
        v
    }

    #[test]
    fn a_saved_stack_comes_back_byte_for_byte_with_or_without_holes() {
        let st = super::super::take(64 * 1024, false).unwrap();
        let (top, bottom) = st.bounds();
        let mut buf = Box::default();
        let (mut sparse, mut whole) = (0, 0);
        for (i, len) in [16, 352, 1008, 1024, 1040, 4700, 4800, 20_000, 65_536]
            .into_iter()
            .enumerate()
        {
            for seed in 0..8u64 {
                let want = contents(len, seed * 31 + i as u64);
                let low = top - len;
                // SAFETY: a pooled stack nothing runs on; `[low, top)` is
                // inside it, and `want` is `len` bytes.
                unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), low as *mut u8, len) };
                // SAFETY: as above.
                let kept = unsafe { save(low, top, &mut buf) };
                assert!(kept.stored <= buf.len());
                if kept.sparse {
                    sparse += 1;
                    assert!(kept.stored < len, "{kept:?} of {len}");
                } else {
                    whole += 1;
                    assert_eq!(kept.stored, len);
                }
                // Garbage where the stack was, and below it.
                // SAFETY: as above.
                unsafe { fill(bottom, top, 0xee) };
                // SAFETY: `buf` is what `save` stored for `[low, top)`.
                unsafe { restore((top, bottom), &buf[..kept.stored], kept.sparse) };
                // SAFETY: as above; the bytes were written just now.
                let got = unsafe { std::slice::from_raw_parts(low as *const u8, len) };
                assert!(got == &want[..], "len {len}, seed {seed}, {kept:?}");
            }
        }
        if cfg!(target_arch = "x86_64") {
            assert!(sparse > 0 && whole > 0, "{sparse} sparse, {whole} whole");
        }
    }

    #[test]
    fn a_zeroed_buffer_costs_its_frame_not_its_size() {
        let st = super::super::take(64 * 1024, false).unwrap();
        let (top, _) = st.bounds();
        // A 4 KiB zeroed buffer holding one 64-byte message, between
        // frames of live bytes.
        let mut want = vec![0x11u8; 4700];
        want[300..300 + 4096].fill(0);
        want[300..364].fill(7);
        let low = top - want.len();
        // SAFETY: a pooled stack nothing runs on.
        unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), low as *mut u8, want.len()) };
        let mut buf = Box::default();
        // SAFETY: as above.
        let kept = unsafe { save(low, top, &mut buf) };
        if cfg!(target_arch = "x86_64") {
            assert!(kept.sparse, "{kept:?}");
            // 668 live bytes, up to two partial blocks of zeros, a header.
            assert!(kept.stored <= 668 + 2 * 63 + 16, "{kept:?}");
            assert_eq!(buf.len(), kept.stored, "a fresh buffer of the size needed");
        } else {
            assert_eq!(kept.stored, want.len());
        }
    }
}
