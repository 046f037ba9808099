//! What a hostile target or a hostile local user can do to a recording run as root (issue
//! "reliability and security, round 3"): text the target chose reaching root's terminal and
//! files raw, /metrics flooded, output directories others can write, selectors that take the
//! whole host, signals that end a session. Each test reproduces one case against the real
//! tracer and a real Python process; docs/testing.md lists the cases and their tests.

use std::process::{Command, Stdio};
use std::time::Duration;

use tracer_tests::*;

/// Starts a workload that prints "ready" once its loop runs, with `args`.
fn ready(python: &str, script: &str, args: &[&str]) -> Proc {
    use std::io::BufRead as _;
    let mut p = Proc(
        Command::new(python)
            .arg(workload(script))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{script} did not start");
    p
}

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
    let w = ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
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
    let w = ready(py(11), "hostile_names.py", &[&d.path().to_string_lossy()]);
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
