//! The import graph of tracer/src: which top-level module uses which (`crate::NAME` paths, in
//! `use` lines and inline), checked against the layers the design gives them (docs/design.md):
//! every import points down, so there is no circle. `cargo test -p tracer --test imports --
//! --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules, bottom first: a module may use only the ones before it.
const LAYERS: &[&str] = &[
    // Foundations: errors, /proc, helpers, plain data shared by every layer.
    "text",
    "error",
    "procfs",
    "util",
    "signals",
    "batch",
    "config",
    "frame",
    "place",
    "verdict",
    "output",
    // Where a process's resident memory is (/proc and the allocators' structures).
    "resident",
    // The data the collector hands over (and the census's findings).
    "snapshot",
    // Target discovery, CPython introspection, probes, symbolization.
    "native",
    "python",
    "discover",
    "launch",
    "probes",
    "symbolize",
    // Kernel maps -> snapshots.
    "collect",
    // Snapshots -> the report model (verdicts).
    "report",
    // The report model -> bytes.
    "render",
    // Where reports go while recording and at the end.
    "sink",
    // The command line and the subcommands.
    "cli",
    "doctor",
    "record",
];

/// Macros exported at the crate root, by the module that defines them.
const MACROS: &[(&str, &str)] = &[("say", "util"), ("outln", "util")];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The first path segment of every `crate::` path in `src` (comment lines skipped; a group
/// `crate::{a, b::c}` gives each of its items).
fn crate_paths(src: &str) -> Vec<String> {
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `$crate::` in a macro, or a longer name ending in `crate`.
        if before.is_some_and(|c| c == '$' || c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(ident));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// module -> the modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue; // the crate root: declares the modules, uses none of them by `crate::`
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let uses = g.entry(module.clone()).or_default();
        for name in crate_paths(&text) {
            let name = MACROS
                .iter()
                .find(|m| m.0 == name)
                .map(|m| m.1.to_string())
                .unwrap_or(name);
            if name != module {
                uses.insert(name);
            }
        }
    }
    g
}

#[test]
fn imports_point_down() {
    let g = graph();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut errors = Vec::new();
    for (m, uses) in &g {
        println!(
            "{m} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        let Some(rm) = rank(m) else {
            errors.push(format!("module {m} has no place in LAYERS"));
            continue;
        };
        for u in uses {
            match rank(u) {
                None => errors.push(format!("{m} uses {u}, which has no place in LAYERS")),
                Some(ru) if ru >= rm => errors.push(format!("{m} -> {u} points up")),
                _ => {}
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn paths_are_read_from_groups_and_inline() {
    let src = "use crate::{launch, probes::Probes};\n// crate::comment\nlet x = crate::util::f();\nmacro_rules! m { () => { $crate::util::g() } }";
    assert_eq!(crate_paths(src), vec!["launch", "probes", "util"]);
}
