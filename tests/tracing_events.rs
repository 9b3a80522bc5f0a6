//! The `tracing` feature: a span per greenlet, entered while it runs;
//! events for spawn, park, wake, kill and panic inside the right spans; the
//! blocked-hub detector's reports as events. A small recording subscriber
//! stands in for `tracing-subscriber`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Clone, Debug)]
struct Ev {
    level: Level,
    target: String,
    fields: HashMap<String, String>,
    /// The innermost entered span when it happened.
    span: Option<u64>,
}

#[derive(Default)]
struct Log {
    spans: HashMap<u64, (String, HashMap<String, String>)>,
    events: Vec<Ev>,
    entered: HashMap<u64, usize>,
    /// Per thread: the entered spans, innermost last.
    stacks: HashMap<std::thread::ThreadId, Vec<u64>>,
    unbalanced: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Log>>,
    next: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.log
            .lock()
            .unwrap()
            .spans
            .insert(id, (attrs.metadata().name().to_string(), fields));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let mut log = self.log.lock().unwrap();
        let span = log
            .stacks
            .get(&std::thread::current().id())
            .and_then(|s| s.last().copied());
        log.events.push(Ev {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            fields,
            span,
        });
    }
    fn enter(&self, id: &Id) {
        let mut log = self.log.lock().unwrap();
        *log.entered.entry(id.into_u64()).or_default() += 1;
        log.stacks
            .entry(std::thread::current().id())
            .or_default()
            .push(id.into_u64());
    }
    fn exit(&self, id: &Id) {
        let mut log = self.log.lock().unwrap();
        let top = log
            .stacks
            .entry(std::thread::current().id())
            .or_default()
            .pop();
        if top != Some(id.into_u64()) {
            log.unbalanced
                .push(format!("exit {} with {top:?} on top", id.into_u64()));
        }
    }
}

impl Recorder {
    fn events(&self, message: &str) -> Vec<Ev> {
        self.log
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| e.fields.get("message").map(String::as_str) == Some(message))
            .cloned()
            .collect()
    }

    /// The span of the greenlet with this id.
    fn span_of(&self, id: u64) -> u64 {
        let log = self.log.lock().unwrap();
        let found: Vec<u64> = log
            .spans
            .iter()
            .filter(|(_, (name, f))| name == "greenlet" && f.get("id") == Some(&id.to_string()))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(found.len(), 1, "one span for greenlet {id}: {found:?}");
        found[0]
    }
}

