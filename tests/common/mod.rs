#![allow(dead_code)]
//! Helpers for the end-to-end tests: run the real tracer binary against real Python processes.

pub mod apps;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEBIAN_PY311: &str = "/usr/bin/python3.11";
pub const PYENV: &str = "/root/.pyenv/versions";

/// One interpreter build the tests run workloads on.
#[derive(Debug, Clone)]
pub struct Build {
    /// Short name for messages: "pyenv 3.11.7", "debian-sid 3.14".
    pub name: String,
    /// The interpreter as the process runs it (inside `root` for a chroot build).
    pub python: String,
    /// The root file system it runs in (`chroot ROOT PYTHON`), None on the host.
    pub root: Option<PathBuf>,
    pub version: (u32, u32),
    /// A static, stripped LTO/PGO build (Debian's): the allocator probes see part of the
    /// allocations only (pymalloc's fast path is inlined), so tests assert descriptors, Python
    /// frames, census and stack sampling there, not allocation bytes.
    pub inlined_allocator: bool,
}

/// Every build the version tests run on, the one list of them: pyenv's shared-libpython
/// 3.8-3.13, Debian bookworm's static python3.11 on the host, Debian trixie's python3.13 and
/// Debian sid's python3.14 and python3.15 in root file systems built once (see
/// `debian_rootfs`). A test that needs one build for a scenario takes it from here (`py`,
/// `pyenv`, `debian`); a test about versions runs on `builds()` (or a part of it chosen by a
/// property, never by a list of its own).
pub fn builds() -> Vec<Build> {
    let mut v: Vec<Build> = PYENV_MINORS.map(pyenv).collect();
    v.push(bookworm());
    v.extend(debian_builds());
    v
}

/// pyenv's CPython 3.x releases in `builds()`.
const PYENV_MINORS: std::ops::RangeInclusive<u32> = 8..=13;
/// Debian's newer releases in `builds()`: (suite, minor, the packages of its root file system).
const DEBIAN_NEWER: [(&str, u32, &str); 3] = [
    ("trixie", 13, "python3.13"),
    ("sid", 14, "python3.14,python3.15"),
    ("sid", 15, "python3.14,python3.15"),
];

/// Debian bookworm's static, stripped python3.11, the host's own.
pub fn bookworm() -> Build {
    Build {
        name: "debian-bookworm 3.11".into(),
        python: DEBIAN_PY311.into(),
        root: None,
        version: (3, 11),
        inlined_allocator: true,
    }
}

/// The builds of Debian's newer releases, in their root file systems.
pub fn debian_builds() -> Vec<Build> {
    DEBIAN_NEWER
        .into_iter()
        .map(|(suite, minor, _)| debian(suite, minor))
        .collect()
}

/// The directory of pyenv's release `prefix` ("3.11", "2.7"): /root/.pyenv/versions/3.11.7.
pub fn pyenv_dir(prefix: &str) -> PathBuf {
    std::fs::read_dir(PYENV)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("{prefix}.")))
        .map(|n| Path::new(PYENV).join(n))
        .unwrap_or_else(|| panic!("pyenv has no CPython {prefix}"))
}

/// pyenv's CPython 3.`minor` (shared libpython).
pub fn pyenv(minor: u32) -> Build {
    let dir = pyenv_dir(&format!("3.{minor}"));
    let release = dir.file_name().unwrap().to_string_lossy().into_owned();
    Build {
        name: format!("pyenv {release}"),
        python: dir.join("bin/python3").to_string_lossy().into_owned(),
        root: None,
        version: (3, minor),
        inlined_allocator: false,
    }
}

/// The `python3` of pyenv's 3.`minor`, as a path that lives as long as the test.
pub fn py(minor: u32) -> &'static str {
    static PATHS: std::sync::Mutex<BTreeMap<u32, &'static str>> =
        std::sync::Mutex::new(BTreeMap::new());
    PATHS
        .lock()
        .unwrap()
        .entry(minor)
        .or_insert_with(|| pyenv(minor).python.leak())
}

