//! Finding targets on the host: the processes of a container or a cgroup, every Python process,
//! and the children of traced processes, at start and then as they appear (a new worker, a
//! process that execs python, a restarted service).

use std::collections::{HashMap, HashSet};
use std::fs;

use crate::error::{Error, Result};
use crate::procfs;

/// A way to name processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A container: a (prefix of a) 64-hex id from its cgroup path, or the cgroup2 path of a
    /// runc/crun container found by name (with the label reports use).
    ContainerId(String),
    ContainerCgroup {
        cgroup: String,
        name: String,
    },
    /// A cgroup2 path (relative to the hierarchy's root), the processes in it and below.
    Cgroup(String),
    AllPython,
}

/// The cgroup2 path of a process (its `0::` line), and the paths of its v1 hierarchies.
pub fn cgroup_paths(text: &str) -> Vec<(bool, &str)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (id, _, path) = (it.next()?, it.next()?, it.next()?);
            Some((id == "0", path))
        })
        .collect()
}

/// Full 64-hex container ids in a process's cgroup paths.
fn container_ids(text: &str) -> impl Iterator<Item = &str> {
    cgroup_paths(text).into_iter().flat_map(|(_, path)| {
        path.split('/').filter_map(|part| {
            let part = part.trim_end_matches(".scope");
            let id = part.rsplit(['-', ':']).next().unwrap_or(part);
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
        })
    })
}

/// Is `path` the cgroup `root` or below it?
fn under(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    root.is_empty()
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Selector {
    /// Does a process with this /proc/PID/cgroup text belong to the selection?
    pub fn matches(&self, cgroup_text: &str) -> bool {
        match self {
            Selector::ContainerId(q) => {
                let q = q.to_ascii_lowercase();
                container_ids(cgroup_text).any(|id| id.to_ascii_lowercase().starts_with(&q))
            }
            Selector::ContainerCgroup { cgroup, .. } | Selector::Cgroup(cgroup) => {
                cgroup_paths(cgroup_text)
                    .iter()
                    .any(|(v2, p)| *v2 && under(p, cgroup))
            }
            Selector::AllPython => true,
        }
    }

    /// The container label for its processes when their cgroup carries no id.
    pub fn label(&self) -> Option<String> {
        match self {
            Selector::ContainerCgroup { name, .. } => Some(name.clone()),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Selector::ContainerId(q) => format!("container {q}"),
            Selector::ContainerCgroup { name, .. } => format!("container {name}"),
            Selector::Cgroup(c) => format!("cgroup {c}"),
            Selector::AllPython => "all Python processes".into(),
        }
    }
}

/// A `--cgroup` argument: a path in the cgroup2 hierarchy, given from its root (`/system.slice/x`)
/// or as a file system path (`/sys/fs/cgroup/unified/system.slice/x`).
pub fn cgroup_selector(arg: &str) -> Result<Selector> {
    let mut p = arg.trim_end_matches('/').to_string();
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if let Some(rest) = p.strip_prefix(root) {
            if rest.is_empty() || rest.starts_with('/') {
                p = rest.to_string();
                break;
            }
        }
    }
    // One spelling of the path: no empty or `.` components.
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Error::BadArgument(format!(
            "--cgroup {arg}: give the cgroup's path, without `..`"
        )));
    }
    if parts.is_empty() {
        return Err(Error::BadArgument(format!(
            "--cgroup {arg:?} is the root cgroup, which holds every process on the host: give a service's or container's cgroup (e.g. /system.slice/app.service), or --all-python to trace every Python process on purpose"
        )));
    }
    let p = format!("/{}", parts.join("/"));
    Ok(Selector::Cgroup(p))
}

