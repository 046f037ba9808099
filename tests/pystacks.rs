//! Python stacks: every outstanding allocation and open descriptor attributed to its Python line,
//! on every CPython this machine has, compared with tracemalloc.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tracer_tests::*;

const PYENV: &str = "/root/.pyenv/versions";

fn python(minor: u32) -> String {
    let dir = std::fs::read_dir(PYENV)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("3.{minor}.")))
        .unwrap_or_else(|| panic!("pyenv has no CPython 3.{minor}"));
    format!("{PYENV}/{dir}/bin/python3")
}

/// Line numbers of `# LEAK:<name>` and `# CHURN` markers in lines.py.
fn markers() -> (BTreeMap<String, BTreeSet<u32>>, BTreeSet<u32>) {
    let text = std::fs::read_to_string(workload("lines.py")).unwrap();
    let mut leaks: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut churn = BTreeSet::new();
    for (i, l) in text.lines().enumerate() {
        let n = i as u32 + 1;
        if let Some(pos) = l.find("# LEAK:") {
            leaks
                .entry(l[pos + 7..].trim().to_string())
                .or_default()
                .insert(n);
        } else if l.contains("# CHURN") {
            churn.insert(n);
        }
    }
    (leaks, churn)
}

/// The innermost frame of lines.py in a stack, as (function, line).
fn innermost(stack: &[String]) -> Option<(String, u32)> {
    stack.iter().rev().find_map(|f| {
        let (func, rest) = f.split_once(" (")?;
        let loc = rest.strip_suffix(')')?;
        let (file, line) = loc.rsplit_once(':')?;
        if !file.ends_with("/lines.py") {
            return None;
        }
        Some((func.to_string(), line.parse().ok()?))
    })
}

struct Run {
    allocs: Vec<(Vec<String>, u64)>,
    fds: Vec<(Vec<String>, u64)>,
    tracemalloc: BTreeMap<u32, i64>,
}

