//! Report formats read by the tools people run: pprof (go tool pprof), speedscope (its JSON
//! schema), flame graph SVGs (rendered by headless Chromium), growth.folded; and the exact-mode
//! verdicts on a leak next to a cache that plateaus.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracer_tests::*;

/// Starts service.py with a small cache (it fills within seconds even under exact tracing) and
/// records it in exact mode.
fn record(extra: &[&str], seconds: u32) -> (Finished, TempDir) {
    let d = TempDir::new("formats");
    let svc = start_service(py(11), &d, &["--cache", "200", "--rate", "200"]);
    let pid = svc.pid().to_string();
    let dur = format!("{seconds}s");
    let mut args = vec!["-p", pid.as_str(), "-d", dur.as_str()];
    args.extend_from_slice(extra);
    let f = Tracer::start(&args, &d.0.join("out")).finish();
    drop(svc);
    (f, d)
}

fn tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (installed by `cargo xtask setup`)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The speedscope file-format schema, from the speedscope package on the npm registry (fetched
/// once, cached under target/, never committed).
fn speedscope_schema() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/speedscope-schema");
    let schema = dir.join("package/dist/release/file-format-schema.json");
    if !schema.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        tool(
            Command::new("curl")
                .args([
                    "-sSfL",
                    "-o",
                    "speedscope-1.25.0.tgz",
                    "https://registry.npmjs.org/speedscope/-/speedscope-1.25.0.tgz",
                ])
                .current_dir(&dir),
        );
        tool(
            Command::new("tar")
                .args(["xzf", "speedscope-1.25.0.tgz"])
                .current_dir(&dir),
        );
    }
    assert!(schema.exists(), "no schema in the speedscope package");
    schema
}

/// Share of pixels of a PNG (8-bit RGB/RGBA, as Chromium writes) that are not white.
const PNG_INK: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
pos, idat, w, h, ct = 8, b'', 0, 0, 0
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ct = struct.unpack('>IIBB', body[:10])
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
bpp = {2: 3, 6: 4}[ct]
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
ink = 0
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        if min(line[x:x + 3]) < 235:
            ink += 1
    prev = line
print(ink / (w * h))
"#;

#[test]
fn every_format_is_read_by_its_tool() {
    let (f, _d) = record(&["--format", "all", "--interval", "2s"], 16);
    let dir = &f.dir;
    for name in [
        "allocs.folded",
        "allocs-count.folded",
        "fds.folded",
        "growth.folded",
        "allocs.svg",
        "fds.svg",
        "growth.svg",
        "report.json",
        "profile.pb.gz",
        "speedscope.json",
        "summary.txt",
    ] {
        assert!(dir.join(name).exists(), "{name} missing");
    }
    // growth.folded: the leak grew.
    let growth = f.folded("growth.folded");
    assert!(
        growth
            .iter()
            .any(|(s, w)| *w > 0 && s.iter().any(|fr| fr.starts_with("handle_leak ("))),
        "{growth:?}"
    );

    // pprof: go tool pprof reads it and shows the leaking function, per sample type.
    for (index, function) in [("inuse_space", "handle_leak"), ("open_fds", "open_report")] {
        let top = tool(
            Command::new("go")
                .args(["tool", "pprof", "-top"])
                .arg(format!("-sample_index={index}"))
                .arg(dir.join("profile.pb.gz"))
                .env("HOME", &f.dir),
        );
        assert!(top.contains(function), "{index}: {top}");
    }

    // speedscope: valid against the format's schema.
    let schema = speedscope_schema();
    tool(Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
        ])
        .arg(&schema)
        .arg(dir.join("speedscope.json")));

    // SVG: headless Chromium renders it with the leaking function, and the picture has ink.
    let svg = dir.join("allocs.svg");
    let dom = tool(
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
            .arg(format!("file://{}", svg.display())),
    );
    assert!(
        dom.contains("handle_leak"),
        "the rendered SVG lacks the leak"
    );
    let png = dir.join("allocs.png");
    tool(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1200,800",
            ])
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!("file://{}", svg.display())),
    );
    let ink: f64 = tool(
        Command::new("/usr/bin/python3")
            .args(["-c", PNG_INK])
            .arg(&png),
    )
    .trim()
    .parse()
    .unwrap();
    assert!(ink > 0.02, "the flame graph screenshot is blank ({ink})");
}

#[test]
fn default_formats_and_exact_verdicts() {
    let (f, _d) = record(&["--interval", "3s"], 30);
    for name in [
        "allocs.folded",
        "allocs.svg",
        "fds.svg",
        "report.json",
        "summary.txt",
    ] {
        assert!(f.dir.join(name).exists(), "{name} missing");
    }
    assert!(!f.dir.join("profile.pb.gz").exists());
    assert!(!f.dir.join("speedscope.json").exists());
    let report = f.report();
    assert_eq!(report.mode, "exact");
    let mem: Vec<&Suspect> = report.first().suspects_of("memory").collect();
    // The leak is ranked first and growing; the cache that filled is stable.
    let first = mem.first().expect("memory suspects");
    assert_eq!(first.verdict, "growing", "{first:?}");
    assert!(first.line.starts_with("handle_leak ("), "{first:?}");
    let cache: Vec<_> = mem
        .iter()
        .filter(|s| s.line.starts_with("handle_cache ("))
        .collect();
    assert!(!cache.is_empty(), "the cache is reported");
    for c in cache {
        assert_eq!(c.verdict, "stable", "{c:?}");
    }
    assert!(f.stdout.contains("leak suspects"), "{}", f.stdout);
}

