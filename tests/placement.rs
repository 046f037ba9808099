//! Placement at the application's line: on a real Flask service (Flask from
//! PyPI in a venv of pyenv's 3.12 under target/, made once by the tests) driven by a bounded
//! local client, the suspects are placed at the innermost frame of the application's code
//! ("where in your code"), with the library line below it kept as "via" ("which allocation"):
//! the logger leak is the app's `getLogger` line, not `logging/__init__.py`; the descriptors a
//! thread pool leaks through `tempfile.mkstemp` are the app's `spool` line, not `tempfile.py`;
//! and `--app-path` moves the placement to the directories it names.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tracer_tests::*;

/// The venv with Flask from PyPI (pyenv's 3.12; shared with the other test files that run the
/// apps).
fn venv() -> PathBuf {
    let python = apps::venv("flask", 12);
    python.parent().unwrap().parent().unwrap().to_path_buf()
}

fn app_file() -> PathBuf {
    apps::app("flask_app.py")
}

/// The line of the app that contains `needle`.
fn app_line(needle: &str) -> u32 {
    apps::app_line("flask_app.py", needle)
}

/// The Flask app served by Flask's own server (threaded), with LEAKS, ready to answer; and the
/// bounded client requesting `path` (with `{n}` counting) 50 times a second.
fn serve(venv: &Path, leaks: &str, path: &str) -> apps::Served {
    let served = apps::serve(
        apps::Server::Alone,
        &venv.join("bin/python"),
        "flask_app.py",
        leaks,
        path,
        50,
    );
    // Attached after start-up, with requests already flowing.
    std::thread::sleep(Duration::from_secs(2));
    served
}

/// Records `pid` with `args` for `duration` (a checkpoint every 5 s); the suspects of
/// report.json and the summary.
fn record(pid: u32, args: &[&str], duration: &str, dir: &Path) -> (Vec<Suspect>, String) {
    let out = dir.join("out");
    let pid = pid.to_string();
    let mut all = vec!["-p", &pid, "-d", duration, "--interval", "5s"];
    all.extend_from_slice(args);
    let f = Tracer::start(&all, &out).finish();
    (f.report().first().suspects.clone(), f.stdout)
}

fn at_app_line(line: &str, function: &str, n: u32) -> bool {
    line == format!("{function} ({}:{n})", app_file().display())
}

/// Exact mode slows the server (a trap per allocation; other tests share the CPUs): long
/// enough for the leak to pass the noise floor at a few requests per second.
const EXACT: &str = "75s";

/// Exact mode, attached after start-up to the logger leak: the growing suspect ranked first is
/// the app's line, with logging's allocation beneath it. (Lines of Flask and werkzeug may grow
/// too: blocks they allocated are recycled by the leak through CPython's free lists.)
#[test]
fn exact_mode_places_the_logger_leak_at_the_app_line() {
    let venv = venv();
    let d = TempDir::new("place-logger");
    let app = serve(&venv, "logger", "/user/{n}");
    let (suspects, summary) = record(app.pid(), &[], EXACT, d.path());
    let growing: Vec<&Suspect> = suspects
        .iter()
        .filter(|s| s.resource == "memory" && s.verdict == "growing")
        .collect();
    let first = growing.first().expect("a growing memory suspect");
    // The leak's two app lines: the getLogger call (the loggers and their manager's entries)
    // and the route's log.debug (each new logger's level cache).
    let get_logger = app_line("return logging.getLogger(f\"user-{uid}\")");
    let debug = app_line("log.debug(");
    assert!(
        at_app_line(&first.line, "user_logger", get_logger)
            || at_app_line(&first.line, "user", debug),
        "first growing suspect: {} ({summary})",
        first.line
    );
    let logger = growing
        .iter()
        .find(|s| at_app_line(&s.line, "user_logger", get_logger))
        .unwrap_or_else(|| panic!("the getLogger line growing: {summary}"));
    assert_eq!(logger.app_frame.as_deref(), Some(logger.line.as_str()));
    let via = logger.via.first().expect("the library allocation below");
    assert!(via.line.contains("/logging/__init__.py:"), "{via:?}");
    assert!(via.stack[0].starts_with("getLogger ("), "{via:?}");
    // Placed at the application, never at the library line (stacks with no application frame,
    // such as the server's own request log, keep theirs).
    for s in &suspects {
        if let Some(app) = &s.app_frame {
            assert_eq!(&s.line, app);
        }
    }

    let text = format!(
        "user_logger ({}:{get_logger})  via getLogger (",
        app_file().display()
    );
    assert!(summary.contains(&text), "{text:?} in {summary}");
}