fn tracemalloc_lines(py: &str) -> BTreeMap<u32, i64> {
    let dir = TempDir::new("tmlines");
    let mut p = Proc(
        std::process::Command::new(py)
            .arg(workload("lines.py"))
            .arg("--done-file")
            .arg(dir.path().join("done.json"))
            .arg("--tmpdir")
            .arg(dir.path())
            .args(["--tracemalloc", "--exit"])
            .spawn()
            .unwrap(),
    );
    assert!(p
        .wait(Duration::from_secs(120))
        .expect("reference run")
        .success());
    let text = std::fs::read_to_string(dir.path().join("done.json")).unwrap();
    let start = text.find("\"tracemalloc_lines\": {").unwrap() + 22;
    let body = &text[start..start + text[start..].find('}').unwrap()];
    body.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((
                k.trim().trim_matches('"').parse().ok()?,
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}

fn traced_run(py: &str, extra: &[&str]) -> Run {
    let tracemalloc = tracemalloc_lines(py);
    let dir = TempDir::new("lines");
    let go = dir.path().join("go");
    let w = Proc(
        std::process::Command::new(py)
            .arg(workload("lines.py"))
            .arg("--done-file")
            .arg(dir.path().join("done.json"))
            .arg("--tmpdir")
            .arg(dir.path())
            .arg("--go-file")
            .arg(&go)
            .spawn()
            .unwrap(),
    );
    let pid = w.pid();
    wait_for("the interpreter", Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("python"))
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec![
        "-p".to_string(),
        pid.to_string(),
        "--min-age".into(),
        "2s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut t = Tracer::start(&argv, &dir.path().join("out"));
    t.wait_recording();
    std::fs::write(&go, b"").unwrap();
    wait_for("the workload", Duration::from_secs(240), || {
        dir.path().join("done.json").exists()
    });
    std::thread::sleep(Duration::from_millis(3000));
    let f = t.stop();
    drop(w);
    Run {
        allocs: f.folded("allocs.folded"),
        fds: f.folded("fds.folded"),
        tracemalloc,
    }
}

fn check(py: &str) {
    let (leaks, churn) = markers();
    let r = traced_run(py, &[]);
    let all_leak_lines: BTreeSet<u32> = leaks.values().flatten().copied().collect();
    let total = total(&r.allocs);
    assert!(total > 1_000_000, "several MB leak, got {total} B");
    let mut per_line: BTreeMap<u32, u64> = BTreeMap::new();
    for (stack, w) in &r.allocs {
        if let Some((_, line)) = innermost(stack) {
            *per_line.entry(line).or_default() += w;
        }
    }
    let leaked: u64 = per_line
        .iter()
        .filter(|(l, _)| all_leak_lines.contains(l))
        .map(|(_, w)| w)
        .sum();
    let churned: u64 = per_line
        .iter()
        .filter(|(l, _)| churn.contains(l))
        .map(|(_, w)| w)
        .sum();
    eprintln!(
        "{py}: {total} B outstanding, {leaked} B on leaking lines, {churned} B on churn lines"
    );
    eprintln!("per line: {per_line:?}\ntracemalloc: {:?}", r.tracemalloc);
    assert!(
        leaked as f64 >= 0.95 * total as f64,
        "only {leaked} of {total} B attributed to the leaking lines"
    );
    assert!(
        (churned as f64) < 0.01 * total as f64,
        "{churned} of {total} B on lines that do not leak"
    );

    // Per-line agreement with tracemalloc, for the lines holding real leaks.
    for name in ["list", "dict", "node", "thread", "thread2", "gen", "async"] {
        let lines = &leaks[name];
        let ours: u64 = lines
            .iter()
            .map(|l| per_line.get(l).copied().unwrap_or(0))
            .sum();
        let theirs: i64 = lines
            .iter()
            .map(|l| r.tracemalloc.get(l).copied().unwrap_or(0))
            .sum();
        let ratio = ours as f64 / theirs as f64;
        eprintln!(
            "  {name:8} lines {lines:?}: tracer {ours} B, tracemalloc {theirs} B, ratio {ratio:.3}"
        );
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{name}: tracer {ours} B vs tracemalloc {theirs} B"
        );
    }

    // Nested calls appear whole, root first.
    let list_line = *leaks["list"].iter().next().unwrap();
    let nested = r
        .allocs
        .iter()
        .find(|(s, _)| innermost(s).is_some_and(|(_, l)| l == list_line))
        .expect("a stack for the list leak");
    let labels: Vec<&String> = nested
        .0
        .iter()
        .filter(|f| f.contains("/lines.py:"))
        .collect();
    assert!(
        labels.iter().filter(|f| f.starts_with("nested (")).count() >= 6,
        "{:?}",
        nested.0
    );
    assert!(
        labels[0].starts_with("<module> ("),
        "root first: {:?}",
        nested.0
    );
    assert!(
        labels.last().unwrap().starts_with("leak_list ("),
        "{:?}",
        nested.0
    );

    // Deep recursion: bounded, and the cut is visible as the root frame.
    let deep_line = *leaks["deep"].iter().next().unwrap();
    let deep = r
        .allocs
        .iter()
        .find(|(s, _)| innermost(s).is_some_and(|(_, l)| l == deep_line))
        .expect("a stack for the deep leak");
    assert_eq!(deep.0[1], "[truncated]", "{:?}", deep.0);
    assert!(
        deep.0.iter().filter(|f| f.starts_with("deep (")).count() >= 40,
        "{:?}",
        deep.0
    );

    check_descriptors(&r, &leaks);
}

/// Every leaked descriptor is attributed to the line that opened it.
fn check_descriptors(r: &Run, leaks: &BTreeMap<String, BTreeSet<u32>>) {
    let file_line = *leaks["file"].iter().next().unwrap();
    let sock_line = *leaks["socket"].iter().next().unwrap();
    let mut files = 0;
    let mut socks = 0;
    for (stack, w) in &r.fds {
        let leaf = stack.last().unwrap();
        let line = innermost(stack).map(|(_, l)| l);
        if leaf.starts_with("[file ") && leaf.contains("/lines-") {
            assert_eq!(
                line,
                Some(file_line),
                "file opened at line {file_line}: {stack:?}"
            );
            files += w;
        }
        if leaf == "[socket inet/udp]" {
            assert_eq!(
                line,
                Some(sock_line),
                "socket created at line {sock_line}: {stack:?}"
            );
            socks += w;
        }
        assert!(!leaf.contains("closed-"), "closed file reported: {stack:?}");
    }
    assert_eq!((files, socks), (5, 5), "{:?}", r.fds);
}

#[test]
fn lines_cpython_38() {
    check(&python(8));
}

#[test]
fn lines_cpython_39() {
    check(&python(9));
}

#[test]
fn lines_cpython_310() {
    check(&python(10));
}

#[test]
fn lines_cpython_311() {
    check(&python(11));
}

#[test]
fn lines_cpython_312() {
    check(&python(12));
}

#[test]
fn lines_cpython_313() {
    check(&python(13));
}

/// Debian's static, stripped python3.11: descriptors with exact Python lines.
#[test]
fn debian_static_descriptor_lines() {
    let (leaks, _) = markers();
    let r = traced_run(DEBIAN_PY311, &[]);
    check_descriptors(&r, &leaks);
    // What the allocator hooks still see on this PGO/LTO build, against tracemalloc.
    let ours: u64 = r
        .allocs
        .iter()
        .filter(|(s, _)| innermost(s).is_some())
        .map(|(_, w)| w)
        .sum();
    let theirs: i64 = r.tracemalloc.values().sum();
    eprintln!(
        "Debian python3.11 allocation coverage: {ours} of {theirs} B ({:.1}%)",
        100.0 * ours as f64 / theirs as f64
    );
}

/// Names of the data symbols (objects, thread-locals) of an ELF file, from its symbol tables.
fn data_symbols(file: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dynamic in [false, true] {
        let mut cmd = std::process::Command::new("nm");
        cmd.arg("--defined-only");
        if dynamic {
            cmd.arg("-D");
        }
        let o = cmd.arg(file).output().expect("nm (binutils)");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let mut it = l.split_whitespace();
            let (Some(_), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if "BbDdRrGgSsVv".contains(ty) && ty.len() == 1 {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// Is this frame the process root frame ("comm (pid N)")?
fn is_process_frame(f: &str) -> bool {
    f.contains(" (pid ")
}

/// "function (file.py:LINE)", or "function (file.py)" when the line is not known.
fn is_python_frame(f: &str) -> bool {
    let Some((_, loc)) = f.strip_suffix(')').and_then(|f| f.split_once(" (")) else {
        return false;
    };
    loc.contains(".py")
        || loc.starts_with('<')
        || loc
            .rsplit_once(':')
            .is_some_and(|(_, line)| line.parse::<u32>().is_ok())
}

/// --no-native keeps Python frames only; --native adds the native frames that can be trusted:
/// never a data symbol (what a frame-pointer walk through code built without frame pointers
/// yields), and the allocator function as the leaf.
#[test]
fn native_frame_options() {
    let py = python(11);
    let prefix = Path::new(&py).parent().unwrap().parent().unwrap();
    let libpython = prefix.join("lib/libpython3.11.so.1.0");
    let mut data = data_symbols(libpython.to_str().unwrap());
    data.extend(data_symbols("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    assert!(data.contains("PyType_Type") && data.contains("PyUnicode_Type"));

    let plain = traced_run(&py, &["--no-native"]);
    assert!(total(&plain.allocs) > 1_000_000);
    for (stack, _) in plain.allocs.iter().chain(&plain.fds) {
        // The process, Python frames, markers ([truncated], [no Python stack]); for
        // descriptors the resource as the leaf.
        for f in &stack[1..] {
            assert!(
                is_python_frame(f) || f.starts_with('['),
                "only Python frames with --no-native, not {f:?}: {stack:?}"
            );
        }
        assert!(is_process_frame(&stack[0]), "{stack:?}");
    }

    let native = traced_run(&py, &["--native"]);
    let all = total(&native.allocs);
    assert!(all > 1_000_000);
    let mut native_frames = BTreeSet::new();
    for (stack, _) in native.allocs.iter().chain(&native.fds) {
        for f in &stack[1..] {
            assert!(
                !f.ends_with("_Type") && !data.contains(f.as_str()),
                "a data symbol as a frame: {f:?} in {stack:?}"
            );
            if !is_python_frame(f) && !f.starts_with('[') {
                native_frames.insert(f.clone());
            }
        }
    }
    eprintln!("native frames seen: {native_frames:?}");
    // The allocator function is the leaf of (nearly) every allocation stack, below the Python
    // frames.
    let allocator = |f: &str| {
        let f = f.trim_start_matches('_');
        f.starts_with("PyObject_") || f.starts_with("PyMem_")
    };
    let at_allocator: u64 = native
        .allocs
        .iter()
        .filter(|(s, _)| s.last().is_some_and(|l| allocator(l)))
        .map(|(_, w)| w)
        .sum();
    assert!(
        at_allocator as f64 >= 0.95 * all as f64,
        "{at_allocator} of {all} B under an allocator leaf: {:?}",
        by_leaf(&native.allocs)
    );
    assert!(
        native
            .allocs
            .iter()
            .any(|(s, _)| s.iter().any(|f| is_python_frame(f))
                && s.last().is_some_and(|l| allocator(l))),
        "Python frames above the allocator: {:?}",
        native.allocs
    );
}
