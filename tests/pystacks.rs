//! Python stacks: every outstanding allocation and open descriptor attributed to its Python line,
//! on every CPython this machine has, compared with tracemalloc; on the static Debian builds
//! (bookworm 3.11, trixie 3.13, sid 3.14 and 3.15, the latter three in root file systems) the
//! descriptors' lines and the frames of threads, generators and coroutines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tracer_tests::*;

/// Line numbers of `# LEAK:<name>` and `# CHURN` markers in lines.py.
fn markers() -> (BTreeMap<String, BTreeSet<u32>>, BTreeSet<u32>) {
    let text = std::fs::read_to_string(workload("lines.py")).unwrap();
    let mut leaks: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut churn = BTreeSet::new();
    for (i, l) in text.lines().enumerate() {
        let n = i as u32 + 1;
        if let Some(pos) = l.find("# LEAK:") {
            leaks
                .entry(l[pos + 7..].trim().to_string())
                .or_default()
                .insert(n);
        } else if l.contains("# CHURN") {
            churn.insert(n);
        }
    }
    (leaks, churn)
}

/// The innermost frame of lines.py in a stack, as (function, line).
fn innermost(stack: &[String]) -> Option<(String, u32)> {
    stack.iter().rev().find_map(|f| {
        let (func, rest) = f.split_once(" (")?;
        let loc = rest.strip_suffix(')')?;
        let (file, line) = loc.rsplit_once(':')?;
        if !file.ends_with("/lines.py") {
            return None;
        }
        Some((func.to_string(), line.parse().ok()?))
    })
}

struct Run {
    allocs: Folded,
    fds: Folded,
    tracemalloc: BTreeMap<u32, i64>,
}

fn tracemalloc_lines(b: &Build) -> BTreeMap<u32, i64> {
    let dir = b.tempdir("tmlines");
    let mut p = Proc(
        b.command("lines.py")
            .arg("--done-file")
            .arg(b.guest(&dir.path().join("done.json")))
            .arg("--tmpdir")
            .arg(b.guest(dir.path()))
            .args(["--tracemalloc", "--exit"])
            .spawn()
            .unwrap(),
    );
    assert!(p
        .wait(Duration::from_secs(120))
        .expect("reference run")
        .success());
    read_done(&dir.path().join("done.json"))
        .tracemalloc_lines
        .expect("tracemalloc_lines in done.json")
}

/// lines.py traced with `extra`; with `reference`, its tracemalloc run meanwhile (untraced,
/// another process).
fn traced_run(b: &Build, extra: &[&str], reference: bool) -> Run {
    std::thread::scope(|s| {
        let tracemalloc = reference.then(|| s.spawn(|| tracemalloc_lines(b)));
        let (allocs, fds) = traced(b, extra);
        Run {
            allocs,
            fds,
            tracemalloc: tracemalloc
                .map(|t| t.join().expect("the tracemalloc run"))
                .unwrap_or_default(),
        }
    })
}

type Folded = Vec<(Vec<String>, u64)>;

