//! What the monkey hooks remember about the fds they wait on (`fds.rs`):
//! a registration with the hub's poller kept across waits, and each fd's
//! blocking mode and socket timeouts. Every test changes an fd behind the
//! cache's back in one of the ways the hooks must notice (close and reuse
//! of the number, `dup2` over it, `close_range`, `fclose`, a raw close
//! with `forget_fd`, `set_nonblocking` or a timeout on a dup), then waits
//! on it again. A wrong cache shows up as a wait that never wakes: every
//! socket here has a receive timeout, so that fails instead of hanging.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use greenhouse::monkey::{forget_fd, parked_calls, patch_all};
use greenhouse::{spawn, yield_now};

/// Patches, and runs the tests of this file one at a time: they close fd
/// numbers and put new sockets on them, which must not race with another
/// test's sockets taking the freed number.
fn setup() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    patch_all();
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a read may wait before the test calls it lost.
const LOST: Duration = Duration::from_secs(5);

/// A connected pair whose reads give up after [`LOST`].
fn pair() -> io::Result<(UnixStream, UnixStream)> {
    let (a, b) = UnixStream::pair()?;
    a.set_read_timeout(Some(LOST))?;
    b.set_read_timeout(Some(LOST))?;
    Ok((a, b))
}

/// Reads exactly `want.len()` bytes from `r` in a greenlet that must park
/// first (the writer sends only after it parked), and checks them.
fn park_then_read(r: &mut UnixStream, w: &mut UnixStream, want: &[u8]) -> io::Result<()> {
    let before = parked_calls();
    let mut writer = w.try_clone()?;
    let data = want.to_vec();
    let g = spawn(move || {
        yield_now(); // the reader parks first
        writer.write_all(&data)
    });
    let mut got = vec![0u8; want.len()];
    r.read_exact(&mut got)?;
    g.join().unwrap()?;
    assert_eq!(got, want);
    assert!(parked_calls() > before, "the read never parked");
    Ok(())
}

/// A new pair, the first of which has the closed number `n` (the lowest
/// free number goes to the next new fd; if another one was lower, the
/// socket is moved onto `n`).
fn reopen(n: RawFd) -> io::Result<(UnixStream, UnixStream)> {
    let (x, y) = pair()?;
    if x.as_raw_fd() == n {
        return Ok((x, y));
    }
    if y.as_raw_fd() == n {
        return Ok((y, x));
    }
    let fd = x.into_raw_fd();
    // SAFETY: `n` is closed and `fd` is ours: after dup2 `n` names its
    // socket, and `fd` is closed.
    unsafe {
        assert_eq!(libc::dup2(fd, n), n);
        libc::close(fd);
        Ok((UnixStream::from_raw_fd(n), y))
    }
}

/// `fd` now names `with`'s file (`dup2`); `with`'s own fd is closed.
fn replace(fd: RawFd, with: UnixStream) {
    let src = with.into_raw_fd();
    // SAFETY: both are open fds; `src` is ours to close.
    unsafe {
        assert_eq!(libc::dup2(src, fd), fd);
        libc::close(src);
    }
}

#[test]
fn a_kept_registration_is_reused_across_waits() -> io::Result<()> {
    let _one = setup();
    let (mut a, mut b) = pair()?;
    for i in 0..50u8 {
        park_then_read(&mut a, &mut b, &[i; 16])?;
        park_then_read(&mut b, &mut a, &[i; 3])?;
    }
    Ok(())
}

#[test]
fn an_fd_closed_and_reopened_as_another_socket_is_never_confused() -> io::Result<()> {
    let _one = setup();
    let (mut a, mut b) = pair()?;
    park_then_read(&mut a, &mut b, b"first")?; // a's fd is registered now
    let n = a.into_raw_fd();
    // SAFETY: `n` is ours (just taken out of `a`).
    unsafe { libc::close(n) };
    drop(b);
    let (mut a2, mut b2) = reopen(n)?;
    park_then_read(&mut a2, &mut b2, b"second")
}

#[test]
fn dup2_over_a_registered_fd_whose_old_file_lives_on() -> io::Result<()> {
    let _one = setup();
    let (mut a, mut b) = pair()?;
    park_then_read(&mut a, &mut b, b"old")?;
    // The old file stays open under another number, so the poller keeps
    // its registration (and its events keep coming, under a stale token).
    let mut old = a.try_clone()?;
    let (fresh, mut b2) = pair()?;
    replace(a.as_raw_fd(), fresh);
    // Data for the old file arrives while `a` (now the new socket) waits:
    // it must not be read from `a`, nor wake it for good.
    b.write_all(b"stale!")?;
    park_then_read(&mut a, &mut b2, b"new file")?;
    let mut stale = [0u8; 6];
    old.read_exact(&mut stale)?;
    assert_eq!(&stale, b"stale!");
    // And the old file's own number works as well.
    park_then_read(&mut old, &mut b, b"still there")
}

