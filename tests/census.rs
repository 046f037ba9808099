//! Heap census (no probe: the gc's lists read from outside) on every build of `builds()`:
//! pyenv 3.8-3.13, Debian's static python3.11, and Debian trixie's 3.13.5 and sid's 3.14 and
//! 3.15 in root file systems (layouts from their debug offsets, gc heads found live): the growing containers are named by how they are reachable (instance
//! attribute of a module global, key of a global dict, class attribute), with the lines that load
//! their global; a bounded cache on the same instance is stable; what the leak is made of is
//! said. Locals of a running frame are roots too (a worker's state in its loop), and so are the
//! locals of a suspended coroutine (an asyncio task waiting on its queue).

use std::collections::BTreeMap;
use std::time::Duration;

use tracer_tests::*;

/// `# USE:<name>` markers of registry.py: name -> line.
fn uses() -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(workload("registry.py")).unwrap();
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let tag = l.split("# USE:").nth(1)?.trim().to_string();
            Some((tag, i as u32 + 1))
        })
        .collect()
}

fn census_of(b: &Build, script: &str) -> Census {
    let d = b.tempdir("census");
    let ready = d.0.join("ready");
    let w = Proc(b.command(script).arg(b.guest(&ready)).spawn().unwrap());
    wait_for("the workload to start", Duration::from_secs(20), || {
        ready.exists()
    });
    let out = d.0.join("out");
    let pid = w.pid().to_string();
    let t = Tracer::start(
        &[
            "-p",
            &pid,
            "--mode",
            "watch",
            "--interval",
            "3s",
            "-d",
            "25s",
        ],
        &out,
    );
    let f = t.finish();
    assert!(f.stdout.contains("heap census"), "{}", f.stdout);
    assert!(!f.stderr.contains("WARNING: CPython"), "{}", f.stderr);
    f.report().first().census().clone()
}

/// The census's container of that name.
fn named<'a>(c: &'a Census, name: &str, python: &str) -> &'a Container {
    c.container(name)
        .unwrap_or_else(|| panic!("{python}: {name} not in the census: {c:?}"))
}

fn check(b: &Build) {
    let python = &b.name;
    let c = census_of(b, "registry.py");
    assert!(c.error.is_none(), "{python}: {c:?}");
    assert!(c.passes >= 6, "{python}: {c:?}");
    let find = |name: &str| named(&c, name, python);
    let lines = uses();
    for (name, ty, tag, holds) in [
        ("__main__.REG.items", "list", "items", "str"),
        ("__main__.REG.by_name", "dict", "by_name", "list"),
        ("__main__.SESSIONS[\"users\"]", "list", "sessions", "dict"),
        ("__main__.Store.history", "list", "history", "float"),
    ] {
        let k = find(name);
        assert_eq!(k.verdict, "growing", "{python}: {k:?}");
        assert_eq!(k.type_name, ty, "{python}: {k:?}");
        // About 50 items every 50 ms plus the loop's own time: between 20,000 and 60,000/min.
        assert!(
            (15_000.0..70_000.0).contains(&k.growth_per_min),
            "{python}: {k:?}"
        );
        assert_eq!(k.holds_first(), Some(holds), "{python}: {k:?}");
        let line = format!("registry.py:{})", lines[tag]);
        assert!(
            k.uses.iter().any(|u| u.ends_with(&line)),
            "{python}: {name} used at line {line}: {k:?}"
        );
    }
    let lru = find("__main__.REG.lru");
    assert_eq!(lru.verdict, "stable", "{python}: {lru:?}");
    assert_eq!(lru.len, 500, "{python}: {lru:?}");
    // The collected cycles do not make their type grow. The census lists its ten types with the
    // growing ones first: when a type that is not growing is listed too, every growing type is
    // there, and Node is not one of them.
    let types = &c.types;
    let growing: Vec<&str> = types
        .iter()
        .filter(|t| t.verdict == "growing")
        .map(|t| t.name.as_str())
        .collect();
    assert!(
        growing.len() < types.len(),
        "{python}: every growing type listed: {types:?}"
    );
    assert!(
        !growing.contains(&"Node"),
        "{python}: Node growing: {types:?}"
    );
}

/// Locals of a running frame are roots too: a worker's state kept in its loop's locals.
fn check_locals(b: &Build) {
    let python = &b.name;
    let c = census_of(b, "worker.py");
    let find = |name: &str| named(&c, name, python);
    for (name, ty) in [
        ("run() local seen", "dict"),
        ("run() local state.pending", "list"),
    ] {
        let k = find(name);
        assert_eq!(k.verdict, "growing", "{python}: {k:?}");
        assert_eq!(k.type_name, ty, "{python}: {k:?}");
        // Where the frame runs: a line of run() in worker.py, and the stack down to it.
        let at = k.uses.first().map_or("", String::as_str);
        assert!(
            at.starts_with("run (") && at.contains("worker.py:"),
            "{python}: {k:?}"
        );
        let frames: &[String] = k.stacks.first().map_or(&[], |s| &s.frames[..]);
        assert!(
            frames.len() == 2 && frames[0].starts_with("<module> (") && frames[1] == at,
            "{python}: {k:?}"
        );
    }
    let recent = find("run() local recent");
    assert_ne!(recent.verdict, "growing", "{python}: {recent:?}");
}

/// The locals of suspended coroutines are roots too: an asyncio task waiting on its queue is
/// on no thread's stack, and what it keeps in its locals is named by them.
fn check_suspended(b: &Build) {
    let python = &b.name;
    let c = census_of(b, "async_worker.py");
    let k = named(&c, "suspended consume() local sessions", python);
    assert_eq!(k.verdict, "growing", "{python}: {k:?}");
    assert_eq!(k.type_name, "dict", "{python}: {k:?}");
    assert_eq!(k.root, "local", "{python}: {k:?}");
    // Where the coroutine waits: a line of consume() in async_worker.py.
    let at = k.uses.first().map_or("", String::as_str);
    assert!(
        at.starts_with("consume (") && at.contains("async_worker.py:"),
        "{python}: {k:?}"
    );
    // Nothing else grows (its bounded `recent` list among them, when reported).
    for k in c.growing() {
        assert_eq!(
            k.name, "suspended consume() local sessions",
            "{python}: {k:?}"
        );
    }
}

/// Runs `f` on every build of the test list at once (the census costs the targets nothing;
/// ~30 s), each on a private copy of its interpreter: the growth rates are judged, and another
/// test's allocator probes on the same file would slow the workloads down.
fn on_all_builds(f: fn(&Build)) {
    let builds: Vec<Build> = builds().iter().map(|b| b.private("census")).collect();
    let n = builds.len();
    on_builds(builds, n, f);
}

#[test]
fn census_names_growing_containers() {
    on_all_builds(check);
}

#[test]
fn census_names_locals_of_running_frames() {
    on_all_builds(check_locals);
}

#[test]
fn census_names_locals_of_suspended_coroutines() {
    on_all_builds(check_suspended);
}
