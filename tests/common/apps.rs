//! The framework apps of tests/apps (Flask, aiohttp) for the end-to-end tests: a venv with their
//! packages from PyPI made once under target/, the apps served on a free local port (by their
//! own server, or under gunicorn as deployed: a master and its forked worker), driven by the
//! bounded client load.py, and watched by tracer.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// What the tests install from PyPI: a venv's name, the pyenv build it is for (3.MINOR), its
/// packages and the modules `import` checks.
const VENVS: [(&str, u32, &[&str], &str); 8] = [
    ("flask", 11, &["flask", "gunicorn"], "flask, gunicorn"),
    ("flask", 12, &["flask", "gunicorn"], "flask, gunicorn"),
    ("aio", 12, &["aiohttp"], "aiohttp"),
    (
        "django",
        12,
        &["django", "sqlalchemy"],
        "django, sqlalchemy",
    ),
    ("celery", 12, &CELERY, "celery, redis, packaging"),
    (
        "fastapi",
        12,
        &["fastapi", "uvicorn", "gunicorn"],
        "fastapi, uvicorn, gunicorn",
    ),
    ("numpy", 11, &["numpy"], "numpy"),
    (
        "flask-numpy",
        12,
        &["flask", "gunicorn", "numpy"],
        "flask, gunicorn, numpy",
    ),
];

/// The same for Debian trixie's python3.13 in its root file system (`debian_site`).
const DEBIAN_SITES: [(&str, &[&str], &str); 3] = [
    ("django", &["django", "sqlalchemy"], "django, sqlalchemy"),
    ("fastapi", &["fastapi", "uvicorn"], "fastapi, uvicorn"),
    ("celery", &CELERY, "celery, redis, packaging"),
];

/// Celery with its Redis client (and `packaging`, which its Redis transport imports).
const CELERY: [&str; 3] = ["celery", "redis", "packaging"];

/// Every venv of the tests, made at once from PyPI (xtask runs this from its start, while the
/// tracer's toolchain installs and the tracer compiles, so that no test waits on pip; each is
/// made once, under its lock, and checked by `import` when it exists already).
pub fn prepare_venvs() {
    std::thread::scope(|s| {
        for (name, minor, _, _) in VENVS {
            s.spawn(move || venv(name, minor));
        }
    });
}

/// Every Debian site of the tests (`debian_site`), once trixie's root file system is there.
pub fn prepare_debian_sites() {
    let b = debian("trixie", 13);
    for (tag, _, _) in DEBIAN_SITES {
        debian_site(&b, tag);
    }
}

/// The venv `name` of pyenv's 3.`minor` (one of `VENVS`), made once under target/
/// (`apps-venv-NAME-3.MINOR`) and shared under a lock by every test that asks for it, whatever
/// its test binary. Returns its python.
pub fn venv(name: &str, minor: u32) -> PathBuf {
    let (_, _, packages, modules) = *VENVS
        .iter()
        .find(|v| v.0 == name && v.1 == minor)
        .unwrap_or_else(|| panic!("no venv {name} for 3.{minor} in VENVS"));
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

/// A venv of pyenv's 3.12 with FastAPI, uvicorn and gunicorn (its uvicorn workers) from PyPI,
/// for tests/apps/fastapi_app.py.
pub fn fastapi_venv() -> PathBuf {
    venv("fastapi", 12)
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

/// How an app of tests/apps is served.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Server {
    /// `python APP PORT`: the app's own server (Flask's threaded one), one process.
    Alone,
    /// `gunicorn -w 1 --threads 2 -b 127.0.0.1:PORT --chdir tests/apps MODULE:app`, from the
    /// venv of `python`: a master that forks the worker running the app.
    Gunicorn,
    /// `python -m uvicorn --workers 2 --app-dir tests/apps MODULE:app`: a supervisor that
    /// spawns two workers (fresh interpreters, multiprocessing's spawn).
    UvicornWorkers,
    /// `gunicorn -w 2 -k uvicorn.workers.UvicornWorker ...`: a master that forks two asyncio
    /// workers.
    GunicornUvicorn,
}

impl Server {
    /// The worker processes that run the app's code (the server itself when it has none).
    fn workers(self) -> usize {
        match self {
            Server::Alone => 0,
            Server::Gunicorn => 1,
            Server::UvicornWorkers | Server::GunicornUvicorn => 2,
        }
    }
}

/// An app served and driven by load.py; its processes are ended when it is dropped.
pub struct Served {
    /// The client (dropped first).
    pub load: Proc,
    /// The process started: the app itself, or gunicorn's master.
    pub server: Proc,
    /// The process that runs the app's code: the server itself, or gunicorn's worker (with
    /// several workers: the server).
    app_pid: u32,
    /// The server has workers of its own, ended by it.
    supervises: bool,
}

impl Served {
    /// The process that runs the app's code.
    pub fn pid(&self) -> u32 {
        self.app_pid
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // gunicorn's master (and uvicorn's supervisor) ends its workers on SIGINT; killed, it
        // would leave the workers to notice their parent gone by themselves.
        // The load first: a worker still serving requests waits for them before it ends.
        let _ = self.load.0.kill();
        let _ = self.load.0.wait();
        if self.supervises {
            let workers = python_children(self.server.pid());
            self.server.signal(libc::SIGINT);
            let _ = self.server.wait(Duration::from_secs(10));
            // A worker that outlived its master's graceful stop (uvicorn's under gunicorn) is
            // not left behind for the next tests.
            for w in workers {
                // SAFETY: kill(2) on a pid; a process already gone makes it fail, harmlessly.
                unsafe { libc::kill(w as i32, libc::SIGKILL) };
            }
        }
    }
}

/// The Python children of `pid` (from /proc/*/stat).
pub fn python_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID ...": the fields after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        let python = std::fs::read_link(format!("/proc/{child}/exe")).is_ok_and(|exe| {
            exe.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        });
        if ppid == Some(pid) && python {
            out.push(child);
        }
    }
    out
}

