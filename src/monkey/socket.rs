//! Socket hooks: the receive and send families, `read`/`write`/`readv`/
//! `writev` on sockets, and `connect` (`accept` is in `accept.rs`).
//!
//! Inside a greenlet every transfer is first tried with `MSG_DONTWAIT`, so
//! the common case (data there, buffer space free) costs nothing extra.
//! Only when that would block does [`continue_transfer`] check that the
//! socket is one the code expects to block on (not non-blocking by its own
//! choice), read its `SO_RCVTIMEO`/`SO_SNDTIMEO`, and park on the reactor.
//! `read`-style calls on fds that are not sockets (`ENOTSOCK` from the
//! probe) go to libc's own function, untouched.

use std::time::{Duration, Instant};

use libc::{
    EAGAIN, EINPROGRESS, ENOTSOCK, EWOULDBLOCK, MSG_DONTWAIT, MSG_PEEK, MSG_WAITALL, c_int, c_void,
    iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t,
};

use super::{Waited, cooperative, errno, fds, real, set_errno, wait_errno, wait_fd};
use crate::hub::Interest;
use crate::hub::watcher::deadline;

/// `IOV_MAX` on Linux: larger vectors are refused by the kernel (and the
/// exact error differs between `readv` and `recvmsg`, so they go to libc).
const IOV_MAX: c_int = 1024;

pub(super) fn keep() {
    for f in [
        recv as *const (),
        recvfrom as *const (),
        recvmsg as *const (),
        send as *const (),
        sendto as *const (),
        sendmsg as *const (),
        read as *const (),
        write as *const (),
        readv as *const (),
        writev as *const (),
        connect as *const (),
        __recv_chk as *const (),
        __recvfrom_chk as *const (),
        __read_chk as *const (),
    ] {
        super::keep_symbol(f);
    }
}

/// True for the errors that mean "would block".
pub(super) fn would_block(e: c_int) -> bool {
    e == EAGAIN || e == EWOULDBLOCK
}

/// The code made this fd non-blocking itself (or it is not an fd at all):
/// its calls must not wait. Cached per thread (`fds.rs`).
pub(super) fn user_nonblocking(fd: c_int) -> bool {
    fds::nonblocking(fd)
}

/// When the socket's own `SO_RCVTIMEO`/`SO_SNDTIMEO` runs out, if set
/// (cached per thread, `fds.rs`).
pub(super) fn socket_deadline(fd: c_int, interest: Interest) -> Option<Instant> {
    deadline(fds::socket_timeout(fd, interest))
}

/// Whether `fd` is a stream socket (`MSG_WAITALL` only loops on those).
fn is_stream(fd: c_int) -> bool {
    let mut ty: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: `ty` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut ty).cast(),
            &raw mut len,
        )
    };
    r == 0 && ty == libc::SOCK_STREAM
}

/// Whether `fd` is ready for `events` right now (errors count as ready).
pub(super) fn ready_now(fd: c_int, events: i16) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one valid pollfd and a zero timeout; libc's own `ppoll`.
    let n = unsafe { real::ppoll(&raw mut p, 1, &raw const zero, std::ptr::null()) };
    n != 0
}

/// Blocks the thread until `fd` is ready or `deadline` passes, as the
/// unpatched call would (the fallback when the reactor cannot watch it).
/// Returns false if the deadline passed.
pub(super) fn block_until_ready(fd: c_int, interest: Interest, deadline: Option<Instant>) -> bool {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let ms = match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            c_int::try_from(left.as_millis().saturating_add(1)).unwrap_or(c_int::MAX)
        }
    };
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { real::poll(&raw mut p, 1, ms) != 0 }
}

/// The result of a transfer that moved `done` bytes and then met `err`:
/// the bytes if any (a blocking call reports what it moved), else the error.
fn finish(done: usize, err: c_int, saved: c_int) -> ssize_t {
    if done > 0 {
        set_errno(saved);
        done as ssize_t
    } else {
        set_errno(err);
        -1
    }
}

