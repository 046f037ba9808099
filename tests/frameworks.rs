//! Real framework apps in watch mode, beside refpaths.rs and placement.rs.
//!
//! - An aiohttp service (aiohttp from PyPI, in a venv of pyenv's 3.12 this file makes under
//!   target/) that keeps every background task in a module-global set: the census names the
//!   set, growing, with the app's line that adds to it among its uses; with the documented
//!   pattern (each task discards itself) nothing grows.
//! - Debian's static, stripped LTO python3.11 running a Flask service on Debian's own
//!   python3-flask (installed by `cargo xtask setup`): the logger leak is named
//!   `logging.Logger.manager.loggerDict` and grows, the descriptors a thread pool leaks through
//!   `tempfile.mkstemp` grow with the app's `spool` frame in their stack; without the leaks
//!   nothing grows.
//!
//! Each service is driven by tests/apps/load.py and attached to after start-up (`-p`).

use std::path::PathBuf;
use std::process::Command;

use tracer_tests::*;

/// A venv with aiohttp from PyPI for pyenv's 3.`minor`.
fn aio_venv(minor: u32) -> PathBuf {
    apps::venv("aio", minor)
}

/// tests/apps/`name` run by `python` with `leaks`, driven on `paths` while tracer, attached
/// after start-up, watches it for 40 s: the process of report.json, and the summary.
fn watch_app(python: &str, name: &str, leaks: &str, paths: &str) -> (Process, String) {
    apps::watch_app(std::path::Path::new(python), name, leaks, paths)
}

/// The line of tests/apps/`name` that contains `needle`.
fn app_line(name: &str, needle: &str) -> usize {
    apps::app_line(name, needle) as usize
}

const AIO_PATHS: &str = "/event/{n}";

/// The task set of the aiohttp app: named by its module global, growing, with `handle`'s
/// `background_tasks.add(task)` line among its uses.
#[test]
fn aiohttp_task_set_named_312() {
    let python = aio_venv(12);
    let (p, summary) = watch_app(python.to_str().unwrap(), "aio_app.py", "tasks", AIO_PATHS);
    let c = p.census();
    assert!(c.error.is_none(), "{c:?}");
    let set = c
        .container("__main__.background_tasks")
        .or_else(|| c.container("aio_app.background_tasks"))
        .unwrap_or_else(|| panic!("the task set is not in the census: {c:?}"));
    assert_eq!(set.verdict, "growing", "{set:?}");
    assert_eq!(set.type_name, "set", "{set:?}");
    assert_eq!(set.root, "global", "{set:?}");
    // 40 requests a second for 40 s: more than a thousand tasks kept (hundreds when the suite's
    // other tests share the two CPUs).
    assert!(set.len >= 300, "{set:?}");
    let line = app_line("aio_app.py", "background_tasks.add(task)");
    assert!(
        set.uses
            .iter()
            .any(|u| u.starts_with("handle (") && u.ends_with(&format!("aio_app.py:{line})"))),
        "the adding line aio_app.py:{line} not among the uses: {set:?}"
    );
    // (Its "stacks", sampled from outside every 10 ms, are not asserted: `set.add` on that
    // line is over in microseconds, and a 40 s run at 40 requests a second may sample none.)
    // What grows with it: the tasks (a set's items are not read, it has no stable places).
    let tasks = c
        .type_named("_asyncio.Task")
        .unwrap_or_else(|| panic!("no _asyncio.Task count: {c:?}"));
    assert_eq!(tasks.verdict, "growing", "{tasks:?}");
    assert!(summary.contains("background_tasks"), "{summary}");
}

/// The same app and load, each task discarding itself when done: nothing grows.
#[test]
fn aiohttp_without_leak_312() {
    let python = aio_venv(12);
    let (p, _) = watch_app(python.to_str().unwrap(), "aio_app.py", "", AIO_PATHS);
    assert_nothing_grows(&p, "aiohttp without the leak");
}

const FLASK_PATHS: &str = "/user/{n},/upload/{n}";

/// Debian's static python3.11 with Debian's python3-flask (installed by `cargo xtask setup`).
fn debian_flask() -> &'static str {
    run_ok(Command::new(DEBIAN_PY311).args(["-c", "import flask"]));
    DEBIAN_PY311
}

