//! A line-based broadcast chat room on one thread: every line a client
//! sends is delivered to every other client, prefixed with the sender's
//! name. Try it with several `nc 127.0.0.1 8080`.
//!
//! ```text
//! cargo run --release --example chat -- [--addr 127.0.0.1:8080]
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::rc::Rc;

use greenhouse::net::{StreamServer, TcpStream};

/// One connected client and its outgoing lines.
struct Member {
    stream: TcpStream,
    outbox: RefCell<VecDeque<String>>,
    /// True while some greenlet is writing to this member.
    writing: Cell<bool>,
}

impl Member {
    /// Queues `line`; the first greenlet to find the member idle writes the
    /// whole queue, so lines never interleave on the socket.
    fn send(&self, line: String) {
        self.outbox.borrow_mut().push_back(line);
        if self.writing.replace(true) {
            return;
        }
        loop {
            let next = self.outbox.borrow_mut().pop_front();
            let Some(line) = next else { break };
            if (&self.stream).write_all(line.as_bytes()).is_err() {
                self.outbox.borrow_mut().clear();
                break;
            }
        }
        self.writing.set(false);
    }
}

type Room = Rc<RefCell<HashMap<u64, Rc<Member>>>>;

/// Serves one client until it disconnects.
fn chat(room: &Room, id: u64, conn: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let member = Rc::new(Member {
        stream: conn.try_clone()?,
        outbox: RefCell::new(VecDeque::new()),
        writing: Cell::new(false),
    });
    let name = format!("user{id}");
    member.send(format!("welcome, {name} ({peer})\n"));
    room.borrow_mut().insert(id, member);
    let broadcast = |text: String| {
        let others: Vec<Rc<Member>> = room
            .borrow()
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(_, m)| m.clone())
            .collect();
        for m in others {
            m.send(text.clone());
        }
    };
    broadcast(format!("* {name} joined\n"));
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        broadcast(format!("{name}: {line}\n"));
    }
    room.borrow_mut().remove(&id);
    broadcast(format!("* {name} left\n"));
    Ok(())
}

/// A chat server on `addr`.
fn server(addr: &str) -> io::Result<StreamServer> {
    let room: Room = Rc::new(RefCell::new(HashMap::new()));
    let next = Rc::new(Cell::new(1u64));
    StreamServer::bind(addr, move |conn, peer| {
        let id = next.get();
        next.set(id + 1);
        let _ = chat(&room, id, conn, peer);
    })
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:8080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or_else(|| io::Error::other("--addr needs a value"))?
            }
            other => {
                return Err(io::Error::other(format!(
                    "unknown flag {other}; usage: chat [--addr HOST:PORT]"
                )));
            }
        }
    }
    let s = server(&addr)?;
    println!("chat room on {}", s.local_addr());
    s.serve_forever()
}

#[test]
fn every_client_sees_every_other_clients_lines() -> io::Result<()> {
    use std::time::Duration;
    let s = server("127.0.0.1:0")?;
    s.start()?;
    let clients: Vec<BufReader<TcpStream>> = (0..3)
        .map(|_| TcpStream::connect(s.local_addr()).map(BufReader::new))
        .collect::<io::Result<_>>()?;
    // Wait until all three have joined (each sees its welcome line).
    let mut clients = clients;
    for c in &mut clients {
        let mut line = String::new();
        c.read_line(&mut line)?;
        assert!(line.starts_with("welcome, user"), "{line}");
    }
    for (i, c) in clients.iter().enumerate() {
        writeln!(c.get_ref(), "hello from client {i}")?;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.get_ref().set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let mut line = String::new();
            c.read_line(&mut line)?;
            if let Some((_, text)) = line.split_once(": ") {
                seen.push(text.trim().to_string());
            }
        }
        seen.sort();
        let expected: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("hello from client {j}"))
            .collect();
        assert_eq!(seen, expected, "client {i}");
    }
    s.stop(None)
}
