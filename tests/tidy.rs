//! Keeps the code honest about ARCHITECTURE.md: module headers, layering,
//! where `unsafe` may appear, and that every module is documented there.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Layer of a top-level module: lower layers may not use higher ones.
fn layer(module: &str) -> Option<u32> {
    match module {
        "error" => Some(0),
        "stack" => Some(0),
        "greenlet" => Some(1),
        "hub" => Some(2),
        "net" | "generator" | "sync" | "pool" | "local" | "threadpool" | "signal" | "process"
        | "bridge" => Some(3),
        "monkey" | "runtime" => Some(4),
        _ => None,
    }
}

fn module_of(rel: &str) -> &str {
    rel.split('/').next().unwrap().trim_end_matches(".rs")
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    for (rel, text) in sources() {
        assert!(
            text.starts_with("//!"),
            "src/{rel} must start with a `//!` module doc"
        );
    }
}

/// What the crate root re-exports, by name: `pub use <module>::...`.
fn root_reexports() -> Vec<(String, String)> {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut out = Vec::new();
    for (i, _) in lib.match_indices("pub use ") {
        let stmt = &lib[i + "pub use ".len()..];
        let stmt = &stmt[..stmt.find(';').unwrap()];
        let module = stmt.split("::").next().unwrap().trim().to_string();
        for name in leaf_names(stmt) {
            out.push((name, module.clone()));
        }
    }
    out
}

/// The names a `use` path brings in: `a::b::{C, d::E}` gives `C` and `E`.
fn leaf_names(path: &str) -> Vec<String> {
    let path: String = path.chars().filter(|c| !c.is_whitespace()).collect();
    match path.find('{') {
        None => vec![path.rsplit("::").next().unwrap().to_string()],
        Some(b) => split_group(&path[b + 1..path.rfind('}').unwrap()])
            .iter()
            .flat_map(|item| leaf_names(item))
            .collect(),
    }
}

/// Splits the inside of a `{...}` group at its top-level commas.
fn split_group(inner: &str) -> Vec<String> {
    let (mut depth, mut cur, mut out) = (0, String::new(), Vec::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The first path segments after `crate::` at the start of `rest`: one
/// for a plain path, one per item of a `crate::{a, b::c}` group.
fn crate_targets(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .skip_while(|c| c.is_whitespace())
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if !rest.starts_with('{') {
        return vec![ident(rest)];
    }
    let mut depth = 0;
    let mut end = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            _ => {}
        }
    }
    split_group(&rest[1..end])
        .iter()
        .map(|item| ident(item))
        .collect()
}

/// Every `crate::` path in every module goes to the module's own layer or
/// a lower one. Root re-exports (`crate::Error`, `crate::spawn`) count as
/// the module they come from; anything else defined in `lib.rs` is the
/// top (API) layer. A name that is neither is an error, so nothing is
/// skipped silently.
#[test]
fn uses_only_go_down_the_layers() {
    let reexports = root_reexports();
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut checked = 0;
    for (rel, text) in sources() {
        let me = module_of(&rel);
        let Some(my_layer) = layer(me) else { continue }; // lib.rs re-exports all
        // Code only: a doc link to a higher layer is not a dependency.
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in code.match_indices("crate::") {
            let path = &code[i + "crate::".len()..];
            // The one allowed upward reference: the greenlet record carries
            // the hub's extension slot without reading it (ARCHITECTURE.md).
            if rel == "greenlet/inner.rs" && path.starts_with("hub::Slot;") {
                continue;
            }
            for target in crate_targets(path) {
                let module = if layer(&target).is_some() {
                    target.clone()
                } else if let Some((_, m)) = reexports.iter().find(|(n, _)| *n == target) {
                    m.clone()
                } else if lib.contains(&format!("pub fn {target}")) {
                    "lib".to_string()
                } else {
                    panic!("src/{rel}: cannot tell the layer of crate::{target}");
                };
                let l = layer(&module).unwrap_or(u32::MAX);
                assert!(
                    l <= my_layer || module == me,
                    "src/{rel} (layer {my_layer}) uses crate::{target} (from {module}, layer {l})"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} crate paths found: the parser is broken"
    );
}

#[test]
fn the_use_parser_sees_groups_and_reexports() {
    assert_eq!(
        crate_targets("{hub::{self, Hub}, greenlet::Inner, Error};"),
        ["hub", "greenlet", "Error"]
    );
    assert_eq!(crate_targets("stack::take(n)"), ["stack"]);
    let re = root_reexports();
    assert!(re.contains(&("spawn".into(), "hub".into())));
    assert!(re.contains(&("Error".into(), "error".into())));
    assert!(re.contains(&("Greenlet".into(), "greenlet".into())));
}

#[test]
fn unsafe_code_stays_in_the_listed_files() {
    let allowed = [
        "stack/mod.rs",
        "stack/slab.rs",
        "stack/overflow.rs",
        // Saving and restoring a run stack's bytes, the stack pointer.
        "stack/copy.rs",
        "greenlet/copy.rs",
        "greenlet/inner.rs",
        "greenlet/payload.rs",
        "greenlet/trampoline.rs",
        "hub/reactor.rs",
        // `unsafe fn`s only: the copy-stack contract (Builder::copy_stack,
        // set_copy_stacks).
        "hub/spawn.rs",
        // The blocked-hub detector: pthread_kill, its SIGURG handler.
        "hub/monitor.rs",
        "net/fd.rs",
        // sigaction, the self-pipe, the handler's write.
        "signal.rs",
        // pidfd_open, the pipes' O_NONBLOCK.
        "process.rs",
        "generator/yielder.rs",
        // The libc hooks: raw pointers from C callers, errno, dlsym.
        "monkey/mod.rs",
        "monkey/real.rs",
        "monkey/socket.rs",
        "monkey/poll.rs",
        "monkey/sleep.rs",
        "monkey/dns.rs",
        "monkey/accept.rs",
        "monkey/select.rs",
        "monkey/epoll.rs",
        "monkey/wait.rs",
        "monkey/fds.rs",
        "monkey/futex.rs",
        "monkey/pthread.rs",
        // The wakers of wait_future (a RawWaker vtable).
        "bridge/wait.rs",
        // sched_setaffinity; a socket fd handed between hubs.
        "runtime/mod.rs",
        "runtime/server.rs",
    ];
    for (rel, text) in sources() {
        let uses_unsafe = text.lines().any(|l| {
            let code = l.split("//").next().unwrap();
            code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl")
        });
        if uses_unsafe {
            assert!(
                allowed.contains(&rel.as_str()),
                "unexpected unsafe code in src/{rel}"
            );
        }
    }
}

/// Every file under `src/` is named in ARCHITECTURE.md: a top-level file
/// as `src/<file>.rs`, a file in a folder as `<file>.rs` inside that
/// folder's own section (the text under its `### \`src/<dir>/\`` heading).
#[test]
fn every_module_is_named_in_architecture_md() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let section = |dir: &str| -> Option<&str> {
        let start = doc.find(&format!("### `src/{dir}/`"))?;
        let body = &doc[start + 4..];
        let end = body
            .find("\n### ")
            .or_else(|| body.find("\n## "))
            .unwrap_or(body.len());
        Some(&body[..end])
    };
    for (rel, _) in sources() {
        let named = match rel.rsplit_once('/') {
            Some((dir, file)) => section(dir).is_some_and(|s| s.contains(&format!("`{file}`"))),
            None => rel == "lib.rs" || doc.contains(&format!("`src/{rel}`")),
        };
        assert!(
            named,
            "src/{rel} is not described in ARCHITECTURE.md (in its folder's section)"
        );
    }
}