/// On Debian's static, stripped python3.11: the logger leak named and growing, and the
/// mkstemp descriptors leaked by the thread pool growing, with the app's `spool` frame (the
/// mkstemp line) in their Python stack.
#[test]
fn flask_debian_static_leaks_311() {
    let python = debian_flask();
    let (p, summary) = watch_app(python, "flask_app.py", "logger,fd", FLASK_PATHS);
    let c = p.census();
    assert!(c.error.is_none(), "{c:?}");
    let loggers = c
        .container("logging.Logger.manager.loggerDict")
        .or_else(|| c.container("logging.root.manager.loggerDict"))
        .unwrap_or_else(|| panic!("loggerDict not in the census: {c:?}"));
    assert_eq!(loggers.verdict, "growing", "{loggers:?}");
    assert!(loggers.named, "{loggers:?}");
    assert!(
        summary.contains("Logger.manager.loggerDict")
            || summary.contains("root.manager.loggerDict"),
        "{summary}"
    );
    // Fed from the app's getLogger line, with logging's own code below it (stacks sampled on
    // CPU through the functions that name `loggerDict`).
    let line = app_line("flask_app.py", "return logging.getLogger(f\"user-");
    let fed = loggers.fed_from.as_ref();
    let a = fed.map_or("", |f| f.app_frame.as_str());
    assert!(
        a.starts_with("user_logger (") && a.ends_with(&format!("flask_app.py:{line})")),
        "{loggers:?}"
    );
    let via = fed.and_then(|f| f.via.as_deref()).unwrap_or_default();
    assert!(via.contains("logging/__init__.py:"), "{loggers:?}");

    let line = app_line("flask_app.py", "tempfile.mkstemp(");
    let spool = format!("flask_app.py:{line})");
    let fds = p
        .suspects_of("descriptors")
        .find(|s| {
            s.stack
                .iter()
                .any(|f| f.starts_with("spool (") && f.ends_with(&spool))
        })
        .unwrap_or_else(|| panic!("no descriptor suspect through spool ({spool}): {p:?}"));
    assert_eq!(fds.verdict, "growing", "{fds:?}");
    // Placed at the application's frame, spool's line, with the library's mkstemp below it
    // ("via").
    let a = fds.app_frame.as_deref().unwrap_or_default();
    assert!(a.starts_with("spool (") && a.ends_with(&spool), "{fds:?}");
    assert!(
        fds.via
            .iter()
            .any(|w| w.stack.iter().any(|f| f.contains("tempfile.py"))),
        "{fds:?}"
    );
}

/// The same app and load on Debian's static python3.11, without the leaks: nothing grows,
/// neither in the census nor among the descriptors.
#[test]
fn flask_debian_static_without_leaks_311() {
    let python = debian_flask();
    let (p, _) = watch_app(python, "flask_app.py", "", FLASK_PATHS);
    assert_healthy(&p, "flask on Debian's python3.11 without the leaks");
}

/// A venv with Django and SQLAlchemy from PyPI for pyenv's 3.12.
fn django_venv() -> PathBuf {
    apps::venv("django", 12)
}

const DJANGO_PATHS: &str = "/order/{n},/report/{n}";

/// A Django service connecting a signal receiver per request with `weak=False`, and keeping
/// the SQLAlchemy session of an engine made per request open: the signal's receivers named,
/// growing, used at the connecting line; the sessions' list named at the app's line, and the
/// database files they keep open growing at the request's line.
#[test]
fn django_signal_receivers_and_open_sessions_312() {
    let python = django_venv();
    let (p, _) = watch_app(
        python.to_str().unwrap(),
        "django_app.py",
        "signals,sessions",
        DJANGO_PATHS,
    );
    django_leaks_named(&p);
}

/// The same on Debian's python3.13 (Django and SQLAlchemy from PyPI in its root file system).
#[test]
fn django_signal_receivers_and_open_sessions_debian_313() {
    let b = debian("trixie", 13);
    let site = apps::debian_site(&b, "django");
    let served = apps::serve_debian(
        &b,
        &site,
        "django_app.py",
        "signals,sessions",
        DJANGO_PATHS,
        40,
    );
    django_leaks_named(&apps::watch(&served).0);
}

fn django_leaks_named(p: &Process) {
    let c = p.census();
    assert!(c.error.is_none(), "{c:?}");
    let connect = app_line("django_app.py", "# CONNECTED HERE");
    let receivers = c
        .containers
        .iter()
        .find(|k| k.name.ends_with("request_finished.receivers"))
        .unwrap_or_else(|| panic!("request_finished.receivers not named: {c:?}"));
    assert_eq!(receivers.verdict, "growing", "{receivers:?}");
    assert!(
        receivers
            .uses
            .iter()
            .any(|u| u.starts_with("order (") && u.ends_with(&format!("django_app.py:{connect})"))),
        "the connecting line django_app.py:{connect} not among the uses: {receivers:?}"
    );
    let kept = app_line("django_app.py", "# KEPT HERE");
    let sessions = c
        .containers
        .iter()
        .find(|k| k.name.ends_with("OPEN_SESSIONS"))
        .unwrap_or_else(|| panic!("OPEN_SESSIONS not named: {c:?}"));
    assert_eq!(sessions.verdict, "growing", "{sessions:?}");
    assert!(
        sessions
            .uses
            .iter()
            .any(|u| u.ends_with(&format!("django_app.py:{kept})"))),
        "{sessions:?}"
    );
    let files = p
        .suspects_of("descriptors")
        .find(|s| {
            s.app_frame
                .as_deref()
                .is_some_and(|a| a.starts_with("report (") && a.contains("django_app.py:"))
        })
        .unwrap_or_else(|| panic!("no descriptor suspect at report: {:?}", p.suspects));
    assert_eq!(files.verdict, "growing", "{files:?}");
}

/// The healthy twin: one receiver connected once; one engine, each request's session closed:
/// nothing grows, descriptors included.
#[test]
fn django_without_leaks_312() {
    let python = django_venv();
    let (p, _) = watch_app(python.to_str().unwrap(), "django_app.py", "", DJANGO_PATHS);
    assert_healthy(&p, "django without the leaks");
}
