//! Project tasks: `cargo xtask setup | build | test | demo | bench`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod weigh;

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
    setup_build()?;
    install_missing(&TEST_PACKAGES)
}

/// Debian's `packages` that are not installed yet (`apt-get update` first, once per run of
/// xtask).
fn install_missing(packages: &[&str]) -> Result<(), String> {
    static UPDATED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut updated = UPDATED.lock().unwrap();
    if !*updated {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        *updated = true;
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// What building takes: Debian's rustc and LLVM, and bpf-linker built against that LLVM.
fn setup_build() -> Result<(), String> {
    install_missing(&DEBIAN_PACKAGES)?;
    install_bpf_linker()
}

fn install_bpf_linker() -> Result<(), String> {
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
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            // Its own release profile carries full debug info: a quarter of its build time.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0"))?;
    }
    Ok(())
}

/// The eBPF object is built by tracer's build script (see tracer/build.rs).
fn build() -> Result<(), String> {
    setup_build()?;
    run(Command::new(cargo())
        .current_dir(root())
        .args(["build", "--release", "-p", "tracer"]))
}

fn tracer_bin() -> PathBuf {
    root().join("target/release/tracer")
}

/// cargo-nextest runs every test: which tests share the machine, run alone or start first is
/// data, in .config/nextest.toml.
fn nextest() -> Result<(), String> {
    let have = Command::new(cargo())
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        run(Command::new(cargo()).args(["install", "--locked", "cargo-nextest"]))?;
    }
    Ok(())
}

/// Every test of the workspace (unit tests and the end-to-end tests against the release tracer),
/// or the chosen ones: `extra` goes to `cargo nextest run` (a filter, `-E EXPR`, ...).
fn test(extra: &[String]) -> Result<(), String> {
    nextest()?;
    // What the tests use beside the tracer is downloads and unpacking, little CPU: it is made
    // while the toolchain installs and the tracer compiles. The venvs of the framework tests
    // (pip) from the start; once Debian's build packages are in (one dpkg at a time), the tools
    // the tests drive (apt), then the root file systems of Debian's builds and of the containers
    // (debootstrap) and the packages installed into them.
    eprintln!(
        "xtask: installing the tools the tests drive, building their root file systems and \
         their PyPI packages meanwhile (once, under target/)"
    );
    let venvs = std::thread::spawn(tracer_tests::apps::prepare_venvs);
    // The tracer, its dependencies and the tests compile from the start too, in one cargo
    // (the tracer's binary is the workspace's, built once): only the tracer's build script,
    // which builds the kernel object, needs the BPF toolchain, and it waits for the file that
    // says the toolchain is in (tracer/build.rs).
    let ready = root().join("target/bpf-toolchain.ready");
    let _ = std::fs::remove_file(&ready);
    let build = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            run(Command::new(cargo())
                .current_dir(root())
                .args(["nextest", "run", "--release", "--workspace", "--no-run"])
                .env("TRACER_BPF_TOOLCHAIN_READY", ready))
        })
    };
    let debian = install_missing(&DEBIAN_PACKAGES);
    let rootfs = std::thread::spawn(|| {
        install_missing(&TEST_PACKAGES)?;
        tracer_tests::prepare_root_file_systems();
        tracer_tests::apps::prepare_debian_sites();
        Ok::<(), String>(())
    });
    let toolchain = debian.and_then(|()| install_bpf_linker());
    let said = match &toolchain {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let tmp = ready.with_extension("tmp");
    std::fs::create_dir_all(root().join("target"))
        .and_then(|()| std::fs::write(&tmp, said))
        .and_then(|()| std::fs::rename(&tmp, &ready))
        .map_err(|e| format!("{}: {e}", ready.display()))?;
    let built = build
        .join()
        .map_err(|_| "building the tracer and its tests failed (see above)".to_string())
        .and_then(|r| r);
    let venvs = venvs
        .join()
        .map_err(|_| "making the tests' venvs failed (see above)".to_string());
    let prepared = rootfs
        .join()
        .map_err(|_| "building the tests' root file systems failed (see above)".to_string())
        .and_then(|r| r);
    toolchain?;
    built?;
    venvs?;
    prepared?;
    run(Command::new(cargo())
        .current_dir(root())
        .args(["nextest", "run", "--release", "--workspace"])
        .args(extra)
        .env("TRACER_BIN", tracer_bin()))
}

/// The soak test (tests/lifecycle.rs `soak_watch`) for `minutes` instead of the suite's one,
/// alone and with `--all-python`.
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
        .args(["--", "--exact", "soak_watch", "--nocapture"])
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
        Some("weigh") => build().and_then(|()| {
            weigh::weigh(&root(), &cargo(), &tracer_bin(), &args[1..])
        }),
        _ => Err(
            "usage: cargo xtask setup | build | test [cargo nextest run args] | demo | bench [bench.py args, e.g. --parts S --repeat 1] | soak [--minutes N] | weigh [N] [TEST...]"
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
