//! `greenhouse::process`: spawning, cooperative waits and pipes, without
//! monkey patching.

mod common;
use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use greenhouse::process::Command;
use greenhouse::{Timeout, joinall, spawn};

#[test]
fn output_collects_stdout_stderr_and_the_status() {
    let out = Command::new("sh")
        .args(["-c", "echo out; echo err >&2; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(3));
    let e = Command::new("/nonexistent/program").status().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn a_hundred_children_are_waited_for_at_once_while_the_hub_runs() {
    // Each `cat` lives until main closes its stdin, which it does only
    // once all 100 greenlets wait: a blocking wait would hang here.
    let alive = Rc::new(Cell::new(0usize));
    let stdins = Rc::new(RefCell::new(Vec::new()));
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let (alive, stdins) = (alive.clone(), stdins.clone());
            spawn(move || {
                let mut child = Command::new("cat")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                stdins.borrow_mut().push(child.stdin.take().unwrap());
                alive.set(alive.get() + 1);
                let status = child.wait().unwrap();
                alive.set(alive.get() - 1);
                status.success()
            })
        })
        .collect();
    let ticker = common::Ticker::start(Duration::from_millis(1));
    while alive.get() < 100 || ticker.ticks() < 5 {
        greenhouse::sleep(Duration::from_millis(1));
    }
    stdins.borrow_mut().clear();
    for r in joinall(waiters) {
        assert!(r.unwrap());
    }
    ticker.stop();
}

#[test]
fn pipes_stream_a_megabyte_both_ways() {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let expect = data.clone();
    // The writer fills the pipe and parks; the reader drains it.
    let writer = spawn(move || {
        stdin.write_all(&data).unwrap();
        // Dropped here: cat sees the end.
    });
    let reader = spawn(move || {
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).unwrap();
        got
    });
    writer.join().unwrap();
    assert_eq!(reader.join().unwrap(), expect);
    assert!(child.wait().unwrap().success());
}

#[test]
fn wait_timeout_and_timeout_scopes_leave_the_child_running() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    assert_eq!(child.wait_timeout(Duration::from_millis(20)).unwrap(), None);
    let e = {
        let _t = Timeout::start(Duration::from_millis(20));
        child.wait().unwrap_err()
    };
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert_eq!(child.try_wait().unwrap(), None, "still running");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}
