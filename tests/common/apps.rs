//! The framework apps of tests/apps (Flask, aiohttp) for the end-to-end tests: a venv with their
//! packages from PyPI made once under target/, the apps served on a free local port, driven by
//! the bounded client load.py, and watched by tracer.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// A venv of pyenv's 3.`minor` with `packages` from PyPI (`import` checks `modules`), made once
/// under target/ (`apps-venv-NAME-3.MINOR`) and shared under a lock by every test that asks for
/// it, whatever its test binary. Returns its python.
pub fn venv(name: &str, minor: u32, packages: &[&str], modules: &str) -> PathBuf {
    let dir = target_dir().join(format!("apps-venv-{name}-3.{minor}"));
    let lock = File::create(target_dir().join(format!("apps-venv-{name}-3.{minor}.lock"))).unwrap();
    // SAFETY: flock on a descriptor this function owns; released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let python = dir.join("bin/python");
    let ready = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", &format!("import {modules}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&python) {
        eprintln!(
            "making a venv with {packages:?} from PyPI in {}",
            dir.display()
        );
        run_ok(Command::new(py(minor)).arg("-m").arg("venv").arg(&dir));
        run_ok(
            Command::new(dir.join("bin/pip"))
                .args(["install", "-q"])
                .args(packages)
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        );
        assert!(ready(&python), "{modules} in {}", dir.display());
    }
    python
}

/// tests/apps/`name`.
pub fn app(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join(name)
        .canonicalize()
        .unwrap()
}

/// The line of tests/apps/`name` that contains `needle`.
pub fn app_line(name: &str, needle: &str) -> u32 {
    std::fs::read_to_string(app(name))
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {name}")) as u32
        + 1
}

/// A free local port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// tests/apps/`name` run by `python` with `leaks`, listening; and load.py (same python)
/// requesting `paths` (`{n}` counting) `rate` times a second (for 5 minutes at most: it ends
/// with the test).
pub fn serve(
    python: &std::path::Path,
    name: &str,
    leaks: &str,
    paths: &str,
    rate: u32,
) -> (Proc, Proc) {
    let port = free_port().to_string();
    let server = Proc(
        Command::new(python)
            .arg(app(name))
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
    let load = Proc(
        Command::new(python)
            .arg(app("load.py"))
            .args([&port, &rate.to_string(), "300", paths])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (server, load)
}

/// The app served and driven at 40 requests a second while tracer, attached after start-up,
/// watches it for 60 s (a census pass every 5 s): report.json's process, and the summary.
pub fn watch_app(
    python: &std::path::Path,
    name: &str,
    leaks: &str,
    paths: &str,
) -> (serde_json::Value, String) {
    let d = TempDir::new("apps");
    let (server, _load) = serve(python, name, leaks, paths, 40);
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
    (report["processes"][0].clone(), f.stdout)
}
