//! The import graph of tracer/src: which top-level module uses which (`crate::NAME` paths, in
//! `use` lines and inline), checked against the layers the design gives them (docs/design.md):
//! every import points down, so there is no circle. `cargo test -p tracer --test imports --
//! --nocapture` prints the graph.
//!
//! Inside every crate under tracer/ (tracer/src, tracer/cpython/src), modules at any depth may not
//! import each other in a circle either: sibling and cousin modules, through `crate::` and
//! `super::` paths (a module and its own parent or child aside, and test modules aside). And the
//! decoding crate (tracer/cpython) does not depend on aya, so its tests build without BPF.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules, bottom first: a module may use only the ones before it.
const LAYERS: &[&str] = &[
    // The decoding crate (tracer-cpython, re-exported): it uses nothing of tracer's.
    "python",
    "procfs",
    "text",
    // Foundations: errors, helpers, plain data shared by every layer.
    "error",
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
    // Target discovery, probes, symbolization.
    "native",
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

// ---- Circles inside each crate ----

/// A module by its path from the crate root (`["census", "objects"]`; the root is empty).
type ModPath = Vec<String>;

/// The source directories of the crates under tracer/ (a `src` holding lib.rs or main.rs).
fn crate_sources() -> Vec<std::path::PathBuf> {
    let tracer = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![tracer.join("src")];
    for e in std::fs::read_dir(tracer).unwrap() {
        let src = e.unwrap().path().join("src");
        if src.join("lib.rs").exists() || src.join("main.rs").exists() {
            out.push(src);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `src` without its test items: an item under `#[cfg(test)]` (a `mod tests { ... }`, an `impl`,
/// a `use`) is cut out, and a test module declared by `#[cfg(test)] mod NAME;` is named in
/// `test_mods` (its file is left out).
fn without_tests(src: &str, test_mods: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        rest = &rest[i + "#[cfg(test)]".len()..];
        let item = rest.trim_start();
        if let Some(decl) = item
            .strip_prefix("mod ")
            .or_else(|| item.strip_prefix("pub mod "))
        {
            let name: String = decl
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if decl[name.len()..].trim_start().starts_with(';') {
                test_mods.push(name);
            }
        }
        // The item ends at its first `;` outside braces, or at the brace closing its body.
        let mut depth = 0;
        let mut end = rest.len();
        for (k, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The module paths a file's code names, resolved from module `at`: `crate::a::b`, `super::x`
/// (a group `{a, b::c}` gives each of its items), comment lines skipped.
fn named_paths(src: &str, at: &[String]) -> Vec<ModPath> {
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let segment = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b'$'
                    || bytes[i - 1] == b':'));
        if !starts {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        // The base: the crate root, or `at` minus one level per `super::`.
        let mut base: ModPath = if rest.starts_with("crate::") {
            i += "crate::".len();
            Vec::new()
        } else {
            at.to_vec()
        };
        while code[i..].starts_with("super::") {
            base.pop();
            i += "super::".len();
        }
        // Segments up to a group or the end of the path.
        let mut path = base;
        loop {
            let seg = segment(&code[i..]);
            if seg.is_empty() {
                break;
            }
            i += seg.len();
            path.push(seg);
            if code[i..].starts_with("::") {
                i += 2;
            } else {
                break;
            }
        }
        if code[i..].starts_with('{') {
            let end = code[i..].find('}').map_or(code.len(), |e| i + e);
            for item in code[i + 1..end].split(',') {
                let mut p = path.clone();
                p.extend(
                    item.trim()
                        .split("::")
                        .map(segment)
                        .filter(|s| !s.is_empty()),
                );
                out.push(p);
            }
            i = end;
        } else {
            out.push(path);
        }
    }
    out
}

/// The modules of a crate (by path) and their code without tests, test modules left out.
fn crate_modules(src: &Path) -> BTreeMap<ModPath, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut mods = BTreeMap::new();
    let mut test_mods: Vec<ModPath> = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().with_extension("");
        let mut path: ModPath = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|l| l == "mod")
            || (path.len() == 1 && (path[0] == "lib" || path[0] == "main"))
        {
            path.pop();
        }
        let mut tests = Vec::new();
        let text = without_tests(&std::fs::read_to_string(&f).unwrap(), &mut tests);
        test_mods.extend(tests.into_iter().map(|t| {
            let mut p = path.clone();
            p.push(t);
            p
        }));
        mods.insert(path, text);
    }
    mods.retain(|p, _| !test_mods.iter().any(|t| p.starts_with(t)));
    mods
}

/// module -> the modules it uses that are neither itself, nor its ancestors, nor its descendants.
fn inner_graph(mods: &BTreeMap<ModPath, String>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut g: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (m, text) in mods {
        let uses = g.entry(m.clone()).or_default();
        for p in named_paths(text, m) {
            let Some(target) = (1..=p.len())
                .rev()
                .map(|k| p[..k].to_vec())
                .find(|t| mods.contains_key(t))
            else {
                continue;
            };
            if !target.starts_with(m) && !m.starts_with(&target) {
                uses.insert(target);
            }
        }
    }
    g
}

/// The circles of a graph: each set of modules that reach each other, sorted.
fn circles(g: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<String>> {
    let reach = |from: &ModPath| -> BTreeSet<ModPath> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for n in g.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&ModPath, BTreeSet<ModPath>> = g.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (m, r) in &reached {
        if !r.contains(*m) {
            continue;
        }
        let mut circle: Vec<String> = r
            .iter()
            .filter(|n| reached.get(n).is_some_and(|back| back.contains(*m)))
            .map(|n| n.join("/"))
            .collect();
        circle.sort();
        if !out.contains(&circle) {
            out.push(circle);
        }
    }
    out
}

#[test]
fn no_import_circle_inside_crates() {
    let mut errors = Vec::new();
    let sources = crate_sources();
    assert!(
        sources.iter().any(|s| s.ends_with("cpython/src")),
        "the decoding crate is among {sources:?}"
    );
    for src in sources {
        let mods = crate_modules(&src);
        assert!(mods.len() > 5, "{}: {} modules", src.display(), mods.len());
        for c in circles(&inner_graph(&mods)) {
            errors.push(format!(
                "import circle inside {}: {}",
                src.display(),
                c.join(" <-> ")
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The check finds the circles the decoding code had (mem -> layouts -> debug_offsets -> mem;
/// census objects <-> backref, naming -> objects), through `super::` and `crate::` paths and a
/// group, and leaves parents, children and test modules alone.
#[test]
fn circles_inside_a_crate_are_found() {
    let m = |p: &str| -> ModPath {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mods: BTreeMap<ModPath, String> = [
        (
            "",
            "pub mod mem; pub mod layouts; pub mod census; use crate::mem::Memory;",
        ),
        (
            "mem",
            "use super::layouts::Layout;\n#[cfg(test)]\nmod tests { use crate::census::Census; }",
        ),
        ("layouts", "use super::debug_offsets::DebugOffsets;"),
        ("debug_offsets", "use crate::{mem, census::walk};"),
        ("census", "use super::mem::{self, Memory};"),
        ("census/walk", "use super::Census;"),
        ("census/objects", "use super::backref::Via;"),
        (
            "census/backref",
            "use super::{naming::Root, objects::Reader};",
        ),
        ("census/naming", "use super::objects::Reader;"),
    ]
    .into_iter()
    .map(|(p, t)| (m(p), without_tests(t, &mut Vec::new())))
    .collect();
    let found = circles(&inner_graph(&mods));
    assert_eq!(
        found,
        vec![
            vec![
                "census/backref".to_string(),
                "census/naming".into(),
                "census/objects".into()
            ],
            vec!["debug_offsets".to_string(), "layouts".into(), "mem".into()],
        ]
    );
    let mut tests = Vec::new();
    assert_eq!(
        without_tests("a\n#[cfg(test)]\nmod fixtures;\nb", &mut tests),
        "a\n\nb"
    );
    assert_eq!(tests, ["fixtures"]);
}

/// The dependencies of a Cargo.toml, by section: (section, name, the entry's text).
fn dependencies(toml: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
        } else if section.ends_with("dependencies") {
            if let Some((name, value)) = line.split_once('=') {
                out.push((
                    section.clone(),
                    name.trim().to_string(),
                    value.trim().to_string(),
                ));
            }
        }
    }
    out
}

/// The decoding crate builds and tests without the BPF toolchain: no aya among its dependencies,
/// tracer-common without its `user` feature (which pulls aya in) and without it by default, no
/// build script.
#[test]
fn the_decoding_crate_does_not_depend_on_aya() {
    let tracer = Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml = std::fs::read_to_string(tracer.join("cpython/Cargo.toml")).unwrap();
    let deps = dependencies(&toml);
    assert!(deps.iter().any(|d| d.1 == "tracer-common"), "{deps:?}");
    for (section, name, value) in &deps {
        assert!(
            !name.starts_with("aya"),
            "tracer/cpython [{section}] depends on {name}"
        );
        if name == "tracer-common" {
            assert!(
                !value.contains("\"user\""),
                "tracer/cpython uses tracer-common's user feature"
            );
        }
    }
    assert!(!tracer.join("cpython/build.rs").exists());
    let common = std::fs::read_to_string(tracer.join("../tracer-common/Cargo.toml")).unwrap();
    let default = common
        .lines()
        .find(|l| l.trim_start().starts_with("default"))
        .expect("tracer-common's default features");
    assert!(!default.contains("user"), "{default}");
    // And the check reads a dependency on aya when there is one.
    let with_aya = "[dependencies]\ntracer-common = { path = \"x\", features = [\"user\"] }\n[dev-dependencies]\naya = \"0.14\"\n";
    let d = dependencies(with_aya);
    assert!(d.iter().any(|d| d.1 == "aya" && d.0 == "dev-dependencies"));
    assert!(d
        .iter()
        .any(|d| d.1 == "tracer-common" && d.2.contains("\"user\"")));
}
