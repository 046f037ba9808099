//! The Flask app as it is deployed: under gunicorn (from PyPI, in the venv of pyenv's 3.12 that
//! refpaths.rs and placement.rs share, under target/), `gunicorn -w 1 --threads 2`, a master that
//! forks the worker running the app, driven by tests/apps/load.py. tracer is attached after
//! start-up, in watch mode, to the worker (the process a user finds with `pgrep -P MASTER`):
//! the logger dict and the `lru_cache` are named and growing (the app's module is `flask_app`
//! there, not `__main__`), the descriptors leaked through `tempfile.mkstemp` are placed at the
//! app's `spool` line; without the leaks nothing grows. Given the master's pid, which a user
//! naturally passes, tracer says that the workers are not traced and how to trace them, and
//! `--children` traces the worker.

use std::path::PathBuf;
use std::time::Duration;

use tracer_tests::apps::Server;
use tracer_tests::*;

/// The venv's python (Flask and gunicorn from PyPI, pyenv's 3.12).
fn venv() -> PathBuf {
    apps::venv("flask", 12)
}

const PATHS: &str = "/user/{n},/price/item{n}/3,/upload/{n}";

/// flask_app.py under gunicorn with `leaks`, driven on PATHS 40 times a second.
fn serve(leaks: &str) -> apps::Served {
    let served = apps::serve(Server::Gunicorn, &venv(), "flask_app.py", leaks, PATHS, 40);
    assert_ne!(
        served.pid(),
        served.server.pid(),
        "the worker, not the master"
    );
    served
}

/// The container of the census named `name` (either of `names`).
fn container<'a>(p: &'a Process, names: &[&str]) -> &'a Container {
    let c = p.census();
    names
        .iter()
        .find_map(|n| c.container(n))
        .unwrap_or_else(|| panic!("{names:?} not in the census: {c:?}"))
}

/// The worker watched for 40 s: the loggers and the lru_cache named and growing, the leaked
/// descriptors growing at the app's `spool` line with tempfile's `mkstemp` below it.
#[test]
fn gunicorn_worker_leaks_named_and_placed_312() {
    let served = serve("logger,lru,fd");
    let (p, summary) = apps::watch(&served);
    assert_eq!(p.pid, served.pid(), "{p:?}");
    assert!(p.census().error.is_none(), "{p:?}");

    let loggers = container(
        &p,
        &[
            "logging.Logger.manager.loggerDict",
            "logging.root.manager.loggerDict",
        ],
    );
    assert_eq!(loggers.verdict, "growing", "{loggers:?}");
    assert!(loggers.named, "{loggers:?}");
    // Each fed from the app's line: the getLogger call (logging's code below it), the call of
    // the cached method.
    let app_frame = |function: &str, needle: &str| {
        format!(
            "{function} ({}:{})",
            apps::app("flask_app.py").display(),
            apps::app_line("flask_app.py", needle)
        )
    };
    let fed = loggers.fed_from.as_ref();
    let user_logger = app_frame("user_logger", "return logging.getLogger(f\"user-");
    assert_eq!(
        fed.map(|f| f.app_frame.as_str()),
        Some(user_logger.as_str()),
        "{loggers:?}"
    );
    assert!(
        fed.and_then(|f| f.via.as_deref())
            .unwrap_or_default()
            .contains("logging/__init__.py:"),
        "{loggers:?}"
    );
    let lru = container(&p, &["flask_app.PriceService.quote (functools lru_cache)"]);
    assert_eq!(lru.verdict, "growing", "{lru:?}");
    assert_eq!(lru.type_name, "dict", "{lru:?}");
    let price = app_frame("price", "return service.quote(qty)");
    assert_eq!(
        lru.fed_from.as_ref().map(|f| f.app_frame.as_str()),
        Some(price.as_str()),
        "{lru:?}"
    );
    assert!(
        summary.contains("flask_app.PriceService.quote (functools lru_cache)"),
        "{summary}"
    );

    let line = apps::app_line("flask_app.py", "tempfile.mkstemp(");
    let spool = format!("flask_app.py:{line})");
    let fds = p
        .suspects_of("descriptors")
        .find(|s| s.verdict == "growing")
        .unwrap_or_else(|| panic!("no growing descriptor suspect: {p:?}"));
    // Placed at the application's frame, spool's mkstemp line, with the library below ("via").
    let a = fds.app_frame.as_deref().unwrap_or_default();
    assert!(a.starts_with("spool (") && a.ends_with(&spool), "{fds:?}");
    assert_eq!(fds.line, a, "{fds:?}");
    assert!(
        fds.via
            .iter()
            .any(|w| w.stack.iter().any(|f| f.contains("/tempfile.py:"))),
        "{fds:?}"
    );
    assert!(summary.contains(&format!("{a} [file]  via ")), "{summary}");
}

