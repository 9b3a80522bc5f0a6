//! Real async crates from greenlets: `futures-io` and hyper (through
//! tokio's IO traits) over greenhouse sockets on the hub's own reactor,
//! and hyper-util's tokio client through the tokio bridge. Overlap is
//! proven by counts at the server, never by wall-clock time.

#[path = "../examples/common/http_server.rs"]
#[allow(dead_code)]
mod http_server;

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use greenhouse::bridge::tokio::wait_tokio;
use greenhouse::net::{TcpListener, TcpStream, UnixStream};
use greenhouse::{spawn, wait_future};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn on_fresh_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

#[test]
fn futures_io_echo_over_unix_pairs_with_many_greenlets_overlapping() {
    const N: usize = 50;
    on_fresh_thread(|| {
        let waiting = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (mut a, mut b) = UnixStream::pair().unwrap();
                let (waiting, peak) = (waiting.clone(), peak.clone());
                let echo = spawn(move || {
                    wait_future(async move {
                        let mut buf = vec![0u8; 1024];
                        loop {
                            let n = b.read(&mut buf).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            b.write_all(&buf[..n]).await.unwrap();
                        }
                    })
                    .unwrap();
                });
                let client = spawn(move || {
                    wait_future(async move {
                        // Everyone parks in a read before anyone writes.
                        waiting.set(waiting.get() + 1);
                        peak.set(peak.get().max(waiting.get()));
                        let msg = format!("message {i} ").repeat(100);
                        let mut back = vec![0u8; msg.len()];
                        let writer = async {
                            (&a).write_all(msg.as_bytes()).await.unwrap();
                        };
                        let (_, read) =
                            futures::join!(writer, async { (&a).read_exact(&mut back).await });
                        read.unwrap();
                        waiting.set(waiting.get() - 1);
                        assert_eq!(back, msg.as_bytes());
                        a.close().await.unwrap();
                    })
                    .unwrap();
                });
                (echo, client)
            })
            .collect();
        for (echo, client) in handles {
            client.join().unwrap();
            echo.join().unwrap();
        }
        assert_eq!(peak.get(), N, "every client was in flight at once");
    });
}

#[test]
fn an_async_read_on_a_closed_peer_reads_eof_and_a_write_fails() {
    on_fresh_thread(|| {
        let (mut a, b) = UnixStream::pair().unwrap();
        drop(b);
        let r = wait_future(async {
            let mut buf = [0u8; 8];
            let n = a.read(&mut buf).await;
            let w = a.write_all(b"x").await;
            (n.unwrap(), w)
        })
        .unwrap();
        assert_eq!(r.0, 0);
        assert_eq!(r.1.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    });
}

/// The hyper server's handler: waits (on a greenlet's sleep, through a
/// oneshot) while counting requests in progress.
async fn handler(
    req: Request<Incoming>,
    now: Rc<Cell<usize>>,
    peak: Rc<Cell<usize>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    now.set(now.get() + 1);
    peak.set(peak.get().max(now.get()));
    let (tx, rx) = futures::channel::oneshot::channel();
    let _timer = spawn(move || {
        greenhouse::sleep(Duration::from_millis(50));
        let _ = tx.send(());
    });
    rx.await.unwrap();
    now.set(now.get() - 1);
    let body = format!("hello {}", req.uri().path());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

#[test]
fn hyper_server_and_client_on_greenhouse_sockets_overlap() {
    const N: usize = 40;
    on_fresh_thread(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (now, peak) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(0usize)));
        let (n2, p2) = (now.clone(), peak.clone());
        let _server = spawn(move || {
            loop {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let (now, peak) = (n2.clone(), p2.clone());
                spawn(move || {
                    let service = hyper::service::service_fn(move |req| {
                        handler(req, now.clone(), peak.clone())
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    wait_future(conn).unwrap().unwrap();
                });
            }
        });
        let clients: Vec<_> = (0..N)
            .map(|i| {
                spawn(move || {
                    let stream = TcpStream::connect(addr).unwrap();
                    let (mut sender, conn) =
                        wait_future(hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
                            TokioIo::new(stream),
                        ))
                        .unwrap()
                        .unwrap();
                    // The connection is driven by a greenlet of its own.
                    let driver = spawn(move || wait_future(conn).unwrap().unwrap());
                    let req = Request::get(format!("/client/{i}"))
                        .header("host", "localhost")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let body = wait_future(async move {
                        let resp = sender.send_request(req).await.unwrap();
                        assert_eq!(resp.status(), 200);
                        resp.into_body().collect().await.unwrap().to_bytes()
                    })
                    .unwrap();
                    assert_eq!(body, format!("hello /client/{i}").as_bytes());
                    driver.join().unwrap();
                })
            })
            .collect();
        greenhouse::joinall(clients);
        assert_eq!(
            peak.get(),
            N,
            "every request was in the handler at once, on one thread"
        );
        assert_eq!(now.get(), 0);
    });
}

