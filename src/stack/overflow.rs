//! Stack overflow reporting: a `SIGSEGV` handler on an alternate signal stack.
//!
//! When a fault address lies in the guard page of a pooled stack, the
//! handler writes `greenhouse: greenlet '<name>' overflowed its stack of
//! <size> bytes` to stderr and aborts. Any other fault is passed on to the
//! handler that was installed before (Rust's own, or the default action).
//!
//! Everything the handler touches is async-signal-safe: an append-only list
//! of slabs (atomics), a name hook that copies bytes from `const`
//! thread-locals, a raw `SYS_write` system call (never `libc::write`,
//! which the `monkey` feature replaces with a hook), and `abort`.

use std::cell::Cell;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Copies the name of the greenlet running on this thread into the buffer
/// and returns how many bytes it wrote. Must be async-signal-safe.
pub(crate) type NameHook = fn(&mut [u8]) -> usize;

static NAME_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs the hook the handler uses to name the overflowing greenlet.
pub(crate) fn set_name_hook(hook: NameHook) {
    NAME_HOOK.store(hook as usize, Ordering::Release);
}

/// One registered slab. Nodes are leaked: slabs live as long as the process.
struct SlabNode {
    base: usize,
    len: usize,
    stride: usize,
    next: *mut SlabNode,
}

static SLABS: AtomicPtr<SlabNode> = AtomicPtr::new(ptr::null_mut());

/// Records a slab so the handler can recognise its guard pages.
pub(super) fn register_slab(base: usize, len: usize, stride: usize) {
    let node = Box::into_raw(Box::new(SlabNode {
        base,
        len,
        stride,
        next: ptr::null_mut(),
    }));
    let mut head = SLABS.load(Ordering::Acquire);
    loop {
        // SAFETY: `node` is ours until the CAS publishes it.
        unsafe { (*node).next = head };
        match SLABS.compare_exchange_weak(head, node, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// If `addr` is inside a guard page, returns the usable size of the stack
/// that guard protects.
fn guard_hit(addr: usize) -> Option<usize> {
    let page = super::page_size();
    let mut node = SLABS.load(Ordering::Acquire);
    while !node.is_null() {
        // SAFETY: nodes are never freed and were fully written before being
        // published with Release ordering.
        let n = unsafe { &*node };
        if addr >= n.base && addr < n.base + n.len {
            let off = (addr - n.base) % n.stride;
            return (off < page).then_some(n.stride - page);
        }
        node = n.next;
    }
    None
}

static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Writes to stderr with a raw `write` system call: async-signal-safe in
/// every build. Never through `libc::write`, which the `monkey` feature
/// replaces with a hook that may look symbols up or even park the
/// greenlet. Also what the hooks use for their own diagnostics, so that
/// they never re-enter themselves.
/// Calls the handler `prev` that was installed for `sig` before ours, with
/// our arguments. Returns false if it was `SIG_DFL`, `SIG_IGN` or unknown
/// (the caller decides what the default means for its signal).
pub(crate) fn chain(
    prev: Option<&libc::sigaction>,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) -> bool {
    let Some(prev) = prev else {
        return false;
    };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        return false;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered as an SA_SIGINFO
        // handler for `sig`, with exactly this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain (non-SA_SIGINFO) handler takes the signal only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
    true
}

pub(crate) fn write_stderr(bytes: &[u8]) {
    // SAFETY: SYS_write with a valid buffer and its length; the kernel
    // only reads it. Nothing else is touched (no errno, no locks).
    unsafe { libc::syscall(libc::SYS_write, 2, bytes.as_ptr(), bytes.len()) };
}

/// Formats `n` in decimal into the end of `buf`, without allocating (safe
/// in a signal handler).
pub(crate) fn fmt_usize(mut n: usize, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(size) = guard_hit(addr) {
        let mut name = [0u8; 128];
        let hook = NAME_HOOK.load(Ordering::Acquire);
        let len = if hook == 0 {
            0
        } else {
            // SAFETY: the only value ever stored is a `NameHook` fn pointer.
            let hook: NameHook = unsafe { std::mem::transmute::<usize, NameHook>(hook) };
            hook(&mut name).min(name.len())
        };
        let mut num = [0u8; 24];
        write_stderr(b"greenhouse: greenlet '");
        write_stderr(if len == 0 { b"?" } else { &name[..len] });
        write_stderr(b"' overflowed its stack of ");
        write_stderr(fmt_usize(size, &mut num));
        write_stderr(b" bytes; aborting (raise it with Builder::stack_size)\n");
        // SAFETY: abort is async-signal-safe and never returns.
        unsafe { libc::abort() };
    }
    // Not ours: hand over to whatever was installed before us.
    if !chain(PREVIOUS.get(), sig, info, ctx) {
        // Restore the default action and return: the faulting instruction
        // runs again and the process dies as it would have.
        // SAFETY: resetting a signal disposition is async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, ptr::null_mut());
        }
    }
}

fn install_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain sigaction calls with fully initialised structs; the
        // handler only does async-signal-safe work.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGSEGV, ptr::null(), &mut old);
            let _ = PREVIOUS.set(old);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_segv as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSEGV, &sa, ptr::null_mut());
        }
    });
}

/// An alternate signal stack this module installed, removed at thread exit.
struct AltStack {
    base: *mut libc::c_void,
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: disable the alternate stack before unmapping it; we are
        // not running on it (thread-local destructors run on the thread's
        // own stack).
        unsafe {
            let ss = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&ss, ptr::null_mut());
            libc::munmap(self.base, self.len);
        }
    }
}

thread_local! {
    static READY: Cell<bool> = const { Cell::new(false) };
    static ALT: Cell<Option<AltStackBox>> = const { Cell::new(None) };
}

/// Owner of an [`AltStack`] kept in a thread-local.
struct AltStackBox(#[allow(dead_code)] AltStack);

/// Installs the process-wide handler and makes sure this thread has an
/// alternate signal stack (a handler cannot run on an overflowed stack).
pub(crate) fn ensure_thread_ready() {
    if READY.with(Cell::get) {
        return;
    }
    READY.with(|r| r.set(true));
    install_handler();
    // SAFETY: stack_t is plain data; all-zero is a valid value.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: querying the current alternate stack writes into `cur` only.
    unsafe { libc::sigaltstack(ptr::null(), &mut cur) };
    if cur.ss_flags & libc::SS_DISABLE == 0 {
        return; // Rust's runtime (or the user) already installed one.
    }
    let len = 64 * 1024;
    // SAFETY: a fresh private anonymous mapping.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return; // Overflow then dies by the default action, unreported.
    }
    let ss = libc::stack_t {
        ss_sp: base,
        ss_flags: 0,
        ss_size: len,
    };
    // SAFETY: `base..base+len` is ours and stays mapped until `AltStack`
    // drops, which first disables it.
    unsafe { libc::sigaltstack(&ss, ptr::null_mut()) };
    ALT.with(|a| a.set(Some(AltStackBox(AltStack { base, len }))));
}
