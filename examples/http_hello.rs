//! A minimal HTTP/1.1 keep-alive "Hello, world!" server on one thread, for
//! load generators such as `wrk`. Requests are parsed with `httparse`;
//! pipelined requests are answered in order. Ctrl-C (or SIGTERM) stops
//! it gracefully: open connections get 5 s to finish. `--hubs N` serves on
//! N hubs (a `Runtime` and a `runtime::Server`, one `SO_REUSEPORT`
//! listener per hub), all stopped together by the signal.
//!
//! ```text
//! cargo run --release --example http_hello -- [--addr 127.0.0.1:8080] [--hubs 2]
//! wrk -t1 -c100 -d10s http://127.0.0.1:8080/
//! ```

use std::io::{self, Read, Write};
use std::time::Duration;

use greenhouse::net::{StreamServer, TcpStream};

const BODY: &str = "Hello, world!";

/// Serves HTTP requests on `conn` until the client closes or asks to.
fn serve(conn: TcpStream) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out = Vec::with_capacity(1024);
    loop {
        // Answer every complete request in the buffer.
        let mut close = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let consumed = match req.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(e) => {
                    (&conn).write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                }
            };
            let conn_header = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("connection"))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase());
            let keep_alive = match (req.version, conn_header.as_deref()) {
                (_, Some("close")) => false,
                (Some(0), Some("keep-alive")) => true,
                (Some(0), _) => false,
                _ => true,
            };
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{BODY}",
                    BODY.len(),
                    if keep_alive { "" } else { "Connection: close\r\n" }
                )
                .as_bytes(),
            );
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if !keep_alive {
                close = true;
                break;
            }
        }
        if !out.is_empty() {
            (&conn).write_all(&out)?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        if filled == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request headers too large",
            ));
        }
        let n = (&conn).read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:8080".to_string();
    let mut hubs = 1usize;
    let mut args = std::env::args().skip(1);
    let usage = "usage: http_hello [--addr HOST:PORT] [--hubs N]";
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or_else(|| io::Error::other("--addr needs a value"))?
            }
            "--hubs" => {
                hubs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| io::Error::other("--hubs needs a number of at least 1"))?
            }
            other => {
                return Err(io::Error::other(format!("unknown flag {other}; {usage}")));
            }
        }
    }
    if hubs > 1 {
        return serve_on_hubs(&addr, hubs);
    }
    let server = StreamServer::bind(addr.as_str(), |conn, _| {
        let _ = serve(conn);
    })?;
    let mut stoppers = Vec::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let s = server.clone();
        stoppers.push(greenhouse::signal::handler(sig, move || {
            let _ = s.stop(Some(Duration::from_secs(5)));
        })?);
    }
    println!("http_hello listening on http://{}/", server.local_addr());
    server.serve_forever()?;
    println!("stopped");
    Ok(())
}

/// The same server on `hubs` hubs, one `SO_REUSEPORT` listener each;
/// Ctrl-C/SIGTERM stops every hub gracefully.
fn serve_on_hubs(addr: &str, hubs: usize) -> io::Result<()> {
    let rt = greenhouse::Runtime::builder().hubs(hubs).build()?;
    let server = greenhouse::runtime::Server::builder(addr).start(&rt, |_| {
        |conn, _| {
            let _ = serve(conn);
        }
    })?;
    let _stop = server.stop_on_signals(&[libc::SIGINT, libc::SIGTERM], Duration::from_secs(5))?;
    println!(
        "http_hello listening on http://{}/ on {hubs} hubs",
        server.local_addr()
    );
    server.wait().map_err(io::Error::from)?;
    println!("stopped");
    Ok(())
}

#[test]
fn keep_alive_pipelining_and_close() -> io::Result<()> {
    let server = StreamServer::bind("127.0.0.1:0", |conn, _| {
        let _ = serve(conn);
    })?;
    server.start()?;
    let mut c = TcpStream::connect(server.local_addr())?;
    // Two pipelined keep-alive requests, then one asking to close.
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n")?;
    c.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut all = String::new();
    c.read_to_string(&mut all)?; // the server closes after the third
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
    assert_eq!(all.matches(BODY).count(), 3);
    assert!(all.ends_with(&format!("Connection: close\r\n\r\n{BODY}")));
    // A malformed request gets a 400.
    let mut bad = TcpStream::connect(server.local_addr())?;
    bad.write_all(b"NOT HTTP\r\n\r\n")?;
    let mut reply = String::new();
    bad.read_to_string(&mut reply)?;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    server.stop(None)
}

#[test]
fn serves_on_two_hubs() -> io::Result<()> {
    let rt = greenhouse::Runtime::builder().hubs(2).build()?;
    let server = greenhouse::runtime::Server::builder("127.0.0.1:0").start(&rt, |_| {
        |conn, _| {
            let _ = serve(conn);
        }
    })?;
    let mut bodies = 0;
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(server.local_addr())?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut all = String::new();
        c.read_to_string(&mut all)?;
        bodies += all.matches(BODY).count();
    }
    assert_eq!(bodies, 20);
    assert_eq!(server.accepted(), 20);
    server.stop(None).map_err(io::Error::from)
}
