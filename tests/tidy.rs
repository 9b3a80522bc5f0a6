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
        "net" | "generator" | "sync" | "pool" | "local" | "threadpool" => Some(3),
        "monkey" => Some(4),
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

#[test]
fn uses_only_go_down_the_layers() {
    for (rel, text) in sources() {
        let me = module_of(&rel);
        let Some(my_layer) = layer(me) else { continue }; // lib.rs re-exports all
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let target: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // `crate::Error` is the re-export of `error::Error`.
            let target = if target == "Error" {
                "error".to_string()
            } else {
                target
            };
            if let Some(l) = layer(&target) {
                assert!(
                    l <= my_layer || target == me,
                    "src/{rel} (layer {my_layer}) uses crate::{target} (layer {l})"
                );
            }
        }
    }
}

#[test]
fn unsafe_code_stays_in_the_listed_files() {
    let allowed = [
        "stack/mod.rs",
        "stack/slab.rs",
        "stack/overflow.rs",
        "greenlet/inner.rs",
        "greenlet/payload.rs",
        "greenlet/trampoline.rs",
        "hub/reactor.rs",
        "net/fd.rs",
        "generator/yielder.rs",
        // The libc hooks: raw pointers from C callers, errno, dlsym.
        "monkey/mod.rs",
        "monkey/real.rs",
        "monkey/socket.rs",
        "monkey/poll.rs",
        "monkey/sleep.rs",
        "monkey/dns.rs",
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

#[test]
fn every_module_is_named_in_architecture_md() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    for (rel, _) in sources() {
        let (dir, file) = match rel.rsplit_once('/') {
            Some((d, f)) => (Some(d), f),
            None => (None, rel.as_str()),
        };
        let named = match dir {
            // A file in a folder: the folder's heading plus its file name.
            Some(d) => doc.contains(&format!("`src/{d}/`")) && doc.contains(&format!("`{file}`")),
            None => doc.contains(&format!("`src/{file}`")),
        };
        assert!(named, "src/{rel} is not described in ARCHITECTURE.md");
    }
}