fn traced(b: &Build, extra: &[&str]) -> (Folded, Folded) {
    let dir = b.tempdir("lines");
    let go = dir.path().join("go");
    let w = Proc(
        b.command("lines.py")
            .arg("--done-file")
            .arg(b.guest(&dir.path().join("done.json")))
            .arg("--tmpdir")
            .arg(b.guest(dir.path()))
            .arg("--go-file")
            .arg(b.guest(&go))
            .spawn()
            .unwrap(),
    );
    let pid = w.pid();
    // Attached once start-up is over (imports made while traced would be outstanding on the
    // import lines: a loaded machine can take seconds to import).
    wait_for("the workload to start", Duration::from_secs(60), || {
        dir.path().join("go.ready").exists()
    });
    let mut args = vec![
        "-p".to_string(),
        pid.to_string(),
        "--min-age".into(),
        "2s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = TempDir::new("lines-out");
    let mut t = Tracer::start(&argv, out.path());
    t.wait_recording();
    std::fs::write(&go, b"").unwrap();
    wait_for("the workload", Duration::from_secs(240), || {
        dir.path().join("done.json").exists()
    });
    std::thread::sleep(Duration::from_millis(3000));
    let f = t.stop();
    assert!(!f.stderr.contains("WARNING: CPython"), "{}", f.stderr);
    drop(w);
    (f.folded("allocs.folded"), f.folded("fds.folded"))
}

fn check(b: &Build) {
    let py = &b.name;
    let (leaks, churn) = markers();
    let r = traced_run(b, &[], true);
    let all_leak_lines: BTreeSet<u32> = leaks.values().flatten().copied().collect();
    let total = total(&r.allocs);
    assert!(total > 1_000_000, "several MB leak, got {total} B");
    let mut per_line: BTreeMap<u32, u64> = BTreeMap::new();
    for (stack, w) in &r.allocs {
        if let Some((_, line)) = innermost(stack) {
            *per_line.entry(line).or_default() += w;
        }
    }
    let leaked: u64 = per_line
        .iter()
        .filter(|(l, _)| all_leak_lines.contains(l))
        .map(|(_, w)| w)
        .sum();
    let churned: u64 = per_line
        .iter()
        .filter(|(l, _)| churn.contains(l))
        .map(|(_, w)| w)
        .sum();
    eprintln!(
        "{py}: {total} B outstanding, {leaked} B on leaking lines, {churned} B on churn lines"
    );
    eprintln!("per line: {per_line:?}\ntracemalloc: {:?}", r.tracemalloc);
    assert!(
        leaked as f64 >= 0.95 * total as f64,
        "only {leaked} of {total} B attributed to the leaking lines"
    );
    assert!(
        (churned as f64) < 0.01 * total as f64,
        "{churned} of {total} B on lines that do not leak"
    );

    // Per-line agreement with tracemalloc, for the lines holding real leaks.
    for name in ["list", "dict", "node", "thread", "thread2", "gen", "async"] {
        let lines = &leaks[name];
        let ours: u64 = lines
            .iter()
            .map(|l| per_line.get(l).copied().unwrap_or(0))
            .sum();
        let theirs: i64 = lines
            .iter()
            .map(|l| r.tracemalloc.get(l).copied().unwrap_or(0))
            .sum();
        let ratio = ours as f64 / theirs as f64;
        eprintln!(
            "  {name:8} lines {lines:?}: tracer {ours} B, tracemalloc {theirs} B, ratio {ratio:.3}"
        );
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{name}: tracer {ours} B vs tracemalloc {theirs} B"
        );
    }

    // Nested calls appear whole, root first.
    let list_line = *leaks["list"].iter().next().unwrap();
    let nested = r
        .allocs
        .iter()
        .find(|(s, _)| innermost(s).is_some_and(|(_, l)| l == list_line))
        .expect("a stack for the list leak");
    let labels: Vec<&String> = nested
        .0
        .iter()
        .filter(|f| f.contains("/lines.py:"))
        .collect();
    assert!(
        labels.iter().filter(|f| f.starts_with("nested (")).count() >= 6,
        "{:?}",
        nested.0
    );
    assert!(
        labels[0].starts_with("<module> ("),
        "root first: {:?}",
        nested.0
    );
    assert!(
        labels.last().unwrap().starts_with("leak_list ("),
        "{:?}",
        nested.0
    );

    // Deep recursion: bounded, and the cut is visible as the root frame.
    let deep_line = *leaks["deep"].iter().next().unwrap();
    let deep = r
        .allocs
        .iter()
        .find(|(s, _)| innermost(s).is_some_and(|(_, l)| l == deep_line))
        .expect("a stack for the deep leak");
    assert_eq!(deep.0[1], "[truncated]", "{:?}", deep.0);
    assert!(
        deep.0.iter().filter(|f| f.starts_with("deep (")).count() >= 40,
        "{:?}",
        deep.0
    );

    check_descriptors(&r, &leaks);
}