/// One transfer: `attempt(done)` makes one non-blocking try at the rest
/// (`done` bytes already moved) and returns the raw libc result. The first
/// try is made here; the common case ends right after it. `keep_going`:
/// the blocking call would not return before moving all `total` bytes (a
/// send, or `MSG_WAITALL` on a stream).
#[inline]
fn transfer(
    fd: c_int,
    interest: Interest,
    total: usize,
    keep_going: bool,
    saved: c_int,
    mut attempt: impl FnMut(usize) -> ssize_t,
) -> ssize_t {
    let r = attempt(0);
    let finished = if r >= 0 {
        !keep_going || r == 0 || r as usize >= total
    } else {
        !would_block(errno())
    };
    if finished {
        return r;
    }
    continue_transfer(fd, interest, total, keep_going, saved, r, attempt)
}

/// For the calls that also take fds that are not sockets (`read`, `write`,
/// `readv`, `writev`): `r` is the result of their socket-call [`transfer`];
/// if the fd turned out not to be a socket (`ENOTSOCK`, which only the
/// first try can meet, as nothing was moved), errno is restored and
/// `otherwise` makes the caller's own call, untouched.
fn or_not_socket(r: ssize_t, saved: c_int, otherwise: impl FnOnce() -> ssize_t) -> ssize_t {
    if r < 0 && errno() == ENOTSOCK {
        set_errno(saved);
        return otherwise();
    }
    r
}

/// The cold part of [`transfer`]: the first try returned `first` (would
/// block, or moved only part). Parks until the fd is ready and tries again,
/// until done, an error, the socket's own timeout (`EAGAIN`), an expired
/// `Timeout` (`ETIMEDOUT`) or a kill (`ECANCELED`).
#[cold]
fn continue_transfer(
    fd: c_int,
    interest: Interest,
    total: usize,
    keep_going: bool,
    saved: c_int,
    first: ssize_t,
    mut attempt: impl FnMut(usize) -> ssize_t,
) -> ssize_t {
    if user_nonblocking(fd) {
        return first; // as unpatched: one try, errno as libc left it
    }
    let deadline = socket_deadline(fd, interest);
    let mut done = 0usize;
    let mut r = first;
    loop {
        if r >= 0 {
            done += r as usize;
            if !keep_going || r == 0 || done >= total {
                set_errno(saved);
                return done as ssize_t;
            }
        } else {
            let e = errno();
            if !would_block(e) {
                return finish(done, e, saved);
            }
            let w = wait_fd(fd, interest, deadline);
            if w == Waited::Unsupported && !block_until_ready(fd, interest, deadline) {
                return finish(done, EAGAIN, saved);
            }
            if let Some(err) = wait_errno(w) {
                return finish(done, err, saved);
            }
        }
        r = attempt(done);
    }
}

/// `buf + done` for a byte buffer passed as `void *`.
fn at(buf: *mut c_void, done: usize) -> *mut c_void {
    buf.cast::<u8>().wrapping_add(done).cast()
}

/// The part of `iov` after its first `done` bytes.
///
/// # Safety
/// `iov` points at `n` valid `iovec`s.
unsafe fn advance(iov: *const iovec, n: usize, mut done: usize) -> Vec<iovec> {
    // SAFETY: the caller guarantees `n` valid entries.
    let all = unsafe { std::slice::from_raw_parts(iov, n) };
    let mut out = Vec::with_capacity(n);
    for v in all {
        if done >= v.iov_len {
            done -= v.iov_len;
            continue;
        }
        out.push(iovec {
            iov_base: at(v.iov_base, done),
            iov_len: v.iov_len - done,
        });
        done = 0;
    }
    out
}

/// Total length of `n` iovecs.
///
/// # Safety
/// `iov` points at `n` valid `iovec`s.
unsafe fn iov_total(iov: *const iovec, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller guarantees `n` valid entries.
    let all = unsafe { std::slice::from_raw_parts(iov, n) };
    all.iter().fold(0usize, |a, v| a.saturating_add(v.iov_len))
}

/// Whether a receive should keep going until the buffer is full.
fn wants_all(fd: c_int, flags: c_int) -> bool {
    flags & MSG_WAITALL != 0 && flags & MSG_PEEK == 0 && is_stream(fd)
}

