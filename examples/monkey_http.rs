//! An unmodified blocking HTTP client (`ureq`) made concurrent by
//! `monkey::patch_all()`: 100 greenlets on one thread each fetch a URL
//! whose handler waits 200 ms.
//!
//! Patched, the whole batch takes about 200 ms; unpatched, every request
//! blocks the thread in turn and the batch takes about 100 × 200 ms = 20 s.
//! The example runs both and prints the two times.
//!
//! ```sh
//! cargo run --release --features monkey --example monkey_http
//! cargo run --release --features monkey --example monkey_http -- --requests 20 --delay-ms 100
//! ```

#[path = "common/http_server.rs"]
mod http_server;

use std::time::{Duration, Instant};

use greenhouse::monkey;
use http_server::HttpServer;

/// One batch: `n` greenlets, each one GET of `url`. Returns how many
/// succeeded and how long the batch took.
fn batch(url: &str, n: usize) -> (usize, Duration) {
    let t0 = Instant::now();
    let fetches: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_string();
            greenhouse::spawn(move || -> Result<String, ureq::Error> {
                ureq::get(&url).call()?.body_mut().read_to_string()
            })
        })
        .collect();
    let ok = greenhouse::joinall(fetches)
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(body)) if body.starts_with("waited") || body.starts_with("gathered")))
        .count();
    (ok, t0.elapsed())
}

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n = flag(&args, "--requests", 100) as usize;
    let delay = flag(&args, "--delay-ms", 200);
    let server = HttpServer::start()?;
    let url = format!("http://{}/wait/{delay}", server.addr);
    println!("{n} greenlets, one thread, each: ureq::get(\"{url}\")");

    monkey::patch_all();
    let (ok, took) = batch(&url, n);
    println!(
        "patched:   {ok}/{n} ok in {:>7.3} s  (server saw {} at once)",
        took.as_secs_f64(),
        server.peak()
    );

    monkey::unpatch_all();
    server.reset_peak();
    let (ok, took) = batch(&url, n);
    println!(
        "unpatched: {ok}/{n} ok in {:>7.3} s  (server saw {} at once)",
        took.as_secs_f64(),
        server.peak()
    );
    Ok(())
}

#[test]
fn patched_ureq_requests_overlap_on_one_thread() {
    const N: usize = 100;
    let server = HttpServer::start().unwrap();
    // Each handler answers once all N are in progress (or after
    // GATHER_LIMIT): overlap is asserted without a timing assumption.
    let url = format!("http://{}/gather/{N}", server.addr);
    monkey::patch_all();
    let (ok, _) = batch(&url, N);
    assert_eq!(ok, N, "every request succeeds");
    // Unpatched, the server would only ever see one request at a time
    // (and every request would wait the full GATHER_LIMIT).
    assert_eq!(server.peak(), N, "the handlers overlapped");
}
