//! Project tasks: `cargo xtask setup | build | test | demo | bench`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const DEBIAN_PACKAGES: [&str; 4] = [
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
];
/// Tools the tests drive (util-linux's setpriv/unshare are always there on Debian): bpftool,
/// and the readers of the report formats (go tool pprof, a JSON schema validator, Chromium, a
/// Prometheus server, tmux for the live view), the container tests' root file system builder and
/// OCI runtimes (debootstrap, runc, podman), strace (a launch refused by ptrace), and the
/// broker the Celery tests start (redis-server).
const TEST_PACKAGES: [&str; 13] = [
    "bpftool",
    "golang-go",
    "python3-jsonschema",
    "chromium",
    "curl",
    "prometheus",
    "tmux",
    "debootstrap",
    "runc",
    "podman",
    "strace",
    "python3-flask",
    "redis-server",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {}", format!("{cmd:?}").replace('"', ""));
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({st})"))
    }
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// Installs what is missing; does nothing when everything is there.
fn setup() -> Result<(), String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .chain(TEST_PACKAGES.iter())
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let linker = cargo_home().join("bin/bpf-linker");
    let version_ok = Command::new(&linker)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if !version_ok {
        run(Command::new(cargo())
            .args([
                "install",
                "--locked",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    Ok(())
}

/// The eBPF object is built by tracer's build script (see tracer/build.rs).
fn build() -> Result<(), String> {
    setup()?;
    run(Command::new(cargo())
        .current_dir(root())
        .args(["build", "--release", "-p", "tracer"]))
}

fn tracer_bin() -> PathBuf {
    root().join("target/release/tracer")
}

/// Where an end-to-end test runs. Every test is a process of its own (`FILE --exact NAME`), so
/// that the tests of one file run side by side as well as the files. The phases run one after
/// the other, in the order of `PHASES`, each with its lanes (tests at the same time).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    /// Four at a time: tests that trace their own processes (by pid or launch), write in their
    /// own directories, and check only what their own tracer holds (its programs by id, the
    /// links in its own fdinfo), with no figure that a loaded machine changes. Most of their
    /// time is a fixed recording duration or a workload's own pace; pystacks.rs's keep a core
    /// busy.
    Shared,
    /// One at a time, with nothing else: tests whose figures a loaded machine changes (two at a
    /// time, short-lived container threads lost their Python frames and a launch under `sleep
    /// 3` missed its `-d 6s` on a machine running other work).
    /// lifecycle.rs: children started one after the other within `-d`, a wrapper's tree ending
    /// well before `-d`, the reports within 2.5 s of the end of `-d`. containers.rs: threads
    /// that live less than the tracer's refresh, a watch-mode service whose cache must fill in
    /// the first half of the recording. watch.rs's `--budget 0` test: a leaked file every half
    /// second, against the census's noise floor.
    Quiet,
    /// One at a time, alone: watch.rs's version tests. Each window's release waits for the
    /// kernel's grace periods: on a loaded machine fewer than the four windows the verdicts need
    /// fit in 90 s, and the leaking lines' verdicts need the machine to themselves (the static
    /// builds, whose lines are not judged, run two at a time); a service's cache must fill in
    /// the first half of the recording.
    Watch,
    /// One at a time, alone: census.rs runs every build at once (both cores busy) and judges
    /// growth rates within a range.
    Census,
    /// Last, one at a time, alone: `--all-python` traces every Python process on the host, so it
    /// would take in the processes of every other test (the soak judges its own memory and
    /// descriptors over four minutes; the exact-mode one counts its uprobe links, and would
    /// attach its allocator probes to the other tests' interpreters).
    HostWide,
}

/// The phases in their order, with their lanes.
const PHASES: [(Phase, usize); 5] = [
    (Phase::Shared, 4),
    (Phase::Quiet, 1),
    (Phase::Watch, 1),
    (Phase::Census, 1),
    (Phase::HostWide, 1),
];

/// Tests by (file, name; None: the whole file) that do not run in the shared phase; the first
/// that matches a test places it.
const PLACES: [(&str, Option<&str>, Phase); 9] = [
    ("lifecycle", Some("soak_all_python_watch"), Phase::HostWide),
    (
        "containers",
        Some("all_python_picks_up_new_processes"),
        Phase::HostWide,
    ),
    ("census", None, Phase::Census),
    ("watch", Some("watch_shared_libpython_builds"), Phase::Watch),
    ("watch", Some("watch_static_builds"), Phase::Watch),
    (
        "watch",
        Some("watch_budget_zero_attaches_no_allocator_probe"),
        Phase::Quiet,
    ),
    ("lifecycle", None, Phase::Quiet),
    ("containers", None, Phase::Quiet),
    // Forks and Pythons by the hundred (both cores busy), and `-d` held under that load.
    ("churn", None, Phase::Quiet),
];
/// The longest tests, longest first (taken first in their phase, so that its lanes end
/// together); the others follow in the order of their files.
const LONGEST: [&str; 32] = [
    "celery_task_cache_named_in_the_pool_debian_313",
    "celery_task_cache_named_in_the_pool_312",
    "celery_without_leaks_312",
    "uvicorn_workers_leaks_placed_312",
    "gunicorn_uvicorn_workers_leaks_placed_312",
    "uvicorn_workers_without_leaks_312",
    "django_signal_receivers_and_open_sessions_debian_313",
    "django_signal_receivers_and_open_sessions_312",
    "django_without_leaks_312",
    "fastapi_state_and_tasks_placed_debian_313",
    "fastapi_state_and_tasks_placed_312",
    "app_path_moves_the_placement",
    "exact_mode_places_the_logger_leak_at_the_app_line",
    "aiohttp_task_set_named_312",
    "aiohttp_without_leak_312",
    "flask_debian_static_leaks_311",
    "flask_debian_static_without_leaks_311",
    "flask_leaks_named_312",
    "flask_leaks_named_311",
    "flask_without_leaks_312",
    "gunicorn_worker_leaks_named_and_placed_312",
    "gunicorn_worker_without_leaks_312",
    "watch_static_builds",
    "watch_shared_libpython_builds",
    "lines_on_shared_libpython_builds",
    "lines_on_static_builds",
    "native_frame_options",
    "podman_container_watch_mode",
    "exec_into_the_same_interpreter",
    "ended_entries_are_bounded",
    "runc_containers_by_name_and_id",
    "gunicorn_master_pid_points_to_the_worker_312",
];

fn phase(file: &str, test: &str) -> Phase {
    PLACES
        .iter()
        .find(|(f, t, _)| *f == file && t.is_none_or(|t| t == test))
        .map_or(Phase::Shared, |p| p.2)
}

/// One end-to-end test: its file, its name, the test executable.
#[derive(Clone)]
struct E2e {
    file: String,
    name: String,
    exe: PathBuf,
}

/// What the tests of one file took.
#[derive(Default)]
struct FileTime {
    tests: u32,
    seconds: f64,
    first: Option<f64>,
    last: f64,
}

fn test(extra: &[String]) -> Result<(), String> {
    if !extra.is_empty() {
        build()?;
        // A chosen subset, as cargo test takes it.
        return run(Command::new(cargo())
            .current_dir(root())
            .args(["test", "--release", "--workspace"])
            .args(extra)
            .args(["--", "--test-threads=1"])
            .env("TRACER_BIN", tracer_bin()));
    }
    setup()?;
    // The root file systems of Debian's builds and of the containers (debootstrap: downloads
    // and unpacking, little CPU) are built while the tracer compiles.
    let rootfs = std::thread::spawn(|| {
        eprintln!("xtask: building the tests' root file systems meanwhile (once, under target/)");
        tracer_tests::prepare_root_file_systems()
    });
    run(Command::new(cargo())
        .current_dir(root())
        .args(["build", "--release", "-p", "tracer"]))?;
    let tracer = tracer_bin();
    // Unit tests of every crate, then the end-to-end tests in their phases.
    run(Command::new(cargo()).current_dir(root()).args([
        "test",
        "--release",
        "-p",
        "tracer",
        "-p",
        "tracer-cpython",
        "-p",
        "tracer-common",
        "-p",
        "xtask",
    ]))?;
    let tests = end_to_end_tests()?;
    for (file, name, _) in PLACES {
        let known = tests
            .iter()
            .any(|t| t.file == file && name.is_none_or(|n| n == t.name));
        if !known {
            return Err(format!(
                "xtask's PLACES names tests/{file}.rs {} which does not exist",
                name.unwrap_or("")
            ));
        }
    }
    rootfs
        .join()
        .map_err(|_| "building the tests' root file systems failed (see above)".to_string())?;
    let started = std::time::Instant::now();
    let counts = std::sync::Mutex::new((0u64, 0u64));
    let failures = std::sync::Mutex::new(Vec::new());
    let times = std::sync::Mutex::new(std::collections::BTreeMap::<String, FileTime>::new());
    let one = |t: &E2e| {
        let at = started.elapsed().as_secs_f64();
        let r = run_test(t, &tracer);
        let end = started.elapsed().as_secs_f64();
        {
            let mut times = times.lock().unwrap();
            let ft = times.entry(t.file.clone()).or_default();
            ft.tests += 1;
            ft.seconds += end - at;
            ft.first = Some(ft.first.map_or(at, |f: f64| f.min(at)));
            ft.last = ft.last.max(end);
        }
        match r {
            Ok((passed, failed)) => {
                let mut c = counts.lock().unwrap();
                c.0 += passed;
                c.1 += failed;
                if failed > 0 {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("tests/{}.rs {} failed", t.file, t.name));
                }
            }
            Err(e) => failures.lock().unwrap().push(e),
        }
    };
    let mut phase_times = Vec::new();
    for (p, lanes) in PHASES {
        let t0 = std::time::Instant::now();
        let mut queue: Vec<E2e> = tests
            .iter()
            .filter(|t| phase(&t.file, &t.name) == p)
            .cloned()
            .collect();
        queue.reverse(); // taken from the end
        let queue = std::sync::Mutex::new(queue);
        std::thread::scope(|s| {
            for _ in 0..lanes {
                s.spawn(|| loop {
                    let Some(t) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    one(&t);
                });
            }
        });
        phase_times.push(format!("{p:?} {:.0}s", t0.elapsed().as_secs_f64()));
    }
    for (file, t) in times.into_inner().unwrap() {
        eprintln!(
            "xtask: tests/{file}.rs: {} tests, {:.0}s of test time, from {:.0}s to {:.0}s",
            t.tests,
            t.seconds,
            t.first.unwrap_or(0.0),
            t.last
        );
    }
    let failures = failures.into_inner().unwrap();
    let (passed, failed) = counts.into_inner().unwrap();
    eprintln!(
        "xtask: end-to-end tests took {:.0}s ({})",
        started.elapsed().as_secs_f64(),
        phase_times.join(", ")
    );
    println!("end-to-end: {passed} passed, {failed} failed");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Every end-to-end test, the test executables built on the way; the longest first.
fn end_to_end_tests() -> Result<Vec<E2e>, String> {
    let out = Command::new(cargo())
        .current_dir(root())
        .args([
            "test",
            "--release",
            "-p",
            "tracer-tests",
            "--tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the end-to-end tests failed".into());
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(file), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        else {
            continue;
        };
        if v["target"]["kind"][0] != "test" {
            continue;
        }
        // "name: test" lines.
        let list = Command::new(exe)
            .args(["--list", "--format", "terse"])
            .output()
            .map_err(|e| format!("cannot run {exe}: {e}"))?;
        for l in String::from_utf8_lossy(&list.stdout).lines() {
            if let Some(name) = l.strip_suffix(": test") {
                tests.push(E2e {
                    file: file.to_string(),
                    name: name.to_string(),
                    exe: PathBuf::from(exe),
                });
            }
        }
    }
    tests.sort_by_key(|t| {
        (
            LONGEST
                .iter()
                .position(|l| *l == t.name)
                .unwrap_or(LONGEST.len()),
            t.file.clone(),
            t.name.clone(),
        )
    });
    Ok(tests)
}

/// Runs one end-to-end test (its stderr prefixed with its file and name); returns (passed,
/// failed).
fn run_test(t: &E2e, tracer: &Path) -> Result<(u64, u64), String> {
    use std::io::BufRead as _;
    let tag = format!("{}::{}", t.file, t.name);
    eprintln!("xtask: running tests/{}.rs {}", t.file, t.name);
    let clock = std::time::Instant::now();
    let mut child = Command::new(&t.exe)
        .args(["--exact", &t.name, "--test-threads=1"])
        .current_dir(root().join("tests"))
        .env("TRACER_BIN", tracer)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", t.exe.display()))?;
    let err = child.stderr.take().unwrap();
    let errs = {
        let tag = tag.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {l}");
            }
        })
    };
    let (mut passed, mut failed) = (0, 0);
    for l in std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        // "test result: ok. 1 passed; 0 failed; ..."
        if let Some(rest) = l.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut w = part.split_whitespace();
                match (w.next().and_then(|n| n.parse::<u64>().ok()), w.next()) {
                    (Some(n), Some("passed")) => passed += n,
                    (Some(n), Some("failed")) => failed += n,
                    _ => {}
                }
            }
        }
        println!("[{tag}] {l}");
    }
    let _ = errs.join();
    let st = child.wait().map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: tests/{}.rs {} {} in {:.0}s",
        t.file,
        t.name,
        if st.success() { "passed" } else { "FAILED" },
        clock.elapsed().as_secs_f64()
    );
    if !st.success() && failed == 0 {
        failed = 1; // it died without saying which test failed
    }
    if passed + failed == 0 {
        failed = 1; // --exact found nothing: a renamed test is a failure, not a pass
    }
    Ok((passed, failed))
}

