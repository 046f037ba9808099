//! Containers and the whole host: real OCI containers (runc, and podman on top of it) running a
//! Debian bookworm root file system that the test builds with debootstrap (cached under
//! target/), traced from the host by container id or name, next to a host Python process and a
//! healthy container; and `--all-python` picking up a process that starts while it traces.
//! Debian sid's python3.14 and python3.15 run in containers of their own root file system.
//!
//! Nothing is skipped: a missing runtime or a failed debootstrap fails the test with the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tracer_tests::*;

fn rootfs() -> PathBuf {
    container_rootfs()
}

fn run(cmd: &mut Command) -> String {
    run_ok(cmd)
}

/// A 64-hex container id, unique per test run.
fn hex_id(tag: u32) -> String {
    let seed = format!(
        "{:08x}{:08x}",
        tag.wrapping_mul(0x9e37_79b9),
        std::process::id()
    );
    seed.repeat(4)
}

/// A runc container, killed and deleted on drop (and its cgroup directories removed).
struct Runc {
    name: String,
    id: String,
    pid: u32,
    _bundle: TempDir,
}

impl Runc {
    /// Starts `args` in a container named `name` with cgroup path /docker/<id>; /work is the
    /// test workloads (read-only), /tmp a tmpfs.
    fn start(name: &str, id: &str, args: &[&str]) -> Runc {
        Runc::start_in(&rootfs(), name, id, args)
    }

    /// The same on another root file system.
    fn start_in(root: &Path, name: &str, id: &str, args: &[&str]) -> Runc {
        let bundle = TempDir::new("bundle");
        run(Command::new("runc")
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle.0));
        let path = bundle.0.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = args.iter().map(|a| a.to_string()).collect();
        spec["process"]["env"] = serde_json::json!([
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LD_LIBRARY_PATH=/opt/python/lib",
            "PYTHONDONTWRITEBYTECODE=1"
        ]);
        std::fs::create_dir_all(root.join("work")).unwrap();
        spec["root"]["path"] = root.to_string_lossy().into_owned().into();
        spec["root"]["readonly"] = true.into();
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"]
        }));
        mounts.push(serde_json::json!({
            "destination": "/work", "type": "bind",
            "source": workload("").to_string_lossy(),
            "options": ["rbind", "ro"]
        }));
        spec["linux"]["cgroupsPath"] = format!("/docker/{id}").into();
        std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
        run(Command::new("runc")
            .args(["run", "-d", "-b"])
            .arg(&bundle.0)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()));
        let state: serde_json::Value =
            serde_json::from_str(&run(Command::new("runc").args(["state", name]))).unwrap();
        let pid = state["pid"].as_u64().expect("runc state pid") as u32;
        Runc {
            name: name.to_string(),
            id: id.to_string(),
            pid,
            _bundle: bundle,
        }
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.name, "KILL"])
            .output();
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.name])
            .output();
        if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in d.flatten() {
                let _ = std::fs::remove_dir(e.path().join("docker").join(&self.id));
                let _ = std::fs::remove_dir(e.path().join("docker"));
            }
        }
    }
}

/// A podman container (runc runtime, cgroupfs, storage private to the test), removed on drop.
struct Podman {
    id: String,
    pid: u32,
    env: Vec<(String, PathBuf)>,
    _dir: TempDir,
}

impl Podman {
    fn start(args: &[&str]) -> Podman {
        let dir = TempDir::new("podman");
        let storage = dir.0.join("storage.conf");
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.0.display()
            ),
        )
        .unwrap();
        let conf = dir.0.join("containers.conf");
        std::fs::write(&conf, "[engine]\ncgroup_manager = \"cgroupfs\"\n").unwrap();
        let env = vec![
            ("CONTAINERS_STORAGE_CONF".to_string(), storage),
            ("CONTAINERS_CONF".to_string(), conf),
        ];
        let mut cmd = Command::new("podman");
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "run",
                "-d",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(["--network", "none", "--ulimit", "nofile=1024:1024"])
            .args([
                "--ulimit",
                "nproc=4096:4096",
                "--read-only",
                "--tmpfs",
                "/tmp",
            ])
            .arg("-v")
            .arg(format!("{}:/work:ro", workload("").display()))
            .arg("--rootfs")
            .arg(rootfs())
            .args(args);
        let id = run(&mut cmd).trim().to_string();
        let mut inspect = Command::new("podman");
        inspect.envs(env.iter().map(|(k, v)| (k, v))).args([
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &id,
        ]);
        let pid = run(&mut inspect)
            .trim()
            .parse()
            .expect("podman inspect pid");
        Podman {
            id,
            pid,
            env,
            _dir: dir,
        }
    }
}