/// Every leaked descriptor is attributed to the line that opened it.
fn check_descriptors(r: &Run, leaks: &BTreeMap<String, BTreeSet<u32>>) {
    let file_line = *leaks["file"].iter().next().unwrap();
    let sock_line = *leaks["socket"].iter().next().unwrap();
    let mut files = 0;
    let mut socks = 0;
    for (stack, w) in &r.fds {
        let leaf = stack.last().unwrap();
        let line = innermost(stack).map(|(_, l)| l);
        if leaf.starts_with("[file ") && leaf.contains("/lines-") {
            assert_eq!(
                line,
                Some(file_line),
                "file opened at line {file_line}: {stack:?}"
            );
            files += w;
        }
        if leaf == "[socket inet/udp]" {
            assert_eq!(
                line,
                Some(sock_line),
                "socket created at line {sock_line}: {stack:?}"
            );
            socks += w;
        }
        assert!(!leaf.contains("closed-"), "closed file reported: {stack:?}");
    }
    assert_eq!((files, socks), (5, 5), "{:?}", r.fds);
    check_frame_kinds(r, leaks);
}

/// Descriptors opened in a generator, a coroutine and a thread: their line, and the frames
/// that lead there (the generator under its consumer, the coroutine under asyncio's loop, the
/// thread from its own root, not from the main module).
fn check_frame_kinds(r: &Run, leaks: &BTreeMap<String, BTreeSet<u32>>) {
    let line = |name: &str| *leaks[name].iter().next().unwrap();
    for (file, marker, check) in [
        ("/gen-", "gen-fd", "generator"),
        ("/async-", "async-fd", "coroutine"),
        ("/thread-", "thread-fd", "thread"),
    ] {
        let stacks: Vec<&Vec<String>> = r
            .fds
            .iter()
            .filter(|(s, _)| {
                s.last()
                    .is_some_and(|l| l.starts_with("[file ") && l.contains(file))
            })
            .map(|(s, _)| s)
            .collect();
        let n: u64 = r
            .fds
            .iter()
            .filter(|(s, _)| stacks.contains(&s))
            .map(|(_, w)| w)
            .sum();
        assert_eq!(n, 5, "{check}: {:?}", r.fds);
        for s in stacks {
            assert_eq!(
                innermost(s).map(|x| x.1),
                Some(line(marker)),
                "{check}: {s:?}"
            );
            let py: Vec<&String> = s.iter().filter(|f| f.ends_with(')')).collect();
            match check {
                "generator" => {
                    let caller = py.iter().rposition(|f| f.starts_with("gen_files ("));
                    let below = caller.and_then(|i| i.checked_sub(1)).map(|i| py[i]);
                    assert!(
                        below.is_some_and(|f| f.starts_with("leak_descriptors (")
                            && f.ends_with(&format!(":{})", line("gen-fd-caller")))),
                        "generator under its consumer: {s:?}"
                    );
                }
                "coroutine" => assert!(
                    py.iter()
                        .any(|f| f.starts_with("run (") && f.contains("asyncio"))
                        && py.iter().any(|f| f.starts_with("leak_descriptors (")),
                    "coroutine under asyncio.run: {s:?}"
                ),
                _ => assert!(
                    !py.iter().any(|f| f.starts_with("<module> ("))
                        && py.iter().any(|f| f.contains("threading.py")),
                    "a thread's own stack: {s:?}"
                ),
            }
        }
    }
}

/// Every shared-libpython build of the test list (pyenv's), two at a time, each on a private
/// copy (`Build::private`): exact mode's probes on every pyenv build for 100 s would trap in
/// every other test's Python of that build (a gunicorn+uvicorn worker on 3.12, slowed, was left
/// with its growing sessions unnamed).
#[test]
fn lines_on_shared_libpython_builds() {
    on_builds(
        builds()
            .into_iter()
            .filter(|b| !b.inlined_allocator)
            .map(|b| b.private("lines"))
            .collect(),
        2,
        check,
    );
}

/// A static, stripped LTO/PGO build: descriptors with exact Python lines and the frames of
/// threads, generators and coroutines; what the allocator hooks still see (pymalloc's fast path
/// is inlined), measured against tracemalloc and attributed to the right lines.
fn check_static(b: &Build) {
    let (leaks, _) = markers();
    let r = traced_run(b, &[], true);
    check_descriptors(&r, &leaks);
    let ours: u64 = r
        .allocs
        .iter()
        .filter(|(s, _)| innermost(s).is_some())
        .map(|(_, w)| w)
        .sum();
    let theirs: i64 = r.tracemalloc.values().sum();
    eprintln!(
        "{} allocation coverage: {ours} of {theirs} B ({:.1}%)",
        b.name,
        100.0 * ours as f64 / theirs as f64
    );
}

