//! The interpreter builds the tests run workloads on: pyenv's and Debian's, on the host or in
//! root file systems built once under target/.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

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
    let named = builds.into_iter().map(|b| (b.name.clone(), b)).collect();
    each_at_once(named, at_once, f)
}

/// Runs `f` on each item, `at_once` at a time, and fails with every item that failed (by its
/// name and message), not just the first. Returns what `f` returned for each, in their order.
pub fn each_at_once<I: Send + Sync, T: Send>(
    items: Vec<(String, I)>,
    at_once: usize,
    f: impl Fn(&I) -> T + Sync,
) -> Vec<T> {
    let n = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let results = std::sync::Mutex::new(Vec::new());
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..at_once.max(1) {
            s.spawn(|| loop {
                let Some((i, (name, item))) = queue.lock().unwrap().next() else {
                    break;
                };
                match std::thread::scope(|s2| s2.spawn(|| f(&item)).join()) {
                    Ok(r) => results.lock().unwrap().push((i, r)),
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failed.lock().unwrap().push(format!("{name}: {msg}"));
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

    /// The same build on a private copy of the file its interpreter's code is in, one per
    /// `tag`, made once: pyenv's executable and libpython (the executable's RUNPATH made
    /// `$ORIGIN/../lib`; it finds its standard library at its build's prefix), Debian's static
    /// executable (it finds its /usr/lib/python3.X from anywhere). Uprobes are set on a file:
    /// another test's allocator probes on the build's own file trap in every process that maps
    /// it (filtered by pid in the kernel, but each hit still costs microseconds: next to an
    /// exact-mode test a workload ran at a fifth of its rate, a Python took seconds more to
    /// start). Tests whose rates or timing are the claim run on a copy of their own.
    pub fn private(&self, tag: &str) -> Build {
        let mut b = self.clone();
        b.name = format!("{} (private copy)", self.name);
        match &self.root {
            Some(root) => {
                let exe = root.join(self.python.trim_start_matches('/'));
                let copy = private_copy(&exe, &root.join("opt/tracer-private").join(tag), None);
                b.python = self.guest(&copy).to_string_lossy().into_owned();
            }
            None if self.inlined_allocator => {
                let dir = target_dir().join("private-python").join(tag);
                let copy = private_copy(Path::new(&self.python), &dir, None);
                b.python = copy.to_string_lossy().into_owned();
            }
            None => {
                let (major, minor) = self.version;
                let exe = std::fs::canonicalize(&self.python).unwrap();
                let prefix = exe.parent().and_then(Path::parent).unwrap();
                let dir = target_dir()
                    .join("private-python")
                    .join(tag)
                    .join(prefix.file_name().unwrap());
                let lib = format!("libpython{major}.{minor}.so.1.0");
                private_copy(&prefix.join("lib").join(&lib), &dir.join("lib"), None);
                let runpath = format!("{}\0", prefix.join("lib").display());
                let copy = private_copy(&exe, &dir.join("bin"), Some(&runpath));
                b.python = copy.to_string_lossy().into_owned();
            }
        }
        b
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

/// A copy of `file` in `dir` (made once, and again when `file` is newer, as after a package
/// upgrade; a temporary name renamed, so that concurrent tests share one). `runpath`: the
/// executable's DT_RUNPATH string, NUL-terminated, replaced in place by `$ORIGIN/../lib`
/// (shorter: the rest of the old string is NULs).
fn private_copy(file: &Path, dir: &Path, runpath: Option<&str>) -> PathBuf {
    let copy = dir.join(file.file_name().unwrap());
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&copy).is_some_and(|c| modified(file).is_some_and(|f| f <= c)) {
        return copy;
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut bytes =
        std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    if let Some(old) = runpath {
        let old = old.as_bytes();
        let at: Vec<usize> = bytes
            .windows(old.len())
            .enumerate()
            .filter(|(_, w)| *w == old)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "{}: its RUNPATH {old:?} once", file.display());
        let new = b"$ORIGIN/../lib";
        bytes[at[0]..at[0] + old.len()].fill(0);
        bytes[at[0]..at[0] + new.len()].copy_from_slice(new);
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let tmp = dir.join(format!(
        ".copy.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &copy).unwrap();
    copy
}

/// pyenv's `python3` of 3.`minor` on its private copy `tag` (see `Build::private`), as a path
/// that lives as long as the test.
pub fn private_py(minor: u32, tag: &str) -> &'static str {
    static PATHS: std::sync::Mutex<BTreeMap<(u32, String), &'static str>> =
        std::sync::Mutex::new(BTreeMap::new());
    PATHS
        .lock()
        .unwrap()
        .entry((minor, tag.to_string()))
        .or_insert_with(|| pyenv(minor).private(tag).python.leak())
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