/// tests/apps/`name` served `how` on `python` (or its venv's gunicorn) with `leaks`,
/// answering; and load.py (same python) requesting `paths` (`{n}` counting) `rate` times a
/// second (for 5 minutes at most: it ends with the test).
pub fn serve(
    how: Server,
    python: &std::path::Path,
    name: &str,
    leaks: &str,
    paths: &str,
    rate: u32,
) -> Served {
    let port = free_port().to_string();
    let mut cmd = match how {
        Server::Alone => {
            let mut c = Command::new(python);
            c.arg(app(name)).arg(&port);
            c
        }
        Server::Gunicorn | Server::GunicornUvicorn => {
            // The venv's gunicorn script run by the venv's python: the process its shebang
            // starts, also in a venv copied from another checkout (whose shebang names the
            // original). No control socket: it would be shared by the tests running at once.
            let mut c = Command::new(python);
            c.arg(python.with_file_name("gunicorn"));
            if how == Server::Gunicorn {
                c.args(["-w", "1", "--threads", "2"]);
            } else {
                c.args(["-w", "2", "-k", "uvicorn.workers.UvicornWorker"]);
            }
            c.arg("--no-control-socket")
                .arg("-b")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--chdir")
                .arg(app(name).parent().unwrap())
                .arg(format!("{}:app", name.trim_end_matches(".py")));
            c
        }
        Server::UvicornWorkers => {
            let mut c = Command::new(python);
            c.args(["-m", "uvicorn", "--workers", "2", "--log-level", "warning"])
                .args(["--host", "127.0.0.1", "--port", &port, "--app-dir"])
                .arg(app(name).parent().unwrap())
                .arg(format!("{}:app", name.trim_end_matches(".py")));
            c
        }
    };
    start_serving(
        how,
        cmd.env("LEAKS", leaks),
        python,
        &port,
        name,
        paths,
        rate,
    )
}

