//! Helpers shared by the integration tests (`mod common;` in each).

/// Raises the soft fd limit to the hard one: 1,000 connections need about
/// 2,000 fds, and some systems start at 1,024.
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