/// A `--container` argument: a hex id (full or a prefix of at least 4 digits) found in cgroup
/// paths (docker, containerd, cri-o, podman), or the name of a runc/crun container.
pub fn container_selector(arg: &str) -> Result<Selector> {
    if arg.is_empty() || arg.contains('/') || arg.starts_with('.') {
        return Err(Error::BadArgument(format!(
            "--container {arg:?}: give a container id or name"
        )));
    }
    // runc's state (tested), crun's status file (crun does not run on the test machines).
    for (file, field) in [
        ("/run/runc/{}/state.json", "init_process_pid"),
        ("/run/crun/{}/status", "pid"),
    ] {
        let state = file.replace("{}", arg);
        let pid = fs::read_to_string(&state)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()?[field].as_u64());
        if let Some(pid) = pid {
            let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|_| {
                Error::BadArgument(format!(
                    "container {arg} is not running (its init process {pid} is gone)"
                ))
            })?;
            let cgroup = cgroup_paths(&text)
                .into_iter()
                .find(|(v2, _)| *v2)
                .map(|(_, p)| p.to_string())
                .ok_or_else(|| {
                    Error::Other(format!("no cgroup2 path for container {arg} (pid {pid})"))
                })?;
            return Ok(Selector::ContainerCgroup {
                cgroup,
                name: arg.to_string(),
            });
        }
    }
    if arg.len() >= 4 && arg.len() <= 64 && arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Selector::ContainerId(arg.to_string()));
    }
    Err(Error::BadArgument(format!(
        "--container {arg}: no runc/crun container of that name, and not a hex container id (docker, containerd, cri-o and podman ids: at least 4 hex digits)"
    )))
}

/// Does this process (running `exe`) look like a Python interpreter (cheap checks before a full
/// inspection)?
fn looks_like_python(pid: u32, exe: &str) -> bool {
    let base = exe.rsplit('/').next().unwrap_or("");
    if base.starts_with("python") {
        return true;
    }
    // An embedding program (uwsgi, a PyInstaller binary...) maps libpython.
    fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("/libpython"))
}

/// A candidate found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// The container label from the selector (runc/crun name), when its cgroup has no id.
    pub label: Option<String>,
}

pub struct Discovery {
    pub selectors: Vec<Selector>,
    /// Also the children of traced processes.
    pub children: bool,
    /// Processes (pid, start time, executable) already considered: each program a process runs
    /// is looked at once (a shell that execs python is looked at again).
    seen: HashSet<(u32, u64, String)>,
    /// Processes (pid, start time) looked at again because they had no interpreter mapped yet
    /// (`not_yet`), and how many times.
    retried: HashMap<(u32, u64), u8>,
}

/// Scans that look again at a process that exec'd Python but had not mapped it yet.
const NOT_YET_RETRIES: u8 = 5;

impl Discovery {
    pub fn new(selectors: Vec<Selector>, children: bool) -> Discovery {
        Discovery {
            selectors,
            children,
            seen: HashSet::new(),
            retried: HashMap::new(),
        }
    }

    /// A candidate whose inspection found no CPython: one caught between its exec and the
    /// mapping of its libraries (the loader has not run yet; a loaded machine widens that
    /// window) is looked at again at the next scans, `NOT_YET_RETRIES` times at most. Without
    /// it, a Python started on the host during a scan could be missed for good.
    pub fn not_yet(&mut self, pid: u32) {
        let Some(st) = procfs::stat(pid) else {
            return;
        };
        let n = self.retried.entry((pid, st.start_ticks)).or_default();
        if *n < NOT_YET_RETRIES {
            *n += 1;
            self.seen
                .retain(|(p, s, _)| !(*p == pid && *s == st.start_ticks));
        }
    }

    /// Can targets appear later?
    pub fn follows(&self) -> bool {
        !self.selectors.is_empty()
    }

    /// Checks that every container and cgroup selector names at least one process now: a typo
    /// fails at once instead of tracing nothing.
    pub fn check_nonempty(&self) -> Result<()> {
        for s in &self.selectors {
            if *s == Selector::AllPython {
                continue;
            }
            let any = pids().into_iter().any(|pid| {
                fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| s.matches(&t))
            });
            if !any {
                return Err(Error::BadArgument(format!(
                    "no process runs in {} (looked through /proc/*/cgroup)",
                    s.describe()
                )));
            }
        }
        Ok(())
    }

    /// New Python-looking processes that a selector names or whose parent is traced (`traced`).
    pub fn scan(&mut self, traced: &HashSet<u32>) -> Vec<Found> {
        let me = std::process::id();
        let mut out = Vec::new();
        for pid in pids() {
            if pid == me || traced.contains(&pid) {
                continue;
            }
            let Some(st) = procfs::stat(pid) else {
                continue;
            };
            let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
                continue; // a kernel thread, or gone
            };
            let exe = exe.to_string_lossy().into_owned();
            if !self.seen.insert((pid, st.start_ticks, exe.clone())) {
                continue;
            }
            let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let selected = self.selectors.iter().find(|s| s.matches(&cgroup));
            let child = self.children && traced.contains(&st.ppid);
            if (selected.is_some() || child) && looks_like_python(pid, &exe) {
                out.push(Found {
                    pid,
                    label: selected.and_then(Selector::label),
                });
            }
        }
        // Forget processes that are gone (pids are reused).
        if self.seen.len() > 4096 {
            let live: HashSet<u32> = pids().into_iter().collect();
            self.seen.retain(|(p, _, _)| live.contains(p));
            self.retried.retain(|(p, _), _| live.contains(p));
        }
        out
    }
}