/// pyenv's interpreter executable of 3.`minor` (python3.11: what /proc/PID/exe names, not the
/// python3 link).
pub fn py_exe(minor: u32) -> String {
    format!("{}.{minor}", py(minor))
}

/// pyenv's release number of 3.`minor` ("3.11.7").
pub fn py_release(minor: u32) -> String {
    pyenv_dir(&format!("3.{minor}"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// pyenv's Python 2.7 (not supported by tracer: the tests check that it is said).
pub fn py2() -> String {
    pyenv_dir("2.7")
        .join("bin/python2")
        .to_string_lossy()
        .into_owned()
}

/// Debian's python3.`minor` of `suite` (trixie: 3.13; sid: 3.14 and 3.15), run in a chroot.
/// The root file system is built on first use.
pub fn debian(suite: &str, minor: u32) -> Build {
    let packages = DEBIAN_NEWER
        .iter()
        .find(|(s, m, _)| *s == suite && *m == minor)
        .map(|(_, _, p)| *p)
        .unwrap_or_else(|| panic!("no root file system for Debian {suite}'s 3.{minor}"));
    Build {
        name: format!("debian-{suite} 3.{minor}"),
        python: format!("/usr/bin/python3.{minor}"),
        root: Some(debian_rootfs(&format!("rootfs-{suite}"), suite, packages)),
        version: (3, minor),
        inlined_allocator: true,
    }
}

/// Builds every root file system the tests use (Debian's newer releases and the containers'
/// bookworm), at the same time; each is built once and cached in target/. `cargo xtask test`
/// runs this while it builds the tracer, so that no test waits for debootstrap.
pub fn prepare_root_file_systems() {
    let mut suites: Vec<(&str, u32)> = DEBIAN_NEWER.iter().map(|(s, m, _)| (*s, *m)).collect();
    suites.dedup_by_key(|(s, _)| *s);
    let handles: Vec<_> = suites
        .into_iter()
        .map(|(suite, minor)| std::thread::spawn(move || drop(debian(suite, minor))))
        .chain([std::thread::spawn(|| drop(container_rootfs()))])
        .collect();
    for h in handles {
        if let Err(e) = h.join() {
            std::panic::resume_unwind(e);
        }
    }
}

/// The containers' root file system: Debian bookworm (minbase, with python3: Debian's static
/// python3.11) and, under /opt/python, a copy of pyenv's 3.12 with its shared libpython. Built
/// once, cached in target/.
pub fn container_rootfs() -> PathBuf {
    debian_rootfs_with("container-rootfs", "bookworm", "python3", |tmp| {
        let opt = tmp.join("opt/python");
        std::fs::create_dir_all(tmp.join("opt")).unwrap();
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(pyenv_dir("3.12"))
                .arg(&opt),
        );
        let _ = std::fs::remove_dir_all(opt.join("lib/python3.12/test"));
        std::fs::create_dir_all(tmp.join("work")).unwrap();
    })
}

/// Runs `f` on each build, `at_once` builds at a time, and fails with every build that
/// failed (by name and message), not just the first. Returns what `f` returned for each build,
/// in the order of `builds`.
pub fn on_builds<T: Send>(builds: Vec<Build>, at_once: usize, f: fn(&Build) -> T) -> Vec<T> {
    assert!(!builds.is_empty(), "no build to run on");
    let n = builds.len();
    let queue = std::sync::Mutex::new(builds.into_iter().enumerate());
    let results = std::sync::Mutex::new(Vec::new());
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..at_once.max(1) {
            s.spawn(|| loop {
                let Some((i, b)) = queue.lock().unwrap().next() else {
                    break;
                };
                match std::thread::scope(|s2| s2.spawn(|| f(&b)).join()) {
                    Ok(r) => results.lock().unwrap().push((i, r)),
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failed.lock().unwrap().push(format!("{}: {msg}", b.name));
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let mut results = results.into_inner().unwrap();
    assert_eq!(results.len(), n);
    results.sort_by_key(|r| r.0);
    results.into_iter().map(|r| r.1).collect()
}

impl Build {
    /// An interpreter on the host, by path.
    pub fn host(python: &str) -> Build {
        Build {
            name: python.to_string(),
            python: python.to_string(),
            root: None,
            version: (3, 0),
            inlined_allocator: python.starts_with("/usr/bin/"),
        }
    }

    /// A command running workload `script` on this build (copied into the root file system for
    /// a chroot build: the chroot cannot see the host's paths).
    pub fn command(&self, script: &str) -> Command {
        match &self.root {
            None => {
                let mut c = Command::new(&self.python);
                c.arg(workload(script));
                c
            }
            Some(root) => {
                let dir = root.join("tmp/tracer-tests/workloads");
                std::fs::create_dir_all(&dir).unwrap();
                static N: AtomicU32 = AtomicU32::new(0);
                let tmp = dir.join(format!(
                    ".{script}.{}.{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::copy(workload(script), &tmp).unwrap();
                std::fs::rename(&tmp, dir.join(script)).unwrap();
                let mut c = Command::new("chroot");
                c.arg(root)
                    .arg(&self.python)
                    .arg(format!("/tmp/tracer-tests/workloads/{script}"));
                c
            }
        }
    }

    /// A fresh directory the build's processes can write to (inside its root file system).
    pub fn tempdir(&self, tag: &str) -> TempDir {
        match &self.root {
            None => TempDir::new(tag),
            Some(root) => TempDir::new_in(&root.join("tmp/tracer-tests"), tag),
        }
    }

    /// A host path as the build's processes see it.
    pub fn guest(&self, host: &Path) -> PathBuf {
        match &self.root {
            None => host.to_path_buf(),
            Some(root) => Path::new("/").join(host.strip_prefix(root).expect("inside the rootfs")),
        }
    }
}

/// The target/ directory of the workspace.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .canonicalize()
        .unwrap()
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? `cargo xtask setup`)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Debian mirror apt uses on this machine.
pub fn mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(d) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in d.flatten() {
            if e.path()
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    texts
        .iter()
        .flat_map(|t| t.split_whitespace())
        .find(|w| {
            (w.starts_with("http://") || w.starts_with("https://"))
                && w.trim_end_matches('/').ends_with("/debian")
        })
        .unwrap_or("http://deb.debian.org/debian")
        .to_string()
}

/// A Debian root file system (`debootstrap --variant=minbase --include=PACKAGES SUITE`), built
/// once and cached as target/NAME. A lock file (flock) keeps concurrent test binaries and
/// threads from building it twice.
pub fn debian_rootfs(name: &str, suite: &str, packages: &str) -> PathBuf {
    debian_rootfs_with(name, suite, packages, |_| {})
}

/// The same, with `finish` run on the new tree before it is published.
pub fn debian_rootfs_with(
    name: &str,
    suite: &str,
    packages: &str,
    finish: impl FnOnce(&Path),
) -> PathBuf {
    use std::os::unix::io::AsRawFd;
    let target = target_dir();
    let root = target.join(name);
    if root.join(".complete").exists() {
        return root;
    }
    let lock = std::fs::File::create(target.join(format!("{name}.lock"))).unwrap();
    // Blocks until the builder (another thread or test binary) is done.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if root.join(".complete").exists() {
        return root;
    }
    let tmp = target.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!(
        "building the {suite} root file system with {packages} (debootstrap, a minute or two)"
    );
    run_ok(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={packages}"))
            .arg(suite)
            .arg(&tmp)
            .arg(mirror()),
    );
    finish(&tmp);
    std::fs::write(tmp.join(".complete"), "").unwrap();
    std::fs::rename(&tmp, &root).unwrap();
    root
}

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

/// Kills the child on drop, so a failing assertion never leaves processes behind.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
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
    pub fn folded(&self, name: &str) -> Vec<(Vec<String>, u64)> {
        let text =
            std::fs::read_to_string(self.dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        parse_folded(&text)
    }
}

/// Parses folded stacks, checking the format on the way.
pub fn parse_folded(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .map(|l| {
            let (stack, w) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad folded line: {l}"));
            let w: u64 = w.parse().unwrap_or_else(|_| panic!("bad weight: {l}"));
            (stack.split(';').map(str::to_string).collect(), w)
        })
        .collect()
}

/// Sum of weights per leaf frame.
pub fn by_leaf(stacks: &[(Vec<String>, u64)]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (f, w) in stacks {
        *m.entry(f.last().cloned().unwrap_or_default()).or_default() += w;
    }
    m
}

pub fn total(stacks: &[(Vec<String>, u64)]) -> u64 {
    stacks.iter().map(|(_, w)| w).sum()
}

/// What a workload reported in its done file.
pub fn read_json_field(path: &Path, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find(&format!("\"{field}\": "))? + field.len() + 4;
    let rest = &text[start..];
    let end = if rest.starts_with('[') {
        rest.find(']')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim().to_string())
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
    read_json_field(&dir.path().join("done.json"), "tracemalloc_bytes")
        .unwrap()
        .parse()
        .unwrap()
}

/// Names of the BPF programs loaded in the kernel right now.
pub fn loaded_bpf_programs() -> Vec<String> {
    let out = Command::new("bpftool").args(["prog", "show"]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                l.split(" name ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string)
            })
            .collect(),
        _ => panic!("bpftool is needed by the tests (cargo xtask setup installs it)"),
    }
}

/// Ids of the BPF programs a process holds (its /proc/PID/fdinfo): what a tracer loaded, told
/// apart from the programs of other tracers running at the same time.
pub fn bpf_program_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("prog_id:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A process's perf-event links (/proc/PID/fdinfo): (uprobe links, links of its perf-event
/// programs: the on-CPU stack sampler's, one per CPU).
pub fn perf_links(pid: u32) -> (usize, usize) {
    let infos: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let field = |s: &str, name: &str| -> Option<String> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    // BPF_PROG_TYPE_PERF_EVENT
    let sampler: Vec<String> = infos
        .iter()
        .filter(|s| field(s, "prog_type:").as_deref() == Some("7"))
        .filter_map(|s| field(s, "prog_id:"))
        .collect();
    let links: Vec<Option<String>> = infos
        .iter()
        .filter(|s| field(s, "link_type:").as_deref() == Some("perf"))
        .map(|s| field(s, "prog_id:"))
        .collect();
    let of_sampler = links
        .iter()
        .filter(|id| id.as_ref().is_some_and(|id| sampler.contains(id)))
        .count();
    (links.len() - of_sampler, of_sampler)
}

/// A process's uprobe links (its perf-event links but the on-CPU sampler's).
pub fn uprobe_links(pid: u32) -> usize {
    perf_links(pid).0
}

/// Ids of every BPF program loaded in the kernel now.
pub fn loaded_bpf_program_ids() -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool is needed by the tests (cargo xtask setup installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
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

/// Lines of service.py marked `# TAG` (LEAK:log, CACHE, NOLEAK:fd...).
pub fn service_marked(tag: &str) -> Vec<u32> {
    std::fs::read_to_string(workload("service.py"))
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.split_once("  # ")
                .and_then(|(_, c)| c.split_whitespace().next())
                == Some(tag)
        })
        .map(|(i, _)| i as u32 + 1)
        .collect()
}

/// The service.py line of a report's "function (/path/service.py:LINE)" label.
pub fn service_line(label: &str) -> Option<u32> {
    let loc = label.split_once(" (")?.1.strip_suffix(')')?;
    let (file, n) = loc.rsplit_once(':')?;
    file.ends_with("/service.py").then(|| n.parse().ok())?
}

/// Starts `python script args...`, returned once it prints "ready" (its setup done).
pub fn start_ready(python: &str, script: &str, args: &[&str]) -> Proc {
    let mut p = Proc(
        Command::new(python)
            .arg(workload(script))
            .args(args)
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

/// report.json of an output directory, parsed.
pub fn report_json(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json"))
        .unwrap_or_else(|e| panic!("{}/report.json: {e}", dir.display()));
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// The line number of the first line of a workload that contains `text`.
pub fn line_of(script: &str, text: &str) -> usize {
    std::fs::read_to_string(workload(script))
        .unwrap()
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} not in {script}"))
        + 1
}