impl Podman {
    fn remove(&mut self) {
        let _ = Command::new("podman")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["rm", "-f", "-t", "0", &self.id])
            .output();
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Waits until a containerized workload wrote /tmp/ready (seen through /proc/PID/root).
fn wait_ready(pid: u32) {
    wait_for(
        "the containerized workload",
        Duration::from_secs(30),
        || Path::new(&format!("/proc/{pid}/root/tmp/ready")).exists(),
    );
}

fn growing(p: &Process, resource: &str) -> Vec<u32> {
    p.suspects_of(resource)
        .filter(|s| s.verdict == "growing")
        .filter_map(|s| service_line(&s.line))
        .collect()
}

fn process(report: &Report, pid: u32) -> &Process {
    report
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} missing from the report: {report:?}"))
}

/// Two runc containers traced at once, one by name and one by short id, with a leaking host
/// process next to them: the leaking container (pyenv's 3.12 copied into it) has its memory and
/// descriptor leaks by line; the healthy one (Debian's static python3.11) grows nothing; the
/// host process is not in the report; stacks start with the container and the process.
#[test]
fn runc_containers_by_name_and_id() {
    let leaky_id = hex_id(1);
    let quiet_id = hex_id(2);
    let leaky_name = format!("tracer-leaky-{}", std::process::id());
    let quiet_name = format!("tracer-quiet-{}", std::process::id());
    let leaky = Runc::start(
        &leaky_name,
        &leaky_id,
        &[
            "/opt/python/bin/python3",
            "/work/service.py",
            "/tmp",
            "--rate",
            "200",
            "--cache",
            "200",
        ],
    );
    let quiet = Runc::start(
        &quiet_name,
        &quiet_id,
        &["/usr/bin/python3", "/work/steady.py", "/tmp"],
    );
    // The same workload on the host, from pyenv's own 3.12: not in the containers.
    let host_dir = TempDir::new("host");
    let mut host = Proc(
        Command::new(py(12))
            .arg(workload("service.py"))
            .arg(&host_dir.0)
            .args(["--rate", "200", "--cache", "200"])
            .spawn()
            .unwrap(),
    );
    wait_ready(leaky.pid);
    wait_ready(quiet.pid);
    wait_for("the host workload", Duration::from_secs(20), || {
        host_dir.0.join("ready").exists()
    });

    let d = TempDir::new("runc");
    let out = d.0.join("out");
    let t = Tracer::start(
        &[
            "--container",
            &leaky_name,
            "--container",
            &quiet_id[..12],
            "-d",
            "35s",
            "--interval",
            "5s",
        ],
        &out,
    );
    let f = t.finish();
    assert!(host.alive());
    let report = f.report();
    let pids: Vec<u32> = report.processes.iter().map(|p| p.pid).collect();
    assert!(
        !pids.contains(&host.pid()),
        "a host process is in a --container report: {pids:?}"
    );
    assert_eq!(pids.len(), 2, "{pids:?}");

    // The leaking container: labelled, memory and descriptor leaks on their lines.
    let p = process(&report, leaky.pid);
    assert_eq!(p.container.as_deref(), Some(&leaky_id[..12]), "{p:?}");
    let mem = growing(p, "memory");
    for l in [service_marked("LEAK:body"), service_marked("LEAK:log")].concat() {
        assert!(mem.contains(&l), "leak line {l} not growing: {mem:?}");
    }
    assert!(growing(p, "descriptors").contains(&service_marked("LEAK:fd")[0]));
    for tag in ["CACHE", "CYCLE"] {
        for l in service_marked(tag) {
            assert!(!mem.contains(&l), "{tag} line {l} reported growing");
        }
    }
    // The healthy container: nothing grows.
    let q = process(&report, quiet.pid);
    assert_eq!(q.container.as_deref(), Some(&quiet_id[..12]), "{q:?}");
    let grows: Vec<&Suspect> = q
        .suspects
        .iter()
        .filter(|s| s.verdict == "growing")
        .collect();
    assert!(grows.is_empty(), "the healthy container grows: {grows:?}");
    // The heap census (read through the container's pid, as any other): the leaking list, named
    // and growing in the leaking container; nothing growing in the healthy one.
    assert!(
        census_growing(p).contains(&"__main__.REQUEST_LOG"),
        "{:?}",
        p.census
    );
    assert!(
        q.census.as_ref().map_or(0, |c| c.passes) >= 3,
        "a census of the healthy container: {:?}",
        q.census
    );
    assert!(census_growing(q).is_empty(), "{:?}", q.census);

    // Root frames: the container, then the process.
    let leaky_root = [
        format!("container {}", &leaky_id[..12]),
        format!("python3 (pid {})", leaky.pid),
    ];
    for name in ["allocs.folded", "fds.folded"] {
        let stacks = f.folded(name);
        assert!(!stacks.is_empty(), "{name} empty");
        for (s, _) in &stacks {
            assert!(s[0].starts_with("container "), "{name}: {s:?}");
        }
        assert!(
            stacks.iter().any(|(s, _)| s[..2] == leaky_root[..]),
            "{name}: no stack under {leaky_root:?}"
        );
    }
    // The summary names the pid inside the container (NSpid: the workload is its pid 1).
    assert!(
        f.stdout.contains(&format!(
            "(pid {}, pid 1 in container {})",
            leaky.pid,
            &leaky_id[..12]
        )),
        "{}",
        f.stdout
    );
    // Probes are per file: one set for the container's copy of libpython, none for the
    // host's (its process is not traced, and no probe names a host path).
    assert!(
        f.stderr.contains(&format!(
            "/proc/{}/root/opt/python/lib/libpython3.12",
            leaky.pid
        )) || f.stderr.contains("/opt/python/lib/libpython3.12"),
        "{}",
        f.stderr
    );
    drop(leaky);
    drop(quiet);
}

