//! Builds the kernel programs (crate tracer-ebpf) for bpfel-unknown-none and exports the object's
//! path as TRACER_EBPF_OBJECT for `include_bytes_aligned!`.
//!
//! The recipe that works on our machines (see README, "Building"): Debian's rustc-web (it ships a
//! prebuilt `core` for bpfel-unknown-none), bpf-linker built against LLVM 22, no build-std.
//! `cargo xtask setup` installs all of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn bpf_linker() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let p = home.join("bin/bpf-linker");
    p.exists().then_some(p)
}

/// `cargo xtask test` compiles the tracer while it installs the BPF toolchain: it names a file
/// in TRACER_BPF_TOOLCHAIN_READY that it writes once the toolchain is in ("ok"), or with what
/// failed. Without it (a plain `cargo build`), the toolchain must be there.
fn wait_for_toolchain() {
    let Some(ready) = std::env::var_os("TRACER_BPF_TOOLCHAIN_READY") else {
        return;
    };
    let began = Instant::now();
    loop {
        match std::fs::read_to_string(&ready) {
            Ok(s) if s == "ok" => return,
            Ok(why) => panic!("the BPF toolchain could not be installed: {why}"),
            Err(_) if began.elapsed() > Duration::from_secs(30 * 60) => {
                panic!("the BPF toolchain was not installed within 30 minutes")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn main() {
    wait_for_toolchain();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("tracer-ebpf");
    for p in [
        "tracer-ebpf/src",
        "tracer-ebpf/Cargo.toml",
        "tracer-common/src",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(p).display());
    }
    let target_dir = root.join("target/bpf");
    let object = target_dir.join("bpfel-unknown-none/release/tracer-ebpf");

    let Some(linker) = bpf_linker().filter(|_| Path::new(DEBIAN_CARGO).exists()) else {
        panic!(
            "the BPF toolchain is missing (Debian's rustc-web and bpf-linker): run `cargo xtask setup` first"
        );
    };
    let flags = [
        "-Clinker=".to_string() + linker.to_str().unwrap(),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        // The Python walk as global BPF functions: verified once each (tracer-ebpf/src/python.rs).
        "-Clink-arg=--export=tracer_py_stack,tracer_py_stack_fd".into(),
    ]
    .join("\x1f");
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.env_clear()
        .current_dir(&ebpf)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUSTC", DEBIAN_RUSTC)
        // Only aya-ebpf may use its nightly feature; a plain "1" would turn on build-std.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env("CARGO_ENCODED_RUSTFLAGS", flags);
    for var in [
        "HOME",
        "CARGO_HOME",
        "CARGO_NET_OFFLINE",
        "CARGO_TERM_COLOR",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let out = cmd
        .output()
        .expect("running Debian's cargo for the BPF object");
    if !out.status.success() {
        panic!(
            "building tracer-ebpf failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("cargo::rustc-env=TRACER_EBPF_OBJECT={}", object.display());
}