/// Hooked `recv(2)`.
///
/// # Safety
/// libc's contract for `recv`.
#[unsafe(no_mangle)]
unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    if !cooperative() || flags & MSG_DONTWAIT != 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::recv(fd, buf, len, flags) };
    }
    let saved = errno();
    let all = wants_all(fd, flags);
    transfer(fd, Interest::Read, len, all, saved, |done| {
        // SAFETY: the rest of the caller's buffer.
        unsafe { real::recv(fd, at(buf, done), len - done, flags | MSG_DONTWAIT) }
    })
}

/// Hooked `recvfrom(2)`.
///
/// # Safety
/// libc's contract for `recvfrom`.
#[unsafe(no_mangle)]
unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    if !cooperative() || flags & MSG_DONTWAIT != 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::recvfrom(fd, buf, len, flags, addr, addrlen) };
    }
    let saved = errno();
    let all = wants_all(fd, flags);
    transfer(fd, Interest::Read, len, all, saved, |done| {
        // SAFETY: the rest of the caller's buffer; its address out-params.
        unsafe {
            real::recvfrom(
                fd,
                at(buf, done),
                len - done,
                flags | MSG_DONTWAIT,
                addr,
                addrlen,
            )
        }
    })
}

/// Hooked `recvmsg(2)` (one message; `MSG_WAITALL` is not looped here).
///
/// # Safety
/// libc's contract for `recvmsg`.
#[unsafe(no_mangle)]
unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if !cooperative() || flags & MSG_DONTWAIT != 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::recvmsg(fd, msg, flags) };
    }
    let saved = errno();
    transfer(fd, Interest::Read, 0, false, saved, |_| {
        // SAFETY: the caller's message header, unchanged.
        unsafe { real::recvmsg(fd, msg, flags | MSG_DONTWAIT) }
    })
}

/// Hooked `send(2)`: a blocking send returns once everything is queued.
///
/// # Safety
/// libc's contract for `send`.
#[unsafe(no_mangle)]
unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if !cooperative() || flags & MSG_DONTWAIT != 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::send(fd, buf, len, flags) };
    }
    let saved = errno();
    transfer(fd, Interest::Write, len, true, saved, |done| {
        // SAFETY: the rest of the caller's buffer.
        unsafe {
            real::send(
                fd,
                at(buf.cast_mut(), done),
                len - done,
                flags | MSG_DONTWAIT,
            )
        }
    })
}

/// Hooked `sendto(2)`.
///
/// # Safety
/// libc's contract for `sendto`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    if !cooperative() || flags & MSG_DONTWAIT != 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::sendto(fd, buf, len, flags, addr, addrlen) };
    }
    let saved = errno();
    transfer(fd, Interest::Write, len, true, saved, |done| {
        // SAFETY: the rest of the caller's buffer; its address.
        unsafe {
            real::sendto(
                fd,
                at(buf.cast_mut(), done),
                len - done,
                flags | MSG_DONTWAIT,
                addr,
                addrlen,
            )
        }
    })
}

/// `sendmsg` of `msg` without its first `done` bytes (ancillary data goes
/// with the first part only, as the kernel sends it).
///
/// # Safety
/// `msg` is a valid message header.
unsafe fn sendmsg_rest(fd: c_int, msg: *const msghdr, flags: c_int, done: usize) -> ssize_t {
    if done == 0 {
        // SAFETY: the caller's message header, unchanged.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: `msg` is valid (caller); its iovecs are too.
    let mut m = unsafe { *msg };
    // SAFETY: as above.
    let mut rest = unsafe { advance(m.msg_iov, m.msg_iovlen, done) };
    m.msg_iov = rest.as_mut_ptr();
    m.msg_iovlen = rest.len();
    m.msg_control = std::ptr::null_mut();
    m.msg_controllen = 0;
    // SAFETY: `m` and `rest` are valid for the call.
    unsafe { real::sendmsg(fd, &raw const m, flags) }
}

/// Hooked `sendmsg(2)`.
///
/// # Safety
/// libc's contract for `sendmsg`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !cooperative() || flags & MSG_DONTWAIT != 0 || msg.is_null() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    let saved = errno();
    // SAFETY: `msg` is a valid header (libc's contract).
    let total = unsafe { iov_total((*msg).msg_iov, (*msg).msg_iovlen) };
    transfer(fd, Interest::Write, total, true, saved, |done| {
        // SAFETY: the caller's header.
        unsafe { sendmsg_rest(fd, msg, flags | MSG_DONTWAIT, done) }
    })
}

