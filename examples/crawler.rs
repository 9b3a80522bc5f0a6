//! gevent's classic crawler, in Rust: patch, spawn one greenlet per URL,
//! wait for all. The fetching code is plain blocking `ureq`, unmodified.
//!
//! ```python
//! from gevent import monkey; monkey.patch_all()
//! jobs = [gevent.spawn(print_head, url) for url in urls]
//! gevent.wait(jobs)
//! ```
//!
//! The URLs are served in-process (this machine has no internet); they use
//! the name `localhost`, so the lookup goes through the patched
//! `getaddrinfo` too.
//!
//! ```sh
//! cargo run --features monkey --example crawler
//! ```

#[path = "common/http_server.rs"]
mod http_server;

use std::cell::RefCell;
use std::rc::Rc;

use http_server::HttpServer;

/// Fetches every URL in its own greenlet; returns the log, in order.
fn crawl(urls: &[String]) -> Vec<String> {
    greenhouse::monkey::patch_all();
    let log = Rc::new(RefCell::new(Vec::new()));
    let jobs: Vec<_> = urls
        .iter()
        .map(|url| {
            let (url, log) = (url.clone(), log.clone());
            greenhouse::spawn(move || {
                log.borrow_mut().push(format!("Starting {url}"));
                let line = match ureq::get(&url).call() {
                    Ok(mut resp) => match resp.body_mut().read_to_vec() {
                        Ok(data) => format!(
                            "{url}: {} bytes: {:?}",
                            data.len(),
                            String::from_utf8_lossy(&data[..data.len().min(20)])
                        ),
                        Err(e) => format!("{url}: error: {e}"),
                    },
                    Err(e) => format!("{url}: error: {e}"),
                };
                log.borrow_mut().push(line);
            })
        })
        .collect();
    greenhouse::joinall(jobs);
    log.take()
}

/// The URLs to crawl on a server at `port`: different sizes and delays.
fn urls(port: u16) -> Vec<String> {
    ["/wait/300", "/bytes/100000", "/wait/100", "/bytes/5000"]
        .iter()
        .map(|p| format!("http://localhost:{port}{p}"))
        .collect()
}

fn main() -> std::io::Result<()> {
    let server = HttpServer::start()?;
    for line in crawl(&urls(server.addr.port())) {
        println!("{line}");
    }
    println!(
        "(the server handled up to {} requests at once)",
        server.peak()
    );
    Ok(())
}

#[test]
fn every_url_is_fetched_concurrently() {
    let server = HttpServer::start().unwrap();
    let urls = urls(server.addr.port());
    let log = crawl(&urls);
    assert_eq!(log.len(), 2 * urls.len());
    // All greenlets started before any finished: they ran concurrently.
    for (line, url) in log.iter().zip(&urls) {
        assert_eq!(line, &format!("Starting {url}"));
    }
    let done = &log[urls.len()..];
    for (url, want) in urls.iter().zip([14, 100_000, 14, 5000]) {
        let line = done
            .iter()
            .find(|l| l.starts_with(&format!("{url}:")))
            .unwrap_or_else(|| panic!("no result for {url}: {done:?}"));
        assert!(
            line.starts_with(&format!("{url}: {want} bytes")),
            "{line} (want {want} bytes)"
        );
    }
    // The 100 ms page, asked for later, finished before the 300 ms one.
    let pos = |p: &str| done.iter().position(|l| l.contains(p)).unwrap();
    assert!(pos("/wait/100") < pos("/wait/300"));
    assert!(
        server.peak() >= 2,
        "the server never saw two requests at once"
    );
}
