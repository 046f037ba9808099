//! Worker servers, traced from their master with `--children` in watch mode (45 s, a census pass
//! every 5 s), each with a healthy twin in which nothing grows:
//!
//! - Celery's prefork pool (Celery from PyPI) on a real Redis broker (Debian's redis-server,
//!   started by the test on a free loopback port): tests/apps/celery_app.py's task keeps every
//!   result in a module dict; the dict is named in the pool child that runs the task, growing,
//!   used at the task's line; Celery's own bookkeeping in the master does not grow.
//! - FastAPI (tests/apps/fastapi_app.py) under `uvicorn --workers 2` (spawned interpreters) and
//!   under gunicorn with two uvicorn workers (forked): the sessions kept in `app.state` named in
//!   the workers, used at the app's line, and their tasks piling up at the app's line.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracer_tests::apps::Server;
use tracer_tests::*;

/// A Redis server of its own on a free loopback port (no persistence), ended with the test.
struct Redis {
    proc: Proc,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = apps::free_port();
        let proc = Proc(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (cargo xtask setup installs it)"),
        );
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { proc, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

fn celery_venv() -> std::path::PathBuf {
    apps::venv("celery", 12)
}

/// `tracer record --mode watch --children -p MASTER -d 45s --interval 5s`: report.json. (Celery's
/// own bounded set of recent requests must be seen full in the master: bounded at 300 here, it
/// fills in 8 s at the producer's rate, more on a loaded machine; see `celery`.)
fn watch_tree(master: u32) -> Report {
    apps::record(&[
        "-p",
        &master.to_string(),
        "--children",
        "--mode",
        "watch",
        "-d",
        "45s",
        "--interval",
        "5s",
    ])
    .0
}

fn growing_containers(p: &Process) -> Vec<&Container> {
    p.census.iter().flat_map(Census::growing).collect()
}

/// Nothing in any process of the tree grows: containers, types, tasks.
fn assert_tree_healthy(report: &Report, what: &str) {
    assert!(!report.processes.is_empty(), "{what}: no process traced");
    for p in &report.processes {
        assert_nothing_grows(p, what);
    }
}

/// Celery's prefork pool (2 children) on Redis, 40 tasks a second: the master and its children.
/// On pyenv's 3.12 (a venv), or on a Debian build (PyPI's packages in its root file system).
fn celery(leaks: &str, debian: Option<&Build>) -> Report {
    let python = celery_venv();
    let redis = Redis::start();
    let dir = apps::app("celery_app.py").parent().unwrap().to_path_buf();
    let mut cmd = match debian {
        None => {
            let mut c = Command::new(&python);
            c.current_dir(&dir);
            c
        }
        Some(b) => {
            let site = apps::debian_site(b, "celery");
            let root = b.root.as_ref().unwrap();
            let guest = root.join("tmp/tracer-tests/apps");
            std::fs::create_dir_all(&guest).unwrap();
            std::fs::copy(apps::app("celery_app.py"), guest.join("celery_app.py")).unwrap();
            let mut c = Command::new("chroot");
            c.arg(root).arg(&b.python).env(
                "PYTHONPATH",
                format!("{}:/tmp/tracer-tests/apps", b.guest(&site).display()),
            );
            c
        }
    };
    let mut worker = Proc(
        cmd.args([
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "prefork",
        ])
        .args(["--concurrency", "2", "--loglevel", "WARNING"])
        .args([
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ])
        .env("BROKER", redis.url())
        .env("LEAKS", leaks)
        // Celery's record of the last successful tasks is bounded (1,000 by default): at the
        // producer's 40 tasks a second it filled in 25 s, on a loaded machine in more than the
        // recording, and was judged growing. Bounded at 300, it is seen full, and stable.
        .env("CELERY_WORKER_SUCCESSFUL_MAX", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let t = Instant::now();
    while apps::python_children(worker.pid()).len() < 2 {
        assert!(
            worker.alive() && t.elapsed() < Duration::from_secs(30),
            "celery's pool did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let producer = Proc(
        Command::new(&python)
            .args(["celery_app.py", "send", "40", "300"])
            .current_dir(&dir)
            .env("BROKER", redis.url())
            .spawn()
            .unwrap(),
    );
    let report = watch_tree(worker.pid());
    drop(producer);
    worker.signal(libc::SIGTERM);
    let _ = worker.wait(Duration::from_secs(10));
    drop(redis.proc);
    report
}

/// The task's cache: named in the pool child that runs the task, growing, used at the task's
/// line; the master (which only hands the tasks out) shows nothing growing.
#[test]
fn celery_task_cache_named_in_the_pool_312() {
    celery_cache_named(None);
}

/// The same on Debian's python3.13 (Celery from PyPI in its root file system).
#[test]
fn celery_task_cache_named_in_the_pool_debian_313() {
    celery_cache_named(Some(&debian("trixie", 13)));
}

fn celery_cache_named(debian: Option<&Build>) {
    let report = celery("cache", debian);
    let procs = &report.processes;
    assert!(procs.len() >= 3, "the master and its 2 children: {procs:?}");
    let line = apps::app_line("celery_app.py", "# CACHED HERE");
    let cache = procs
        .iter()
        .flat_map(growing_containers)
        .find(|k| k.name == "celery_app.RESULTS")
        .unwrap_or_else(|| panic!("celery_app.RESULTS not growing in any process: {report:?}"));
    // Sized: each quote's dict with what it alone holds (its list of 16 floats).
    let each = cache.holds.as_ref().map_or(0.0, |h| h.mean_deep_bytes);
    assert!((200.0..4096.0).contains(&each), "{cache:?}");
    assert!(
        cache
            .uses
            .iter()
            .any(|u| u.starts_with("price_quote (")
                && u.ends_with(&format!("celery_app.py:{line})"))),
        "the caching line celery_app.py:{line} not among the uses: {cache:?}"
    );
    let master = report.first();
    assert!(
        growing_containers(master).is_empty(),
        "the master: {:?}",
        master.census
    );
}

/// The same pool and load with a bounded cache: nothing grows in the master or its children
/// (Celery's per-task bookkeeping included).
#[test]
fn celery_without_leaks_312() {
    assert_tree_healthy(&celery("", None), "celery without leaks");
}

const PATHS: &str = "/login/{n},/spawn/{n}";

/// FastAPI served `how` (two workers) with the sessions and tasks leaks: in a worker, the
/// sessions dict named through app.state and used at `login`'s line, and tasks piling up at
/// `watch_session`'s line.
fn fastapi_workers_leak(how: Server) {
    let served = apps::serve(
        how,
        &apps::fastapi_venv(),
        "fastapi_app.py",
        "sessions,tasks",
        PATHS,
        30,
    );
    let report = watch_tree(served.pid());
    let login = apps::app_line("fastapi_app.py", "request.app.state.sessions[token] =");
    let waits = apps::app_line("fastapi_app.py", "# TASK WAITS");
    let workers: Vec<&Process> = report
        .processes
        .iter()
        .filter(|p| {
            growing_containers(p).iter().any(|k| {
                k.name.ends_with(r#"app.state._state["sessions"]"#)
                    && k.uses
                        .iter()
                        .any(|u| u.ends_with(&format!("fastapi_app.py:{login})")))
            })
        })
        .collect();
    assert!(
        !workers.is_empty(),
        "{how:?}: no worker with app.state's sessions growing, used at fastapi_app.py:{login}: {report:?}"
    );
    for w in workers {
        let tasks = w.census().tasks.as_ref().expect("asyncio tasks");
        assert_eq!(tasks.verdict, "growing", "{how:?}: {tasks:?}");
        let top = tasks
            .by_coroutine
            .first()
            .map_or("", |g| g.coroutine.as_str());
        assert!(top.starts_with("watch_session ("), "{how:?}: {tasks:?}");
        assert!(
            top.ends_with(&format!("fastapi_app.py:{waits})")),
            "{how:?}: {tasks:?}"
        );
    }
}

#[test]
fn uvicorn_workers_leaks_placed_312() {
    fastapi_workers_leak(Server::UvicornWorkers);
}

#[test]
fn gunicorn_uvicorn_workers_leaks_placed_312() {
    fastapi_workers_leak(Server::GunicornUvicorn);
}

/// The healthy twin under uvicorn's two workers: nothing grows anywhere in the tree.
#[test]
fn uvicorn_workers_without_leaks_312() {
    let served = apps::serve(
        Server::UvicornWorkers,
        &apps::fastapi_venv(),
        "fastapi_app.py",
        "",
        PATHS,
        30,
    );
    assert_tree_healthy(&watch_tree(served.pid()), "uvicorn workers without leaks");
}
