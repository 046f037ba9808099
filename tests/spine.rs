//! End to end: the real tracer, real BPF programs, real Python processes that leak known amounts.

use std::path::Path;
use std::time::Duration;

use tracer_tests::*;

const LEAKED_FILES: usize = 7;
const LEAKED_SOCKETS: u64 = 3;
const LEAKED_PIPE_ENDS: u64 = 4;

fn wait_python_mapped(pid: u32) {
    wait_for("the interpreter to start", Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("python"))
    });
    // Past start-up: the workload is polling for its go file.
    std::thread::sleep(Duration::from_millis(300));
}

/// Waits until a workload started with `--go-file GO` is past its start-up (imports made while
/// traced would be outstanding on the import lines; a loaded machine takes seconds to import).
fn wait_started(go: &Path) {
    wait_for("the workload to start", Duration::from_secs(60), || {
        go.with_extension("ready").exists()
    });
}

fn leaked_paths(dir: &Path) -> Vec<String> {
    read_done(&dir.join("done.json")).files
}

/// Every leaked descriptor is reported once, closed ones never, nothing else.
fn assert_descriptors_exact(f: &Finished, dir: &Path, pid: u32) {
    let fds = f.folded("fds.folded");
    for (stack, _) in &fds {
        assert!(
            stack[0].ends_with(&format!("(pid {pid})")),
            "root frame names the process: {stack:?}"
        );
    }
    let leaves = by_leaf(&fds);
    let paths = leaked_paths(dir);
    assert_eq!(paths.len(), LEAKED_FILES);
    for p in &paths {
        assert_eq!(
            leaves.get(&format!("[file {p}]")),
            Some(&1),
            "leaked file {p} in {leaves:?}"
        );
    }
    assert!(
        !leaves.keys().any(|l| l.contains("closed-")),
        "closed files reported: {leaves:?}"
    );
    assert_eq!(
        leaves.get("[socket inet/udp]"),
        Some(&LEAKED_SOCKETS),
        "{leaves:?}"
    );
    assert_eq!(leaves.get("[pipe]"), Some(&LEAKED_PIPE_ENDS), "{leaves:?}");
    assert!(
        !leaves.contains_key("[socket inet/tcp]"),
        "closed tcp sockets reported: {leaves:?}"
    );
    assert_eq!(
        total(&fds),
        LEAKED_FILES as u64 + LEAKED_SOCKETS + LEAKED_PIPE_ENDS,
        "{leaves:?}"
    );
    assert!(
        f.stdout
            .contains(&format!("open descriptors: {}", total(&fds))),
        "{}",
        f.stdout
    );
    // The summary shows the files leaked at one line as one site, with a few of their paths.
    let site = f
        .stdout
        .lines()
        .find(|l| l.contains("[file]"))
        .unwrap_or_else(|| panic!("a [file] site in the summary: {}", f.stdout));
    assert!(
        site.trim_start().starts_with(&format!("{LEAKED_FILES} ")),
        "one row for the {LEAKED_FILES} leaked files: {site}"
    );
    assert!(site.contains("e.g. ") && site.contains("(+"), "{site}");
}

/// Outstanding bytes match tracemalloc's measure of the same work. The workload also churns
/// more transient memory than it leaks, so missing frees would double the figure.
fn assert_bytes_close(f: &Finished, reference: u64) {
    let bytes = total(&f.folded("allocs.folded"));
    let ratio = bytes as f64 / reference as f64;
    eprintln!("outstanding {bytes} B, tracemalloc {reference} B, ratio {ratio:.3}");
    assert!(
        (0.75..=1.25).contains(&ratio),
        "outstanding {bytes} B vs tracemalloc {reference} B (ratio {ratio:.3})"
    );
    let count = total(&f.folded("allocs-count.folded"));
    assert!(
        count >= 6000,
        "at least the 6,000 leaked objects are outstanding, got {count}"
    );
}

