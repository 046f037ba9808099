//! `tracer record`: resolve targets, attach, collect until the end; the reports go to the sinks
//! (`sink/`) at every tick and checkpoint and at the end.
//!
//! The command's setup (options, targets, probes, sinks) is here; `attach` says and attaches the
//! targets found while recording (launched, forked, exec'd, discovered), `collect_loop` runs
//! the recording until its end (Ctrl-C, a signal, `-d`, every target gone), and `finish` takes
//! the final reading and writes the final reports within the deadline.

mod attach;
mod collect_loop;
mod finish;

use std::time::{Duration, Instant};

use crate::cli::RecordArgs;
use crate::collect::Collector;
use crate::config::{Mode, NativeMode};
use crate::discover::{self, Discovery};
use crate::error::{Error, Result};
use crate::output::OutputDir;
use crate::python::{self, Interpreter};
use crate::report::{Archive, Report};
use crate::say;
use crate::sink::{self, Sink};
use crate::{launch, probes::Probes, report, util};
use attach::{adopt, attach_line, static_warning};
use collect_loop::collect_loop;
use finish::{conclude, end_launch, final_reports};

/// How often the maps are read (liveness, descriptor reconciliation, symbolization).
const TICK: Duration = Duration::from_secs(1);
/// How long an allocator window lasts (watch mode with --budget) unless --window says.
const DEFAULT_WINDOW: Duration = Duration::from_millis(200);

/// Checks the options together (clap checks each one): a wrong combination is a one-line error
/// before anything is attached; repeated pids are traced once.
fn validate(args: &mut RecordArgs) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    args.pids.retain(|p| seen.insert(*p));
    let bad = |m: &str| Err(Error::BadArgument(m.to_string()));
    if args.interval < TICK {
        return bad(
            "--interval must be at least 1s (checkpoints are taken on tracer's one-second tick)",
        );
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        return bad("--duration must be greater than 0 (leave it out to record until Ctrl-C)");
    }
    if args.mode() != Mode::Watch {
        if args.budget > 0.0 {
            return bad("--budget applies to watch mode (exact mode traces every allocation): add --mode watch");
        }
        if args.window.is_some() {
            return bad(
                "--window applies to watch mode's allocator windows: add --mode watch --budget N",
            );
        }
    } else if args.window.is_some() && args.budget == 0.0 {
        return bad("--window sets the length of the allocator windows, which only --budget N opens: add --budget N (e.g. 2)");
    }
    if let Some(w) = args.window {
        if w < Duration::from_millis(10) || w > Duration::from_secs(10) {
            return bad("--window must be between 10ms and 10s");
        }
    }
    Ok(())
}

pub fn run(mut args: RecordArgs) -> Result<i32> {
    validate(&mut args)?;
    crate::signals::catch_ending_signals();
    util::raise_descriptor_limit();
    // Each new target's interpreter file (tens of MB) is read into a buffer that is freed right
    // after: served by mmap, always, it goes back to the system at once. (glibc raises its mmap
    // threshold after such a free, and the next ones then fragment the heap of a recording that
    // sees thousands of processes: tests/lifecycle.rs soak_all_python_watch.)
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    let mut dir: Option<OutputDir> = None;
    let r = run_with(args, &mut dir);
    if r.is_err() {
        // A start that failed leaves no empty directory behind.
        if let Some(d) = dir {
            d.remove_if_unused();
        }
    }
    r
}

/// Says so when `pid` has Python children that are not traced: given a pre-fork server's master
/// (gunicorn, uWSGI), tracer would otherwise watch the idle master alone and report nothing.
fn children_hint(pid: u32) {
    let kids = discover::python_children(pid);
    if kids.is_empty() {
        return;
    }
    let list: Vec<String> = kids.iter().map(u32::to_string).collect();
    say!(
        "tracer: pid {pid} has {} Python child process{} not traced ({}): a pre-fork server's master (gunicorn, uWSGI) only watches its workers, which run the application; add --children to trace them too",
        kids.len(),
        if kids.len() == 1 { "" } else { "es" },
        list.join(", ")
    );
}

