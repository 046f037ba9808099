//! What a hostile or unlucky environment does to a recording: links planted in the output
//! directory, a predictable default name taken by someone else, a full file system, the output
//! directory removed, stdout closed, repeated pids, a public /metrics address. Every case runs the
//! real tracer against a real Python process.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tracer_tests::*;

/// A Python process that allocates a little and sleeps: something to attach to. Returned once
/// its loop runs (attached during the interpreter's start-up, a recording would hold thousands
/// of start-up allocations: reports too large for the small file system of
/// `full_file_system_keeps_the_last_complete_set`).
fn idle_python() -> Proc {
    use std::io::BufRead as _;
    let mut p = Proc(
        Command::new(py(11))
            .args([
                "-c",
                "import time\nkeep = []\nprint('ready', flush=True)\nwhile True:\n    keep.append('x' * 100)\n    keep = keep[-1000:]\n    time.sleep(0.01)",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    p
}

fn record(args: &[&str]) -> std::process::Output {
    let mut all = vec!["record"];
    all.extend_from_slice(args);
    run_tracer(&all)
}

fn assert_report_set(dir: &Path) {
    for name in ["summary.txt", "report.json", "allocs.folded", "fds.svg"] {
        assert!(dir.join(name).is_file(), "{name} in {}", dir.display());
    }
    // Whole: it reads as a report.
    read_report(dir);
    let svg = std::fs::read_to_string(dir.join("fds.svg")).unwrap();
    assert!(svg.trim_end().ends_with("</svg>"), "fds.svg is whole");
    let tmp: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tracer-tmp"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

/// `summary.txt -> /victim` and `snapshots -> elsewhere` planted in `-o DIR`: refused while the
/// directory is not empty; with --force the links are replaced, never followed.
#[test]
fn planted_links_are_never_followed() {
    let d = TempDir::new("links");
    let w = idle_python();
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("summary.txt")).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("report.json")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("snapshots")).unwrap();
    let pid = w.pid().to_string();
    let o = out.to_string_lossy().into_owned();
    let refused = record(&["-p", &pid, "-d", "2s", "-o", &o]);
    assert_one_line_error(&refused, "is not empty");
    let forced = record(&[
        "-p",
        &pid,
        "-d",
        "3s",
        "--interval",
        "1s",
        "--snapshots",
        "-o",
        &o,
        "--force",
    ]);
    assert!(forced.status.success(), "{forced:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert!(!std::fs::symlink_metadata(out.join("summary.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(out.join("snapshots"))
        .unwrap()
        .is_dir());
    assert_report_set(&out);
    // -o naming a link: refused.
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let out = record(&["-p", &pid, "-d", "1s", "-o", &link.to_string_lossy()]);
    assert_one_line_error(&out, "symbolic link");
}

/// The default name is predictable: a directory another user made under that name (holding a
/// link) is not reused; tracer makes a fresh one, private to root.
#[test]
fn default_directory_is_fresh_and_private() {
    let d = TempDir::new("default");
    let w = idle_python();
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // Plant the names of the next seconds, owned by nobody, each with a link inside.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut planted = Vec::new();
    for s in 0..8 {
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", now + s),
                "+tracer-%Y%m%d-%H%M%S",
            ])
            .output()
            .unwrap();
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let p = d.path().join(&name);
        std::fs::create_dir(&p).unwrap();
        std::os::unix::fs::symlink(&victim, p.join("summary.txt")).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        planted.push(p);
    }
    let out = Command::new(tracer_bin())
        .args(["record", "-p", &w.pid().to_string(), "-d", "2s"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reports in "))
        .expect("reports in DIR");
    let dir = d.path().join(dir);
    assert!(
        !planted.contains(&dir),
        "a planted directory was reused: {dir:?}"
    );
    let md = std::fs::metadata(&dir).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    assert_report_set(&dir);
}

/// A full file system at the end: the summary still reaches stdout, the error says what was
/// kept, and the directory holds the last complete set of a checkpoint (nothing truncated).
#[test]
fn full_file_system_keeps_the_last_complete_set() {
    let d = TempDir::new("full");
    let w = idle_python();
    let mnt = d.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tracer-test",
            &mnt.to_string_lossy(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&mnt);
    let out = mnt.join("out");
    let mut t = Tracer::start(&["-p", &w.pid().to_string(), "--interval", "1s"], &out);
    t.wait_recording();
    wait_for("a checkpoint's reports", Duration::from_secs(30), || {
        out.join("summary.txt").exists()
    });
    // Fill the file system.
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}/filler", mnt.display()),
            "bs=64k",
        ])
        .stderr(Stdio::null())
        .status();
    std::thread::sleep(Duration::from_millis(1500));
    t.proc.signal(libc::SIGINT);
    let (st, f) = t.finish_any();
    let (stdout, stderr) = (f.stdout, f.stderr);
    assert!(!st.success(), "the lost final write is an error");
    assert!(
        stdout.contains("tracer: traced 1 process"),
        "summary on stdout: {stdout}"
    );
    assert!(
        stderr.contains("No space left on device")
            && stderr.contains("keeps the reports of the checkpoint at"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_report_set(&out);
}

/// The output directory removed during the recording: the summary goes to stdout and the error
/// says that nothing is kept.
#[test]
fn output_directory_removed_mid_recording() {
    let d = TempDir::new("removed");
    let w = idle_python();
    let out = d.path().join("out");
    let mut t = Tracer::start(&["-p", &w.pid().to_string(), "--interval", "1s"], &out);
    t.wait_recording();
    wait_for("a checkpoint's reports", Duration::from_secs(30), || {
        out.join("summary.txt").exists()
    });
    std::fs::remove_dir_all(&out).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    t.proc.signal(libc::SIGINT);
    let (st, f) = t.finish_any();
    let (stdout, stderr) = (f.stdout, f.stderr);
    assert!(!st.success());
    assert!(stdout.contains("tracer: traced 1 process"), "{stdout}");
    assert!(stderr.contains("removed during the recording"), "{stderr}");
    assert!(
        stderr.contains("the summary above is all there is"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing recreated behind the user's back");
}

/// A pipe whose reader is already gone.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    unsafe { Stdio::from_raw_fd_owned(fds[1]) }
}

/// Stderr a closed pipe (`2>&1 | head -1`): the reports are written and tracer ends quietly.
#[test]
fn broken_stderr_ends_quietly() {
    let d = TempDir::new("stderr");
    let w = idle_python();
    let out = d.path().join("out");
    let st = Command::new(tracer_bin())
        .args(["record", "-p", &w.pid().to_string(), "-d", "2s", "-o"])
        .arg(&out)
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert!(st.success(), "{st:?}");
    assert_report_set(&out);
}

/// Stdout a closed pipe or a full device: the reports are written and tracer ends quietly.
#[test]
fn broken_stdout_ends_quietly() {
    let d = TempDir::new("stdout");
    let w = idle_python();
    for (i, target) in ["pipe", "/dev/full"].into_iter().enumerate() {
        let out = d.path().join(format!("out{i}"));
        let stdout = if target == "pipe" {
            closed_pipe()
        } else {
            Stdio::from(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(target)
                    .unwrap(),
            )
        };
        let res = Command::new(tracer_bin())
            .args(["record", "-p", &w.pid().to_string(), "-d", "2s", "-o"])
            .arg(&out)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(res.status.success(), "{target}: {:?} {stderr}", res.status);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_report_set(&out);
    }
}

trait FromRawFdOwned {
    /// # Safety
    /// `fd` is an open descriptor this process owns.
    unsafe fn from_raw_fd_owned(fd: i32) -> Stdio;
}

impl FromRawFdOwned for Stdio {
    unsafe fn from_raw_fd_owned(fd: i32) -> Stdio {
        use std::os::fd::FromRawFd as _;
        Stdio::from(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

/// `-p P -p P` traces P once.
#[test]
fn repeated_pid_is_traced_once() {
    let d = TempDir::new("dup");
    let w = idle_python();
    let pid = w.pid().to_string();
    let out = d.path().join("out");
    let res = record(&[
        "-p",
        &pid,
        "-p",
        &pid,
        "-d",
        "2s",
        "-o",
        &out.to_string_lossy(),
    ]);
    assert!(res.status.success(), "{res:?}");
    let report = read_report(&out);
    assert_eq!(report.processes.len(), 1, "{report:?}");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(stderr.matches("tracer: tracing pid").count(), 1, "{stderr}");
}

/// /metrics on every interface: said, with a warning; on loopback: said, no warning.
#[test]
fn public_metrics_address_is_warned() {
    let d = TempDir::new("metrics");
    let w = idle_python();
    let pid = w.pid().to_string();
    for (i, (addr, public)) in [("0.0.0.0", true), ("127.0.0.1", false)]
        .into_iter()
        .enumerate()
    {
        let res = record(&[
            "-p",
            &pid,
            "-d",
            "1s",
            "--metrics-addr",
            &format!("{addr}:0"),
            "-o",
            &d.path().join(i.to_string()).to_string_lossy(),
        ]);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(res.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("serving Prometheus metrics at http://{addr}:")),
            "{stderr}"
        );
        let warned = stderr.contains("WARNING: --metrics-addr")
            && stderr.contains("every network interface");
        assert_eq!(warned, public, "{stderr}");
    }
}

/// Options that make no sense, each a one-line error with a non-zero exit and no directory left.
#[test]
fn bad_options_are_one_line_errors() {
    let d = TempDir::new("opts");
    let w = idle_python();
    let pid = w.pid().to_string();
    let out = d.path().join("out");
    let o = out.to_string_lossy().into_owned();
    for (args, needle) in [
        (vec!["-d", "-5s"], "cannot be negative"),
        (vec!["-d", "0"], "--duration must be greater than 0"),
        (vec!["-d", "18446744073709551615s"], "at most 365d"),
        (vec!["--interval", "18446744073709551615s"], "at most 365d"),
        (vec!["--min-age", "1e400"], "invalid duration"),
        (
            vec!["--interval", "500ms"],
            "--interval must be at least 1s",
        ),
        (vec!["--format", "json,,svg"], "empty format name"),
        (vec!["--format", "xml"], "unknown format 'xml'"),
        (vec!["--budget", "5"], "--budget applies to watch mode"),
        (
            vec!["--mode", "watch", "--budget", "1", "--window", "0"],
            "--window must be between",
        ),
        (
            vec!["--mode", "watch", "--window", "50ms"],
            "add --budget N",
        ),
    ] {
        let mut all = vec!["-p", pid.as_str(), "-o", o.as_str()];
        all.extend(args.iter().copied());
        let res = record(&all);
        assert_one_line_error(&res, needle);
        assert!(!out.exists(), "{args:?} left {out:?}");
    }
    // A day is a unit.
    let res = record(&[
        "-p", &pid, "-d", "1d", "-o", &o, "--mode", "watch", "--budget", "101",
    ]);
    assert_one_line_error(&res, "between 0 and 100");
}

/// A zombie has exited: said so (not "not a CPython process").
#[test]
fn zombie_is_said_to_have_exited() {
    // A child that exits at once and is never reaped by this (sleeping) parent.
    let parent = Proc(
        Command::new(py(11))
            .args([
                "-c",
                "import os, sys, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(30)",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    use std::io::BufRead as _;
    let mut parent = parent;
    std::io::BufReader::new(parent.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let zombie = line.trim().to_string();
    wait_for("the zombie", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{zombie}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    let d = TempDir::new("zombie");
    let res = record(&["-p", &zombie, "-o", &d.path().join("out").to_string_lossy()]);
    assert_one_line_error(&res, "has exited");
    drop(parent);
}

/// A start that fails after the output directory was made leaves no empty directory.
#[test]
fn failed_start_leaves_no_directory() {
    let d = TempDir::new("failed");
    let out = d.path().join("out");
    let res = record(&["-o", &out.to_string_lossy(), "--", "/bin/true"]);
    assert_one_line_error(&res, "exited without running a CPython interpreter");
    assert!(!out.exists(), "empty output directory left behind");
}

/// Watch mode on an interpreter tracer has no layout for (3.7): one WARNING line, and nothing
/// claims a heap census.
#[test]
fn watch_mode_without_a_layout_says_so() {
    let py37 = pyenv_dir("3.7").join("bin/python3");
    let w = sleeping_python(&py37, 60, "libpython3.7");
    let d = TempDir::new("py37");
    let res = record(&[
        "-p",
        &w.pid().to_string(),
        "--mode",
        "watch",
        "-d",
        "3s",
        "-o",
        &d.path().join("out").to_string_lossy(),
    ]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("WARNING: CPython 3.7"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("no heap census"), "{stderr}");
    assert!(!stderr.contains("heap census, stack samples"), "{stderr}");
    assert!(stdout.contains("WARNING: CPython 3.7"), "{stdout}");
    assert!(!stdout.contains("judged by the heap census"), "{stdout}");
    assert!(stdout.contains("only descriptors are judged"), "{stdout}");
}
