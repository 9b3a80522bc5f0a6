//! Generator pipelines, pull and push, with stages that do IO.
//!
//! **Pull:** a server greenlet streams access-log lines over a TCP socket.
//! On the client side, four stages run as generators: `follow` (yields
//! lines as they arrive from the socket), `parse` (→ records), `filter`
//! (errors only), and `aggregate` (counts per path). Each stage takes an
//! iterator and yields, so they compose with `for` and iterator adaptors.
//!
//! **Push:** coroutine sinks fed by `send`, including a `broadcast` stage
//! that fans every item out to several sinks.
//!
//! Run with `cargo run --example pipeline`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::rc::Rc;
use std::time::Duration;

use greenhouse::net::{TcpListener, TcpStream};
use greenhouse::{Generator, GeneratorState, Yielder};

/// One parsed log line.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    path: String,
    status: u16,
    bytes: u64,
}

/// Yields each line read from `stream`, parking while none has arrived.
fn follow(stream: TcpStream) -> Generator<(), String, io::Result<()>> {
    Generator::new(move |y, ()| {
        for line in BufReader::new(stream).lines() {
            y.yield_(line?);
        }
        Ok(())
    })
}

/// `"GET /path 200 512"` → `Record`; malformed lines are skipped.
fn parse(lines: impl Iterator<Item = String> + 'static) -> Generator<(), Record, ()> {
    Generator::new(move |y, ()| {
        for line in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [_method, path, status, bytes] = f[..] {
                if let (Ok(status), Ok(bytes)) = (status.parse(), bytes.parse()) {
                    y.yield_(Record {
                        path: path.to_string(),
                        status,
                        bytes,
                    });
                }
            }
        }
    })
}

/// Keeps the records `keep` accepts.
fn filter(
    records: impl Iterator<Item = Record> + 'static,
    keep: impl Fn(&Record) -> bool + 'static,
) -> Generator<(), Record, ()> {
    Generator::new(move |y, ()| {
        for r in records {
            if keep(&r) {
                y.yield_(r);
            }
        }
    })
}

/// Consumes the records; returns (count, bytes) per path.
fn aggregate(records: impl Iterator<Item = Record>) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for r in records {
        let e = m.entry(r.path).or_insert((0, 0));
        e.0 += 1;
        e.1 += r.bytes;
    }
    m
}

/// The log lines the server streams (with one malformed line).
fn log_lines() -> Vec<String> {
    let paths = ["/", "/api", "/login", "/api", "/static/app.js"];
    let mut v: Vec<String> = (0..40)
        .map(|i| {
            let status = if i % 7 == 3 {
                500
            } else if i % 5 == 1 {
                404
            } else {
                200
            };
            format!("GET {} {} {}", paths[i % paths.len()], status, 100 + i)
        })
        .collect();
    v.insert(13, "garbage line".to_string());
    v
}

/// Runs the pull pipeline; returns the per-path summary of errors (≥ 400).
fn pull_pipeline() -> io::Result<BTreeMap<String, (u64, u64)>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = greenhouse::spawn(move || -> io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        for line in log_lines() {
            writeln!(conn, "{line}")?;
            greenhouse::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    let lines = follow(TcpStream::connect(addr)?);
    let errors = filter(parse(lines), |r| r.status >= 400);
    let summary = aggregate(errors);
    server.join().map_err(io::Error::from)??;
    Ok(summary)
}

/// A push sink: collects what it is sent into `into`.
fn collect_into(into: Rc<RefCell<Vec<String>>>) -> Generator<String, (), ()> {
    Generator::new(move |y: &Yielder<String, ()>, mut item: String| {
        loop {
            into.borrow_mut().push(item);
            item = y.yield_(());
        }
    })
}

/// A push stage: sends each item, transformed, to every sink.
fn broadcast(
    mut sinks: Vec<Generator<String, (), ()>>,
    f: fn(&str) -> String,
) -> Generator<String, (), ()> {
    Generator::new(move |y: &Yielder<String, ()>, mut item: String| {
        loop {
            for s in &mut sinks {
                let _ = s.send(f(&item));
            }
            item = y.yield_(());
        }
    })
}

/// Runs the push pipeline: source → broadcast(upper) → two sinks.
fn push_pipeline() -> (Vec<String>, Vec<String>) {
    let (a, b) = (
        Rc::new(RefCell::new(Vec::new())),
        Rc::new(RefCell::new(Vec::new())),
    );
    let mut fan = broadcast(
        vec![collect_into(a.clone()), collect_into(b.clone())],
        str::to_uppercase,
    );
    for word in ["alpha", "beta", "gamma"] {
        // No priming: the first send is the stage's first item.
        assert_eq!(
            fan.send(word.to_string()).ok(),
            Some(GeneratorState::Yielded(()))
        );
    }
    let (a, b) = (a.borrow().clone(), b.borrow().clone());
    (a, b)
}

fn main() -> io::Result<()> {
    println!("errors per path (count, bytes), streamed over a socket:");
    for (path, (n, bytes)) in pull_pipeline()? {
        println!("  {path:<16} {n:>3} {bytes:>6}");
    }
    let (a, b) = push_pipeline();
    println!("broadcast to two sinks: {a:?} / {b:?}");
    Ok(())
}

#[test]
fn pull_pipeline_summarises_the_streamed_log() {
    let got = pull_pipeline().unwrap();
    // The same summary computed directly, without sockets or generators.
    let mut want = BTreeMap::new();
    for line in log_lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_, path, status, bytes] = f[..] {
            if status.parse::<u16>().unwrap() >= 400 {
                let e = want.entry(path.to_string()).or_insert((0u64, 0u64));
                e.0 += 1;
                e.1 += bytes.parse::<u64>().unwrap();
            }
        }
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[test]
fn push_pipeline_fans_out_to_every_sink() {
    let (a, b) = push_pipeline();
    assert_eq!(a, ["ALPHA", "BETA", "GAMMA"]);
    assert_eq!(a, b);
}
