//! Processes of the tests: the tracer binary and its runs, workloads, temporary directories.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

pub fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer"))
}

pub fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// The same under `parent`.
    pub fn new_in(parent: &Path, tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = parent.join(format!(
            "tracer-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cgroup of its own in the cgroup2 hierarchy: the processes started through [`Cgroup::enter`]
/// and everything they start are in it, so that a tracer given `--cgroup` takes in those only
/// and a test that follows every new process can share the machine. Removed on drop, its
/// processes killed.
pub struct Cgroup {
    pub dir: PathBuf,
    procs: std::ffi::CString,
}

impl Cgroup {
    pub fn new(tag: &str) -> Cgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE ..."
        let root = mountinfo
            .lines()
            .find_map(|l| {
                let (head, tail) = l.split_once(" - ")?;
                (tail.split(' ').next() == Some("cgroup2")).then(|| head.split(' ').nth(4))?
            })
            .expect("a cgroup2 hierarchy mounted");
        let dir = Path::new(root).join(format!("tracer-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let procs = std::ffi::CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        Cgroup { dir, procs }
    }

    /// `cmd`, started in the cgroup: the child moves itself there before its exec.
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        use std::os::unix::process::CommandExt;
        let procs = self.procs.clone();
        // Only system calls between the fork and the exec ("0": the writing process itself).
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Kills the child on drop, so a failing assertion never leaves processes behind.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Tells a workload started by [`start_ready`] that waits on its stdin to go on (once the
    /// tracer records: a loaded machine can take seconds to attach).
    pub fn go(&mut self) {
        use std::io::Write;
        let stdin = self
            .0
            .stdin
            .as_mut()
            .expect("a workload started with a piped stdin");
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
    /// Waits for exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a process is gone or a zombie (ended, not yet reaped), at most 10 s.
pub fn wait_ended(pid: u32, what: &str) {
    wait_for(what, Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
    });
}

/// A running `tracer record`, its stderr read line by line in the background.
pub struct Tracer {
    pub proc: Proc,
    lines: mpsc::Receiver<String>,
    /// Reads stdout meanwhile (a large summary would fill the pipe and block the tracer).
    stdout: Option<std::thread::JoinHandle<String>>,
    pub stderr: Vec<String>,
    pub out_dir: PathBuf,
}

impl Tracer {
    pub fn start(args: &[&str], out_dir: &Path) -> Tracer {
        let mut cmd = Command::new(tracer_bin());
        cmd.arg("record").arg("-o").arg(out_dir).args(args);
        Tracer::spawn(cmd, out_dir)
    }

    /// `tracer record` as `cmd` runs it (through a wrapper, say), writing to `out_dir`.
    pub fn spawn(mut cmd: Command, out_dir: &Path) -> Tracer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tracer binary (run through `cargo xtask test`)");
        let (tx, rx) = mpsc::channel();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("  [tracer] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tracer {
            proc: Proc(child),
            lines: rx,
            stdout: Some(stdout),
            stderr: Vec::new(),
            out_dir: out_dir.to_path_buf(),
        }
    }

    /// Waits until the tracer says it is recording (probes attached).
    pub fn wait_recording(&mut self) {
        self.wait_stderr("tracer: recording", Duration::from_secs(60));
    }

    /// Waits until a line of stderr contains `needle`.
    pub fn wait_stderr(&mut self, needle: &str, limit: Duration) {
        let t = Instant::now();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    let done = l.contains(needle);
                    self.stderr.push(l);
                    if done {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("tracer exited before saying {needle:?}: {:?}", self.stderr)
                }
            }
            assert!(
                t.elapsed() < limit,
                "tracer did not say {needle:?}: {:?}",
                self.stderr
            );
        }
    }

    /// Ctrl-C, then waits for the reports. Returns stdout.
    pub fn stop(self) -> Finished {
        self.proc.signal(libc::SIGINT);
        self.finish()
    }

    pub fn finish(self) -> Finished {
        let (st, f) = self.finish_any();
        assert!(st.success(), "tracer failed ({st}): {}", f.stderr);
        f
    }

    /// Waits for the tracer to end, whatever its exit status.
    pub fn finish_any(mut self) -> (std::process::ExitStatus, Finished) {
        let st = self
            .proc
            .wait(Duration::from_secs(120))
            .expect("tracer did not finish");
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.stderr.push(l);
        }
        println!("{stdout}");
        (
            st,
            Finished {
                stdout,
                stderr: self.stderr.join("\n"),
                dir: self.out_dir.clone(),
            },
        )
    }
}

pub struct Finished {
    pub stdout: String,
    pub stderr: String,
    pub dir: PathBuf,
}

impl Finished {
    /// The run's report.json.
    pub fn report(&self) -> Report {
        read_report(&self.dir)
    }

    pub fn folded(&self, name: &str) -> Vec<(Vec<String>, u64)> {
        let text =
            std::fs::read_to_string(self.dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        parse_folded(&text)
    }
}

/// The leak workload, started with `args`.
pub fn start_leak(python: &str, dir: &Path, extra: &[&str]) -> Proc {
    let child = Command::new(python)
        .arg(workload("leak.py"))
        .arg("--done-file")
        .arg(dir.join("done.json"))
        .arg("--tmpdir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    Proc(child)
}

/// Runs the leak workload untraced with tracemalloc and returns the bytes it measured.
pub fn tracemalloc_reference(python: &str, extra: &[&str]) -> u64 {
    let dir = TempDir::new("ref");
    let mut p = start_leak(
        python,
        dir.path(),
        &[&["--tracemalloc", "--exit"], extra].concat(),
    );
    let st = p
        .wait(Duration::from_secs(120))
        .expect("reference run finished");
    assert!(st.success());
    let bytes = read_done(&dir.path().join("done.json"))
        .tracemalloc_bytes
        .expect("tracemalloc_bytes in done.json");
    u64::try_from(bytes).unwrap_or_else(|_| panic!("tracemalloc measured {bytes} B"))
}

/// Runs the tracer to completion with arbitrary arguments (for error paths).
pub fn run_tracer(args: &[&str]) -> std::process::Output {
    Command::new(tracer_bin())
        .args(args)
        .output()
        .expect("tracer binary")
}

/// Asserts the shape of a user error: non-zero exit, one line on stderr, no panic.
pub fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "expected '{needle}' in: {stderr}"
    );
}

/// Starts service.py on `python` with `args`, working in `d`/work; returns once it runs.
pub fn start_service(python: &str, d: &TempDir, args: &[&str]) -> Proc {
    start_service_on(&Build::host(python), d, args)
}

/// Starts service.py on a build, working in `d`/work (`d` from `Build::tempdir`).
pub fn start_service_on(b: &Build, d: &TempDir, args: &[&str]) -> Proc {
    let work = d.0.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let svc = Proc(
        b.command("service.py")
            .arg(b.guest(&work))
            .args(args)
            .spawn()
            .unwrap(),
    );
    wait_for("the service to start", Duration::from_secs(20), || {
        work.join("ready").exists()
    });
    svc
}

/// Waits (up to `limit`) until process `pid` maps a file whose path contains `lib` (a Python
/// before that is not yet a CPython process to the tracer).
pub fn wait_mapped(pid: u32, lib: &str, limit: Duration) {
    wait_for(&format!("pid {pid} to map {lib}"), limit, || {
        std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(lib))
    });
}

/// `python -c "time.sleep(secs)"`, returned once it maps `lib` (its interpreter library).
pub fn sleeping_python(python: impl AsRef<std::path::Path>, secs: u32, lib: &str) -> Proc {
    let python = python.as_ref();
    let p = Proc(
        Command::new(python)
            .args(["-c", &format!("import time; time.sleep({secs})")])
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display())),
    );
    wait_mapped(p.pid(), lib, Duration::from_secs(10));
    p
}

/// Starts `python script args...`, returned once it prints "ready" (its setup done). Its stdin
/// is a pipe: a workload that waits for the test's word reads it ([`Proc::go`]).
pub fn start_ready(python: &str, script: &str, args: &[&str]) -> Proc {
    let mut p = Proc(
        Command::new(python)
            .arg(workload(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{python}: {e}")),
    );
    let mut line = String::new();
    BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{script} did not start");
    p
}