#[test]
fn close_range_fclose_and_forget_fd_invalidate_too() -> io::Result<()> {
    let _one = setup();
    type Close = fn(RawFd);
    let ways: [(&str, Close); 3] = [
        ("close_range", |fd| {
            // SAFETY: closes the one fd the caller gave up.
            let r = unsafe { libc::close_range(fd as u32, fd as u32, 0) };
            assert_eq!(r, 0);
        }),
        ("fclose", |fd| {
            // SAFETY: `fd` is an open fd the caller gave up; the stream
            // takes it over and `fclose` closes both.
            unsafe {
                let f = libc::fdopen(fd, c"r+".as_ptr());
                assert!(!f.is_null());
                assert_eq!(libc::fclose(f), 0);
            }
        }),
        ("raw close + forget_fd", |fd| {
            // SAFETY: closes the one fd the caller gave up, behind libc's
            // back; `forget_fd` tells the hooks.
            unsafe { libc::syscall(libc::SYS_close, fd) };
            forget_fd(fd);
        }),
    ];
    for (how, close) in ways {
        let (mut a, mut b) = pair()?;
        park_then_read(&mut a, &mut b, how.as_bytes())?;
        let n = a.into_raw_fd();
        close(n);
        drop(b);
        let (mut a2, mut b2) = reopen(n)?;
        park_then_read(&mut a2, &mut b2, b"after")?;
    }
    Ok(())
}

#[test]
fn set_nonblocking_on_a_dup_is_seen_by_the_original() -> io::Result<()> {
    let _one = setup();
    let (mut a, mut b) = pair()?;
    park_then_read(&mut a, &mut b, b"cached blocking")?;
    // The blocking mode belongs to the file, shared by every dup.
    let dup = a.try_clone()?;
    dup.set_nonblocking(true)?;
    let before = parked_calls();
    let err = a.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert_eq!(parked_calls(), before, "a non-blocking read parked");
    dup.set_nonblocking(false)?;
    park_then_read(&mut a, &mut b, b"blocking again")
}

#[test]
fn a_timeout_set_after_a_cached_wait_is_honoured() -> io::Result<()> {
    let _one = setup();
    let (mut a, mut b) = UnixStream::pair()?; // no timeouts: cached as none
    park_then_read(&mut a, &mut b, b"no timeout yet")?;
    a.set_read_timeout(Some(Duration::from_millis(30)))?;
    let before = parked_calls();
    // The socket's own timeout gives WouldBlock; a stale "no timeout"
    // would wait until greenhouse's Timeout gives TimedOut.
    let err = greenhouse::with_timeout(LOST, || a.read(&mut [0u8; 8]))
        .expect("the socket's timeout was not honoured")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(parked_calls() > before);
    a.set_read_timeout(None)?;
    park_then_read(&mut a, &mut b, b"no timeout again")
}

#[test]
fn a_greenhouse_socket_adopts_an_fd_the_hooks_registered() -> io::Result<()> {
    let _one = setup();
    let (mut a, mut b) = pair()?;
    park_then_read(&mut a, &mut b, b"patched std")?;
    // The hub's poller still holds `a`'s fd for the hooks: the native
    // socket takes the registration over.
    let mut native = greenhouse::net::UnixStream::from(a);
    let mut writer = b.try_clone()?;
    let g = spawn(move || {
        yield_now();
        writer.write_all(b"native")
    });
    let mut got = [0u8; 6];
    native.read_exact(&mut got)?;
    g.join().unwrap()?;
    assert_eq!(&got, b"native");
    Ok(())
}

#[test]
fn fcntl_and_ioctl_pass_their_argument_through() -> io::Result<()> {
    let _one = setup();
    let (a, mut b) = UnixStream::pair()?;
    let fd = a.as_raw_fd();
    // SAFETY: plain fcntl/ioctl calls on an open fd with valid arguments.
    unsafe {
        // An int argument.
        assert_eq!(libc::fcntl(fd, libc::F_SETFD, 0), 0);
        assert_eq!(libc::fcntl(fd, libc::F_GETFD), 0);
        assert_eq!(libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC), 0);
        assert_eq!(libc::fcntl(fd, libc::F_GETFD), libc::FD_CLOEXEC);
        let dup = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 500);
        assert!(dup >= 500, "F_DUPFD_CLOEXEC gave {dup}");
        libc::close(dup);
        // A pointer argument.
        b.write_all(b"12345")?;
        let mut n: libc::c_int = 0;
        assert_eq!(libc::ioctl(fd, libc::FIONREAD, &raw mut n), 0);
        assert_eq!(n, 5);
        let mut on: libc::c_int = 1;
        assert_eq!(libc::ioctl(fd, libc::FIONBIO, &raw mut on), 0);
        assert_ne!(libc::fcntl(fd, libc::F_GETFL) & libc::O_NONBLOCK, 0);
        // A struct pointer: a lock on a file, seen from another open file
        // description.
        let path = std::env::temp_dir().join(format!("greenhouse-fcntl-{}", std::process::id()));
        let f = std::fs::File::create(&path)?;
        let mut lk: libc::flock = std::mem::zeroed();
        lk.l_type = libc::F_WRLCK as i16;
        lk.l_whence = libc::SEEK_SET as i16;
        lk.l_len = 10;
        assert_eq!(
            libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &raw const lk),
            0
        );
        let g = std::fs::File::open(&path)?;
        let mut probe: libc::flock = std::mem::zeroed();
        probe.l_type = libc::F_RDLCK as i16;
        probe.l_whence = libc::SEEK_SET as i16;
        probe.l_len = 10;
        assert_eq!(
            libc::fcntl(g.as_raw_fd(), libc::F_OFD_GETLK, &raw mut probe),
            0
        );
        assert_eq!(probe.l_type, libc::F_WRLCK as i16, "the lock is not seen");
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