/// A podman container with Debian's static python3.11, traced in watch mode by its short id:
/// descriptor leaks exact on their line, window stacks left unjudged with the build's warning,
/// the memory leak named by the heap census with its line; the
/// container is removed while traced: its process is reported as exited with what it held, and
/// the tracer carries on to the end.
#[test]
fn podman_container_watch_mode() {
    let mut c = Podman::start(&[
        "/usr/bin/python3",
        "/work/service.py",
        "/tmp",
        "--rate",
        "200",
    ]);
    wait_ready(c.pid);
    let d = TempDir::new("podman");
    let out = d.0.join("out");
    let mut t = Tracer::start(
        // A larger budget than the default: enough windows (one checkpoint each) in 40 s, also
        // when a loaded machine makes each window's release wait (10% left three).
        &[
            "--container",
            &c.id[..12],
            "--mode",
            "watch",
            "--budget",
            "15",
            "--interval",
            "5s",
            "-d",
            "50s",
        ],
        &out,
    );
    t.wait_recording();
    std::thread::sleep(Duration::from_secs(40));
    let pid = c.pid;
    c.remove();
    let f = t.finish();
    assert!(
        f.stderr.contains(&format!("pid {pid} exited")),
        "{}",
        f.stderr
    );
    let report = f.report();
    let p = process(&report, pid);
    assert!(p.exited_after_s.is_some(), "{p:?}");
    assert_eq!(p.container.as_deref(), Some(&c.id[..12]), "{p:?}");
    assert!(
        growing(p, "descriptors").contains(&service_marked("LEAK:fd")[0]),
        "{p:?}"
    );
    assert!(
        f.stdout
            .contains("WARNING: the windows see part of the allocations only"),
        "{}",
        f.stdout
    );
    let stacks = f.folded("fds.folded");
    assert!(!stacks.is_empty());
    assert!(stacks
        .iter()
        .all(|(s, _)| s[0] == format!("container {}", &c.id[..12])));
    // On this build the memory leak is named by the heap census, with the line that uses it.
    let log = p
        .census()
        .container("__main__.REQUEST_LOG")
        .unwrap_or_else(|| panic!("no REQUEST_LOG in the census: {:?}", p.census));
    assert_eq!(log.verdict, "growing", "{log:?}");
    let line = service_marked("LEAK:log")[0];
    assert!(
        log.uses.iter().any(|u| service_line(u) == Some(line)),
        "{log:?}"
    );
}