/// Watch mode (no allocator probe): the descriptors leaked by `tempfile.mkstemp` in a thread
/// pool are placed at the app's `spool` line, not at tempfile.py.
#[test]
fn watch_mode_places_the_descriptor_leak_at_the_app_line() {
    let venv = venv();
    let d = TempDir::new("place-fd");
    let app = serve(&venv, "fd", "/upload/{n}");
    let (suspects, summary) = record(app.pid(), &["--mode", "watch"], "30s", d.path());
    let mkstemp = app_line("tempfile.mkstemp(");
    let fd = suspects
        .iter()
        .find(|s| s.resource == "descriptors" && s.verdict == "growing")
        .unwrap_or_else(|| panic!("a growing descriptor suspect: {summary}"));
    assert!(at_app_line(&fd.line, "spool", mkstemp), "{}", fd.line);
    let via = fd.via.first().expect("tempfile below the app line");
    assert!(via.line.contains("/tempfile.py:"), "{via:?}");
    assert!(via.stack[0].starts_with("mkstemp ("), "{via:?}");
    for s in suspects.iter().filter(|s| s.verdict == "growing") {
        assert!(
            !s.line.contains("/tempfile.py"),
            "placed in tempfile: {}",
            s.line
        );
    }
    assert!(
        summary.contains(&format!(
            "spool ({}:{mkstemp}) [file]  via ",
            app_file().display()
        )),
        "{summary}"
    );
}

/// `--app-path` replaces the default rule: pointed at the venv's flask package, a Flask frame is
/// the placed one, with the app's own lines below it.
#[test]
fn app_path_moves_the_placement() {
    let venv = venv();
    let flask = venv.join("lib/python3.12/site-packages/flask");
    assert!(flask.is_dir(), "{}", flask.display());
    let d = TempDir::new("place-app-path");
    let app = serve(&venv, "logger", "/user/{n}");
    let (suspects, summary) = record(
        app.pid(),
        &["--app-path", flask.to_str().unwrap()],
        EXACT,
        d.path(),
    );
    let first = suspects
        .iter()
        .find(|s| s.resource == "memory" && s.verdict == "growing")
        .unwrap_or_else(|| panic!("a growing memory suspect: {summary}"));
    assert!(
        first.line.contains(&format!("{}/", flask.display())),
        "placed in flask: {}",
        first.line
    );
    assert_eq!(first.app_frame.as_deref(), Some(first.line.as_str()));
    // The app's file is not the application now: it is below, with logging.
    let app_path = app_file().display().to_string();
    assert!(
        first
            .via
            .iter()
            .any(|v| v.stack.iter().any(|f| f.contains(&app_path))),
        "the app's frames below the Flask frame: {summary}"
    );
    for s in suspects.iter().filter(|s| s.verdict == "growing") {
        assert!(!s.line.contains(&app_path), "placed in the app: {}", s.line);
    }
}

/// A relative `--app-path` is refused with a one-line error.
#[test]
fn relative_app_path_is_refused() {
    let out = run_tracer(&["record", "--app-path", "src", "-p", "1"]);
    assert_one_line_error(&out, "not an absolute directory");
}

/// The heap census (watch mode): a global of the standard library (`logging._handlerList`) grows,
/// used in logging's own code; the application's line that feeds it is reported with it.
#[test]
fn census_container_fed_from_the_app_line() {
    let script = workload("handlers.py");
    let fed = std::fs::read_to_string(&script)
        .unwrap()
        .lines()
        .position(|l| l.contains("  # FED"))
        .unwrap()
        + 1;
    let d = TempDir::new("place-fed");
    let w = Proc(
        Command::new(py(12))
            .arg(&script)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let out = d.path().join("out");
    let pid = w.pid().to_string();
    let f = Tracer::start(
        // Stacks are sampled once the list is judged growing (4 checkpoints).
        &[
            "-p",
            &pid,
            "--mode",
            "watch",
            "-d",
            "32s",
            "--interval",
            "4s",
        ],
        &out,
    )
    .finish();
    let report = f.report();
    let list = report
        .first()
        .census()
        .container("logging._handlerList")
        .unwrap_or_else(|| panic!("logging._handlerList in {}", f.stdout));
    assert_eq!(list.verdict, "growing", "{list:?}");
    let app = format!("add_handler ({}:{fed})", script.display());
    let fed_from = list.fed_from.as_ref();
    assert_eq!(
        fed_from.map(|f| f.app_frame.as_str()),
        Some(app.as_str()),
        "{list:?}"
    );
    let via = fed_from.and_then(|f| f.via.as_deref()).unwrap_or_default();
    assert!(
        via.starts_with("_addHandlerRef (") && via.contains("/logging/__init__.py:"),
        "{list:?}"
    );
    assert!(
        f.stdout
            .contains(&format!("fed from {app} via _addHandlerRef (")),
        "{}",
        f.stdout
    );
}
