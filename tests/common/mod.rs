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

/// Runs the test `name` of this same test binary in a child process
/// (with `env` set, so the child knows its role) and waits for the
/// `listening ADDR` line it prints; returns the child, the rest of its
/// stdout, and the address.
#[allow(dead_code)] // not every test file that includes `common` uses it
pub fn spawn_listening_child(
    name: &str,
    env: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    String,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        // The harness may print "test ... " on the same line first.
        if let Some((_, a)) = line.trim().split_once("listening ") {
            break a.to_string();
        }
    };
    (child, out, addr)
}

/// A greenlet that counts hub turns: it sleeps `period` and ticks, for
/// ever, until [`stop`](Ticker::stop)ped (or dropped: then killed). A
/// count above zero after a wait proves the hub kept running during it.
#[allow(dead_code)] // not every test file that includes `common` uses it
pub struct Ticker {
    ticks: std::rc::Rc<std::cell::Cell<u32>>,
    greenlet: Option<greenhouse::JoinHandle<()>>,
}

#[allow(dead_code)]
impl Ticker {
    /// Spawns the ticking greenlet.
    pub fn start(period: std::time::Duration) -> Ticker {
        let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let t = ticks.clone();
        let greenlet = greenhouse::spawn(move || {
            loop {
                greenhouse::sleep(period);
                t.set(t.get() + 1);
            }
        });
        Ticker {
            ticks,
            greenlet: Some(greenlet),
        }
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u32 {
        self.ticks.get()
    }

    /// Kills the greenlet (it must still be alive to be killed cleanly).
    pub fn stop(mut self) {
        if let Some(g) = self.greenlet.take() {
            g.kill().unwrap();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(g) = self.greenlet.take() {
            let _ = g.kill();
        }
    }
}