fn attach_and_check(python: &str, tag: &str) {
    let reference = tracemalloc_reference(python, &[]);
    let dir = TempDir::new(tag);
    let go = dir.path().join("go");
    let w = start_leak(python, dir.path(), &["--go-file", go.to_str().unwrap()]);
    let pid = w.pid();
    wait_started(&go);
    let mut t = Tracer::start(&["-p", &pid.to_string()], &dir.path().join("out"));
    t.wait_recording();
    std::fs::write(&go, b"").unwrap();
    wait_for(
        "the workload to finish leaking",
        Duration::from_secs(180),
        || dir.path().join("done.json").exists(),
    );
    let f = t.stop();
    assert_descriptors_exact(&f, dir.path(), pid);
    assert_bytes_close(&f, reference);
    assert!(f.stdout.contains("heap census ("), "{}", f.stdout);
    assert!(f.stdout.contains("coverage: good"), "{}", f.stdout);
    drop(w);
}

#[test]
fn attach_by_pid_pyenv_311() {
    attach_and_check(py(11), "attach311");
}

#[test]
fn attach_by_pid_pyenv_312() {
    attach_and_check(py(12), "attach312");
}

/// A process that opens a file about once a millisecond while the tracer attaches: every
/// descriptor the tracer records has its Python frames, the first ones too (the kernel knows
/// how to walk the process's frames before it records its first event; descriptors opened
/// while the allocator probes were attached used to have none).
#[test]
fn descriptors_opened_while_attaching_have_python_frames() {
    let dir = TempDir::new("attaching");
    let w = Proc(
        std::process::Command::new(py(11))
            .arg(workload("open_loop.py"))
            .arg(dir.path())
            .spawn()
            .unwrap(),
    );
    wait_python_mapped(w.pid());
    // In its loop (start-up on a loaded machine takes seconds): the attach falls among opens.
    wait_for("the workload to open", Duration::from_secs(60), || {
        dir.path().join("held").exists()
    });
    let mut t = Tracer::start(&["-p", &w.pid().to_string()], &dir.path().join("out"));
    t.wait_recording();
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    wait_for(
        "the workload to stop opening",
        Duration::from_secs(30),
        || dir.path().join("stopped").exists(),
    );
    let f = t.stop();
    let held = format!("[file {}]", dir.path().join("held").display());
    let fds: Vec<(Vec<String>, u64)> = f
        .folded("fds.folded")
        .into_iter()
        .filter(|(s, _)| s.last() == Some(&held))
        .collect();
    // A millisecond apart, fewer on a loaded machine.
    assert!(total(&fds) >= 20, "{fds:?}");
    for (s, n) in &fds {
        assert!(
            s.iter()
                .any(|fr| fr.starts_with("hold (") && fr.contains("open_loop.py:")),
            "{n} descriptor(s) without their Python frames: {s:?}"
        );
    }
}

