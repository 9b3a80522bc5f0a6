//! A one-thread echo server: a `StreamServer` with one greenlet per
//! connection, each echoing bytes back until the client closes. Ctrl-C
//! (or SIGTERM) stops it gracefully: no new connections, and the open
//! ones get 5 s to finish.
//!
//! ```text
//! cargo run --release --example echo_server -- [--addr 127.0.0.1:8080]
//! ```

use std::io::{self, Read, Write};
use std::time::Duration;

use greenhouse::net::{StreamServer, TcpStream};

/// Echoes `conn` until EOF or an error.
fn echo(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match (&conn).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if (&conn).write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
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
                    "unknown flag {other}; usage: echo_server [--addr HOST:PORT]"
                )));
            }
        }
    }
    let server = StreamServer::bind(addr.as_str(), |conn, _| echo(conn))?;
    let mut stoppers = Vec::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let s = server.clone();
        stoppers.push(greenhouse::signal::handler(sig, move || {
            println!("signal {sig}: stopping (open connections get 5 s)");
            let _ = s.stop(Some(Duration::from_secs(5)));
        })?);
    }
    println!("echo server listening on {}", server.local_addr());
    server.serve_forever()?;
    println!("stopped");
    Ok(())
}

#[test]
fn echoes_bytes_back() -> io::Result<()> {
    let server = StreamServer::bind("127.0.0.1:0", |conn, _| echo(conn))?;
    server.start()?;
    let mut c = TcpStream::connect(server.local_addr())?;
    c.write_all(b"hello, echo")?;
    let mut back = [0u8; 11];
    c.read_exact(&mut back)?;
    assert_eq!(&back, b"hello, echo");
    server.stop(None)
}