/// A `msghdr` for plain vectored IO (no address, no ancillary data).
fn plain_msg(iov: *const iovec, n: usize) -> msghdr {
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.cast_mut();
    m.msg_iovlen = n;
    m
}

/// Hooked `read(2)`: on a socket, a cooperative `recv`; anything else goes
/// to libc untouched.
///
/// # Safety
/// libc's contract for `read`.
#[unsafe(no_mangle)]
unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    if !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::read(fd, buf, count) };
    }
    let saved = errno();
    let r = transfer(
        fd,
        Interest::Read,
        count,
        false,
        saved,
        // SAFETY: the rest of the caller's buffer.
        |done| unsafe { real::recv(fd, at(buf, done), count - done, MSG_DONTWAIT) },
    );
    // SAFETY: the caller's arguments, unchanged.
    or_not_socket(r, saved, || unsafe { real::read(fd, buf, count) })
}

/// Hooked `write(2)`: on a socket, a cooperative `send` (which raises
/// `SIGPIPE` just as `write` does); anything else goes to libc untouched.
///
/// # Safety
/// libc's contract for `write`.
#[unsafe(no_mangle)]
unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    if !cooperative() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::write(fd, buf, count) };
    }
    let saved = errno();
    let r = transfer(
        fd,
        Interest::Write,
        count,
        true,
        saved,
        // SAFETY: the rest of the caller's buffer.
        |done| unsafe { real::send(fd, at(buf.cast_mut(), done), count - done, MSG_DONTWAIT) },
    );
    // SAFETY: the caller's arguments, unchanged.
    or_not_socket(r, saved, || unsafe { real::write(fd, buf, count) })
}

/// Hooked `readv(2)`.
///
/// # Safety
/// libc's contract for `readv`.
#[unsafe(no_mangle)]
unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    if !cooperative() || !(0..=IOV_MAX).contains(&iovcnt) {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::readv(fd, iov, iovcnt) };
    }
    let saved = errno();
    let mut m = plain_msg(iov, iovcnt as usize);
    let r = transfer(
        fd,
        Interest::Read,
        0,
        false,
        saved,
        // SAFETY: a header over the caller's iovecs.
        |_| unsafe { real::recvmsg(fd, &raw mut m, MSG_DONTWAIT) },
    );
    // SAFETY: the caller's arguments, unchanged.
    or_not_socket(r, saved, || unsafe { real::readv(fd, iov, iovcnt) })
}

/// Hooked `writev(2)`.
///
/// # Safety
/// libc's contract for `writev`.
#[unsafe(no_mangle)]
unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    if !cooperative() || !(0..=IOV_MAX).contains(&iovcnt) {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::writev(fd, iov, iovcnt) };
    }
    let saved = errno();
    let m = plain_msg(iov, iovcnt as usize);
    // SAFETY: `iovcnt` valid iovecs (libc's contract).
    let total = unsafe { iov_total(iov, iovcnt as usize) };
    let r = transfer(
        fd,
        Interest::Write,
        total,
        true,
        saved,
        // SAFETY: a header over the caller's iovecs.
        |done| unsafe { sendmsg_rest(fd, &raw const m, MSG_DONTWAIT, done) },
    );
    // SAFETY: the caller's arguments, unchanged.
    or_not_socket(r, saved, || unsafe { real::writev(fd, iov, iovcnt) })
}

/// Sets or clears `O_NONBLOCK` (the flags word is the one read before).
fn set_flags(fd: c_int, flags: c_int) {
    // SAFETY: F_SETFL with an int argument only changes the fd's flags.
    // libc's own: a window of the hooks, restored before anything else
    // can look (see `connect`), does not move the flags epoch on.
    unsafe { real::fcntl(fd, libc::F_SETFL, flags as usize) };
}

