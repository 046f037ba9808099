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
/// OCI runtimes (debootstrap, runc, podman), and strace (a launch refused by ptrace).
const TEST_PACKAGES: [&str; 11] = [
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

/// End-to-end test files that run alone, after the others: containers.rs traces every Python
/// process on the host (it would take in the processes of the other files), census.rs runs every
/// build at once (both cores busy: it would starve the others), watch.rs's allocator windows
/// last longer on a loaded machine (fewer windows in its fixed recording time), lifecycle.rs's
/// soak traces every Python process on the host, as containers.rs does.
const ALONE: [&str; 4] = ["watch", "census", "lifecycle", "containers"];
/// End-to-end test files run at the same time (most of their time is fixed recording durations).
const LANES: usize = 2;
/// The longest end-to-end test files, longest first.
const LONGEST: [&str; 3] = ["pystacks", "spine", "formats"];

fn test(extra: &[String]) -> Result<(), String> {
    build()?;
    let tracer = tracer_bin();
    if !extra.is_empty() {
        // A chosen subset, as cargo test takes it.
        return run(Command::new(cargo())
            .current_dir(root())
            .args(["test", "--release", "--workspace"])
            .args(extra)
            .args(["--", "--test-threads=1"])
            .env("TRACER_BIN", &tracer));
    }
    // Unit tests of every crate, then the end-to-end test files: each file's tests one at a
    // time (they attach real probes), files side by side in LANES lanes, ALONE ones last.
    run(Command::new(cargo()).current_dir(root()).args([
        "test",
        "--release",
        "-p",
        "tracer",
        "-p",
        "tracer-common",
        "-p",
        "xtask",
    ]))?;
    let bins = test_binaries()?;
    let (mut alone, shared): (Vec<_>, Vec<_>) = bins
        .into_iter()
        .partition(|(name, _)| ALONE.contains(&name.as_str()));
    alone.sort_by_key(|(name, _)| ALONE.iter().position(|a| a == name));
    let started = std::time::Instant::now();
    let queue = std::sync::Mutex::new(shared);
    let failures = std::sync::Mutex::new(Vec::new());
    let counts = std::sync::Mutex::new((0u64, 0u64));
    let one = |name: &str, path: &Path| match run_test_binary(name, path, &tracer) {
        Ok((passed, failed)) => {
            let mut c = counts.lock().unwrap();
            c.0 += passed;
            c.1 += failed;
            if failed > 0 {
                failures
                    .lock()
                    .unwrap()
                    .push(format!("tests/{name}.rs failed"));
            }
        }
        Err(e) => failures.lock().unwrap().push(e),
    };
    std::thread::scope(|s| {
        for _ in 0..LANES {
            s.spawn(|| loop {
                let Some((name, path)) = queue.lock().unwrap().pop() else {
                    break;
                };
                one(&name, &path);
            });
        }
    });
    for (name, path) in alone {
        one(&name, &path);
    }
    let failures = failures.into_inner().unwrap();
    let (passed, failed) = counts.into_inner().unwrap();
    eprintln!(
        "xtask: end-to-end tests took {:.0}s",
        started.elapsed().as_secs_f64()
    );
    println!("end-to-end: {passed} passed, {failed} failed");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The end-to-end test executables (name, path), built on the way.
fn test_binaries() -> Result<Vec<(String, PathBuf)>, String> {
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
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        else {
            continue;
        };
        if v["target"]["kind"][0] == "test" {
            bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    // The longest files are taken first (from the end), so that the lanes end together.
    bins.sort_by_key(|(n, _)| LONGEST.iter().position(|l| l == n).map_or(0, |i| 100 - i));
    Ok(bins)
}

/// Runs one test executable (its stderr prefixed with its name); returns (passed, failed).
fn run_test_binary(name: &str, path: &Path, tracer: &Path) -> Result<(u64, u64), String> {
    use std::io::BufRead as _;
    eprintln!("xtask: running tests/{name}.rs");
    let t = std::time::Instant::now();
    let mut child = Command::new(path)
        .arg("--test-threads=1")
        .current_dir(root().join("tests"))
        .env("TRACER_BIN", tracer)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let err = child.stderr.take().unwrap();
    let tag = name.to_string();
    let errs = std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {l}");
        }
    });
    let (mut passed, mut failed) = (0, 0);
    for l in std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        // "test result: ok. 3 passed; 0 failed; ..."
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
        println!("{l}");
    }
    let _ = errs.join();
    let st = child.wait().map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: tests/{name}.rs {} in {:.0}s",
        if st.success() { "passed" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if !st.success() && failed == 0 {
        failed = 1; // it died without saying which test failed
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
    let python = [
        "/root/.pyenv/versions/3.11.7/bin/python3",
        "/usr/bin/python3",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .ok_or("no python3 found")?;
    eprintln!("xtask: demo: tracing a small leaking service for 20 seconds (tests/workloads/demo_service.py)");
    run(Command::new(tracer_bin())
        .args(["record", "-d", "20s", "--interval", "5s", "-o"])
        .arg(&out)
        .arg("--")
        .arg(python)
        .arg(root().join("tests/workloads/demo_service.py")))?;
    eprintln!(
        "xtask: demo done. Reports in {0}: summary.txt, report.json, allocs.svg and fds.svg (flame \
         graphs: open them in a browser), allocs.folded, allocs-count.folded, fds.folded and \
         growth.folded (folded stacks).",
        out.display()
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
    let python = "/root/.pyenv/versions/3.11.7/bin/python3";
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
