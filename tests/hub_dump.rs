//! The hub's dump: every live greenlet with its state, what it waits for,
//! where it was spawned and its suspended stack; taking it changes
//! nothing; the tree and the grouped view; 100,000 greenlets.

use std::cell::Cell;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhouse::net::{TcpListener, TcpStream};
use greenhouse::sync::{Event, Queue, Semaphore};
use greenhouse::{
    Builder, Dump, Generator, Greenlet, GreenletInfo, GreenletState, Timeout, WaitingOn, dump,
    dump_brief, sleep, spawn, yield_now,
};

/// Not inlined, and not a tail call (it works after the sleep), so that
/// it is a frame of its own in release builds too.
#[inline(never)]
fn sleeping_in_dump_test(d: Duration) -> u128 {
    let t0 = Instant::now();
    sleep(d);
    std::hint::black_box(t0.elapsed().as_nanos())
}

fn frames(g: &GreenletInfo) -> Vec<String> {
    g.backtrace
        .as_ref()
        .map(|b| b.frames().into_iter().map(|f| f.function).collect())
        .unwrap_or_default()
}

fn has_frame(g: &GreenletInfo, needle: &str) -> bool {
    frames(g).iter().any(|f| f.contains(needle))
}

fn get(d: &Dump, id: u64) -> &GreenletInfo {
    d.get(id)
        .unwrap_or_else(|| panic!("greenlet {id} is not in the dump:\n{}", d.tree()))
}