/// Queries the test's Prometheus (127.0.0.1:19090) until the answer contains `needle` (30 s
/// at most); returns the answer.
fn prometheus_query(series: &str, needle: &str) -> String {
    let query = format!("http://127.0.0.1:19090/api/v1/query?query={series}");
    let mut last = String::new();
    wait_for(
        &format!("Prometheus to have {series} with {needle}"),
        Duration::from_secs(30),
        || {
            last = Command::new("curl")
                .args(["-sf", &query])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            last.contains(needle)
        },
    );
    last
}

/// A real Prometheus server scrapes --metrics-addr; its query API returns the target's
/// outstanding bytes and the census's containers.
#[test]
fn prometheus_scrapes_the_metrics() {
    let d = TempDir::new("prom");
    let svc = start_service(py(11), &d, &["--rate", "200"]);
    let pid = svc.pid().to_string();
    let mut t = Tracer::start(
        &[
            "-p",
            &pid,
            "--mode",
            "watch",
            "--metrics-addr",
            "127.0.0.1:19464",
            "-d",
            "40s",
        ],
        &d.0.join("out"),
    );
    t.wait_recording();
    let config = d.0.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['127.0.0.1:19464']\n",
    )
    .unwrap();
    let prom = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                d.0.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:19090")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (installed by `cargo xtask setup`)"),
    );
    let last = prometheus_query("tracer_outstanding_bytes", &format!("\"pid\":\"{pid}\""));
    assert!(last.contains("\"status\":\"success\""), "{last}");
    // The endpoint itself: the text format, the fd kinds, the tracer's health.
    let text = tool(Command::new("curl").args(["-sf", "http://127.0.0.1:19464/metrics"]));
    assert!(
        text.contains("# TYPE tracer_outstanding_bytes gauge"),
        "{text}"
    );
    assert!(
        text.contains(&format!("tracer_open_fds{{pid=\"{pid}\"")),
        "{text}"
    );
    assert!(
        text.contains("tracer_dropped_total{map=\"allocations\"}"),
        "{text}"
    );
    // The heap census's containers, by name, through Prometheus too.
    prometheus_query(
        "tracer_census_container_items",
        "\"name\":\"__main__.REQUEST_LOG\"",
    );
    drop(prom);
    t.stop();
}

/// A tmux session of its own, killed on drop (a failing assertion leaves none behind).
struct Tmux(String);

impl Tmux {
    /// `cmd` in a new detached 200x50 session.
    fn start(cmd: &str) -> Tmux {
        let name = format!("tracer-top-{}", std::process::id());
        tool(Command::new("tmux").args([
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "200",
            "-y",
            "50",
            cmd,
        ]));
        Tmux(name)
    }

    /// What the pane shows.
    fn screen(&self) -> String {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// A tmux format of the pane (`#{alternate_on}`...).
    fn format(&self, format: &str) -> String {
        tool(Command::new("tmux").args(["display-message", "-p", "-t", &self.0, format]))
            .trim()
            .to_string()
    }

    /// The terminal's state as a program leaves it: the alternate screen (on/off), the cursor
    /// (shown/hidden), mouse reporting (on/off), and its line discipline (`stty -a` of the
    /// pane's terminal: raw mode, echo).
    fn terminal(&self) -> (String, String) {
        let flags = self.format(
            "alternate screen #{alternate_on}, cursor shown #{cursor_flag}, mouse #{mouse_any_flag}",
        );
        let tty = self.format("#{pane_tty}");
        (flags, tool(Command::new("stty").args(["-a", "-F", &tty])))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// The live view under tmux: it shows the leaking line, q quits with status 0, and the terminal
/// is left as it was (no alternate screen, cursor visible, no mouse reporting, the terminal
/// modes it had before: not raw, echo on).
#[test]
fn top_shows_the_leak_and_quits_on_q() {
    let d = TempDir::new("top");
    let svc = start_service(py(11), &d, &["--rate", "200"]);
    let status = d.0.join("status");
    let before = d.0.join("stty-before");
    // The shell stays (sleep) once top is gone: the pane's terminal is read after it.
    let cmd = format!(
        "stty -a > {before}; {} top -p {} --budget 10; echo $? > {status}.tmp; mv {status}.tmp {status}; exec sleep 600",
        tracer_bin().display(),
        svc.pid(),
        before = before.display(),
        status = status.display(),
    );
    let tmux = Tmux::start(&cmd);
    let mut screen = String::new();
    wait_for("the leak on the live view", Duration::from_secs(60), || {
        screen = tmux.screen();
        screen.contains("handle_leak (") && screen.contains("tracer top")
    });
    // While it runs: the alternate screen, the cursor hidden, the terminal raw (what it must
    // undo: the checks below see these states).
    let (flags, running) = tmux.terminal();
    assert!(
        flags.starts_with("alternate screen 1, cursor shown 0"),
        "the terminal while top runs: {flags}"
    );
    let modes = std::fs::read_to_string(&before).unwrap();
    assert_ne!(running, modes, "top runs in raw mode");
    tool(Command::new("tmux").args(["send-keys", "-t", &tmux.0, "q"]));
    wait_for("tracer top to quit", Duration::from_secs(30), || {
        status.exists()
    });
    let code = std::fs::read_to_string(&status).unwrap();
    assert_eq!(code.trim(), "0", "exit status; last screen:\n{screen}");
    let (flags, after) = tmux.terminal();
    assert_eq!(
        flags, "alternate screen 0, cursor shown 1, mouse 0",
        "the terminal after top"
    );
    assert_eq!(after, modes, "the terminal modes (stty -a) after top");
}
