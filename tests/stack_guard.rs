//! Stacks: overflow reporting, the mprotect fallback running out of map
//! entries, and reports of panics nobody joined. Each scenario runs in a
//! child process (this test binary re-run with `GREENHOUSE_CHILD` set),
//! because it aborts or changes process-wide settings.

use std::process::{Command, Output};
use std::time::Duration;

use greenhouse::Builder;

/// Re-runs this test binary for one test, as a child process.
fn child(test: &str, env: &[(&str, &str)]) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("GREENHOUSE_CHILD", test)
        .envs(env.iter().copied())
        .output()
        .expect("spawn the test binary")
}

fn in_child(test: &str) -> bool {
    std::env::var("GREENHOUSE_CHILD").is_ok_and(|v| v == test)
}

/// Recurses until the stack overflows (on purpose).
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = [n; 128];
    std::hint::black_box(&buf);
    recurse(n + 1).wrapping_add(std::hint::black_box(buf[7]))
}

#[test]
fn stack_overflow_is_reported_with_name_and_size_then_aborts() {
    if in_child("stack_overflow_is_reported_with_name_and_size_then_aborts") {
        let h = Builder::new()
            .name("deep-recursion")
            .stack_size(64 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = h.join();
        unreachable!("the overflow aborts the process");
    }
    let out = child(
        "stack_overflow_is_reported_with_name_and_size_then_aborts",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "aborted, not a plain SIGSEGV: {stderr}"
    );
    assert!(
        stderr.contains("greenlet 'deep-recursion' overflowed its stack of 65536 bytes"),
        "stderr: {stderr}"
    );
}

/// With every libc hook installed, the report still goes straight to the
/// kernel: the handler never enters the patched `write` (which could park
/// the overflowing greenlet and let others run on), and nothing else runs
/// after the overflow.
#[cfg(feature = "monkey")]
#[test]
fn overflow_under_monkey_patching_aborts_without_running_anyone_else() {
    const NAME: &str = "overflow_under_monkey_patching_aborts_without_running_anyone_else";
    if in_child(NAME) {
        greenhouse::monkey::patch_all();
        let started = std::rc::Rc::new(std::cell::Cell::new(false));
        let s = started.clone();
        greenhouse::spawn(move || {
            loop {
                greenhouse::sleep(Duration::from_millis(1));
                if s.get() {
                    println!("STILL-RUNNING");
                    std::process::exit(0);
                }
            }
        });
        let h = Builder::new()
            .name("patched-recursion")
            .stack_size(64 * 1024)
            .spawn(move || {
                started.set(true);
                recurse(0)
            })
            .unwrap();
        let _ = h.join();
        unreachable!("the overflow aborts the process");
    }
    let out = child(NAME, &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("STILL-RUNNING"), "{stdout}");
    assert!(
        stderr.contains("greenlet 'patched-recursion' overflowed its stack of 65536 bytes"),
        "stderr: {stderr}"
    );
}

fn libc_sigabrt() -> i32 {
    6
}

/// Set by the AddressSanitizer job in `.ci/run`.
fn skipped_under_asan(why: &str) -> bool {
    let asan = std::env::var_os("GREENHOUSE_ASAN").is_some();
    if asan {
        eprintln!("skipped under AddressSanitizer: {why}");
    }
    asan
}

#[test]
fn other_segfaults_are_not_reported_as_overflows() {
    if skipped_under_asan("ASan's own SIGSEGV handler reports the fault first") {
        return;
    }
    if in_child("other_segfaults_are_not_reported_as_overflows") {
        let h = greenhouse::spawn(|| {
            // SAFETY: deliberately faulting, in a child process, to check
            // the handler passes foreign faults on.
            unsafe { std::ptr::read_volatile(16 as *const u64) }
        });
        let _ = h.join();
        unreachable!();
    }
    let out = child("other_segfaults_are_not_reported_as_overflows", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(11), "died of SIGSEGV: {stderr}");
    assert!(!stderr.contains("overflowed"), "stderr: {stderr}");
}

#[test]
fn mprotect_fallback_works_and_running_out_of_maps_is_a_clear_error() {
    if skipped_under_asan("exhausting vm.max_map_count leaves ASan no maps for its shadow memory") {
        return;
    }
    if in_child("mprotect_fallback_works_and_running_out_of_maps_is_a_clear_error") {
        // Normal use works on the fallback.
        let hs: Vec<_> = (0..10u32).map(|i| greenhouse::spawn(move || i)).collect();
        assert_eq!(
            greenhouse::joinall(hs)
                .into_iter()
                .map(Result::unwrap)
                .sum::<u32>(),
            45
        );
        assert_eq!(greenhouse::stats().stack_guard, "mprotect(PROT_NONE)");
        // Keep greenlets alive until the map table is full.
        let mut alive = Vec::new();
        let err = loop {
            // 16 KiB stacks: ~1,000 per slab, so the map table runs out first.
            match Builder::new().stack_size(16 * 1024).spawn(|| ()) {
                Ok(h) => alive.push(h),
                Err(e) => break e,
            }
            assert!(alive.len() < 200_000, "never ran out of map entries");
        };
        let msg = err.to_string();
        assert!(msg.contains("vm.max_map_count"), "{msg}");
        // The free function reports it through join instead of panicking.
        let failed = loop {
            let h = greenhouse::spawn(|| ());
            if h.is_ready() {
                break h; // only a greenlet that could not be created is ready at once
            }
            alive.push(h);
            assert!(alive.len() < 200_000);
        };
        let r = failed.join();
        assert!(
            matches!(&r, Err(greenhouse::Error::Spawn(m)) if m.to_string().contains("vm.max_map_count")),
            "{r:?}"
        );
        // Freeing greenlets makes room again.
        drop(greenhouse::joinall(alive.drain(..)));
        assert_eq!(greenhouse::spawn(|| 2).join(), Ok(2));
        println!("CHILD-OK: {msg}");
        return;
    }
    let out = child(
        "mprotect_fallback_works_and_running_out_of_maps_is_a_clear_error",
        &[("GREENHOUSE_GUARD", "mprotect")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_panic_nobody_joins_is_reported_once_with_the_name() {
    if in_child("a_panic_nobody_joins_is_reported_once_with_the_name") {
        let lonely = Builder::new()
            .name("lonely")
            .spawn(|| -> () { panic!("nobody listens") });
        drop(lonely);
        let joined = Builder::new()
            .name("joined-one")
            .spawn(|| -> () { panic!("heard") })
            .unwrap();
        let late = Builder::new()
            .name("dropped-late")
            .spawn(|| -> () { panic!("late drop") });
        greenhouse::sleep(Duration::from_millis(5));
        assert!(joined.join().is_err());
        drop(late);
        return;
    }
    let out = child("a_panic_nobody_joins_is_reported_once_with_the_name", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert_eq!(
        stderr.matches("greenlet 'lonely' panicked").count(),
        1,
        "stderr: {stderr}"
    );
    assert!(stderr.contains("nobody listens"), "stderr: {stderr}");
    assert_eq!(
        stderr.matches("greenlet 'dropped-late' panicked").count(),
        1,
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("joined-one") && !stderr.contains("heard"),
        "stderr: {stderr}"
    );
}

/// Touches `kib` KiB of this greenlet's stack.
#[inline(never)]
fn touch_stack(kib: usize) -> u8 {
    let mut buf = [0u8; 1024];
    std::hint::black_box(&mut buf);
    if kib <= 1 {
        buf[7]
    } else {
        touch_stack(kib - 1).wrapping_add(std::hint::black_box(buf[3]))
    }
}

fn rss_kib() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 3,000 greenlets each dirty 96 KiB of stack, then finish. Freeing a
/// stack costs no system call; the pool trims in batches once more than
/// 1,024 free stacks hold memory, so most of the 288 MiB goes back. A
/// trimmed stack keeps its guard page: overflowing on one is still
/// reported. Run with both guard mechanisms.
#[test]
fn trimmed_stacks_give_memory_back_and_keep_their_guards() {
    const NAME: &str = "trimmed_stacks_give_memory_back_and_keep_their_guards";
    if in_child(NAME) {
        let before = rss_kib();
        let hs: Vec<_> = (0..3000)
            .map(|_| {
                Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(|| touch_stack(96))
                    .unwrap()
            })
            .collect();
        for h in greenhouse::joinall(hs) {
            h.unwrap();
        }
        let grown = rss_kib().saturating_sub(before);
        // Kept: at most 1,024 dirty free stacks of 96 KiB (plus slack).
        println!("RSS-GROWN {grown} KiB");
        // Under AddressSanitizer the RSS is mostly ASan's own (shadow
        // memory, quarantine): only the guard half of the test applies.
        if std::env::var_os("GREENHOUSE_ASAN").is_none() {
            assert!(grown < 160 * 1024, "RSS grew by {grown} KiB");
        }
        // Every one of the 3,000 stacks was used; at most 1,024 free ones
        // still hold memory, on top of the pool's LIFO. Hold 1,100 so that
        // the next stack handed out is one a trim released.
        let _holders: Vec<_> = (0..1100)
            .map(|_| {
                Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(|| greenhouse::sleep(Duration::from_secs(600)))
                    .unwrap()
            })
            .collect();
        let h = Builder::new()
            .name("after-trim")
            .stack_size(128 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = h.join();
        unreachable!("the overflow aborts the process");
    }
    for mode in ["madvise", "mprotect"] {
        let out = child(NAME, &[("GREENHOUSE_GUARD", mode)]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(stdout.contains("RSS-GROWN"), "{mode}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("greenlet 'after-trim' overflowed its stack"),
            "{mode}: {stdout}\n{stderr}"
        );
    }
}