/// The Python-looking processes whose parent is `pid`: a pre-fork server's workers (gunicorn,
/// uWSGI), where the application runs while the master only watches them.
pub fn python_children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = pids()
        .into_iter()
        .filter(|&c| procfs::stat(c).is_some_and(|st| st.ppid == pid))
        .filter(|&c| {
            fs::read_link(format!("/proc/{c}/exe"))
                .is_ok_and(|exe| looks_like_python(c, &exe.to_string_lossy()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Every process id in /proc.
fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3d4e5f60718293a4b5c6d7e8f90";

    #[test]
    fn container_ids_in_cgroups() {
        let docker = format!("12:memory:/docker/{ID}\n0::/docker/{ID}\n");
        let podman = format!("0::/libpod_parent/libpod-{ID}\n");
        let host = "0::/user.slice/user-0.slice/session-3.scope\n";
        for q in [ID, &ID[..12], &ID[..4], &ID[..12].to_ascii_uppercase()] {
            let s = Selector::ContainerId(q.to_string());
            assert!(s.matches(&docker), "{q}");
            assert!(s.matches(&podman), "{q}");
            assert!(!s.matches(host), "{q}");
        }
        assert!(!Selector::ContainerId("4f1f".into()).matches(&docker));
    }

    #[test]
    fn cgroup_paths_and_prefixes() {
        let text = "0::/system.slice/app.service/worker\n";
        for arg in [
            "/system.slice/app.service",
            "system.slice/app.service/",
            "/sys/fs/cgroup/unified/system.slice/app.service",
            "/sys/fs/cgroup/system.slice",
            "//system.slice/./app.service",
        ] {
            assert!(cgroup_selector(arg).unwrap().matches(text), "{arg}");
        }
        for arg in ["/system.slice/app", "/system.slice/app.service/worker2"] {
            assert!(!cgroup_selector(arg).unwrap().matches(text), "{arg}");
        }
        // v1 lines do not count: the cgroup2 path is the process's placement.
        assert!(!cgroup_selector("/x")
            .unwrap()
            .matches("4:memory:/x\n0::/y\n"));
        assert!(cgroup_selector("/a/../b").is_err());
        // The root cgroup, however spelled, is every process on the host: refused.
        for arg in [
            "",
            "/",
            "//",
            "/.",
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/",
            "/sys/fs/cgroup/unified",
        ] {
            let e = cgroup_selector(arg).err().unwrap().to_string();
            assert!(e.contains("root cgroup"), "{arg}: {e}");
        }
    }

    /// A Python child is found, a child that is not Python is not.
    #[test]
    fn python_children_of_a_process() {
        let spawn = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .spawn()
                .unwrap()
        };
        let mut python = spawn("/usr/bin/python3", &["-c", "import time; time.sleep(30)"]);
        let mut sleep = spawn("sleep", &["30"]);
        // The child runs python once it has exec'd.
        let t = std::time::Instant::now();
        while !python_children(std::process::id()).contains(&python.id()) {
            assert!(t.elapsed().as_secs() < 10, "python child not found");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!python_children(std::process::id()).contains(&sleep.id()));
        for c in [&mut python, &mut sleep] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn bad_container_arguments() {
        assert!(container_selector("no-such-container-xyz").is_err());
        assert!(container_selector("abc").is_err());
        assert_eq!(
            container_selector(&ID[..12]).unwrap(),
            Selector::ContainerId(ID[..12].to_string())
        );
    }
}
