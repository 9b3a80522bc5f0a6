//! Slabs: large anonymous mappings carved into stacks with guard pages.
//!
//! All `mmap`/`madvise`/`mprotect` calls of the crate live here.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// `MADV_GUARD_INSTALL` (Linux ≥ 6.13); not yet exported by `libc`.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// `PIDFD_SELF_THREAD`: lets `process_madvise` act on our own address space
/// without opening a pidfd (so it stays right after `fork`).
const PIDFD_SELF: libc::c_int = -10_000;

/// The most ranges one `process_madvise` takes (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// Target size of one slab mapping.
const SLAB_BYTES: usize = 16 * 1024 * 1024;

/// The way guard pages are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GuardMode {
    /// `madvise(MADV_GUARD_INSTALL)`: no mapping split.
    Madvise,
    /// `mprotect(PROT_NONE)`: splits the mapping (two map entries a stack).
    Mprotect,
}

impl GuardMode {
    pub(super) fn name(self) -> &'static str {
        match self {
            GuardMode::Madvise => "madvise(MADV_GUARD_INSTALL)",
            GuardMode::Mprotect => "mprotect(PROT_NONE)",
        }
    }
}

const UNKNOWN: u8 = 0;
const MADVISE: u8 = 1;
const MPROTECT: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The system page size.
pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    })
}

pub(super) fn guard_mode() -> GuardMode {
    match MODE.load(Ordering::Relaxed) {
        MPROTECT => GuardMode::Mprotect,
        _ => GuardMode::Madvise,
    }
}

/// Forces the mprotect fallback when `GREENHOUSE_GUARD=mprotect` is set
/// (used by tests to exercise the old-kernel path).
fn forced_mprotect() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("GREENHOUSE_GUARD").is_ok_and(|v| v == "mprotect"))
}

/// Makes `[addr, addr + page)` a guard page.
fn install_guard(addr: usize) -> io::Result<()> {
    let page = page_size();
    if MODE.load(Ordering::Relaxed) != MPROTECT && !forced_mprotect() {
        // SAFETY: `addr` is a page-aligned page inside a private anonymous
        // mapping we own and have not handed out yet.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, page, MADV_GUARD_INSTALL) };
        if rc == 0 {
            MODE.store(MADVISE, Ordering::Relaxed);
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if MODE.load(Ordering::Relaxed) == MADVISE {
            // It worked before, so this is a real failure.
            return Err(err);
        }
        // EINVAL: the kernel predates MADV_GUARD_INSTALL.
    }
    MODE.store(MPROTECT, Ordering::Relaxed);
    // SAFETY: as above; PROT_NONE only removes access to our own page.
    let rc = unsafe { libc::mprotect(addr as *mut libc::c_void, page, libc::PROT_NONE) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOMEM) {
        return Err(out_of_maps(
            "cannot install a stack guard page: this kernel lacks MADV_GUARD_INSTALL, so \
             every greenlet stack costs two map entries",
        ));
    }
    Err(err)
}

/// The error for `ENOMEM` from the kernel's map table, naming the limit.
fn out_of_maps(what: &str) -> io::Error {
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let used = std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0);
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "{what}; the process has {used} memory maps and vm.max_map_count is {limit}. \
             Raise it (sysctl -w vm.max_map_count=...) or keep fewer greenlets alive"
        ),
    )
}

/// Maps a new slab of stacks of `size` usable bytes and pushes each stack as
/// `(top, bottom)` onto `free`.
pub(super) fn carve(size: usize, free: &mut Vec<(usize, usize)>) -> io::Result<()> {
    let page = page_size();
    let stride = size + page;
    let count = (SLAB_BYTES / stride).max(1);
    let len = count * stride;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOMEM) {
            return Err(out_of_maps(&format!(
                "cannot map {len} bytes for greenlet stacks (out of memory or of map entries)"
            )));
        }
        return Err(io::Error::new(
            err.kind(),
            format!("cannot map {len} bytes for greenlet stacks: {err}"),
        ));
    }
    let base = base as usize;
    // The first guard decides the guard mode; with `MADV_GUARD_INSTALL`,
    // all the others go in one batched call.
    let mut guarded = 0;
    if let Err(e) = install_guard(base) {
        // SAFETY: nothing was handed out from this mapping.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
        return Err(e);
    }
    guarded += 1;
    if guard_mode() == GuardMode::Madvise && !forced_mprotect() {
        let rest: Vec<(usize, usize)> = (1..count).map(|i| (base + i * stride, page)).collect();
        if advise(&rest, MADV_GUARD_INSTALL).is_ok() {
            guarded = count;
        }
    }
    // One at a time (the mprotect fallback, or a failed batch): keep the
    // stacks that did get a guard.
    while guarded < count && install_guard(base + guarded * stride).is_ok() {
        guarded += 1;
    }
    super::overflow::register_slab(base, len, stride);
    // Push in reverse so the lowest stack is handed out first.
    free.extend(
        (0..guarded)
            .rev()
            .map(|i| (base + (i + 1) * stride, base + i * stride + page)),
    );
    Ok(())
}