/// The socket's pending error (`SO_ERROR`), cleared by reading it.
fn take_socket_error(fd: c_int) -> c_int {
    let mut err: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: `err` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &raw mut len,
        )
    };
    if r != 0 { errno() } else { err }
}

/// Hooked `connect(2)`: started non-blocking, then parks until the
/// connection is made or fails. The socket's blocking mode is restored at
/// once; `SO_SNDTIMEO` gives `EINPROGRESS` as the kernel does.
///
/// # Safety
/// libc's contract for `connect`.
#[unsafe(no_mangle)]
unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !cooperative() || user_nonblocking(fd) {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::connect(fd, addr, len) };
    }
    let saved = errno();
    // SAFETY: F_GETFL only reads the flags (known valid: checked above).
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    let deadline = socket_deadline(fd, Interest::Write);
    loop {
        set_flags(fd, flags | libc::O_NONBLOCK);
        // SAFETY: the caller's arguments, unchanged.
        let r = unsafe { real::connect(fd, addr, len) };
        let e = errno();
        set_flags(fd, flags);
        if r == 0 {
            set_errno(saved);
            return 0;
        }
        match e {
            EINPROGRESS => return finish_connect(fd, deadline, saved),
            // A Unix socket whose listener's backlog is full: a blocking
            // connect waits for room; retry shortly, cooperatively.
            EAGAIN => {
                let w = super::sleep_until(Some(Instant::now() + Duration::from_millis(1)));
                if let Some(err) = wait_errno(w) {
                    set_errno(err);
                    return -1;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    set_errno(EAGAIN);
                    return -1;
                }
            }
            _ => {
                set_errno(e);
                return -1;
            }
        }
    }
}

/// Waits for a non-blocking connect to finish; its result is `SO_ERROR`.
fn finish_connect(fd: c_int, deadline: Option<Instant>, saved: c_int) -> c_int {
    while !ready_now(fd, libc::POLLOUT) {
        let w = wait_fd(fd, Interest::Write, deadline);
        if w == Waited::Unsupported {
            if !block_until_ready(fd, Interest::Write, deadline) {
                set_errno(EINPROGRESS);
                return -1;
            }
            continue;
        }
        match wait_errno(w) {
            None => {}
            // The socket's own timeout: the kernel's blocking connect
            // reports EINPROGRESS (the attempt goes on in the background).
            Some(EAGAIN) => {
                set_errno(EINPROGRESS);
                return -1;
            }
            Some(e) => {
                set_errno(e);
                return -1;
            }
        }
    }
    match take_socket_error(fd) {
        0 => {
            set_errno(saved);
            0
        }
        e => {
            set_errno(e);
            -1
        }
    }
}

/// Hooked `__recv_chk` (`recv` under `_FORTIFY_SOURCE`).
///
/// # Safety
/// libc's contract for `__recv_chk`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if len > buflen {
        // SAFETY: libc's check reports the overflow (and aborts).
        return unsafe { real::__recv_chk(fd, buf, len, buflen, flags) };
    }
    // SAFETY: checked as libc would; the rest is `recv`'s contract.
    unsafe { recv(fd, buf, len, flags) }
}

/// Hooked `__recvfrom_chk`.
///
/// # Safety
/// libc's contract for `__recvfrom_chk`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    if len > buflen {
        // SAFETY: libc's check reports the overflow (and aborts).
        return unsafe { real::__recvfrom_chk(fd, buf, len, buflen, flags, addr, addrlen) };
    }
    // SAFETY: checked as libc would; the rest is `recvfrom`'s contract.
    unsafe { recvfrom(fd, buf, len, flags, addr, addrlen) }
}

/// Hooked `__read_chk`.
///
/// # Safety
/// libc's contract for `__read_chk`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
) -> ssize_t {
    if count > buflen {
        // SAFETY: libc's check reports the overflow (and aborts).
        return unsafe { real::__read_chk(fd, buf, count, buflen) };
    }
    // SAFETY: checked as libc would; the rest is `read`'s contract.
    unsafe { read(fd, buf, count) }
}