fn run_with(args: RecordArgs, out_dir: &mut Option<OutputDir>) -> Result<i32> {
    if args.pids.is_empty()
        && args.command.is_empty()
        && args.containers.is_empty()
        && args.cgroups.is_empty()
        && !args.all_python
    {
        return Err(Error::BadArgument(
            "nothing to trace: give -p PID, --container ID, --cgroup PATH, --all-python, or a command after --, e.g. `tracer record -- python app.py`".into(),
        ));
    }
    if args.live {
        crate::sink::live::Terminal::check()?;
    }
    util::require_privileges()?;
    // Bind before anything else: a busy port fails fast.
    let metrics_listener = args
        .metrics_addr
        .map(crate::sink::metrics::MetricsListener::bind)
        .transpose()?;
    let mode = args.mode();

    // Resolve running targets before loading anything: bad pids and containers fail fast.
    let mut selectors = Vec::new();
    for id in &args.containers {
        selectors.push(discover::container_selector(id)?);
    }
    for path in &args.cgroups {
        selectors.push(discover::cgroup_selector(path)?);
    }
    if args.all_python {
        selectors.push(discover::Selector::AllPython);
    }
    let mut discovery = Discovery::new(selectors, args.children);
    discovery.check_nonempty()?;
    let mut running: Vec<(u32, Interpreter)> = Vec::new();
    for &given in &args.pids {
        // A thread id names its process (the kernel keys everything by process).
        let pid = match crate::procfs::tgid(given) {
            Some(p) if p != given => {
                say!("tracer: {given} is a thread of process {p}: tracing process {p}");
                p
            }
            _ => given,
        };
        if running.iter().any(|(p, _)| *p == pid) {
            continue;
        }
        running.push((pid, python::inspect_pid(pid)?));
    }
    // top writes reports only when asked where.
    if !args.live || args.output.is_some() {
        *out_dir = Some(OutputDir::prepare(args.output.as_deref(), args.force)?);
    }
    let dir = out_dir.as_ref();
    let mut probes = Probes::load()?;
    probes.floor = args.floor;
    probes.recycle = !args.no_recycle;
    let mut c = Collector::new(probes, args.min_age);
    c.python_walk = !args.no_python_walk;
    c.census = !args.no_census;
    if args.no_cpu_samples {
        c.no_cpu_samples();
    }
    c.mode = mode;
    c.follow_children = args.children;
    c.interval = args.interval;
    c.window = args.window.unwrap_or(DEFAULT_WINDOW);
    c.budget = args.budget;
    c.native = if args.native {
        NativeMode::All
    } else if args.no_native {
        NativeMode::None
    } else {
        NativeMode::Leaf
    };
    for (pid, interp) in running {
        // Loading the probes took a second or two: a program that exec'd meanwhile is read
        // again (the kernel counts its execs from the attach on).
        let interp = match python::inspect_pid(pid).map_err(Error::from) {
            Ok(now) if now.file_id != interp.file_id || now.bias != interp.bias => now,
            _ => interp,
        };
        if mode == Mode::Exact {
            static_warning(&interp);
        }
        let start = crate::procfs::stat(pid).map_or(0, |s| s.start_ticks);
        c.add(pid, interp).map_err(|e| {
            // Whatever failed, a target that is gone is the reason.
            if crate::procfs::liveness(pid, start) == crate::procfs::Liveness::Gone {
                Error::Other(format!(
                    "pid {pid} exited while tracer was attaching to it: there is nothing to trace"
                ))
            } else {
                e
            }
        })?;
        let t = c.targets.last().unwrap();
        say!("{}", attach_line(t, mode, c.budget));
        if !args.children {
            children_hint(pid);
        }
    }
    // Launch mode: the command's tree is followed from a launcher thread; its Python processes
    // are attached from the collect loop as they start (-d counts from here).
    let mut launcher = if args.command.is_empty() {
        None
    } else {
        Some(launch::start(&args.command)?)
    };
    adopt(
        &mut c,
        &mut discovery,
        args.duration.map(|d| Instant::now() + d),
    );
    if discovery.follows() && c.targets.is_empty() {
        say!("tracer: no Python process yet; waiting for one to start");
    }
    if mode == Mode::Exact && args.command.is_empty() && !args.floor {
        say!(
            "tracer: exact mode traps every allocation (microseconds each): allocation-heavy code runs many times slower while traced; for a production service use --mode watch"
        );
    }
    let recording_line = format!(
        "tracer: recording{}; press Ctrl-C to stop{}",
        args.duration
            .map(|d| format!(" for {:.0?}", d))
            .unwrap_or_default(),
        dir.map(|d| format!(" and write the reports to {}", d.path().display()))
            .unwrap_or_default()
    );
    // A launch alone says it records once its first Python is attached (a command that never
    // runs Python ends with one error line).
    let launch_only = launcher.is_some() && c.targets.is_empty() && !discovery.follows();
    if !launch_only {
        say!("{recording_line}");
    }
    // The live view owns the terminal until the end (restored on every way out).
    let terminal = if args.live {
        Some(crate::sink::live::Terminal::enter()?)
    } else {
        None
    };
    // A progress line on stderr when it is a terminal (not in the live view, which has the screen).
    let progress = !args.live && unsafe { libc::isatty(2) == 1 };
    let mut sinks = sinks(&args, dir, progress, terminal, metrics_listener);

    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the runtime: {e}")))?;
    let mut archive = Archive::new(args.keep_ended, args.places());
    let mut last_tick = Instant::now() - TICK;
    let looped = rt.block_on(collect_loop(
        &mut c,
        &mut archive,
        &args,
        &mut sinks,
        started,
        &mut discovery,
        launcher.as_mut(),
        launch_only.then_some(recording_line),
        &mut last_tick,
    ));
    for s in sinks.iter_mut() {
        s.stop();
    }
    if let Err(e) = looped {
        end_launch(&c, launcher.as_mut());
        return Err(e);
    }
    // A launched command that ran no Python before the end (`-d`, Ctrl-C): nothing was
    // traced, and that is an error, not an empty set of reports.
    if let (Some(l), false) = (launcher.as_ref(), c.ever_traced()) {
        let shown = l.shown.clone();
        end_launch(&c, launcher.as_mut());
        return Err(Error::Launch {
            cmd: shown,
            reason: "it ran no CPython interpreter before the recording ended: nothing was traced"
                .into(),
        });
    }

    let (report, written) =
        final_reports(&mut c, &mut archive, &mut sinks, &args, started, last_tick);
    end_launch(&c, launcher.as_mut());
    c.probes.settle();
    conclude(&report, written, dir, &args)
}

