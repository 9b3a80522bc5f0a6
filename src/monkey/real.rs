//! The real libc functions behind the hooks, found once with
//! `dlsym(RTLD_NEXT, name)`: the next definition after this executable's
//! own, which is libc's. Calling these never re-enters a hook.
//!
//! If a symbol cannot be found (a statically linked binary has no dynamic
//! libc to find it in), the call fails with `ENOSYS` instead of crashing.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    FILE, addrinfo, c_char, c_int, c_uint, c_ulong, c_void, clockid_t, epoll_event, fd_set, id_t,
    idtype_t, iovec, msghdr, nfds_t, pid_t, pollfd, rusage, siginfo_t, sigset_t, size_t, sockaddr,
    socklen_t, ssize_t, timespec, timeval,
};

/// The address of libc's `name` (NUL-terminated), cached in `slot`.
fn lookup(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    let a = slot.load(Ordering::Relaxed);
    if a != 0 {
        return a;
    }
    // SAFETY: `name` is a NUL-terminated C string (every caller passes a
    // literal ending in `\0`); `dlsym` has no other precondition.
    let a = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    // Racing threads store the same value.
    slot.store(a, Ordering::Relaxed);
    a
}

/// Declares `fn name(args) -> ret` forwarding to libc's `name`; `missing`
/// is returned (with `errno = ENOSYS`) if libc has no such symbol.
macro_rules! real {
    ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $missing:expr; )*) => {
        $(
            /// Where libc's function of this name is, once looked up.
            mod $name {
                pub(super) static SLOT: super::AtomicUsize = super::AtomicUsize::new(0);
            }

            /// Calls libc's own function of this name.
            ///
            /// # Safety
            /// Exactly libc's contract for this function.
            #[inline]
            pub(super) unsafe fn $name($($arg: $ty),*) -> $ret {
                let a = lookup(&$name::SLOT, concat!(stringify!($name), "\0").as_bytes());
                if a == 0 {
                    super::set_errno(libc::ENOSYS);
                    return $missing;
                }
                // SAFETY: `a` is libc's definition of this symbol, and the
                // signature above is its C prototype.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(a) };
                // SAFETY: the caller upholds libc's contract.
                unsafe { f($($arg),*) }
            }
        )*

        /// Looks up every fixed-argument function now.
        fn resolve_fixed() {
            $( lookup(&$name::SLOT, concat!(stringify!($name), "\0").as_bytes()); )*
        }
    };
}

real! {
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t = -1;
    fn recvfrom(
        fd: c_int, buf: *mut c_void, len: size_t, flags: c_int,
        addr: *mut sockaddr, addrlen: *mut socklen_t,
    ) -> ssize_t = -1;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t = -1;
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t = -1;
    fn sendto(
        fd: c_int, buf: *const c_void, len: size_t, flags: c_int,
        addr: *const sockaddr, addrlen: socklen_t,
    ) -> ssize_t = -1;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t = -1;
    fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t = -1;
    fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t = -1;
    fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t = -1;
    fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t = -1;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int = -1;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = -1;
    fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int = -1;
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int = -1;
    fn clock_nanosleep(
        clock: clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec,
    ) -> c_int = libc::ENOSYS;
    fn usleep(usec: c_uint) -> c_int = -1;
    fn sleep(secs: c_uint) -> c_uint = secs;
    fn getaddrinfo(
        node: *const c_char, service: *const c_char, hints: *const addrinfo,
        res: *mut *mut addrinfo,
    ) -> c_int = libc::EAI_SYSTEM;
    fn __recv_chk(
        fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int,
    ) -> ssize_t = -1;
    fn __recvfrom_chk(
        fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int,
        addr: *mut sockaddr, addrlen: *mut socklen_t,
    ) -> ssize_t = -1;
    fn __read_chk(fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t) -> ssize_t = -1;
    fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: size_t) -> c_int = -1;
    fn ppoll(
        fds: *mut pollfd, nfds: nfds_t, tmo: *const timespec, sigmask: *const sigset_t,
    ) -> c_int = -1;
    fn __ppoll_chk(
        fds: *mut pollfd, nfds: nfds_t, tmo: *const timespec, sigmask: *const sigset_t,
        fdslen: size_t,
    ) -> c_int = -1;
    fn select(
        nfds: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, tv: *mut timeval,
    ) -> c_int = -1;
    fn pselect(
        nfds: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, tmo: *const timespec,
        sigmask: *const sigset_t,
    ) -> c_int = -1;
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int) -> c_int = -1;
    fn epoll_pwait(
        epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int,
        sigmask: *const sigset_t,
    ) -> c_int = -1;
    fn wait4(pid: pid_t, status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t = -1;
    fn waitid(idtype: idtype_t, id: id_t, infop: *mut siginfo_t, options: c_int) -> c_int = -1;
    fn epoll_pwait2(
        epfd: c_int, events: *mut epoll_event, maxevents: c_int, tmo: *const timespec,
        sigmask: *const sigset_t,
    ) -> c_int = -1;
    fn close(fd: c_int) -> c_int = -1;
    fn dup2(old: c_int, new: c_int) -> c_int = -1;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int = -1;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int = -1;
    fn fclose(stream: *mut FILE) -> c_int = libc::EOF;
    fn pthread_join(thread: libc::pthread_t, retval: *mut *mut c_void) -> c_int = libc::ENOSYS;
    fn pthread_mutex_lock(m: *mut libc::pthread_mutex_t) -> c_int = libc::ENOSYS;
    fn pthread_mutex_trylock(m: *mut libc::pthread_mutex_t) -> c_int = libc::ENOSYS;
    fn pthread_mutex_timedlock(m: *mut libc::pthread_mutex_t, t: *const timespec) -> c_int = libc::ENOSYS;
    fn pthread_mutex_clocklock(
        m: *mut libc::pthread_mutex_t, clock: clockid_t, t: *const timespec,
    ) -> c_int = libc::ENOSYS;
    fn pthread_mutex_unlock(m: *mut libc::pthread_mutex_t) -> c_int = libc::ENOSYS;
    fn pthread_cond_init(
        c: *mut libc::pthread_cond_t, attr: *const libc::pthread_condattr_t,
    ) -> c_int = libc::ENOSYS;
    fn pthread_cond_destroy(c: *mut libc::pthread_cond_t) -> c_int = libc::ENOSYS;
    fn pthread_cond_wait(c: *mut libc::pthread_cond_t, m: *mut libc::pthread_mutex_t) -> c_int = libc::ENOSYS;
    fn pthread_cond_timedwait(
        c: *mut libc::pthread_cond_t, m: *mut libc::pthread_mutex_t, t: *const timespec,
    ) -> c_int = libc::ENOSYS;
    fn pthread_cond_clockwait(
        c: *mut libc::pthread_cond_t, m: *mut libc::pthread_mutex_t, clock: clockid_t,
        t: *const timespec,
    ) -> c_int = libc::ENOSYS;
    fn pthread_cond_signal(c: *mut libc::pthread_cond_t) -> c_int = libc::ENOSYS;
    fn pthread_cond_broadcast(c: *mut libc::pthread_cond_t) -> c_int = libc::ENOSYS;
    fn sem_wait(s: *mut libc::sem_t) -> c_int = -1;
    fn sem_trywait(s: *mut libc::sem_t) -> c_int = -1;
    fn sem_timedwait(s: *mut libc::sem_t, t: *const timespec) -> c_int = -1;
    fn sem_clockwait(s: *mut libc::sem_t, clock: clockid_t, t: *const timespec) -> c_int = -1;
    fn sem_post(s: *mut libc::sem_t) -> c_int = -1;
    fn setsockopt(
        fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t,
    ) -> c_int = -1;
}

