//! Async services in watch mode: asyncio tasks counted over time, and a FastAPI service's
//! per-session state placed at the app's line.
//!
//! - tests/workloads/asyncio_tasks.py (stdlib only) starts 40 tasks a second that pile up (kept
//!   in a set, or never awaited and kept alive by the event they wait on), and logs its own
//!   `len(asyncio.all_tasks())` with the wall clock: tracer's pending count at each census pass
//!   is checked against the app's at the same moment, on pyenv's 3.12 and Debian's python3.13;
//!   the healthy twin's tasks end, and nothing piles up.
//! - tests/apps/fastapi_app.py (FastAPI and uvicorn from PyPI, in a venv of pyenv's 3.12 made
//!   under target/) keeps a record per login in `request.app.state.sessions[token]` (Starlette's
//!   `State` proxies its attributes to a dict) and a task per request: the dict is named and its
//!   uses are the app's lines (none of the standard library's functions that merely name some
//!   `_state`), the tasks pile up at the app's lines; the healthy twin shows nothing growing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use tracer_tests::*;

/// The asyncio workload on `b` in `mode`, logging its task count into `dir`.
fn start_tasks(b: &Build, mode: &str, dir: &TempDir) -> (Proc, std::path::PathBuf) {
    let log = dir.path().join("tasks.log");
    let mut p = Proc(
        b.command("asyncio_tasks.py")
            .args([mode, "40"])
            .arg(b.guest(&log))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "{}: asyncio_tasks.py did not start",
        b.name
    );
    (p, log)
}

/// `tracer record --mode watch -p PID -d SECS --interval 5s`: report.json, and the summary.
fn watch(pid: u32, secs: u32) -> (Report, String) {
    let (report, f) = apps::record(&[
        "-p",
        &pid.to_string(),
        "--mode",
        "watch",
        "-d",
        &format!("{secs}s"),
        "--interval",
        "5s",
    ]);
    (report, f.stdout)
}

/// The asyncio tasks of the census of the report's process.
fn tasks_of<'a>(report: &'a Report, what: &str) -> &'a Tasks {
    let c = report.first().census();
    c.tasks
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no asyncio task counted: {c:?}"))
}

/// The app's own count (`WALL_CLOCK COUNT` lines) nearest to `at` (seconds since the epoch).
fn app_count(log: &Path, at: f64) -> (u64, f64) {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (t, n) = l.split_once(' ')?;
            Some((t.parse::<f64>().ok()?, n.trim().parse::<u64>().ok()?))
        })
        .min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs()))
        .map(|(t, n)| (n, t - at))
        .expect("the app logged its task count")
}

/// Tasks piling up (`set`: kept in a set; `orphan`: never awaited): pending counts over time
/// within a few tasks of the app's own (40 new ones a second, the app logs every 0.25 s), the
/// verdict growing, and the coroutine placed at the line its tasks wait at.
fn tasks_pile_up(b: &Build, mode: &str, waits: &str) -> Report {
    let dir = b.tempdir("tasks");
    let (p, log) = start_tasks(b, mode, &dir);
    let (report, summary) = watch(p.pid(), 26);
    let tasks = tasks_of(&report, &b.name);
    assert_eq!(tasks.verdict, "growing", "{}: {tasks:?}", b.name);
    assert!(tasks.series.len() >= 4, "{}: {tasks:?}", b.name);
    for &(at, n) in &tasks.series {
        let (app, dt) = app_count(&log, report.started_unix + at);
        let slack = 10 + app / 20;
        assert!(
            n.abs_diff(app) <= slack,
            "{}: {n} pending at {at:.1}s, the app counted {app} ({dt:+.2}s away): {tasks:?}",
            b.name
        );
    }
    let line = line_of("asyncio_tasks.py", waits);
    let top = tasks
        .by_coroutine
        .iter()
        .find(|g| g.coroutine.ends_with(&format!("asyncio_tasks.py:{line})")))
        .unwrap_or_else(|| {
            panic!(
                "{}: no tasks waiting at asyncio_tasks.py:{line}: {tasks:?}",
                b.name
            )
        });
    assert_eq!(top.verdict, "growing", "{}: {top:?}", b.name);
    if mode != "awaited" {
        // Kept in a set or never awaited: no task awaits them.
        assert!(
            top.awaited_by
                .first()
                .expect("awaited_by")
                .coroutine
                .is_none(),
            "{}: {top:?}",
            b.name
        );
    }
    assert!(
        summary.contains("asyncio tasks piling up"),
        "{}: {summary}",
        b.name
    );
    report
}

/// Tasks each awaited by a parent task (kept in a set): the children's group says which
/// coroutine awaits them, and where it waits; the parents' says no task awaits them.
#[test]
fn tasks_awaited_by_their_parent_312() {
    let report = tasks_pile_up(&pyenv(12), "awaited", "# SET WAITS HERE");
    let groups = &tasks_of(&report, "pyenv 3.12").by_coroutine;
    let parent = line_of("asyncio_tasks.py", "# PARENT WAITS HERE");
    let child = groups
        .iter()
        .find(|g| g.coroutine.starts_with("hold_session ("))
        .unwrap_or_else(|| panic!("{groups:?}"));
    assert_eq!(
        child
            .awaited_by
            .first()
            .and_then(|a| a.coroutine.as_deref())
            .map(|c| c.starts_with("parent (")
                && c.ends_with(&format!("asyncio_tasks.py:{parent})"))),
        Some(true),
        "{child:?}"
    );
}