#[test]
fn every_greenlet_with_its_state_wait_spawn_site_and_stack() {
    let ev = Event::new();
    let sem = Semaphore::new(0);
    let q: Queue<u32> = Queue::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();
    let server_fd = server_side.as_raw_fd();

    let t_spawn = Instant::now();
    let line = line!() + 3;
    let sleeper = Builder::new()
        .name("sleeper")
        .spawn(|| sleeping_in_dump_test(Duration::from_secs(30)))
        .unwrap();
    let e = ev.clone();
    let event_waiter = spawn(move || e.wait().unwrap());
    let s = sem.clone();
    let sem_waiter = spawn(move || s.acquire().unwrap());
    let qq = q.clone();
    let getter = spawn(move || qq.get().unwrap());
    let reader = spawn(move || {
        let mut buf = [0u8; 4];
        server_side.read_exact(&mut buf).unwrap();
        buf
    });
    let e = ev.clone();
    let target = spawn(move || e.wait().unwrap());
    let target_id = target.greenlet().id();
    let joiner = spawn(move || target.join());
    let scoped = spawn(|| {
        let _t = Timeout::start(Duration::from_secs(20));
        sleep(Duration::from_secs(60));
    });
    let created = Builder::new().create(|| 5).unwrap();
    let raw_line = line!() + 1;
    let raw = Greenlet::new(|x: u32| Greenlet::main().switch::<u32, u32>(x + 1).unwrap());
    let unstarted = Greenlet::new(|(): ()| ());
    assert_eq!(raw.switch::<u32, u32>(1).unwrap(), 2);
    sleep(Duration::from_millis(20)); // everyone parks
    let just_spawned = spawn(|| 9);
    let t_parked = Instant::now();

    let d = dump();
    let text = d.tree();
    println!("{text}");

    let main = &d.greenlets()[0];
    assert!(main.is_main);
    assert_eq!(main.state, GreenletState::Running);
    assert!(
        has_frame(main, "every_greenlet_with_its_state"),
        "{:?}",
        frames(main)
    );

    let s = get(&d, sleeper.greenlet().id());
    assert_eq!(s.name, "sleeper");
    assert!(s.spawned);
    assert_eq!(s.state, GreenletState::Parked);
    assert_eq!(s.waiting_on, Some(WaitingOn::Sleep));
    let deadline = s.deadline.unwrap();
    let thirty = Duration::from_secs(30);
    assert!(t_spawn + thirty <= deadline && deadline <= t_parked + thirty);
    assert!(s.since.unwrap() <= t_spawn.elapsed());
    let at = s.spawned_at.unwrap();
    assert_eq!((at.file(), at.line()), (file!(), line));
    assert_eq!(s.spawned_by, main.id);
    assert_eq!(s.parent, None);
    assert!(
        has_frame(s, "sleeping_in_dump_test"),
        "the sleeper's stack: {:?}",
        frames(s)
    );
    // The parking machinery is not shown; the call that parked is.
    assert!(frames(s).iter().all(|f| !f.contains("park_on")));
    assert!(frames(s).iter().any(|f| f.contains("sleep")));

    let w = |h: u64| get(&d, h).waiting_on;
    assert_eq!(
        w(event_waiter.greenlet().id()),
        Some(WaitingOn::Primitive("Event"))
    );
    assert_eq!(
        w(sem_waiter.greenlet().id()),
        Some(WaitingOn::Primitive("Semaphore"))
    );
    assert_eq!(
        w(getter.greenlet().id()),
        Some(WaitingOn::Primitive("Queue::get"))
    );
    assert_eq!(
        w(reader.greenlet().id()),
        Some(WaitingOn::Readable(server_fd))
    );
    let j = get(&d, joiner.greenlet().id());
    assert_eq!(j.state, GreenletState::Parked);
    assert_eq!(j.waiting_on, Some(WaitingOn::Join(target_id)));
    assert!(text.contains(&format!("parked on join of greenlet {target_id}")));
    let sc = get(&d, scoped.greenlet().id());
    assert_eq!(sc.waiting_on, Some(WaitingOn::Sleep));
    let left = sc.deadline.unwrap() - Instant::now();
    assert!(
        left <= Duration::from_secs(20),
        "the Timeout scope is nearer"
    );

    let c = get(&d, created.greenlet().id());
    assert_eq!(c.state, GreenletState::Parked);
    assert_eq!(c.waiting_on, Some(WaitingOn::Start));
    assert!(c.backtrace.is_none(), "it never ran");
    let js = get(&d, just_spawned.greenlet().id());
    assert_eq!(js.state, GreenletState::Ready, "it has not run yet");
    assert_eq!(js.waiting_on, Some(WaitingOn::Start));

    let r = get(&d, raw.id());
    assert!(!r.spawned);
    assert_eq!(r.state, GreenletState::Suspended);
    assert_eq!(r.parent, Some(main.id));
    assert_eq!(r.waiting_on, None);
    assert_eq!(r.spawned_at.unwrap().line(), raw_line);
    assert!(has_frame(r, "switch"), "{:?}", frames(r));
    let u = get(&d, unstarted.id());
    assert_eq!(u.state, GreenletState::NotStarted);
    assert!(u.backtrace.is_none());

    // The text shows the same.
    assert!(text.contains("sleeper (id"));
    assert!(text.contains("parked on sleep, deadline in"));
    assert!(text.contains(&format!("parked on readable fd {server_fd}")));
    assert!(text.contains("suspended in a switch"));
    assert!(text.contains(&format!("spawned at {}:{line}", file!())));
    assert!(text.contains("sleeping_in_dump_test"));

    // Taking the dump changed nothing: every greenlet goes on as before.
    ev.set();
    event_waiter.join().unwrap();
    sem.release();
    sem_waiter.join().unwrap();
    q.put(7).unwrap();
    assert_eq!(getter.join().unwrap(), 7);
    (&client).write_all_bytes(b"ping");
    assert_eq!(&reader.join().unwrap(), b"ping");
    assert_eq!(joiner.join().unwrap(), Ok(()));
    created.start();
    assert_eq!(created.join().unwrap(), 5);
    assert_eq!(just_spawned.join().unwrap(), 9);
    assert_eq!(raw.switch::<u32, u32>(41).unwrap(), 41);
    assert!(raw.is_dead());
    sleeper.kill().unwrap();
    scoped.kill().unwrap();
    drop(unstarted);

    // Only main is left.
    let after = dump_brief();
    assert_eq!(after.len(), 1, "{}", after.tree());
}

trait WriteAll {
    fn write_all_bytes(self, b: &[u8]);
}

impl WriteAll for &TcpStream {
    fn write_all_bytes(self, b: &[u8]) {
        use std::io::Write;
        let mut s = self;
        s.write_all(b).unwrap();
    }
}

#[test]
fn a_dumped_greenlet_wakes_on_time_and_keeps_its_inbox() {
    // Woken (its message in the inbox) but not run yet when the dump is
    // taken: it must still receive exactly that wake-up.
    let ev = Event::new();
    let e = ev.clone();
    let waiter = spawn(move || e.wait_timeout(Duration::from_secs(5)).unwrap());
    let t0 = Instant::now();
    let sleeper = spawn(move || {
        sleep(Duration::from_millis(100));
        t0.elapsed()
    });
    yield_now();
    ev.set();
    let d = dump();
    assert_eq!(get(&d, waiter.greenlet().id()).state, GreenletState::Ready);
    assert!(get(&d, waiter.greenlet().id()).backtrace.is_some());
    assert!(waiter.join().unwrap(), "woken by the set, not timed out");
    let slept = sleeper.join().unwrap();
    assert!(slept >= Duration::from_millis(100), "{slept:?}");
}

