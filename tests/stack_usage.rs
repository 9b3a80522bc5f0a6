//! `Greenlet::stack_usage` and `Builder::clean_stack`: the high-water mark
//! of a greenlet's stack, to a page.

use greenhouse::{Builder, Greenlet, StackUsage};

const PAGE: usize = 4096;

/// Touches about `bytes` of stack below the caller.
#[inline(never)]
fn deep(bytes: usize) -> u8 {
    let mut buf = [0u8; 8192];
    std::hint::black_box(&mut buf);
    if bytes > buf.len() {
        deep(bytes - buf.len()).wrapping_add(buf[17])
    } else {
        buf[1]
    }
}

/// Under AddressSanitizer (CI sets `GREENHOUSE_ASAN`), a function's local
/// arrays live on ASan's heap-allocated fake stack (its
/// use-after-return detection), so the real stack does not grow with them.
fn locals_on_a_fake_stack() -> bool {
    let asan = std::env::var_os("GREENHOUSE_ASAN").is_some();
    if asan {
        eprintln!("depth checks skipped under AddressSanitizer: locals live on its fake stack");
    }
    asan
}

fn usage_after(clean: bool, bytes: usize) -> StackUsage {
    Builder::new()
        .clean_stack(clean)
        .stack_size(512 * 1024)
        .spawn(move || {
            std::hint::black_box(deep(bytes));
            Greenlet::current()
                .stack_usage()
                .expect("a live greenlet has a stack")
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn a_clean_stack_reports_its_own_depth() {
    let shallow = usage_after(true, 0);
    let deeper = usage_after(true, 200 * 1024);
    assert_eq!(shallow.size, 512 * 1024);
    assert_eq!(shallow.touched % PAGE, 0);
    assert!(shallow.touched > 0);
    assert!(shallow.touched <= 8 * PAGE, "{shallow:?}");
    if locals_on_a_fake_stack() {
        return;
    }
    assert!(deeper.touched >= 200 * 1024, "{deeper:?}");
    assert!(deeper.touched < deeper.size, "{deeper:?}");
}

#[test]
fn a_reused_stack_remembers_earlier_users_until_released() {
    // The pool reuses the most recently freed stack first, with its pages.
    let deeper = usage_after(false, 300 * 1024);
    let after = usage_after(false, 0);
    assert!(
        after.touched >= deeper.touched,
        "{after:?} after {deeper:?}"
    );
    // A clean stack forgets them.
    let _ = usage_after(false, 300 * 1024);
    let clean = usage_after(true, 0);
    assert!(clean.touched <= 8 * PAGE, "{clean:?}");
}

#[test]
fn no_usage_for_main_or_the_dead() {
    assert_eq!(Greenlet::main().stack_usage(), None);
    let g = Greenlet::with_stack_size(64 * 1024, |(): ()| ()).unwrap();
    let before = g.stack_usage().expect("a created greenlet owns its stack");
    assert_eq!(before.size, 64 * 1024);
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_dead());
    assert_eq!(g.stack_usage(), None);
}

#[test]
fn usage_of_a_parked_greenlet_seen_from_outside() {
    let go = greenhouse::sync::Event::new();
    let g2 = go.clone();
    let h = Builder::new()
        .clean_stack(true)
        .spawn(move || {
            std::hint::black_box(deep(100 * 1024));
            g2.wait().unwrap();
        })
        .unwrap();
    greenhouse::yield_now(); // it runs until it parks in `wait`
    let u = h.greenlet().stack_usage().expect("parked, alive");
    assert!(locals_on_a_fake_stack() || u.touched >= 100 * 1024, "{u:?}");
    go.set();
    h.join().unwrap();
}