/// Names of the containers the census calls growing.
fn census_growing(p: &Process) -> Vec<&str> {
    p.census
        .iter()
        .flat_map(Census::growing)
        .map(|k| k.name.as_str())
        .collect()
}

/// `--all-python` traces Python processes that start after tracing began, one of them a shell
/// that execs python; both processes of one interpreter share one set of probes (per file,
/// filtered by pid in the kernel).
#[test]
fn all_python_picks_up_new_processes() {
    let d = TempDir::new("allpy");
    let out = d.0.join("out");
    let mut t = Tracer::start(&["--all-python", "-d", "20s"], &out);
    t.wait_recording();
    let work = |name: &str| {
        let w = d.0.join(name);
        std::fs::create_dir_all(&w).unwrap();
        w.to_string_lossy().into_owned()
    };
    let service = workload("service.py").to_string_lossy().into_owned();
    let a = Proc(
        Command::new(py(11))
            .args([&service, &work("a"), "--rate", "100"])
            .spawn()
            .unwrap(),
    );
    // Seen first as a shell, then as python after its exec.
    let b = Proc(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "sleep 1.5; exec {py311} {service} {} --rate 100",
                work("b"),
                py311 = py(11)
            ))
            .spawn()
            .unwrap(),
    );
    for p in [&a, &b] {
        t.wait_stderr(
            &format!("tracing pid {} ", p.pid()),
            Duration::from_secs(10),
        );
    }
    // The tracer's perf-event links (its uprobes): one per probe, not one per process. One set
    // per interpreter file: both processes share the 3.11 one; a Python someone else runs on
    // the host meanwhile has its own set (a file of its own) and its own C library probes, as
    // its lines say, which may come out after the count.
    let probes = uprobe_links(t.proc.pid());
    let f = t.finish();
    let lines: Vec<&str> = f.stderr.lines().collect();
    // pid of a line ("tracing pid N (" or "pid N: "), and the set of an attach line.
    let pid_of = |l: &str| -> Option<u32> {
        let rest = l
            .split_once("tracing pid ")
            .or_else(|| l.split_once("tracer: pid "))?
            .1;
        rest.split([' ', ':']).next()?.parse().ok()
    };
    let set_of = |l: &str| -> Option<(String, usize)> {
        let (_, rest) = l.split_once(": CPython ")?.1.split_once(" in ")?;
        let (file, rest) = rest.split_once(", ")?;
        let n = rest.split_once(" allocator probes (exact mode)")?.0;
        Some((file.to_string(), n.parse().ok()?))
    };
    // Plus each process's own probes on its C library (said at attach, or when it is mapped).
    let libc_of = |l: &str| -> Option<usize> {
        let before = l.split_once(" probes on its C library's malloc family")?.0;
        before.rsplit(' ').next()?.parse::<usize>().ok()
    };
    let ours = [a.pid(), b.pid()];
    let count = |own_only: bool| -> (std::collections::BTreeMap<String, usize>, usize) {
        let mine = |l: &&&str| !own_only || pid_of(l).is_some_and(|p| ours.contains(&p));
        let sets = lines
            .iter()
            .filter(mine)
            .filter_map(|l| set_of(l))
            .collect();
        let libc = lines.iter().filter(mine).filter_map(|l| libc_of(l)).sum();
        (sets, libc)
    };
    let (own_sets, own_libc) = count(true);
    let (all_sets, all_libc) = count(false);
    let low = own_sets.values().sum::<usize>() + own_libc;
    let high = all_sets.values().sum::<usize>() + all_libc;
    let lib = format!("{}/lib/libpython3.11.so.1.0", pyenv_dir("3.11").display());
    assert!(
        f.stderr
            .contains(&format!("CPython {} in {lib}, ", py_release(11))),
        "{}",
        f.stderr
    );
    assert_eq!(own_sets.len(), 1, "{own_sets:?}: {}", f.stderr);
    // Exactly that when no other Python showed; else between our processes' and everyone's
    // (one that ended before the count had its own probes removed). A set per process would
    // be 17 more for our second one.
    assert!(
        (low..=high).contains(&probes),
        "one set of probes per interpreter file, for both processes, and their C library's \
         ({probes} uprobe links in the tracer; ours {own_sets:?} and C library {own_libc}, \
         everyone's {all_sets:?} and {all_libc}): {}",
        f.stderr
    );
    let fds = f.folded("fds.folded");
    for p in [&a, &b] {
        let root = format!("python3 (pid {})", p.pid());
        assert!(
            fds.iter()
                .any(|(s, _)| s[0] == root && s.iter().any(|fr| fr.starts_with("open_report ("))),
            "{root}: {fds:?}"
        );
    }
}

