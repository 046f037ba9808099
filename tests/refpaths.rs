//! Reference paths (issue 14): a real Flask service (Flask from PyPI, in a venv this file makes
//! under target/), driven by a bounded local client (tests/apps/load.py), watched for 60 s. Its
//! leaks hang where no short path from a module reaches them: `logging.getLogger(f"user-{uid}")`
//! grows `logging.Logger.manager.loggerDict` (three steps below the module), and an unbounded
//! `functools.lru_cache` on a method grows a dict held by a C field of the cache's wrapper, a
//! class attribute. The census's back-reference search names both, root first, and says what
//! they hold (only what they hold); the same service without the leaks has nothing growing.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A venv with Flask (and gunicorn) from PyPI for pyenv's 3.`minor`, made once under target/
/// (`apps-venv-3.MINOR`) and shared, under a lock, with the other test files that run the apps.
fn venv(minor: u32) -> PathBuf {
    let b = pyenv(minor);
    let dir = target_dir().join(format!("apps-venv-3.{minor}"));
    let lock = File::create(target_dir().join(format!("apps-venv-3.{minor}.lock"))).unwrap();
    // SAFETY: flock on a descriptor this function owns; released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let python = dir.join("bin/python");
    let ready = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", "import flask, gunicorn"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&python) {
        run_ok(Command::new(&b.python).arg("-m").arg("venv").arg(&dir));
        run_ok(
            Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "flask", "gunicorn"])
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        );
        assert!(ready(&python), "flask in {}", dir.display());
    }
    python
}

fn app(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join(name)
}

/// A free local port.
fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// flask_app.py with `leaks`, driven on `paths` while tracer watches it for 60 s: the census of
/// report.json, and the summary.
fn watch_app(minor: u32, leaks: &str, paths: &str) -> (serde_json::Value, String) {
    let python = venv(minor);
    let port = port().to_string();
    let d = TempDir::new("refpaths");
    let server = Proc(
        Command::new(&python)
            .arg(app("flask_app.py"))
            .arg(&port)
            .env("LEAKS", leaks)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the app to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
    });
    let _load = Proc(
        Command::new(&python)
            .arg(app("load.py"))
            .args([&port, "40", "90", paths])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = d.0.join("out");
    let pid = server.pid().to_string();
    let t = Tracer::start(
        &[
            "-p",
            &pid,
            "--mode",
            "watch",
            "-d",
            "60s",
            "--interval",
            "5s",
        ],
        &out,
    );
    let f = t.finish();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    (report["processes"][0]["census"].clone(), f.stdout)
}

fn containers(c: &serde_json::Value) -> &Vec<serde_json::Value> {
    c["containers"].as_array().unwrap()
}

/// Both leaks named by their reference paths, growing, holding what they hold.
fn leaks_named(minor: u32) {
    let (c, summary) = watch_app(minor, "logger,lru", "/user/{n},/price/item{n}/3");
    assert!(c["error"].is_null(), "{c}");
    let find = |pred: &dyn Fn(&str) -> bool| {
        containers(&c)
            .iter()
            .find(|k| pred(k["name"].as_str().unwrap()))
            .cloned()
            .unwrap_or_else(|| panic!("3.{minor}: not in the census: {c}"))
    };
    let loggers = find(&|n| {
        n == "logging.Logger.manager.loggerDict" || n == "logging.root.manager.loggerDict"
    });
    assert_eq!(loggers["verdict"], "growing", "3.{minor}: {loggers}");
    assert_eq!(loggers["root"], "global", "3.{minor}: {loggers}");
    assert_eq!(loggers["named"], true, "3.{minor}: {loggers}");
    // What it holds: Loggers only (the items read twice, from the container itself).
    let holds = loggers["holds"]["types"].as_array().unwrap();
    assert!(
        holds.len() == 1 && holds[0][0] == "Logger",
        "3.{minor}: {loggers}"
    );
    let lru = find(&|n| n.ends_with(".PriceService.quote (functools lru_cache)"));
    let name = lru["name"].as_str().unwrap();
    assert!(
        name == "__main__.PriceService.quote (functools lru_cache)"
            || name == "flask_app.PriceService.quote (functools lru_cache)",
        "3.{minor}: {lru}"
    );
    assert_eq!(lru["verdict"], "growing", "3.{minor}: {lru}");
    assert_eq!(lru["type"], "dict", "3.{minor}: {lru}");
    // No container is left named by its address while it grows.
    for k in containers(&c) {
        assert!(
            k["verdict"] != "growing" || k["named"] == true,
            "3.{minor}: growing and unnamed: {k}"
        );
    }
    assert!(
        summary.contains("Logger.manager.loggerDict")
            || summary.contains("root.manager.loggerDict"),
        "{summary}"
    );
    assert!(
        summary.contains("PriceService.quote (functools lru_cache)"),
        "{summary}"
    );
}

/// The same app and load without the leaks: nothing grows.
fn nothing_growing(minor: u32) {
    let (c, _) = watch_app(minor, "", "/user/{n},/price/item{n}/3");
    assert!(c["error"].is_null(), "{c}");
    for k in containers(&c) {
        assert_ne!(k["verdict"], "growing", "3.{minor}: {k}");
        // A name or an address, never a container read from a word that is not an object.
        assert!(k["len"].as_u64().unwrap() < 1 << 32, "3.{minor}: {k}");
    }
    for t in c["types"].as_array().unwrap() {
        assert_ne!(t["verdict"], "growing", "3.{minor}: {t}");
    }
}

#[test]
fn flask_leaks_named_312() {
    leaks_named(12);
}

#[test]
fn flask_without_leaks_312() {
    nothing_growing(12);
}

#[test]
fn flask_leaks_named_311() {
    leaks_named(11);
}