#[test]
fn tasks_kept_in_a_set_pile_up_312() {
    tasks_pile_up(&pyenv(12), "set", "# SET WAITS HERE");
}

#[test]
fn tasks_never_awaited_pile_up_debian_313() {
    tasks_pile_up(&debian("trixie", 13), "orphan", "# ORPHAN WAITS HERE");
}

/// The healthy twin: every task ends and leaves the set; a handful pending, not growing.
#[test]
fn tasks_that_end_do_not_pile_up_312() {
    let b = pyenv(12);
    let dir = b.tempdir("tasks-healthy");
    let (p, _log) = start_tasks(&b, "healthy", &dir);
    let (report, summary) = watch(p.pid(), 26);
    let tasks = tasks_of(&report, "pyenv 3.12");
    assert_ne!(tasks.verdict, "growing", "{tasks:?}");
    assert!(tasks.pending < 20, "{tasks:?}");
    assert!(!summary.contains("piling up"), "{summary}");
}

const FASTAPI_PATHS: &str = "/login/{n},/spawn/{n},/refresh/{n}";

/// FastAPI under uvicorn keeping a session per login in `app.state` and tasks per request:
/// the sessions dict named through Starlette's `State`, used at the app's lines only; the
/// tasks piling up at the app's lines.
#[test]
fn fastapi_state_and_tasks_placed_312() {
    let served = apps::serve(
        apps::Server::Alone,
        &apps::fastapi_venv(),
        "fastapi_app.py",
        "sessions,tasks,orphans",
        FASTAPI_PATHS,
        30,
    );
    fastapi_leaks_placed(&served, "pyenv 3.12");
}

/// The same on Debian's python3.13 (FastAPI and uvicorn from PyPI in its root file system).
#[test]
fn fastapi_state_and_tasks_placed_debian_313() {
    let b = debian("trixie", 13);
    let site = apps::debian_site(&b, "fastapi");
    let served = apps::serve_debian(
        &b,
        &site,
        "fastapi_app.py",
        "sessions,tasks,orphans",
        FASTAPI_PATHS,
        30,
    );
    fastapi_leaks_placed(&served, &b.name);
}

fn fastapi_leaks_placed(served: &apps::Served, what: &str) {
    let (report, summary) = watch(served.pid(), 40);
    let c = report.first().census();
    let sessions = c
        .containers
        .iter()
        .find(|k| k.name.ends_with(r#"app.state._state["sessions"]"#))
        .unwrap_or_else(|| panic!("{what}: app.state's sessions not named: {c:?}"));
    assert_eq!(sessions.verdict, "growing", "{what}: {sessions:?}");
    // Sized: each session's dict with what it alone holds (its list of scopes, its history).
    let each = sessions.holds.as_ref().map_or(0.0, |h| h.mean_deep_bytes);
    assert!((200.0..4096.0).contains(&each), "{what}: {sessions:?}");
    let uses = &sessions.uses;
    let login = apps::app_line("fastapi_app.py", "request.app.state.sessions[token] =");
    assert!(
        uses.iter()
            .any(|u| u.starts_with("login (") && u.ends_with(&format!("fastapi_app.py:{login})"))),
        "{what}: the storing line fastapi_app.py:{login} not among the uses: {sessions:?}"
    );
    assert!(
        uses.iter().all(|u| u.contains("fastapi_app.py:")),
        "{what}: a use that does not touch app.state: {sessions:?}"
    );
    let tasks = c.tasks.as_ref().expect("asyncio tasks");
    assert_eq!(tasks.verdict, "growing", "{what}: {tasks:?}");
    for (function, needle) in [
        ("watch_session", "# TASK WAITS"),
        ("refresh_cache", "# ORPHAN WAITS"),
    ] {
        let line = apps::app_line("fastapi_app.py", needle);
        let g = tasks
            .by_coroutine
            .iter()
            .find(|g| g.coroutine.starts_with(function))
            .unwrap_or_else(|| panic!("{what}: no {function} tasks: {tasks:?}"));
        assert!(
            g.coroutine.ends_with(&format!("fastapi_app.py:{line})")),
            "{what}: {function} waits at fastapi_app.py:{line}: {g:?}"
        );
        assert_eq!(g.verdict, "growing", "{what}: {g:?}");
    }
    assert!(
        summary.contains("asyncio tasks piling up"),
        "{what}: {summary}"
    );
}

/// The healthy twin: sessions bounded, tasks that end: nothing grows, no task piles up.
#[test]
fn fastapi_without_leaks_312() {
    let python = apps::fastapi_venv();
    let served = apps::serve(
        apps::Server::Alone,
        &python,
        "fastapi_app.py",
        "",
        FASTAPI_PATHS,
        30,
    );
    let (report, summary) = watch(served.pid(), 40);
    assert_nothing_grows(report.first(), "FastAPI without leaks");
    assert!(!summary.contains("piling up"), "{summary}");
}