/// Every static build of the test list (Debian's: bookworm's on the host, the newer ones in
/// their root file systems, with layouts from their debug offsets), two at a time.
#[test]
fn lines_on_static_builds() {
    on_builds(
        builds()
            .into_iter()
            .filter(|b| b.inlined_allocator)
            .collect(),
        2,
        check_static,
    );
}

/// The file offset of an ELF section (x86_64 little-endian ELF64).
fn section_offset(elf: &[u8], name: &str) -> Option<usize> {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let strtab = u64_at(shoff + shstrndx * shentsize + 0x18);
    (0..shnum).find_map(|i| {
        let h = shoff + i * shentsize;
        let at = strtab + u32_at(h);
        let end = at + elf[at..].iter().position(|&c| c == 0)?;
        (&elf[at..end] == name.as_bytes()).then(|| u64_at(h + 0x18))
    })
}

/// Interpreters tracer cannot read are said, never read wrongly: Debian's python3.14 with its
/// debug offsets table corrupted (the interpreter runs as before: it does not read the table),
/// and the same file named as a free-threaded build (`python3.14t`). One WARNING line at attach
/// and in the summary (and report.json) names what is missing; descriptors are still traced.
#[test]
fn unreadable_interpreters_are_said() {
    let b = debian("sid", 14);
    let root = b.root.clone().unwrap();
    let dir = b.tempdir("unreadable");
    let mut elf = std::fs::read(root.join("usr/bin/python3.14")).unwrap();
    let corrupt = dir.path().join("python3.14");
    let at = section_offset(&elf, ".PyRuntime").expect("a .PyRuntime section");
    assert_eq!(&elf[at..at + 8], b"xdebugpy");
    let mut bad = elf.clone();
    bad[at + 7] = b'z';
    std::fs::write(&corrupt, &bad).unwrap();
    let threaded = dir.path().join("python3.14t");
    std::fs::write(&threaded, &elf).unwrap();
    elf.clear();
    for (file, why) in [
        (&corrupt, "no debug offsets cookie"),
        (&threaded, "free-threaded build"),
    ] {
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let build = Build {
            python: b.guest(file).to_string_lossy().into_owned(),
            ..b.clone()
        };
        let d = build.tempdir("svc");
        let svc = start_service_on(&build, &d, &[]);
        let out = TempDir::new("unreadable-out");
        let pid = svc.pid().to_string();
        let f = Tracer::start(&["-p", &pid, "-d", "6s"], out.path()).finish();
        let warnings: Vec<&str> = f
            .stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("WARNING: CPython"))
            .collect();
        assert_eq!(warnings.len(), 1, "{why}: {}", f.stderr);
        assert!(
            warnings[0].contains(why) && warnings[0].contains("no Python frames"),
            "{}",
            warnings[0]
        );
        assert!(f.stdout.contains(warnings[0].trim()), "{}", f.stdout);
        assert_eq!(
            read_report(out.path()).first().warning.as_deref(),
            Some(warnings[0].trim())
        );
        // Descriptors still traced (native stacks only: no Python line is claimed).
        let fds = f.folded("fds.folded");
        let files: Vec<_> = fds
            .iter()
            .filter(|(s, _)| s.last().is_some_and(|l| l.contains("/report-")))
            .collect();
        assert!(!files.is_empty(), "{why}: {fds:?}");
        for (s, _) in files {
            assert!(!s.iter().any(|fr| fr.contains("service.py:")), "{s:?}");
        }
        drop(svc);
    }
}

