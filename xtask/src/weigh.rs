//! `cargo xtask weigh [N] [NAME...]`: the CPU each end-to-end test uses, for the weights of
//! .config/nextest.toml. Each test runs as a process of its own in a cgroup of its own (cgroup v1
//! cpuacct, else v2), N at a time (default 4), in the order nextest lists them (NAME...: only the
//! tests whose name contains one of them); its CPU is the cgroup's usage over the test's whole
//! process tree (its workloads, its tracers, the kernel's work for them), its weight that CPU over
//! its wall time in tenths of a core. The `--all-python` tests take in every other test's
//! processes: weigh them on their own.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

/// Where a test's cgroup lives and how its CPU time is read.
enum Cgroups {
    /// cgroup v1: cpuacct.usage, nanoseconds.
    V1(PathBuf),
    /// cgroup v2: cpu.stat's usage_usec.
    V2(PathBuf),
}

impl Cgroups {
    fn find() -> Result<Cgroups, String> {
        let v1 = Path::new("/sys/fs/cgroup/cpuacct");
        if v1.join("cpuacct.usage").exists() {
            return Ok(Cgroups::V1(v1.join("xtask-weigh")));
        }
        let v2 = Path::new("/sys/fs/cgroup");
        if v2.join("cgroup.controllers").exists() {
            return Ok(Cgroups::V2(v2.join("xtask-weigh")));
        }
        Err("no cgroup v1 cpuacct or cgroup v2 hierarchy under /sys/fs/cgroup".into())
    }

    fn dir(&self, name: &str) -> PathBuf {
        match self {
            Cgroups::V1(d) | Cgroups::V2(d) => d.join(name),
        }
    }

    /// CPU seconds used in the cgroup `name`.
    fn cpu_s(&self, name: &str) -> Option<f64> {
        let dir = self.dir(name);
        match self {
            Cgroups::V1(_) => std::fs::read_to_string(dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()
                .map(|ns| ns / 1e9),
            Cgroups::V2(_) => std::fs::read_to_string(dir.join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse::<f64>()
                .ok()
                .map(|us| us / 1e6),
        }
    }
}

/// The end-to-end tests: (binary path, test name), from `cargo nextest list`.
fn tests(root: &Path, cargo: &str) -> Result<Vec<(PathBuf, String)>, String> {
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["nextest", "list", "--release", "-p", "tracer-tests"])
        .args(["--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo nextest list: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo nextest list's JSON: {e}"))?;
    let mut all = Vec::new();
    for suite in v["rust-suites"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
    {
        let Some(bin) = suite["binary-path"].as_str() else {
            continue;
        };
        for (name, case) in suite["testcases"].as_object().into_iter().flatten() {
            if case["ignored"].as_bool() != Some(true) {
                all.push((PathBuf::from(bin), name.clone()));
            }
        }
    }
    Ok(all)
}

pub fn weigh(root: &Path, cargo: &str, tracer: &Path, args: &[String]) -> Result<(), String> {
    let (at_once, names) = match args.first().map(|a| a.parse::<usize>()) {
        Some(Ok(n)) => (n.max(1), &args[1..]),
        _ => (4, args),
    };
    let cgroups = Cgroups::find()?;
    let mut todo: Vec<(PathBuf, String)> = tests(root, cargo)?
        .into_iter()
        .filter(|(_, t)| names.is_empty() || names.iter().any(|n| t.contains(n.as_str())))
        .collect();
    if todo.is_empty() {
        return Err("no test matches".into());
    }
    todo.reverse();
    let queue = Mutex::new(todo);
    let rows = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..at_once {
            s.spawn(|| loop {
                let Some((bin, test)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let name = test.replace(['/', ':'], "_");
                let dir = cgroups.dir(&name);
                let _ = std::fs::create_dir_all(&dir);
                let procs = dir.join("cgroup.procs");
                let begun = Instant::now();
                let mut cmd = Command::new(&bin);
                cmd.args([&test, "--exact", "--test-threads=1"])
                    .current_dir(root.join("tests"))
                    .env("TRACER_BIN", tracer)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                // SAFETY: only a write(2) of the child's own pid between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        std::fs::write(&procs, std::process::id().to_string())
                            .map_err(std::io::Error::other)
                    });
                }
                let ok = cmd.status().is_ok_and(|s| s.success());
                let wall = begun.elapsed().as_secs_f64();
                let cpu = cgroups.cpu_s(&name).unwrap_or(f64::NAN);
                let _ = std::fs::remove_dir(&dir);
                let weight = ((cpu / wall * 10.0).round() as u32).clamp(2, 16);
                let row = format!(
                    "{wall:7.1} s {cpu:7.1} CPU-s {:5.2} cores  weight {weight:2}  {}{test}",
                    cpu / wall,
                    if ok { "" } else { "FAILED " }
                );
                eprintln!("xtask: weigh: {row}");
                rows.lock().unwrap().push((cpu, row));
            });
        }
    });
    let _ = std::fs::remove_dir(cgroups.dir(""));
    let mut rows = rows.into_inner().unwrap();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = std::io::stdout().lock();
    for (_, r) in rows {
        let _ = writeln!(out, "{r}");
    }
    Ok(())
}
