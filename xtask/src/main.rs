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

fn test(extra: &[String]) -> Result<(), String> {
    build()?;
    // End-to-end tests attach real probes: one at a time, so they do not slow each other down.
    run(Command::new(cargo())
        .current_dir(root())
        .args(["test", "--release", "--workspace"])
        .args(extra)
        .args(["--", "--test-threads=1"])
        .env("TRACER_BIN", tracer_bin()))
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
        "xtask: demo done. Reports in {0}: allocs.folded, allocs-count.folded, fds.folded, summary.txt, snapshots/.\n\
         Render one with e.g. `inferno-flamegraph < {0}/allocs.folded > allocs.svg` or flamegraph.pl.",
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
        Some("bench") => bench(),
        Some("soak") => soak(&args[1..]),
        _ => Err(
            "usage: cargo xtask setup | build | test [cargo test args] | demo | bench | soak [--minutes N]"
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

fn bench() -> Result<(), String> {
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
        .arg(root().join("target/bench-venv")))
}
