//! Many short sleepers: spawn N tasks that each sleep a random 0–100 ms
//! (LCG seed 42, `(x >> 33) % 101` ms), then join them all. Reports the
//! spawn phase and the time beyond the 100 ms the sleeps themselves need,
//! for greenhouse (page stacks, and copy stacks as `greenhouse-copy`),
//! tokio `current_thread` and may (one worker).
//!
//! Each run is a child process (this binary with `--run KIND N`), so every
//! contender starts from a fresh heap and its peak RSS is its own. Runs are
//! interleaved (`--repeat` rounds of every contender) and medians reported.
//!
//! ```sh
//! cargo run --release --example timers_bench -- [--n 100000] [--repeat 5]
//!     [--kinds greenhouse,greenhouse-copy,tokio,may]
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

/// The sleep of task `i`, the same for every contender.
fn sleeps(n: usize) -> Vec<u64> {
    let mut x: u64 = 42;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % 101
        })
        .collect()
}

/// Runs one contender; returns (spawn phase, total) in seconds.
fn run(kind: &str, n: usize) -> (f64, f64) {
    let ms = sleeps(n);
    match kind {
        "greenhouse" | "greenhouse-copy" => {
            if kind == "greenhouse-copy" {
                // SAFETY: the sleepers lend nothing on their stacks.
                unsafe { greenhouse::set_copy_stacks(true) };
            }
            let t0 = Instant::now();
            let hs: Vec<_> = ms
                .iter()
                .map(|&m| greenhouse::spawn(move || greenhouse::sleep(Duration::from_millis(m))))
                .collect();
            let spawned = t0.elapsed();
            for h in hs {
                h.join().unwrap();
            }
            (spawned.as_secs_f64(), t0.elapsed().as_secs_f64())
        }
        "tokio" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async move {
                let t0 = Instant::now();
                let hs: Vec<_> = ms
                    .iter()
                    .map(|&m| {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(m)).await;
                        })
                    })
                    .collect();
                let spawned = t0.elapsed();
                for h in hs {
                    h.await.unwrap();
                }
                (spawned.as_secs_f64(), t0.elapsed().as_secs_f64())
            })
        }
        "may" => {
            may::config().set_workers(1).set_stack_size(0x4000);
            let t0 = Instant::now();
            let hs: Vec<_> = ms
                .iter()
                .map(|&m| {
                    // SAFETY: the closure uses no thread-local storage and
                    // blocks only through may's own sleep (may's contract).
                    unsafe {
                        may::coroutine::spawn(move || {
                            may::coroutine::sleep(Duration::from_millis(m));
                        })
                    }
                })
                .collect();
            let spawned = t0.elapsed();
            for h in hs {
                h.join().unwrap();
            }
            (spawned.as_secs_f64(), t0.elapsed().as_secs_f64())
        }
        other => panic!("unknown kind {other}"),
    }
}

/// Peak RSS of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--run") {
        let n = args[2].parse().unwrap();
        let (spawn, total) = run(&args[1], n);
        println!("{spawn} {total} {}", peak_rss_kib());
        return;
    }
    let (mut n, mut repeat) = (100_000usize, 5usize);
    let mut kinds = vec![
        "greenhouse".to_string(),
        "greenhouse-copy".into(),
        "tokio".into(),
        "may".into(),
    ];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().expect("a value after each flag");
        match a.as_str() {
            "--n" => n = v.parse().unwrap(),
            "--repeat" => repeat = v.parse().unwrap(),
            "--kinds" => kinds = v.split(',').map(str::to_string).collect(),
            _ => panic!("unknown flag {a}"),
        }
    }
    let exe = std::env::current_exe().unwrap();
    let mut results: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); kinds.len()];
    for _ in 0..repeat {
        for (k, kind) in kinds.iter().enumerate() {
            let out = Command::new(&exe)
                .args(["--run", kind, &n.to_string()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<f64> = text
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            if !out.status.success() || f.len() != 3 {
                eprintln!(
                    "{kind} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                continue;
            }
            results[k].0.push(f[0] * 1e3);
            results[k].1.push((f[1] - 0.1) * 1e3);
            results[k].2.push(f[2] / 1024.0);
        }
    }
    println!("{n} sleepers (0-100 ms each), medians of {repeat} interleaved runs");
    println!("  kind          spawn ms   beyond 100 ms   peak RSS MiB   ×tokio (beyond)");
    let tokio = kinds
        .iter()
        .position(|k| k == "tokio")
        .and_then(|t| (!results[t].1.is_empty()).then(|| median(&mut results[t].1.clone())));
    for (k, kind) in kinds.iter().enumerate() {
        let r = &mut results[k];
        if r.0.is_empty() {
            println!("  {kind:<12} (no successful run)");
            continue;
        }
        let (s, b, m) = (median(&mut r.0), median(&mut r.1), median(&mut r.2));
        let ratio = tokio.map_or("-".to_string(), |t| format!("{:.2}", b / t));
        println!("  {kind:<12} {s:>8.1}   {b:>13.1}   {m:>12.1}   {ratio:>6}");
    }
}

#[test]
fn every_kind_runs_all_sleepers_to_the_end() {
    let longest = *sleeps(200).iter().max().unwrap() as f64 / 1e3;
    for kind in ["greenhouse", "greenhouse-copy", "tokio", "may"] {
        let (_, total) = run(kind, 200);
        assert!(total >= longest, "{kind} finished before its longest sleep");
    }
}