/// Names of the data symbols (objects, thread-locals) of an ELF file, from its symbol tables.
fn data_symbols(file: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dynamic in [false, true] {
        let mut cmd = std::process::Command::new("nm");
        cmd.arg("--defined-only");
        if dynamic {
            cmd.arg("-D");
        }
        let o = cmd.arg(file).output().expect("nm (binutils)");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let mut it = l.split_whitespace();
            let (Some(_), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if "BbDdRrGgSsVv".contains(ty) && ty.len() == 1 {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// Is this frame the process root frame ("comm (pid N)")?
fn is_process_frame(f: &str) -> bool {
    f.contains(" (pid ")
}

/// "function (file.py:LINE)", or "function (file.py)" when the line is not known.
fn is_python_frame(f: &str) -> bool {
    let Some((_, loc)) = f.strip_suffix(')').and_then(|f| f.split_once(" (")) else {
        return false;
    };
    loc.contains(".py")
        || loc.starts_with('<')
        || loc
            .rsplit_once(':')
            .is_some_and(|(_, line)| line.parse::<u32>().is_ok())
}

/// --no-native keeps Python frames only; --native adds the native frames that can be trusted:
/// never a data symbol (what a frame-pointer walk through code built without frame pointers
/// yields), and the allocator function as the leaf.
#[test]
fn native_frame_options() {
    let b = pyenv(11);
    let py = b.python.clone();
    let prefix = Path::new(&py).parent().unwrap().parent().unwrap();
    let libpython = prefix.join("lib/libpython3.11.so.1.0");
    let mut data = data_symbols(libpython.to_str().unwrap());
    data.extend(data_symbols("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    assert!(data.contains("PyType_Type") && data.contains("PyUnicode_Type"));

    // Both recordings at once (two processes, two tracers).
    let (plain, native) = std::thread::scope(|s| {
        let plain = s.spawn(|| traced_run(&b, &["--no-native"], false));
        let native = traced_run(&b, &["--native"], false);
        (plain.join().expect("the --no-native run"), native)
    });
    assert!(total(&plain.allocs) > 1_000_000);
    for (stack, _) in plain.allocs.iter().chain(&plain.fds) {
        // The process, Python frames, markers ([truncated], [no Python stack]); for
        // descriptors the resource as the leaf.
        for f in &stack[1..] {
            assert!(
                is_python_frame(f) || f.starts_with('['),
                "only Python frames with --no-native, not {f:?}: {stack:?}"
            );
        }
        assert!(is_process_frame(&stack[0]), "{stack:?}");
    }

    let all = total(&native.allocs);
    assert!(all > 1_000_000);
    let mut native_frames = BTreeSet::new();
    for (stack, _) in native.allocs.iter().chain(&native.fds) {
        for f in &stack[1..] {
            assert!(
                !f.ends_with("_Type") && !data.contains(f.as_str()),
                "a data symbol as a frame: {f:?} in {stack:?}"
            );
            if !is_python_frame(f) && !f.starts_with('[') {
                native_frames.insert(f.clone());
            }
        }
    }
    eprintln!("native frames seen: {native_frames:?}");
    // The allocator function is the leaf of (nearly) every allocation stack, below the Python
    // frames: CPython's, or the C library's malloc family (exact mode probes it too; glibc
    // names its entry points `__GI___libc_malloc`, `__libc_calloc`...).
    let allocator = |f: &str| {
        let f = f.trim_start_matches('_');
        let libc = f.trim_start_matches("GI_").trim_start_matches('_');
        f.starts_with("PyObject_")
            || f.starts_with("PyMem_")
            || [
                "libc_malloc",
                "libc_calloc",
                "libc_realloc",
                "libc_memalign",
                "posix_memalign",
            ]
            .iter()
            .any(|a| libc.starts_with(a))
    };
    let at_allocator: u64 = native
        .allocs
        .iter()
        .filter(|(s, _)| s.last().is_some_and(|l| allocator(l)))
        .map(|(_, w)| w)
        .sum();
    assert!(
        at_allocator as f64 >= 0.95 * all as f64,
        "{at_allocator} of {all} B under an allocator leaf: {:?}",
        by_leaf(&native.allocs)
    );
    assert!(
        native
            .allocs
            .iter()
            .any(|(s, _)| s.iter().any(|f| is_python_frame(f))
                && s.last().is_some_and(|l| allocator(l))),
        "Python frames above the allocator: {:?}",
        native.allocs
    );
}