/// In a container, thread ids differ from the host's: threads that live for a moment (less than
/// the tracer's thread refresh) still get their Python frames (the kernel finds their thread
/// state by the thread id of the container's pid namespace). Selected by its cgroup, given as a
/// file system path.
#[test]
fn container_threads_get_python_frames() {
    let name = format!("tracer-threads-{}", std::process::id());
    let id = hex_id(3);
    let c = Runc::start(
        &name,
        &id,
        &["/opt/python/bin/python3", "/work/thread_files.py", "/tmp"],
    );
    wait_ready(c.pid);
    let d = TempDir::new("threads");
    let out = d.0.join("out");
    let cgroup = format!("/sys/fs/cgroup/unified/docker/{id}");
    let f = Tracer::start(&["--cgroup", &cgroup, "-d", "8s"], &out).finish();
    assert!(
        f.stderr.contains(&format!(
            "tracing pid {} (python3, container {})",
            c.pid,
            &id[..12]
        )),
        "{}",
        f.stderr
    );
    let leaked: Vec<(Vec<String>, u64)> = f
        .folded("fds.folded")
        .into_iter()
        .filter(|(s, _)| s.last().is_some_and(|l| l.starts_with("[file /tmp/t-")))
        .collect();
    assert!(leaked.len() >= 15, "{leaked:?}");
    for (s, _) in &leaked {
        assert!(
            s.iter()
                .any(|fr| fr.starts_with("leak_in_thread (/work/thread_files.py:")),
            "a thread's descriptor without its Python frames: {s:?}"
        );
    }
}

/// Debian sid's python3.14 and python3.15 in a container (their layouts from their debug
/// offsets, thread ids of the container's pid namespace): a thread's leaked descriptors with
/// its Python frames.
#[test]
fn container_debian_sid_threads_get_python_frames() {
    let root = debian("sid", 14).root.unwrap();
    for (n, minor) in [(4, 14), (5, 15)] {
        let name = format!("tracer-sid{minor}-{}", std::process::id());
        let id = hex_id(n);
        let python = format!("/usr/bin/python3.{minor}");
        let c = Runc::start_in(
            &root,
            &name,
            &id,
            &[&python, "/work/thread_files.py", "/tmp"],
        );
        wait_ready(c.pid);
        let d = TempDir::new("sid-threads");
        let out = d.0.join("out");
        let f = Tracer::start(&["--container", &id[..12], "-d", "8s"], &out).finish();
        assert!(!f.stderr.contains("WARNING: CPython"), "{}", f.stderr);
        let leaked: Vec<(Vec<String>, u64)> = f
            .folded("fds.folded")
            .into_iter()
            .filter(|(s, _)| s.last().is_some_and(|l| l.starts_with("[file /tmp/t-")))
            .collect();
        assert!(leaked.len() >= 15, "3.{minor}: {leaked:?}");
        for (s, _) in &leaked {
            assert!(
                s.iter()
                    .any(|fr| fr.starts_with("leak_in_thread (/work/thread_files.py:")),
                "3.{minor}: a thread's descriptor without its Python frames: {s:?}"
            );
        }
    }
}

/// A container or cgroup that does not exist, a malformed name: one line, non-zero exit.
#[test]
fn unknown_container_is_an_error() {
    for (args, expected) in [
        (
            ["--container", "0123456789ab"],
            "no process runs in container 0123456789ab",
        ),
        (
            ["--cgroup", "/no/such/cgroup"],
            "no process runs in cgroup /no/such/cgroup",
        ),
        (["--container", "../x"], "give a container id or name"),
        (["--container", "abc"], "not a hex container id"),
    ] {
        let out = Command::new(tracer_bin())
            .arg("record")
            .args(args)
            .args(["-d", "1s"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