/// The same app, server and load without the leaks: nothing grows, neither in the census
/// (containers, types) nor among the descriptors.
#[test]
fn gunicorn_worker_without_leaks_312() {
    let served = serve("");
    let (p, _) = apps::watch(&served);
    assert_healthy(&p, "gunicorn's worker without the leaks");
}

/// Given gunicorn's master, the process a user finds first (`ps`, the pid file, systemd's main
/// pid): tracer says that its Python child, the worker, is not traced and names `--children`;
/// with `--children` the worker is traced beside the master, its loggers growing, and so is a
/// worker the master starts while tracer records.
#[test]
fn gunicorn_master_pid_points_to_the_worker_312() {
    let served = serve("logger");
    let (master, worker) = (served.server.pid(), served.pid());
    let (report, f) = apps::record(&["-p", &master.to_string(), "--mode", "watch", "-d", "2s"]);
    let hint = f
        .stderr
        .lines()
        .find(|l| {
            l.contains(&format!(
                "pid {master} has 1 Python child process not traced ({worker})"
            ))
        })
        .unwrap_or_else(|| panic!("no word of the worker: {}", f.stderr));
    assert!(hint.contains("add --children"), "{hint}");
    assert_eq!(report.processes.len(), 1, "{report:?}");

    // With --children: the worker, and a worker the master starts meanwhile (SIGTTIN: one
    // worker more, as an operator scales it; a worker restarted after --max-requests is new
    // the same way).
    let d = TempDir::new("gunicorn-children");
    let out = d.0.join("out");
    let mut t = Tracer::start(
        &[
            "-p",
            &master.to_string(),
            "--children",
            "--mode",
            "watch",
            "-d",
            "30s",
            "--interval",
            "5s",
        ],
        &out,
    );
    t.wait_recording();
    served.server.signal(libc::SIGTTIN);
    let mut added = Vec::new();
    wait_for(
        "the master's second worker",
        Duration::from_secs(20),
        || {
            added = apps::python_children(master);
            added.retain(|&p| p != worker);
            !added.is_empty()
        },
    );
    let f = t.finish();
    let report = f.report();
    assert!(!f.stderr.contains("not traced"), "{}", f.stderr);
    let procs = &report.processes;
    let mut pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    let mut expected = vec![master, worker, added[0]];
    expected.sort_unstable();
    assert_eq!(pids, expected, "the master and its two workers");
    let w = procs
        .iter()
        .find(|p| p.pid == worker)
        .unwrap_or_else(|| panic!("the worker {worker} is not traced: {pids:?}"));
    let loggers = container(
        w,
        &[
            "logging.Logger.manager.loggerDict",
            "logging.root.manager.loggerDict",
        ],
    );
    assert_eq!(loggers.verdict, "growing", "{loggers:?}");
    // The idle master grows nothing.
    let m = procs.iter().find(|p| p.pid == master).unwrap();
    let growing: Vec<&Container> = m.census().growing().collect();
    assert!(growing.is_empty(), "the idle master: {growing:?}");
}