/// Applies `advice` to every `(start, len)` range of our own memory: with
/// `process_madvise(PIDFD_SELF)`, up to 1,024 ranges per system call
/// (Linux ≥ 6.13 for this use); one `madvise` per range where that is
/// refused, and for whatever a batch left undone.
///
/// # Errors
/// The first error of the per-range fallback.
fn advise(ranges: &[(usize, usize)], advice: libc::c_int) -> io::Result<()> {
    let mut rest = ranges;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(MAX_IOV)];
        let iov: Vec<libc::iovec> = chunk
            .iter()
            .map(|&(start, len)| libc::iovec {
                iov_base: start as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        // SAFETY: `iov` holds `iov.len()` valid iovecs describing ranges of
        // our own mappings that the caller vouches for (see each caller);
        // the kernel only reads the array.
        let r = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                PIDFD_SELF,
                iov.as_ptr(),
                iov.len(),
                advice,
                0,
            )
        };
        if r < 0 {
            break; // refused (older kernel): per range below
        }
        // It stops at a range it cannot advise: skip what was done.
        let mut done = r as usize;
        let mut k = 0;
        while k < chunk.len() && done >= chunk[k].1 {
            done -= chunk[k].1;
            k += 1;
        }
        rest = &rest[k..];
        if k < chunk.len() {
            break;
        }
    }
    let mut first_err = None;
    for &(start, len) in rest {
        // SAFETY: as above, one range at a time.
        if unsafe { libc::madvise(start as *mut libc::c_void, len, advice) } != 0 {
            first_err.get_or_insert_with(io::Error::last_os_error);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Returns the memory of free stacks `(top, bottom)` to the kernel, in as
/// few system calls as the kernel allows; the ranges stay mapped, read back
/// as zeros, and keep their guard pages (`MADV_DONTNEED` leaves guard
/// markers and `PROT_NONE` alone).
pub(super) fn release(stacks: &[(usize, usize)]) {
    let ranges: Vec<(usize, usize)> = stacks
        .iter()
        .map(|&(top, bottom)| (bottom, top - bottom))
        .collect();
    // The ranges are free stacks of ours: nobody runs on them (the pool's
    // invariant). Failure only leaves the memory in use.
    let _ = advise(&ranges, libc::MADV_DONTNEED);
}

/// How many bytes of the stack `(top, bottom)` are touched: from `top` down
/// to the lowest page that holds memory (a stack grows down, so every page
/// above that one was touched too). Asks `mincore`, a page table walk
/// that faults nothing in.
///
/// # Errors
/// What `mincore` reports (`ENOMEM` if the range is not mapped, which a
/// pooled stack always is).
pub(super) fn touched(top: usize, bottom: usize) -> io::Result<usize> {
    const CHUNK: usize = 4096; // pages per call
    let page = page_size();
    let mut vec = vec![0u8; CHUNK];
    let mut addr = bottom;
    while addr < top {
        let len = (top - addr).min(CHUNK * page);
        let pages = len / page;
        // SAFETY: `[addr, addr + len)` is page aligned and inside a slab we
        // mapped (slabs are never unmapped); `vec` has room for the
        // `len / page` bytes the kernel writes.
        let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(i) = vec[..pages].iter().position(|&b| b & 1 != 0) {
            return Ok(top - (addr + i * page));
        }
        addr += len;
    }
    Ok(0)
}