#[test]
fn greenlets_have_spans_and_the_hub_reports_spawn_park_wake_kill_and_panic() {
    let rec = Recorder::default();
    let ev = greenhouse::sync::Event::new();
    let (worker_id, victim_id, bad_id, main_id) =
        tracing::subscriber::with_default(rec.clone(), || {
            let e = ev.clone();
            let worker = greenhouse::Builder::new()
                .name("worker")
                .spawn(move || {
                    tracing::info!(step = 1, "inside");
                    e.wait().unwrap();
                    tracing::info!(step = 2, "inside");
                })
                .unwrap();
            let victim = greenhouse::spawn(|| greenhouse::sleep(Duration::from_secs(60)));
            let bad = greenhouse::Builder::new()
                .name("bad")
                .spawn(|| panic!("boom"))
                .unwrap();
            greenhouse::yield_now();
            ev.set();
            let ids = (
                worker.greenlet().id(),
                victim.greenlet().id(),
                bad.greenlet().id(),
                greenhouse::Greenlet::current().id(),
            );
            worker.join().unwrap();
            victim.kill().unwrap();
            assert!(bad.join().is_err());
            ids
        });

    let log = rec.log.lock().unwrap();
    assert!(log.unbalanced.is_empty(), "{:?}", log.unbalanced);
    assert!(
        log.stacks.values().all(Vec::is_empty),
        "every entered span was exited"
    );
    drop(log);

    // The worker's span: its name, id and spawner.
    let ws = rec.span_of(worker_id);
    let (_, fields) = rec.log.lock().unwrap().spans[&ws].clone();
    assert_eq!(fields["name"], "worker");
    assert_eq!(fields["spawned_by"], main_id.to_string());
    // Entered each time it ran: at its start, and after its wake-up.
    assert!(rec.log.lock().unwrap().entered[&ws] >= 2);

    // Its own events are inside its span.
    let inside = rec.events("inside");
    assert_eq!(inside.len(), 2);
    assert!(inside.iter().all(|e| e.span == Some(ws)), "{inside:?}");

    let spawns = rec.events("spawn");
    let spawn_of = |id: u64| {
        spawns
            .iter()
            .find(|e| e.fields["greenlet_id"] == id.to_string())
            .unwrap_or_else(|| panic!("no spawn event for {id}: {spawns:?}"))
            .clone()
    };
    let s = spawn_of(worker_id);
    assert_eq!(s.target, "greenhouse");
    assert_eq!(s.level, Level::TRACE);
    assert_eq!(s.fields["greenlet_name"], "worker");
    assert_eq!(s.span, None, "spawned from main, outside any greenlet");

    let parks: Vec<Ev> = rec
        .events("park")
        .into_iter()
        .filter(|e| e.span == Some(ws))
        .collect();
    assert!(
        parks.iter().any(|e| e.fields["waiting_on"] == "Event"),
        "{parks:?}"
    );
    let victim_parks: Vec<Ev> = rec
        .events("park")
        .into_iter()
        .filter(|e| e.span == Some(rec.span_of(victim_id)))
        .collect();
    assert!(
        victim_parks
            .iter()
            .any(|e| e.fields["waiting_on"] == "sleep" && e.fields.contains_key("deadline_ms"))
    );

    let wakes = rec.events("wake");
    assert!(
        wakes
            .iter()
            .any(|e| e.fields["greenlet_id"] == worker_id.to_string()),
        "{wakes:?}"
    );
    let kills = rec.events("kill");
    assert!(
        kills
            .iter()
            .any(|e| e.fields["greenlet_id"] == victim_id.to_string() && e.level == Level::DEBUG),
        "{kills:?}"
    );
    let panics = rec.events("panic");
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert_eq!(panics[0].level, Level::ERROR);
    assert_eq!(panics[0].fields["greenlet_id"], bad_id.to_string());
    assert_eq!(panics[0].fields["greenlet_name"], "bad");
    assert!(panics[0].fields["reason"].contains("boom"));
    assert_eq!(panics[0].span, Some(rec.span_of(bad_id)));
}

#[test]
fn a_raw_greenlet_gets_a_root_span_when_it_first_runs() {
    let rec = Recorder::default();
    let _ = greenhouse::stats(); // this thread's hub enters the spans
    let id = tracing::subscriber::with_default(rec.clone(), || {
        let g = greenhouse::Greenlet::new(|x: u32| {
            tracing::info!("raw");
            x + 1
        });
        assert_eq!(g.switch::<u32, u32>(1).unwrap(), 2);
        g.id()
    });
    let s = rec.span_of(id);
    let raw = rec.events("raw");
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].span, Some(s));
}

#[inline(never)]
fn block_the_hub() -> u128 {
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    std::hint::black_box(t0.elapsed().as_nanos())
}

#[test]
fn the_detector_reports_are_events_too() {
    // The monitor reports from its own thread: a global subscriber.
    let rec = Recorder::default();
    tracing::subscriber::set_global_default(rec.clone()).unwrap();
    greenhouse::set_blocked_threshold(Some(Duration::from_millis(50)));
    let bystander = greenhouse::spawn(|| greenhouse::sleep(Duration::from_secs(2)));
    let h = greenhouse::Builder::new()
        .name("blocker")
        .spawn(block_the_hub)
        .unwrap();
    let id = h.greenlet().id();
    h.join().unwrap();
    greenhouse::yield_now();
    let t0 = std::time::Instant::now();
    let mine = |m: &str| {
        rec.events(m)
            .into_iter()
            .filter(|e| e.fields["greenlet_id"] == id.to_string())
            .collect::<Vec<_>>()
    };
    while mine("unblocked").is_empty() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let blocked = mine("blocked");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].level, Level::WARN);
    assert_eq!(blocked[0].fields["greenlet_name"], "blocker");
    assert!(blocked[0].fields["backtrace"].contains("block_the_hub"));
    let unblocked = mine("unblocked");
    assert_eq!(unblocked[0].level, Level::INFO);
    assert!(unblocked[0].fields["running_ms"].parse::<u64>().unwrap() >= 250);
    bystander.kill().unwrap();
}