/// Where the reports go while recording and at the end: one line per sink.
fn sinks<'a>(
    args: &RecordArgs,
    dir: Option<&'a OutputDir>,
    progress: bool,
    terminal: Option<crate::sink::live::Terminal>,
    metrics: Option<crate::sink::metrics::MetricsListener>,
) -> Vec<Box<dyn Sink + 'a>> {
    let formats = &args.format.0;
    let mut sinks: Vec<Box<dyn Sink + 'a>> = Vec::new();
    if progress {
        sinks.push(Box::new(sink::progress::Progress::default()));
    }
    if let Some(t) = terminal {
        sinks.push(Box::new(sink::live::Live::new(t)));
    }
    if let Some(m) = metrics {
        sinks.push(Box::new(sink::metrics::Metrics::new(m)));
    }
    if let Some(d) = dir {
        sinks.push(Box::new(sink::files::Files::new(d, formats)));
        if args.snapshots {
            sinks.push(Box::new(sink::snapshots::Snapshots::new(d, formats)));
        }
    }
    sinks
}

/// The entries the collector closed at its last tick (exit, exec) go to the archive, as their
/// final reports.
fn archive_closed(c: &mut Collector, archive: &mut Archive) {
    let probes_off = c.mode == Mode::Watch && !c.windowed();
    for t in c.take_closed() {
        archive.add(&t.view(), probes_off);
    }
}

/// The report as it stands.
fn report_now(c: &Collector, archive: &Archive, started: Instant) -> Report {
    report::build(&c.view(), archive, started.elapsed())
}
