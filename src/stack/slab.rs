//! Slabs: large anonymous mappings carved into stacks with guard pages.
//!
//! All `mmap`/`madvise`/`mprotect` calls of the crate live here.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// `MADV_GUARD_INSTALL` (Linux ≥ 6.13); not yet exported by `libc`.
const MADV_GUARD_INSTALL: libc::c_int = 102;

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
    // Push in reverse so the lowest stack is handed out first.
    let mut carved = Vec::with_capacity(count);
    for i in 0..count {
        let guard = base + i * stride;
        if let Err(e) = install_guard(guard) {
            // Keep the stacks that did get a guard; report the error only if
            // none did.
            if carved.is_empty() {
                // SAFETY: nothing was handed out from this mapping.
                unsafe { libc::munmap(base as *mut libc::c_void, len) };
                return Err(e);
            }
            break;
        }
        carved.push((guard + stride, guard + page));
    }
    super::overflow::register_slab(base, len, stride);
    free.extend(carved.into_iter().rev());
    Ok(())
}

/// Returns the memory of `[bottom, top)` to the kernel; the range stays
/// mapped and reads back as zeros.
pub(super) fn release_pages(bottom: usize, top: usize) {
    // SAFETY: the range is a free stack of ours; nobody runs on it.
    unsafe {
        libc::madvise(
            bottom as *mut libc::c_void,
            top - bottom,
            libc::MADV_DONTNEED,
        );
    }
}
