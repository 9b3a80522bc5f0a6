//! A small HTTP/1.1 server for the monkey-patching examples: greenhouse's
//! own `StreamServer` on a thread of its own, so the clients under test
//! have their thread to themselves.
//!
//! `GET /wait/<ms>` answers after `ms` milliseconds; `GET /gather/<n>`
//! answers once `n` requests have been in progress at the same time (or
//! after [`GATHER_LIMIT`], so clients that never overlap still get an
//! answer; after either, later ones answer at once);
//! `GET /bytes/<n>` answers with `n` bytes. Every response closes its
//! connection. The server counts requests in progress and remembers the
//! most at once.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use greenhouse::net::StreamServer;
use greenhouse::sync::Event;

/// How long a `/gather/<n>` request waits for the others at most.
pub const GATHER_LIMIT: Duration = Duration::from_secs(30);

/// A running server (it lives until the process exits).
pub struct HttpServer {
    pub addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Starts it on 127.0.0.1 (a free port) on a new thread.
    pub fn start() -> io::Result<HttpServer> {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let (now, most) = (in_flight.clone(), peak.clone());
        std::thread::spawn(move || {
            // Set when a `/gather/<n>` request saw `n` at once or gave up.
            let gathered = Event::new();
            let server = StreamServer::bind("127.0.0.1:0", move |conn, _| {
                let _ = serve(&conn, &now, &most, &gathered);
            });
            let server = match server.and_then(|s| s.start().map(|()| s)) {
                Ok(s) => s,
                Err(e) => return tx.send(Err(e)).unwrap(),
            };
            tx.send(Ok(server.local_addr())).unwrap();
            greenhouse::sleep(Duration::MAX); // serve until exit
        });
        let addr = rx.recv().expect("server thread died")?;
        Ok(HttpServer {
            addr,
            in_flight,
            peak,
        })
    }

    /// The most requests the server was handling at the same time.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Forgets the peak (between two runs).
    #[allow(dead_code)] // the crawler makes one run only
    pub fn reset_peak(&self) {
        self.peak
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Answers one request.
fn serve(
    conn: &greenhouse::net::TcpStream,
    in_flight: &AtomicUsize,
    peak: &AtomicUsize,
    gathered: &Event,
) -> io::Result<()> {
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    peak.fetch_max(now, Ordering::SeqCst);
    let (status, body) = if let Some(ms) = path.strip_prefix("/wait/") {
        let ms = ms.parse().unwrap_or(0);
        greenhouse::sleep(Duration::from_millis(ms));
        ("200 OK", format!("waited {ms} ms\n").into_bytes())
    } else if let Some(n) = path.strip_prefix("/gather/") {
        // Overlap by construction rather than by timing: on a loaded
        // machine the last of 100 requests can arrive after the first
        // has waited 200 ms, but it always arrives while these wait.
        if now >= n.parse().unwrap_or(0) {
            gathered.set();
        }
        // Giving up releases every later request too.
        if gathered.wait_timeout(GATHER_LIMIT) != Ok(true) {
            gathered.set();
        }
        (
            "200 OK",
            format!("gathered {}\n", peak.load(Ordering::SeqCst)).into_bytes(),
        )
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        ("200 OK", (0..n).map(|i| b'a' + (i % 26) as u8).collect())
    } else {
        ("404 Not Found", b"not found\n".to_vec())
    };
    in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)
}