#[test]
fn a_greenlet_killed_after_a_dump_unwinds_and_runs_its_destructors() {
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    let f = Flag(dropped.clone());
    let h = spawn(move || {
        let _f = f;
        sleep(Duration::from_secs(60));
    });
    yield_now();
    for _ in 0..3 {
        let d = dump();
        assert!(get(&d, h.greenlet().id()).backtrace.is_some());
    }
    assert!(!dropped.get());
    h.kill().unwrap();
    assert!(dropped.get());
}

#[test]
fn the_tree_puts_children_under_their_spawner_and_parent() {
    let outer = Builder::new()
        .name("outer")
        .spawn(|| {
            let inner = Builder::new()
                .name("inner")
                .spawn(|| sleep(Duration::from_secs(30)))
                .unwrap();
            let raw = Greenlet::new(|(): ()| {
                let parent = Greenlet::current().parent().unwrap();
                parent.switch::<(), ()>(()).unwrap();
            });
            raw.switch::<(), ()>(()).unwrap_or(());
            inner.join().unwrap();
            drop(raw);
        })
        .unwrap();
    sleep(Duration::from_millis(10));
    let d = dump();
    let text = d.tree();
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
    };
    let (o, i) = (at("outer (id"), at("inner (id"));
    assert!(o < i);
    let indent = |l: &str| l.find("+---").unwrap();
    assert!(indent(lines[i]) > indent(lines[o]), "{text}");
    // A raw greenlet hangs under its parent.
    let raw = d
        .greenlets()
        .iter()
        .find(|g| !g.spawned && !g.is_main)
        .unwrap();
    assert_eq!(raw.parent, Some(outer.greenlet().id()));
    assert_eq!(raw.state, GreenletState::Suspended);
    assert!(indent(lines[at(&format!("(id {})", raw.id))]) > indent(lines[o]));
    outer.kill().unwrap();
}

#[test]
fn a_greenlet_can_dump_its_own_hub() {
    #[inline(never)]
    fn dumping_from_a_greenlet() -> (GreenletInfo, GreenletInfo) {
        let d = dump();
        let me = d.get(Greenlet::current().id()).unwrap().clone();
        let main = d.greenlets()[0].clone();
        std::hint::black_box((me, main))
    }
    let h = Builder::new()
        .name("dumper")
        .spawn(dumping_from_a_greenlet)
        .unwrap();
    let id = h.greenlet().id();
    let (me, main) = h.join().unwrap();
    assert_eq!(me.state, GreenletState::Running);
    assert!(
        has_frame(&me, "dumping_from_a_greenlet"),
        "{:?}",
        frames(&me)
    );
    // Main waits in the join; its stack runs the hub, so it has none.
    assert_eq!(main.state, GreenletState::Parked);
    assert_eq!(main.waiting_on, Some(WaitingOn::Join(id)));
    assert!(main.backtrace.is_none());
}

#[test]
fn a_greenlet_parked_inside_a_generator_is_dumped_and_goes_on() {
    let ev = Event::new();
    let e = ev.clone();
    let h = spawn(move || {
        let mut g = Generator::new(move |y, (): ()| {
            e.wait().unwrap();
            y.yield_(1u32);
            2u32
        });
        g.send(()).unwrap()
    });
    yield_now();
    let d = dump();
    let info = get(&d, h.greenlet().id());
    assert_eq!(info.state, GreenletState::Parked);
    assert_eq!(info.waiting_on, Some(WaitingOn::Primitive("Event")));
    assert!(info.backtrace.is_some());
    ev.set();
    assert_eq!(h.join().unwrap(), greenhouse::GeneratorState::Yielded(1));
}

#[test]
fn brief_dumps_have_no_stacks() {
    let h = spawn(|| sleep(Duration::from_secs(30)));
    yield_now();
    let d = dump_brief();
    let g = get(&d, h.greenlet().id());
    assert_eq!(g.waiting_on, Some(WaitingOn::Sleep));
    assert!(g.backtrace.is_none());
    assert!(d.greenlets()[0].backtrace.is_none());
    h.kill().unwrap();
}

#[inline(never)]
fn one_of_many() -> u128 {
    let n = sleeping_in_dump_test(Duration::from_secs(120));
    std::hint::black_box(n + 1)
}

