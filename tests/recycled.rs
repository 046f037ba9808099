//! Recycled objects in exact mode: CPython hands lists, dicts, tuples, floats and dict keys
//! tables out of its free lists without calling the allocator, so without the `_Py_NewReference`
//! probe (and the keys table probes) a leaked dict keeps the stack of the json work that freed
//! its block first. Attached after start-up (`-p`) to a loop that leaks a string list and a dict
//! cache next to json churn, collected cycles and a bounded cache, on pyenv 3.8-3.13 (3.8
//! through its free lists' constructors: `_Py_NewReference` is a header inline there): nearly
//! all the bytes gained sit on the leaking lines and no other line is called growing; on a
//! build that inlines it (Debian's LTO python3.11) tracer says so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracer_tests::*;

const INLINED: &str =
    "recycled objects keep their first stack: _Py_NewReference is inlined in this build";

/// Line numbers of the `# LEAK` markers in recycle.py.
fn leak_lines() -> BTreeSet<u32> {
    let text = std::fs::read_to_string(workload("recycle.py")).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains("# LEAK"))
        .map(|(i, _)| i as u32 + 1)
        .collect()
}

/// The line of recycle.py's innermost frame in a folded stack.
fn innermost_line(stack: &[String]) -> Option<u32> {
    stack.iter().rev().find_map(|f| {
        let loc = f.split_once(" (")?.1.strip_suffix(')')?;
        let (file, line) = loc.rsplit_once(':')?;
        file.ends_with("/recycle.py").then(|| line.parse().ok())?
    })
}

struct Run {
    stderr: String,
    /// Outstanding bytes by recycle.py line (None: no recycle.py frame).
    bytes: BTreeMap<Option<u32>, u64>,
    /// The suspects called growing, by their line label.
    growing: Vec<String>,
}

/// Starts recycle.py, attaches exact mode once it is up, lets it work for `secs`.
fn traced(b: &Build, secs: u32) -> Run {
    let dir = b.tempdir("recycle");
    let go = dir.path().join("go");
    let w = Proc(b.command("recycle.py").arg(b.guest(&go)).spawn().unwrap());
    wait_for("the workload to start", Duration::from_secs(60), || {
        dir.path().join("go.ready").exists()
    });
    let pid = w.pid().to_string();
    let dur = format!("{secs}s");
    let out = TempDir::new("recycle-out");
    let mut t = Tracer::start(
        &[
            "-p",
            &pid,
            "--min-age",
            "2s",
            "--interval",
            "3s",
            "-d",
            &dur,
        ],
        out.path(),
    );
    t.wait_recording();
    std::fs::write(&go, b"").unwrap();
    let f = t.finish();
    drop(w);
    let mut bytes = BTreeMap::new();
    for (stack, n) in f.folded("allocs.folded") {
        *bytes.entry(innermost_line(&stack)).or_insert(0) += n;
    }
    let growing = f
        .report()
        .processes
        .iter()
        .flat_map(|p| p.suspects_of("memory"))
        .filter(|s| s.verdict == "growing")
        .map(|s| s.line.clone())
        .collect();
    Run {
        stderr: f.stderr,
        bytes,
        growing,
    }
}

fn check(minor: u32) {
    let b = pyenv(minor);
    let r = traced(&b, 18);
    let leaks = leak_lines();
    let total: u64 = r.bytes.values().sum();
    let on_leaks: u64 = r
        .bytes
        .iter()
        .filter(|(l, _)| l.is_some_and(|l| leaks.contains(&l)))
        .map(|(_, n)| n)
        .sum();
    let pct = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    println!(
        "{}: {:.1}% of {total} bytes on the leaking lines; by line: {:?}",
        b.name,
        pct(on_leaks),
        r.bytes
            .iter()
            .map(|(l, n)| format!("{l:?}={:.1}%", pct(*n)))
            .collect::<Vec<_>>()
    );
    assert!(!r.stderr.contains(INLINED), "{}: {}", b.name, r.stderr);
    assert!(
        total > 100_000,
        "{}: only {total} bytes outstanding",
        b.name
    );
    assert!(
        pct(on_leaks) >= 95.0,
        "{}: {:.1}% on the leaking lines",
        b.name,
        pct(on_leaks)
    );
    assert!(pct(total - on_leaks) < 3.0, "{}", b.name);
    let leak_labels: Vec<String> = leaks.iter().map(|l| format!("recycle.py:{l})")).collect();
    assert!(!r.growing.is_empty(), "{}: nothing growing", b.name);
    for g in &r.growing {
        assert!(
            leak_labels.iter().any(|l| g.ends_with(l.as_str())),
            "{}: {g} called growing",
            b.name
        );
    }
}

#[test]
fn recycled_cpython_38() {
    check(8);
}

#[test]
fn recycled_cpython_39() {
    check(9);
}

#[test]
fn recycled_cpython_310() {
    check(10);
}

#[test]
fn recycled_cpython_311() {
    check(11);
}

#[test]
fn recycled_cpython_312() {
    check(12);
}

#[test]
fn recycled_cpython_313() {
    check(13);
}

/// Debian's static python3.11 inlines `_Py_NewReference` (LTO): said at attach.
#[test]
fn recycled_debian_static_is_said() {
    let b = Build::host(DEBIAN_PY311);
    let r = traced(&b, 4);
    assert!(r.stderr.contains(INLINED), "{}", r.stderr);
}