/// Launch mode traces from the first line: everything since start-up is outstanding, which is
/// what tracemalloc started with -X tracemalloc measures.
fn launch_and_check(python: &str, tag: &str) {
    let dir = TempDir::new(tag);
    let ref_dir = TempDir::new("launchref");
    let mut r = std::process::Command::new(python)
        .args(["-X", "tracemalloc"])
        .arg(workload("leak.py"))
        .arg("--done-file")
        .arg(ref_dir.path().join("done.json"))
        .arg("--tmpdir")
        .arg(ref_dir.path())
        .args(["--tracemalloc-total", "--exit"])
        .status()
        .unwrap();
    assert!(r.success());
    let reference: u64 = read_done(&ref_dir.path().join("done.json"))
        .tracemalloc_total
        .expect("tracemalloc_total in done.json")
        .try_into()
        .unwrap();
    let _ = &mut r;

    let done = dir.path().join("done.json");
    let mut t = Tracer::start(
        &[
            "--",
            python,
            workload("leak.py").to_str().unwrap(),
            "--done-file",
            done.to_str().unwrap(),
            "--tmpdir",
            dir.path().to_str().unwrap(),
        ],
        &dir.path().join("out"),
    );
    t.wait_recording();
    wait_for(
        "the workload to finish leaking",
        Duration::from_secs(240),
        || done.exists(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let pid = read_done(&done).pid;
    let f = t.stop();
    assert_descriptors_exact(&f, dir.path(), pid);
    assert_bytes_close(&f, reference);
    // The heap census works on a launched process too (its interpreter was mapped after it
    // was added: the type object's address is known only then).
    assert!(
        f.stdout.contains("heap census (") && !f.stdout.contains("heap census: not taken"),
        "{}",
        f.stdout
    );
    // The launched command is ended with the recording.
    wait_ended(pid, "the launched workload to be gone");
}

#[test]
fn launch_pyenv_38() {
    launch_and_check(py(8), "launch38");
}

#[test]
fn launch_pyenv_311() {
    launch_and_check(py(11), "launch311");
}

/// A relocatable shared-libpython build: its executable finds libpython through RUNPATH
/// `$ORIGIN/../lib` (a copy of pyenv's 3.12 made so, `private_py`). Launched, it had no Python
/// frames: the library was named `bin/../lib/...`, not as the kernel names its mapping.
#[test]
fn launch_relocatable_python() {
    launch_and_check(private_py(12, "relocatable"), "launch-relocatable");
}

/// Debian's static, stripped, PGO/LTO python: the tracer says its allocation view is partial, and
/// the descriptor report stays exact.
#[test]
fn debian_static_python_warns_and_keeps_descriptors_exact() {
    let dir = TempDir::new("debian");
    let go = dir.path().join("go");
    let w = start_leak(
        DEBIAN_PY311,
        dir.path(),
        &["--go-file", go.to_str().unwrap()],
    );
    let pid = w.pid();
    wait_started(&go);
    let mut t = Tracer::start(&["-p", &pid.to_string()], &dir.path().join("out"));
    t.wait_recording();
    assert!(
        t.stderr
            .iter()
            .any(|l| l.contains("allocation coverage is LOW")),
        "warning at attach: {:?}",
        t.stderr
    );
    std::fs::write(&go, b"").unwrap();
    wait_for(
        "the workload to finish leaking",
        Duration::from_secs(120),
        || dir.path().join("done.json").exists(),
    );
    let f = t.stop();
    assert!(
        f.stdout.contains("WARNING: allocation coverage is LOW"),
        "{}",
        f.stdout
    );
    assert_descriptors_exact(&f, dir.path(), pid);
    drop(w);
}

/// --duration ends the recording by itself and writes the reports; --min-age hides young entries:
/// two tracers watch the same leak made while both are attached, one with --min-age 1h (sees
/// nothing old enough, and ends by itself after -d), one without (sees the leak).
#[test]
fn duration_and_min_age() {
    let dir = TempDir::new("minage");
    let go = dir.path().join("go");
    let w = start_leak(py(11), dir.path(), &["--go-file", &go.to_string_lossy()]);
    let pid = w.pid().to_string();
    wait_started(&go);
    let mut aged = Tracer::start(
        &[
            "-p",
            &pid,
            "-d",
            "25s",
            "--min-age",
            "1h",
            "--interval",
            "1s",
            "--snapshots",
        ],
        &dir.path().join("aged"),
    );
    let mut all = Tracer::start(&["-p", &pid], &dir.path().join("all"));
    aged.wait_recording();
    all.wait_recording();
    std::fs::write(&go, b"").unwrap();
    wait_for("the leak", Duration::from_secs(60), || {
        dir.path().join("done.json").exists()
    });
    // -d ends the first by itself, reports written; the other is stopped once the leak is made.
    let all = all.stop();
    let aged = aged.finish();
    assert!(
        total(&all.folded("allocs.folded")) > 1_000_000,
        "the leak is outstanding"
    );
    assert!(
        total(&all.folded("fds.folded")) >= 7,
        "leaked files are open"
    );
    assert_eq!(total(&aged.folded("allocs.folded")), 0, "younger than 1h");
    assert_eq!(total(&aged.folded("fds.folded")), 0, "younger than 1h");
    // --snapshots: the reports at every checkpoint (--interval) as well as the final ones.
    let snaps: Vec<_> = std::fs::read_dir(aged.dir.join("snapshots"))
        .unwrap()
        .collect();
    assert!(snaps.len() >= 2, "snapshots written: {snaps:?}");
    for s in snaps {
        assert!(s.unwrap().path().join("fds.folded").exists());
    }
    drop(w);
}

/// SIGKILL of the tracer leaves the target running, and no probe or program behind.
#[test]
fn sigkill_leaves_target_unaffected() {
    let dir = TempDir::new("sigkill");
    let beat = dir.path().join("beat");
    let mut w = Proc(
        std::process::Command::new(py(11))
            .arg(workload("heartbeat.py"))
            .arg(&beat)
            .spawn()
            .unwrap(),
    );
    let read_beat = || {
        std::fs::read_to_string(&beat)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_for("heartbeat", Duration::from_secs(20), || read_beat() > 0);
    let mut t = Tracer::start(&["-p", &w.pid().to_string()], &dir.path().join("out"));
    t.wait_recording();
    assert!(
        loaded_bpf_programs().iter().any(|n| n == "malloc_enter"),
        "programs loaded while tracing"
    );
    let ours = bpf_program_ids(t.proc.pid());
    assert!(ours.len() >= 5, "the tracer holds its programs: {ours:?}");
    std::thread::sleep(Duration::from_secs(1));
    t.proc.signal(libc::SIGKILL);
    // A killed process's exit releases its uprobes, each after the kernel's grace periods:
    // seconds, more on a loaded machine (the claim is that it ends, not how fast).
    t.proc.wait(Duration::from_secs(60)).expect("tracer killed");
    let before = read_beat();
    std::thread::sleep(Duration::from_secs(1));
    assert!(w.alive(), "target survived the tracer's death");
    assert!(read_beat() > before, "target keeps running");
    // Its programs are gone (other tracers may run at the same time: only its own are checked).
    wait_for("programs to be unloaded", Duration::from_secs(10), || {
        let loaded = loaded_bpf_program_ids();
        !ours.iter().any(|id| loaded.contains(id))
    });
}

/// A normal end detaches everything too, and the target goes on.
#[test]
fn clean_exit_detaches() {
    let dir = TempDir::new("clean");
    let beat = dir.path().join("beat");
    let mut w = Proc(
        std::process::Command::new(py(11))
            .arg(workload("heartbeat.py"))
            .arg(&beat)
            .spawn()
            .unwrap(),
    );
    wait_for("heartbeat", Duration::from_secs(20), || beat.exists());
    let mut t = Tracer::start(
        &["-p", &w.pid().to_string(), "-d", "2s"],
        &dir.path().join("out"),
    );
    t.wait_recording();
    let ours = bpf_program_ids(t.proc.pid());
    assert!(ours.len() >= 5, "the tracer holds its programs: {ours:?}");
    let f = t.finish();
    assert!(f.dir.join("allocs.folded").exists());
    assert!(w.alive());
    // The kernel frees the programs once their last link is gone (uprobe removal waits for
    // grace periods): within seconds of the exit.
    wait_for(
        "its programs to be unloaded",
        Duration::from_secs(10),
        || {
            let loaded = loaded_bpf_program_ids();
            !ours.iter().any(|id| loaded.contains(id))
        },
    );
}

/// exec replaces the program image: the old program is reported up to the exec (its 1 MB and
/// its files as they were at the exec, marked as before the exec), nothing is attributed to
/// the new program (sleep, not Python), and descriptors closed by CLOEXEC are not open in any
/// live entry.
#[test]
fn exec_voids_the_old_heap_and_cloexec_descriptors() {
    let dir = TempDir::new("exec");
    let ready = dir.path().join("ready");
    let go = dir.path().join("go");
    let w = Proc(
        std::process::Command::new(py(11))
            .arg(workload("exec_after_leak.py"))
            .arg(&ready)
            .arg(&go)
            .spawn()
            .unwrap(),
    );
    wait_python_mapped(w.pid());
    let mut t = Tracer::start(&["-p", &w.pid().to_string()], &dir.path().join("out"));
    t.wait_recording();
    std::fs::write(go.with_extension("start"), b"").unwrap();
    wait_for("the leak", Duration::from_secs(60), || ready.exists());
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&go, b"").unwrap();
    wait_for("the exec", Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{}/comm", w.pid()))
            .is_ok_and(|c| c.trim() == "sleep")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let f = t.stop();
    assert!(
        f.stderr
            .contains(&format!("pid {} exec'd /usr/bin/sleep", w.pid())),
        "the exec said: {}",
        f.stderr
    );
    assert!(
        f.stdout.contains("exec'd into /usr/bin/sleep after")
            && f.stdout.contains("figures are up to the exec"),
        "{}",
        f.stdout
    );
    let before = |s: &[String]| s[0].ends_with(&format!("(pid {}, before exec)", w.pid()));
    let fds = f.folded("fds.folded");
    let file = format!("[file {}]", ready.display());
    assert!(
        fds.iter()
            .any(|(s, _)| before(s) && s.last() == Some(&file)),
        "the file kept before the exec, in the entry before the exec: {fds:?}"
    );
    assert!(
        fds.iter().all(|(s, _)| before(s)),
        "CLOEXEC file closed by exec: open only in the entry before the exec: {fds:?}"
    );
    // The entry is the state at the exec, not at the tracer's last reading (up to a second
    // before): the file closed just before the exec is not open, the one opened then is.
    let closed = format!("[file {}.closed]", ready.display());
    assert!(
        !fds.iter().any(|(s, _)| s.last() == Some(&closed)),
        "a file closed before the exec listed as open: {fds:?}"
    );
    let late = format!("[file {}.late]", ready.display());
    assert!(
        fds.iter()
            .any(|(s, _)| before(s) && s.last() == Some(&late)),
        "the file opened just before the exec, in the entry before the exec: {fds:?}"
    );
    let allocs = f.folded("allocs.folded");
    let (old, new): (Vec<_>, Vec<_>) = allocs.into_iter().partition(|(s, _)| before(s));
    assert_eq!(total(&new), 0, "nothing attributed to sleep: {new:?}");
    let bytes = total(&old);
    assert!(
        bytes >= 1_000_000,
        "the 1 MB kept before the exec is reported up to the exec, got {bytes} B"
    );
    let r = f.report();
    assert_eq!(r.processes.len(), 1, "{r:?}");
    assert_eq!(
        r.processes[0].exec_into.as_deref(),
        Some("/usr/bin/sleep"),
        "{r:?}"
    );
}

/// Many outstanding allocations: every one reported, on its line (the map is read in batches
/// and grouped on the fly).
#[test]
fn outstanding_at_scale() {
    const N: u64 = 200_000;
    let d = TempDir::new("scale");
    let (go, done) = (d.path().join("go"), d.path().join("done"));
    let w = Proc(
        std::process::Command::new(py(11))
            .arg(workload("hold.py"))
            .arg(&go)
            .arg(&done)
            .arg(N.to_string())
            .spawn()
            .unwrap(),
    );
    wait_python_mapped(w.pid());
    let mut t = Tracer::start(&["-p", &w.pid().to_string()], &d.path().join("out"));
    t.wait_recording();
    std::fs::write(&go, b"").unwrap();
    wait_for("the allocations", Duration::from_secs(180), || {
        done.exists()
    });
    std::thread::sleep(Duration::from_millis(2500));
    let f = t.stop();
    drop(w);
    let hold_line = std::fs::read_to_string(workload("hold.py"))
        .unwrap()
        .lines()
        .position(|l| l.contains("return list(map(object.__new__"))
        .unwrap()
        + 1;
    let at = format!("hold.py:{hold_line})");
    let counts = f.folded("allocs-count.folded");
    let on_line: u64 = counts
        .iter()
        .filter(|(s, _)| s.iter().any(|fr| fr.ends_with(&at)))
        .map(|(_, w)| w)
        .sum();
    // N objects, the list and its item array.
    assert!(
        (N..=N + 10).contains(&on_line),
        "{on_line} allocations on hold.py:{hold_line}: {counts:?}"
    );
    let bytes: u64 = f
        .folded("allocs.folded")
        .iter()
        .filter(|(s, _)| s.iter().any(|fr| fr.ends_with(&at)))
        .map(|(_, w)| w)
        .sum();
    // 16-byte objects and an array of N pointers (with its growth margin).
    assert!(
        (16 * N + 8 * N..=16 * N + 10 * N).contains(&bytes),
        "{bytes} B on hold.py:{hold_line}"
    );
}
