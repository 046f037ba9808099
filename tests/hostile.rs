//! What a hostile target or a hostile local user can do to a recording run as root (issue
//! "reliability and security, round 3"): text the target chose reaching root's terminal and
//! files raw, /metrics flooded, output directories others can write, selectors that take the
//! whole host, signals that end a session. Each test reproduces one case against the real
//! tracer and a real Python process; docs/testing.md lists the cases and their tests.

use std::process::Command;
use std::time::Duration;

use tracer_tests::*;

/// A control character other than a line break, in text meant for a terminal or a line-based
/// file.
fn raw_control(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| c != '\n' && (c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)))
}

/// A comm, function, file, global and open file path full of ESC, BEL, newlines and `;`: the
/// terminal (stdout, stderr), summary.txt and the folded stacks get them escaped, visibly and on
/// one line; no line is forged; the flame graphs are well-formed XML (read by Python's parser).
#[test]
fn target_controlled_text_is_escaped_everywhere() {
    let d = TempDir::new("hostile-text");
    let w = start_ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
    let out = d.path().join("out");
    let pid = w.pid().to_string();
    let mut t = Tracer::start(&["-p", &pid, "-d", "12s", "--interval", "2s"], &out);
    t.wait_recording();
    let f = t.finish();
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    for (what, text) in [
        ("stdout", &f.stdout),
        ("stderr", &f.stderr),
        ("summary.txt", &summary),
    ] {
        assert_eq!(
            raw_control(text),
            None,
            "{what} has a raw control character:\n{text}"
        );
        for l in text.lines() {
            // The forged lines would start with "forged growing" or "name (".
            assert!(
                !l.starts_with("forged")
                    && !l.starts_with("name (")
                    && !l.starts_with("newline.py"),
                "{what} has a forged line: {l:?}"
            );
        }
    }
    // Escaped, and still recognisable: the comm in the attach line, the function and its file
    // on the leaking line, the leaked file's path among the descriptor examples, the global.
    assert!(f.stderr.contains(r"py\x1b]0;PWNED\x07\ngr"), "{}", f.stderr);
    let func = r"fn\x1b[2J;evil\nname (";
    let file = r"file\x1b]0;TITLE\x07;with\nnewline.py:3)";
    assert!(
        f.stdout
            .lines()
            .any(|l| l.contains("growing") && l.contains(func) && l.contains(file)),
        "the leaking line, escaped:\n{}",
        f.stdout
    );
    assert!(f
        .stdout
        .contains(r"evil\x1b[31m;name\nforged growing line\x07.txt"));
    assert!(
        f.stdout.contains(r"__main__.CACHE\x1b[31m\nforged growing"),
        "{}",
        f.stdout
    );
    // Folded stacks: one stack per line, `frames WEIGHT`, the leaking function one frame.
    for name in ["allocs.folded", "fds.folded", "growth.folded"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert_eq!(raw_control(&text), None, "{name}");
        let stacks = parse_folded(&text);
        if name == "fds.folded" {
            assert!(
                stacks.iter().any(|(frames, n)| *n >= 10
                    && frames
                        .iter()
                        .any(|fr| fr.starts_with(r"fn\x1b[2J:evil\nname ("))
                    && frames
                        .last()
                        .is_some_and(|l| l.contains(r"\nforged growing line"))),
                "{text}"
            );
        }
    }
    for svg in ["allocs.svg", "fds.svg", "growth.svg"] {
        let p = out.join(svg);
        let ok = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
            ])
            .arg(&p)
            .status()
            .unwrap();
        assert!(ok.success(), "{svg} is not well-formed XML");
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(raw_control(&text.replace(['\t', '\r'], "")), None, "{svg}");
    }
    drop(w);
}

