//! Every error a user can cause: one line on stderr, non-zero exit, no panic.

use std::process::Command;

use tracer_tests::*;

fn out_dir(t: &TempDir) -> String {
    t.path().join("out").to_string_lossy().into_owned()
}

#[test]
fn no_such_pid() {
    let d = TempDir::new("e1");
    let out = run_tracer(&["record", "-p", "999999999", "-o", &out_dir(&d)]);
    assert_one_line_error(&out, "no process with pid 999999999");
}

#[test]
fn not_a_python_process() {
    let d = TempDir::new("e2");
    let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let out = run_tracer(&[
        "record",
        "-p",
        &sleeper.pid().to_string(),
        "-o",
        &out_dir(&d),
    ]);
    assert_one_line_error(&out, "is not a CPython process");
}

#[test]
fn unsupported_interpreter() {
    let d = TempDir::new("e3");
    let py2 = sleeping_python(py2(), 30, "libpython2.7");
    let out = run_tracer(&["record", "-p", &py2.pid().to_string(), "-o", &out_dir(&d)]);
    assert_one_line_error(&out, "runs Python 2.7, which tracer does not support");
}

#[test]
fn not_root() {
    let d = TempDir::new("e4");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(tracer_bin())
        .args(["record", "-p", "1", "-o", &out_dir(&d)])
        .output()
        .unwrap();
    assert_one_line_error(&out, "tracer needs root");
}

#[test]
fn unwritable_output_directory() {
    let w = sleeping_python(py(11), 30, "libpython");
    let out = run_tracer(&[
        "record",
        "-p",
        &w.pid().to_string(),
        "-o",
        "/proc/tracer-cannot-write-here",
    ]);
    assert_one_line_error(
        &out,
        "cannot write the output directory /proc/tracer-cannot-write-here",
    );
}

/// A kernel without uprobe support, as this process sees it: a private mount namespace where
/// the uprobe PMU's sysfs directory is hidden.
#[test]
fn kernel_without_uprobes() {
    let d = TempDir::new("e5");
    let w = sleeping_python(py(11), 30, "libpython");
    let script = format!(
        "mount -t tmpfs none /sys/bus/event_source/devices/uprobe && exec {} record -p {} -o {}",
        tracer_bin().display(),
        w.pid(),
        out_dir(&d)
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_one_line_error(&out, "this kernel cannot run tracer: no uprobe support");
}

#[test]
fn nothing_to_trace() {
    let out = run_tracer(&["record"]);
    assert_one_line_error(&out, "nothing to trace");
}

#[test]
fn bad_duration() {
    let out = run_tracer(&["record", "-p", "1", "-d", "soon"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid duration 'soon'"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn launch_missing_command() {
    let d = TempDir::new("e6");
    let out = run_tracer(&[
        "record",
        "-o",
        &out_dir(&d),
        "--",
        "/nonexistent/python3",
        "app.py",
    ]);
    assert_one_line_error(&out, "cannot launch `/nonexistent/python3 app.py`");
}

#[test]
fn launch_non_python_command() {
    let d = TempDir::new("e7");
    let out = run_tracer(&["record", "-o", &out_dir(&d), "--", "/bin/true"]);
    assert_one_line_error(&out, "exited without running a CPython interpreter");
}

#[test]
fn doctor_reports_a_process() {
    let w = sleeping_python(py(11), 30, "libpython");
    let out = run_tracer(&["doctor", "-p", &w.pid().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("CPython {}", py_release(11))),
        "{stdout}"
    );
    assert!(stdout.contains("_PyObject_Malloc"), "{stdout}");
    assert!(stdout.contains("_PyMem_RawFree"), "{stdout}");
    assert!(
        stdout.contains("layout:        tracer's table for 3.11"),
        "{stdout}"
    );
    assert!(stdout.contains("live check:    passed"), "{stdout}");
    assert!(stdout.contains("python stacks: yes"), "{stdout}");
    assert!(
        stdout.contains("heap census:   yes (3 gc list heads"),
        "{stdout}"
    );
    // Per module: are native stacks deep through it? (pyenv's libpython and Debian's libc are
    // built without frame pointers.)
    for module in ["/lib/libpython3.11.so.1.0: ", "/libc.so.6: "] {
        let line = stdout
            .lines()
            .find(|l| l.contains(module))
            .unwrap_or_else(|| panic!("no line for {module}: {stdout}"));
        assert!(
            line.contains("no frame pointers")
                && line.contains("native stacks are cut after the first frame"),
            "{line}"
        );
    }
    let out = run_tracer(&["doctor", "-p", "999999999"]);
    assert!(!out.status.success());
}

/// Debian's 3.13.5, 3.14 and 3.15: doctor says the layout comes from the target's debug
/// offsets, that it passed the live check, and where the gc list heads are (3.13.5 keeps its
/// young generation at 20 bytes into the gc state, 7400 + 20, unlike pyenv's 3.13.0).
#[test]
fn doctor_reports_debug_offsets() {
    for b in debian_builds() {
        let d = b.tempdir("doctor");
        let svc = start_service_on(&b, &d, &[]);
        let out = run_tracer(&["doctor", "-p", &svc.pid().to_string()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let name = &b.name;
        assert!(
            stdout.contains(&format!("CPython 3.{}.", b.version.1)),
            "{name}: {stdout}"
        );
        assert!(
            stdout.contains(
                "layout:        debug offsets in the target (_Py_DebugOffsets, validated)"
            ),
            "{name}: {stdout}"
        );
        assert!(stdout.contains("live check:    passed"), "{name}: {stdout}");
        assert!(stdout.contains("python stacks: yes"), "{name}: {stdout}");
        let heads = stdout
            .lines()
            .find(|l| l.contains("heap census:   yes ("))
            .unwrap_or_else(|| panic!("{name}: {stdout}"));
        assert!(heads.contains("4 gc list heads"), "{name}: {heads}");
        if b.version == (3, 13) {
            assert!(heads.contains("at 7420, "), "{name}: {heads}");
        }
    }
}

#[test]
fn top_without_a_terminal() {
    // Test processes have no terminal: the live view says so and exits non-zero.
    let out = run_tracer(&["top", "-p", "1"]);
    assert_one_line_error(&out, "tracer top needs a terminal");
}

#[test]
fn metrics_address_in_use() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = run_tracer(&["record", "-p", "1", "--metrics-addr", &addr]);
    assert_one_line_error(&out, "for --metrics-addr");
}