/// Declares `fn name(a: c_int, b: $second, arg: usize) -> c_int` forwarding
/// to libc's variadic `name(int, $second, ...)` with `arg` as its one
/// optional argument (see `fds.rs` on passing it as a `usize`).
macro_rules! real_variadic {
    ($( fn $name:ident(_, _: $second:ty, _) / $fallback:literal; )*) => {
        $(
            /// Calls libc's own function of this name.
            ///
            /// # Safety
            /// Exactly libc's contract for this function, with its optional
            /// argument (or an ignored value) as `arg`.
            pub(super) unsafe fn $name(fd: c_int, second: $second, arg: usize) -> c_int {
                static SLOT: AtomicUsize = AtomicUsize::new(0);
                static FALLBACK: AtomicUsize = AtomicUsize::new(0);
                let mut a = lookup(&SLOT, concat!(stringify!($name), "\0").as_bytes());
                if a == 0 {
                    a = lookup(&FALLBACK, $fallback);
                }
                if a == 0 {
                    super::set_errno(libc::ENOSYS);
                    return -1;
                }
                type Variadic = unsafe extern "C" fn(c_int, $second, ...) -> c_int;
                // SAFETY: `a` is libc's definition of this symbol (or of the
                // older name with the same prototype), a C variadic function
                // taking an int and a `$second` first.
                let f: Variadic = unsafe { std::mem::transmute(a) };
                // SAFETY: the caller upholds libc's contract; a `usize` is
                // passed as the caller's integer or pointer was.
                unsafe { f(fd, second, arg) }
            }
        )*
    };
}

real_variadic! {
    fn fcntl(_, _: c_int, _) / b"fcntl\0";
    fn fcntl64(_, _: c_int, _) / b"fcntl\0";
    fn ioctl(_, _: c_ulong, _) / b"ioctl\0";
}

/// Where libc's `syscall` is, once looked up (the x86-64 trampoline in
/// `futex.rs` jumps through it).
pub(super) static SYSCALL: AtomicUsize = AtomicUsize::new(0);

variadic_targets! {
    /// Calls libc's own `syscall(number, ...)` with six argument words: the
    /// most any Linux system call takes (see `futex.rs` on passing them as
    /// `usize`s).
    ///
    /// # Safety
    /// Exactly the contract of system call `number` for its arguments (words
    /// past the ones it takes are ignored).
    pub(super) unsafe fn syscall(number: libc::c_long, a: [usize; 6]) -> libc::c_long {
        let f = lookup(&SYSCALL, b"syscall\0");
        if f == 0 {
            super::set_errno(libc::ENOSYS);
            return -1;
        }
        type Variadic = unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long;
        // SAFETY: `f` is libc's `syscall`, a C variadic function taking a long
        // first.
        let f: Variadic = unsafe { std::mem::transmute(f) };
        // SAFETY: the caller upholds the system call's contract; each word is
        // passed as the caller's integer or pointer argument was.
        unsafe { f(number, a[0], a[1], a[2], a[3], a[4], a[5]) }
    }
}

/// Looks every function up now, so that no hook calls `dlsym` later: in a
/// child between `fork` and `exec`, another thread of the parent may have
/// held the loader's lock. Called by `patch_all`.
pub(super) fn resolve_all() {
    resolve_fixed();
    // SAFETY: fd -1 makes each of them fail with EBADF, doing nothing; the
    // calls look their function up on the way.
    unsafe {
        fcntl(-1, libc::F_GETFL, 0);
        fcntl64(-1, libc::F_GETFL, 0);
        ioctl(-1, libc::FIONREAD, 0);
    }
    lookup(&SYSCALL, b"syscall\0");
}