/// The soak test (tests/lifecycle.rs `soak_all_python_watch`) for `minutes` instead of its
/// default four.
fn soak(args: &[String]) -> Result<(), String> {
    let minutes: u64 = match args {
        [] => 60,
        [flag, n] if flag == "--minutes" => n
            .parse()
            .map_err(|_| format!("--minutes {n}: give a whole number of minutes"))?,
        _ => return Err("usage: cargo xtask soak [--minutes N] (default 60)".into()),
    };
    build()?;
    run(Command::new(cargo())
        .current_dir(root())
        .args([
            "test",
            "--release",
            "-p",
            "tracer-tests",
            "--test",
            "lifecycle",
        ])
        .args(["--", "--exact", "soak_all_python_watch", "--nocapture"])
        .env("TRACER_BIN", tracer_bin())
        .env("TRACER_SOAK_SECS", (minutes * 60).to_string()))
}

fn demo() -> Result<(), String> {
    build()?;
    let out = root().join("target/demo");
    let _ = std::fs::remove_dir_all(&out);
    // The tests' default interpreter (pyenv's 3.11), else the system's.
    let pyenv = std::panic::catch_unwind(|| tracer_tests::py(11)).ok();
    let python = pyenv
        .into_iter()
        .chain(["/usr/bin/python3"])
        .find(|p| Path::new(p).exists())
        .ok_or("no python3 found")?;
    eprintln!("xtask: demo: tracing a small leaking service for 20 seconds (tests/workloads/demo_service.py)");
    run(Command::new(tracer_bin())
        .args(["record", "-d", "20s", "--interval", "5s", "-o"])
        .arg(&out)
        .arg("--")
        .arg(python)
        .arg(root().join("tests/workloads/demo_service.py")))?;
    // What the recording wrote, as it is on disk (the .svg flame graphs open in a browser).
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    eprintln!(
        "xtask: demo done. Reports in {}: {} (the .svg files are flame graphs: open them in a \
         browser)",
        out.display(),
        files.join(", ")
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => build(),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("soak") => soak(&args[1..]),
        _ => Err(
            "usage: cargo xtask setup | build | test [cargo test args] | demo | bench [bench.py args, e.g. --parts S --repeat 1] | soak [--minutes N]"
                .into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `extra` goes to bench.py (e.g. `--parts S` for the resources at scale).
fn bench(extra: &[String]) -> Result<(), String> {
    build()?;
    let python = tracer_tests::py(11);
    // The driver runs on Debian's python (stdlib only): another interpreter file than the
    // targets', so the tracer's probes (one set per file, for every process mapping it) never
    // trap in the driver.
    run(Command::new("/usr/bin/python3")
        .arg(root().join("tests/bench/bench.py"))
        .arg("--tracer")
        .arg(tracer_bin())
        .arg("--python")
        .arg(python)
        .arg("--venv")
        .arg(root().join("target/bench-venv"))
        .args(extra))
}