/// tests/apps/`name` run by Debian's `build` (a root file system's python) with `site` (a
/// directory of PyPI packages inside it, see `debian_site`) on its path: served alone, and
/// driven by load.py from pyenv's 3.12 on the host.
pub fn serve_debian(
    build: &Build,
    site: &std::path::Path,
    name: &str,
    leaks: &str,
    paths: &str,
    rate: u32,
) -> Served {
    let root = build
        .root
        .as_ref()
        .expect("a Debian build in its root file system");
    let dir = root.join("tmp/tracer-tests/apps");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::copy(app(name), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    let port = free_port().to_string();
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .arg(&build.python)
        .arg(format!("/tmp/tracer-tests/apps/{name}"))
        .arg(&port)
        .env("PYTHONPATH", build.guest(site))
        .env("LEAKS", leaks);
    let load_python = std::path::PathBuf::from(py(12));
    start_serving(
        Server::Alone,
        &mut cmd,
        &load_python,
        &port,
        name,
        paths,
        rate,
    )
}

/// The packages of `DEBIAN_SITES`'s `tag` for Debian's `build`, installed once into its root
/// file system by pyenv's pip of the same version (the same ABI) under
/// /opt/tracer-`tag`/site-packages (a directory named as packages are: tracer tells the
/// application's files from them by it): the host path.
pub fn debian_site(build: &Build, tag: &str) -> PathBuf {
    let (_, packages, modules) = *DEBIAN_SITES
        .iter()
        .find(|v| v.0 == tag)
        .unwrap_or_else(|| panic!("no Debian site {tag} in DEBIAN_SITES"));
    let root = build
        .root
        .as_ref()
        .expect("a Debian build in its root file system");
    let site = root.join(format!("opt/tracer-{tag}/site-packages"));
    std::fs::create_dir_all(root.join("opt")).unwrap();
    let lock = File::create(root.join(format!("opt/.tracer-{tag}.lock"))).unwrap();
    // SAFETY: flock on a descriptor this function owns; released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let ready = || {
        Command::new("chroot")
            .arg(root)
            .arg(&build.python)
            .args(["-c", &format!("import {modules}")])
            .env("PYTHONPATH", build.guest(&site))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        eprintln!("installing {packages:?} from PyPI into {}", site.display());
        run_ok(
            Command::new(py(build.version.1))
                .args(["-m", "pip", "install", "-q", "--target"])
                .arg(&site)
                .args(packages)
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
                .env("PIP_ROOT_USER_ACTION", "ignore"),
        );
        assert!(ready(), "{modules} in {}", site.display());
    }
    site
}

/// Starts `cmd` (the server, on `port`) and, once it answers with its workers, load.py.
fn start_serving(
    how: Server,
    cmd: &mut Command,
    python: &std::path::Path,
    port: &str,
    name: &str,
    paths: &str,
    rate: u32,
) -> Served {
    // The server's output (gunicorn's log), shown when it does not come up.
    let log = TempDir::new("serve");
    let log_file = log.0.join("server.log");
    let mut server = Proc(
        cmd.stdout(Stdio::null())
            .stderr(File::create(&log_file).unwrap())
            .spawn()
            .unwrap(),
    );
    // Listening, and (under gunicorn) the worker that answers is there.
    let t = std::time::Instant::now();
    let app_pid = loop {
        let answers = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok();
        let workers = match how {
            Server::Alone => vec![server.pid()],
            _ => python_children(server.pid()),
        };
        // (uvicorn's supervisor also starts multiprocessing's resource tracker.)
        if answers && workers.len() >= how.workers().max(1) {
            break if how.workers() > 1 {
                server.pid()
            } else {
                workers[0]
            };
        }
        assert!(
            server.alive() && t.elapsed() < Duration::from_secs(30),
            "{how:?} serving {name} did not answer on port {port} with its workers ({workers:?}); its log:\n{}",
            std::fs::read_to_string(&log_file).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let load = Proc(
        Command::new(python)
            .arg(app("load.py"))
            .args([port, &rate.to_string(), "300", paths])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    Served {
        load,
        server,
        app_pid,
        supervises: how.workers() > 0,
    }
}

/// `tracer record ARGS` into a temporary directory, until it ends: report.json, and what it
/// printed.
pub fn record(args: &[&str]) -> (Report, Finished) {
    let d = TempDir::new("apps");
    let out = d.0.join("out");
    let f = Tracer::start(args, &out).finish();
    (read_report(&out), f)
}

/// tracer, attached after start-up to the process that runs the app's code, watching it for
/// 40 s (a census pass every 4 s: ten passes, the recent five judged; at 30 s the stacks that
/// place a container at the line feeding it were missed under load): report.json's process, and
/// the summary.
pub fn watch(served: &Served) -> (Process, String) {
    // Attached to an app that serves, as an operator finds it, not at its first request: the
    // first requests' lazy imports and first-use caches are growth (a healthy gunicorn worker's
    // closures and sets rose through a recording that began with its load on a loaded machine).
    std::thread::sleep(Duration::from_secs(3));
    let pid = served.pid().to_string();
    let (report, f) = record(&[
        "-p",
        &pid,
        "--mode",
        "watch",
        "-d",
        "40s",
        "--interval",
        "4s",
    ]);
    (report.first().clone(), f.stdout)
}

/// The app served alone and driven at 40 requests a second while tracer watches it for 40 s
/// ([`watch`]): report.json's process, and the summary.
pub fn watch_app(
    python: &std::path::Path,
    name: &str,
    leaks: &str,
    paths: &str,
) -> (Process, String) {
    watch(&serve(Server::Alone, python, name, leaks, paths, 40))
}