#[test]
fn hyper_util_client_through_the_tokio_bridge_from_100_greenlets() {
    const N: usize = 100;
    let server = http_server::HttpServer::start().unwrap();
    let url = format!("http://{}/gather/{N}", server.addr);
    on_fresh_thread(move || {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let ticks = Rc::new(Cell::new(0u32));
        let done = Rc::new(Cell::new(0usize));
        let (t, d) = (ticks.clone(), done.clone());
        let ticker = spawn(move || {
            while d.get() < N {
                t.set(t.get() + 1);
                greenhouse::sleep(Duration::from_millis(5));
            }
        });
        let greenlets: Vec<_> = (0..N)
            .map(|_| {
                let (client, url, done) = (client.clone(), url.clone(), done.clone());
                spawn(move || {
                    let body = wait_tokio(async move {
                        let resp = client.get(url.parse().unwrap()).await.unwrap();
                        resp.into_body().collect().await.unwrap().to_bytes()
                    })
                    .unwrap();
                    assert!(!body.is_empty());
                    done.set(done.get() + 1);
                })
            })
            .collect();
        greenhouse::joinall(greenlets);
        ticker.join().unwrap();
        assert_eq!(done.get(), N);
        assert!(ticks.get() > 0, "the hub ran other greenlets meanwhile");
    });
    assert_eq!(
        server.peak(),
        N,
        "all 100 requests were in progress at once"
    );
}

#[test]
fn a_killed_greenlet_aborts_its_tokio_task() {
    on_fresh_thread(|| {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let h = spawn(move || {
            wait_tokio(async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
        });
        greenhouse::sleep(Duration::from_millis(20));
        h.kill().unwrap();
        // The abort reaches the tokio thread: the task's future is dropped
        // there. Wait for it by polling (no wall-clock bound on success).
        let mut spins = 0;
        while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
            spins += 1;
            assert!(spins < 10_000, "the task was never aborted");
            greenhouse::sleep(Duration::from_millis(1));
        }
        // A panic in a task is reported as a panic.
        let err = wait_tokio(async { panic!("in tokio") }).unwrap_err();
        assert!(err.to_string().contains("in tokio"), "{err}");
    });
}

#[test]
fn wait_tokio_on_uses_the_programs_own_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("programs-own")
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let names = on_fresh_thread(move || {
        let greenlets: Vec<_> = (0..10)
            .map(|_| {
                let handle = handle.clone();
                spawn(move || {
                    greenhouse::bridge::tokio::wait_tokio_on(&handle, async {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        std::thread::current().name().map(str::to_string)
                    })
                    .unwrap()
                })
            })
            .collect();
        greenlets
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(names.len(), 10);
    assert!(
        names.iter().all(|n| n.as_deref() == Some("programs-own")),
        "{names:?}"
    );
}