#[test]
fn a_hundred_thousand_greenlets_are_dumped_and_grouped() {
    const N: usize = 100_000;
    let hs: Vec<_> = (0..N)
        .map(|_| {
            Builder::new()
                .stack_size(16 * 1024)
                .spawn(one_of_many)
                .unwrap()
        })
        .collect();
    let odd = spawn(|| sleep(Duration::from_secs(120)));
    yield_now();
    let t0 = Instant::now();
    let d = dump();
    let took = t0.elapsed();
    assert_eq!(d.len(), N + 2);
    let text = d.to_string(); // more than 200: grouped
    println!("dump of {} greenlets in {took:?}", d.len());
    println!("{}", &text[..text.len().min(3000)]);
    let first_group = text
        .lines()
        .find(|l| l.contains(" x "))
        .expect("a group line");
    assert!(
        first_group.starts_with(&format!("{N} x parked on sleep")),
        "{first_group}"
    );
    assert!(text.contains(&format!("... {} more", N - 10)));
    assert!(text.contains("one_of_many"));
    assert!(text.contains("1 x parked on sleep"), "the odd one");
    // Every stack of the big group is the same one.
    let bts: std::collections::HashSet<_> = d
        .greenlets()
        .iter()
        .filter(|g| g.spawned && g.id != odd.greenlet().id())
        .map(|g| g.backtrace.clone().unwrap())
        .collect();
    assert_eq!(bts.len(), 1);
    greenhouse::killall(&hs).unwrap();
    odd.kill().unwrap();
}

#[test]
fn records_that_outlive_the_threads_main_greenlet_do_not_touch_it() {
    // A greenlet whose handle sits in a thread-local created before
    // greenhouse's own is dropped after main's record would be, if it
    // did not hold main as its parent; a spawned greenlet's handle has no
    // such link. Both must leave the list without touching freed memory
    // (the ASan job runs this).
    thread_local! {
        static KEEP: std::cell::RefCell<Vec<greenhouse::JoinHandle<()>>> =
            const { std::cell::RefCell::new(Vec::new()) };
        static KEEP_RAW: std::cell::RefCell<Vec<Greenlet>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    std::thread::spawn(|| {
        KEEP.with(|_| ());
        KEEP_RAW.with(|_| ());
        let h = Builder::new().create(|| ()).unwrap();
        KEEP.with(|k| k.borrow_mut().push(h));
        let parked = spawn(|| sleep(Duration::from_secs(60)));
        KEEP.with(|k| k.borrow_mut().push(parked));
        let raw = Greenlet::new(|(): ()| ());
        KEEP_RAW.with(|k| k.borrow_mut().push(raw));
        yield_now();
        assert_eq!(dump_brief().len(), 4);
    })
    .join()
    .unwrap();
}

/// The child side of the next test: runs only when it is the child.
#[test]
fn dump_signal_child() {
    if std::env::var_os("GREENHOUSE_DUMP_SIGNAL_CHILD").is_none() {
        return;
    }
    greenhouse::set_blocked_threshold(None);
    greenhouse::dump_on_signal(libc::SIGUSR1).unwrap();
    let sleeper = Builder::new()
        .name("signalled-sleeper")
        .spawn(|| sleeping_in_dump_test(Duration::from_secs(60)))
        .unwrap();
    // Another thread's hub prints its own dump too.
    let other = std::thread::Builder::new()
        .name("second-hub".into())
        .spawn(|| {
            let h = Builder::new()
                .name("other-thread-sleeper")
                .spawn(|| sleep(Duration::from_millis(1500)))
                .unwrap();
            h.join().unwrap();
        })
        .unwrap();
    yield_now();
    std::thread::sleep(Duration::from_millis(100)); // the other hub parks
    // SAFETY: raising a signal whose handler is installed above.
    unsafe { libc::raise(libc::SIGUSR1) };
    // Asleep in the hub's poll: the monitor wakes it for the dump.
    sleep(Duration::from_millis(1000));
    sleeper.kill().unwrap();
    other.join().unwrap();
}

#[test]
fn on_the_dump_signal_every_hub_prints_its_dump() {
    if std::env::var_os("GREENHOUSE_DUMP_SIGNAL_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "dump_signal_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GREENHOUSE_DUMP_SIGNAL_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("greenhouse hub of thread 'dump_signal_child'"),
        "{err}"
    );
    assert!(err.contains("signalled-sleeper (id"), "{err}");
    assert!(err.contains("sleeping_in_dump_test"), "{err}");
    assert!(
        err.contains("greenhouse hub of thread 'second-hub'"),
        "{err}"
    );
    assert!(err.contains("other-thread-sleeper (id"), "{err}");
}

#[test]
fn signals_greenhouse_needs_cannot_be_the_dump_signal() {
    for sig in [libc::SIGURG, libc::SIGSEGV, libc::SIGKILL, 0, 1000] {
        let e = greenhouse::dump_on_signal(sig).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}
