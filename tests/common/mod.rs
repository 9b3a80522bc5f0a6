//! Helpers shared by the integration tests (`mod common;` in each).

/// Raises the soft fd limit to the hard one: 1,000 connections need about
/// 2,000 fds, and some systems start at 1,024.
#[allow(dead_code)] // not every test file that includes `common` uses it
pub fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// Sets its flag when dropped: proves destructors ran (on a greenlet's or a
/// generator's stack, when it is killed, closed or unwound).
#[allow(dead_code)] // not every test file that includes `common` uses it
pub struct DropFlag(pub std::rc::Rc<std::cell::Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}