/// An unprivileged user opening thousands of connections to /metrics while the tracer runs
/// with a soft limit of 1,024 descriptors (a common default): the tracer neither runs out of
/// descriptors nor takes that for its target's exit; the recording lasts its `-d`, the target
/// stays traced with its descriptors, and /metrics answers once the flood stops.
#[test]
fn metrics_flood_neither_exhausts_descriptors_nor_ends_the_recording() {
    let d = TempDir::new("metrics-flood");
    let w = start_ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
    let out = d.path().join("out");
    let port = "19471";
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:20000", "--"])
        .arg(tracer_bin())
        .args([
            "record",
            "--mode",
            "watch",
            "-d",
            "25s",
            "--metrics-addr",
            port,
            "-p",
        ])
        .arg(w.pid().to_string())
        .arg("-o")
        .arg(&out);
    let mut t = Tracer::spawn(cmd, &out);
    t.wait_recording();
    let started = std::time::Instant::now();
    let tracer_pid = t.proc.pid();
    let flood = std::thread::spawn(move || {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
            ])
            .arg(workload("flood_connections.py"))
            .args([port, "12"])
            .output()
            .unwrap()
    });
    // The tracer's own descriptors while the flood lasts.
    let mut most = 0;
    while !flood.is_finished() {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{tracer_pid}/fd")) {
            most = most.max(fds.count());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let flood = flood.join().unwrap();
    let said = String::from_utf8_lossy(&flood.stdout).into_owned();
    let n = |i: usize| -> u32 {
        said.split_whitespace()
            .nth(i)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // The flood pushed beyond what the server takes at once (its connections are bounded)...
    assert!(n(1) + n(3) > 150, "the flood did not get going: {said}");
    // ... and the tracer's descriptors stayed far from its soft limit of 1,024.
    assert!(
        most < 400,
        "the tracer held {most} descriptors during the flood ({said})"
    );
    // The flood's connections are gone (closed by the flooder or timed out): a scrape answers.
    let mut scraped = false;
    for _ in 0..20 {
        let o = Command::new("curl")
            .args(["-s", "-m", "2", &format!("http://127.0.0.1:{port}/metrics")])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).contains("tracer_open_fds") {
            scraped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(scraped, "/metrics did not answer after the flood");
    let f = t.finish();
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "ended early: {}",
        f.stderr
    );
    assert!(
        !f.stderr.contains("every target has exited"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("exited; keeping"), "{}", f.stderr);
    assert!(!f.stdout.contains("exited after"), "{}", f.stdout);
    // The target's leaked descriptors are still counted at the end (none was dropped for an
    // unreadable /proc).
    let fds: u64 = parse_folded(&std::fs::read_to_string(out.join("fds.folded")).unwrap())
        .iter()
        .filter(|(fr, _)| fr.last().is_some_and(|l| l.starts_with("[file")))
        .map(|(_, n)| n)
        .sum();
    assert!(fds > 100, "leaked files counted at the end: {fds}");
    drop(w);
}

/// A tmpfs of `size` mounted at `dir/name` for the test's life.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        let mnt = dir.join("small");
        std::fs::create_dir(&mnt).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tracer-test"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success());
        SmallDisk(mnt)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `-o DIR` that another user owns, or that other users can write (mode 0777, 1777): refused
/// in one line, before anything is attached, and nothing written in it.
#[test]
fn output_directories_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = TempDir::new("others-dir");
    let w = start_ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
    let pid = w.pid().to_string();
    for (owner, mode, said) in [
        (65534, 0o777, "belongs to another user (uid 65534)"),
        (65534, 0o700, "belongs to another user (uid 65534)"),
        (0, 0o777, "other users can write it"),
        (0, 0o1777, "other users can write it"),
    ] {
        let out = d.path().join(format!("out-{owner}-{mode:o}"));
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::chown(&out, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = run_tracer(&[
            "record",
            "-p",
            &pid,
            "-d",
            "2s",
            "-o",
            &out.to_string_lossy(),
        ]);
        assert_one_line_error(&o, said);
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "{}",
            out.display()
        );
    }
    // The same directory, root's and private: taken.
    let out = d.path().join("mine");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = run_tracer(&[
        "record",
        "-p",
        &pid,
        "-d",
        "2s",
        "-o",
        &out.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("summary.txt").is_file());
}

/// `--force` on a directory whose snapshots/ holds the user's files beside and inside tracer's
/// old sets: tracer's files go, the user's stay.
#[test]
fn force_leaves_other_files_under_snapshots() {
    let d = TempDir::new("force-snapshots");
    let w = start_ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
    let out = d.path().join("out");
    for dir in ["snapshots/0001-10s", "snapshots/0002-20s", "snapshots/data"] {
        std::fs::create_dir_all(out.join(dir)).unwrap();
    }
    std::fs::write(out.join("snapshots/0001-10s/summary.txt"), "old").unwrap();
    std::fs::write(out.join("snapshots/0001-10s/report.json"), "{}").unwrap();
    std::fs::write(out.join("snapshots/0002-20s/summary.txt"), "old").unwrap();
    std::fs::write(out.join("snapshots/0002-20s/my-notes.txt"), "mine").unwrap();
    std::fs::write(out.join("snapshots/data/results.db"), "mine").unwrap();
    std::fs::write(out.join("snapshots/README"), "mine").unwrap();
    let o = run_tracer(&[
        "record",
        "-p",
        &w.pid().to_string(),
        "-d",
        "2s",
        "--force",
        "-o",
        &out.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for mine in [
        "snapshots/0002-20s/my-notes.txt",
        "snapshots/data/results.db",
        "snapshots/README",
    ] {
        assert_eq!(
            std::fs::read_to_string(out.join(mine)).unwrap(),
            "mine",
            "{mine}"
        );
    }
    assert!(!out.join("snapshots/0001-10s").exists());
    assert!(!out.join("snapshots/0002-20s/summary.txt").exists());
}

/// A disk too small for the first set of reports: what fits is kept, the summary first (it
/// left nothing at all), and the error says which files are there.
#[test]
fn a_first_set_too_large_for_the_disk_keeps_the_summary() {
    let d = TempDir::new("tiny-disk");
    let w = start_ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
    let disk = SmallDisk::mount(d.path(), "12k");
    let out = disk.0.join("out");
    let mut t = Tracer::start(&["-p", &w.pid().to_string(), "-d", "4s"], &out);
    t.wait_recording();
    let (st, f) = t.finish_any();
    assert!(!st.success(), "the reports did not all fit: an error");
    assert!(
        f.stderr.contains("summary.txt") && f.stderr.contains("did not fit"),
        "{}",
        f.stderr
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(summary.starts_with("tracer: traced 1 process"), "{summary}");
    assert!(f.stdout.contains("tracer: traced 1 process"));
}

/// `--snapshots` on a small disk: the oldest snapshots make room, so that the final set is the
/// end of the recording (it stayed at the first checkpoint) and the newest snapshots are kept.
#[test]
fn snapshots_make_room_for_the_final_reports() {
    let d = TempDir::new("snapshots-disk");
    let w = start_ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
    let disk = SmallDisk::mount(d.path(), "400k");
    let out = disk.0.join("out");
    let mut t = Tracer::start(
        &[
            "-p",
            &w.pid().to_string(),
            "-d",
            "14s",
            "--interval",
            "1s",
            "--snapshots",
        ],
        &out,
    );
    t.wait_recording();
    let f = t.finish();
    assert!(
        f.stderr.contains("removing the oldest snapshots"),
        "{}",
        f.stderr
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    let secs: f64 = summary
        .split(" for ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(secs >= 13.0, "the final set is from {secs}s: {summary}");
    let mut sets: Vec<String> = std::fs::read_dir(out.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    sets.sort();
    let newest: u32 = sets.last().unwrap()[..4].parse().unwrap();
    assert!(newest >= 10 && sets.len() < newest as usize, "{sets:?}");
    assert!(!sets.contains(&"0001-1s".to_string()), "{sets:?}");
}

/// `--cgroup` naming the root cgroup, however spelled, would trace every process on the host
/// (and in exact mode put allocator probes on other users' services): refused in one line.
#[test]
fn the_root_cgroup_is_refused() {
    for arg in [
        "",
        "/",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/",
        "//.",
        "/sys/fs/cgroup/unified",
    ] {
        let o = run_tracer(&["record", "--cgroup", arg, "-d", "2s"]);
        assert_one_line_error(&o, "root cgroup");
    }
}

/// SIGHUP (a closed terminal or SSH session), SIGQUIT, SIGUSR1 and SIGALRM end the recording
/// as Ctrl-C does: the reports are written, the summary printed, the exit clean (they killed
/// tracer with nothing written).
#[test]
fn terminal_signals_end_the_recording_with_its_reports() {
    let d = TempDir::new("signals");
    let w = start_ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
    for (sig, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGALRM, "SIGALRM"),
    ] {
        let out = d.path().join(name);
        let mut t = Tracer::start(&["-p", &w.pid().to_string(), "--mode", "watch"], &out);
        t.wait_recording();
        std::thread::sleep(Duration::from_millis(1500));
        t.proc.signal(sig);
        let f = t.finish();
        assert!(
            f.stderr.contains(name) && f.stderr.contains("received, writing the reports"),
            "{}",
            f.stderr
        );
        assert!(
            f.stdout.contains("tracer: traced 1 process"),
            "{name}: {}",
            f.stdout
        );
        let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
        assert!(
            summary.contains(&format!("pid {}", w.pid())),
            "{name}: {summary}"
        );
        assert!(out.join("report.json").is_file());
    }
}

/// Messages that misled (case 14): `--mode bogus` names the choices; a host name is taken for
/// --metrics-addr; a launched command that runs no Python before `-d` is an error (it exited 0
/// with empty reports); a stopped target is flagged; the summary names the output directory
/// where it is now (it was renamed meanwhile).
#[test]
fn messages_say_what_happened() {
    let o = run_tracer(&["record", "--mode", "bogus", "-p", "1"]);
    assert_one_line_error(&o, "choose among exact, watch");
    let d = TempDir::new("messages");
    let w = start_ready(py(11), "idle_threads.py", &["2"]);
    let pid = w.pid().to_string();
    let out = d.path().join("host-name");
    let o = run_tracer(&[
        "record",
        "-p",
        &pid,
        "--mode",
        "watch",
        "-d",
        "2s",
        "--metrics-addr",
        "localhost:19473",
        "-o",
        &out.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("http://127.0.0.1:19473/metrics"));
    // A command that never runs Python within -d.
    let out = d.path().join("no-python");
    let o = run_tracer(&[
        "record",
        "-d",
        "2s",
        "-o",
        &out.to_string_lossy(),
        "--",
        "sleep",
        "5",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("tracer: error:")
                && l.contains("ran no CPython interpreter before the recording ended")),
        "{err}"
    );
    assert!(!out.exists(), "no empty directory left");
    // Stopped, then running again; the directory renamed while recording.
    let out = d.path().join("before");
    let moved = d.path().join("after");
    let mut t = Tracer::start(&["-p", &pid, "--mode", "watch", "-d", "6s"], &out);
    t.wait_recording();
    w.signal(libc::SIGSTOP);
    t.wait_stderr("is stopped (SIGSTOP", Duration::from_secs(10));
    w.signal(libc::SIGCONT);
    t.wait_stderr("runs again", Duration::from_secs(10));
    std::fs::rename(&out, &moved).unwrap();
    let f = t.finish();
    assert!(
        f.stdout
            .contains(&format!("reports in {}", moved.display())),
        "{}",
        f.stdout
    );
    assert!(moved.join("summary.txt").is_file());
}
