//! `tracer record`: resolve targets, attach, collect until the end; the reports go to the sinks
//! (`sink/`) at every tick and checkpoint and at the end.

use std::time::{Duration, Instant};

use crate::cli::RecordArgs;
use crate::collect::{hooks_of, Collector, Event, ExecOutcome};
use crate::config::{Mode, NativeMode};
use crate::discover::{self, Discovery};
use crate::error::{Error, Result};
use crate::output::OutputDir;
use crate::python::{self, Interpreter};
use crate::render::summary::coverage_warning;
use crate::report::{assess_coverage, Archive, Coverage, Report};
use crate::say;
use crate::sink::{self, Sink};
use crate::{launch, probes::Probes, render, report, util};

/// How often the maps are read (liveness, descriptor reconciliation, symbolization).
const TICK: Duration = Duration::from_secs(1);
/// How often new Python threads are published to the kernel.
const THREAD_REFRESH: Duration = Duration::from_millis(100);
/// Python stacks sampled from outside while the census has a growing container to place (the
/// call paths to the lines that use it).
const STACK_SAMPLE: Duration = Duration::from_millis(10);
/// How long an allocator window lasts (watch mode with --budget) unless --window says.
const DEFAULT_WINDOW: Duration = Duration::from_millis(200);

/// The line that says a target is traced: its interpreter and what is attached.
fn attach_line(t: &crate::collect::Target, mode: Mode, budget: f64) -> String {
    let (pid, container, interp, uprobes) = (t.pid, t.container.as_deref(), &t.interp, t.uprobes);
    format!(
        "tracer: tracing pid {pid} ({}{}): CPython {} in {}, {}",
        crate::procfs::comm(pid),
        container
            .map(|c| format!(", container {c}"))
            .unwrap_or_default(),
        interp.version,
        interp.target_path,
        match mode {
            Mode::Exact if t.libc_probes > 0 => format!(
                "{uprobes} allocator probes (exact mode), {} probes on its C library's malloc family (native allocations)",
                t.libc_probes
            ),
            Mode::Exact => format!("{uprobes} allocator probes (exact mode)"),
            Mode::Watch if budget == 0.0 && interp.unreadable_warning().is_some() => {
                "watch mode: no allocator probe (descriptors only: no heap census for this interpreter; --budget 2 adds allocation windows)".into()
            }
            Mode::Watch if budget == 0.0 => {
                "watch mode: no allocator probe (heap census, stack samples, descriptors; --budget 2 adds allocation windows)".into()
            }
            Mode::Watch => {
                let hooks = crate::probes::watch_hooks(&interp.alloc.hooks);
                let free = hooks
                    .iter()
                    .filter(|h| h.op == crate::python::AllocOp::Free)
                    .count();
                format!(
                    "watch mode ({} allocator probes in windows)",
                    2 * hooks.len() - free
                )
            }
        }
    )
}

fn static_warning(interp: &Interpreter) {
    // Before any measurement: say at once when the build hides its allocations.
    let c = assess_coverage(&hooks_of(interp), 0, 0.0);
    if matches!(c, Coverage::Low { .. } | Coverage::None { .. }) {
        if let Some(w) = coverage_warning(&c) {
            say!("tracer: {w}");
        }
    }
}

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
        crate::top::Terminal::check()?;
    }
    util::require_privileges()?;
    // Bind before anything else: a busy port fails fast.
    let metrics_listener = args
        .metrics_addr
        .map(crate::metrics::MetricsListener::bind)
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
        let interp = match python::inspect_pid(pid) {
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
        Some(crate::top::Terminal::enter()?)
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

    // Final checkpoint and reports, while the probes go (their removal takes seconds; the
    // allocation probes go first, the free probes last, so the final reading is the state at
    // the interruption).
    // The reports come first: on a machine that the targets (and the probes' traps) load, the
    // last reading and writing run ahead of them (the probes go meanwhile).
    let niceness = util::hurry();
    c.close_windows();
    c.probes.release_all();
    // The state at the end: a tick. Only at a `-d` deadline may the tick that just ended stand
    // for it (a loaded machine makes ticks slow, and `-d` is a deadline); after Ctrl-C or a
    // signal the state is read again, since what happened during the last tick is what the
    // user stopped to see.
    let at_deadline = args.duration.is_some_and(|d| started.elapsed() >= d);
    if !at_deadline || last_tick.elapsed() >= Duration::from_millis(500) {
        // Every process is read again unless that takes longer than FINAL_READING (hundreds
        // of processes in exact mode): the rest keep the snapshot of the tick before.
        c.ending = true;
        c.deadline = Some(Instant::now() + FINAL_READING);
        c.tick();
    }
    archive_closed(&mut c, &mut archive);
    c.checkpoint();
    let report = report::build(&c.view(), &archive, started.elapsed());
    let mut written = Ok(());
    for s in sinks.iter_mut() {
        let w = s.finish(&report);
        if written.is_ok() {
            written = w;
        }
    }
    util::unhurry(niceness);
    end_launch(&c, launcher.as_mut());
    c.probes.settle();
    let Some(d) = dir else {
        return Ok(0);
    };
    if let Err(e) = written {
        // The recording is not lost: the summary goes to stdout, and the directory keeps the
        // last set written at a checkpoint, if any.
        if !args.live {
            util::print_quietly(&render::summary::render(&report, None));
        }
        return Err(e);
    }
    if args.live {
        say!("tracer: reports written to {}", d.current_path().display());
    } else {
        util::print_quietly(&render::summary::render(&report, Some(&d.current_path())));
    }
    Ok(0)
}

/// Where the reports go while recording and at the end: one line per sink.
fn sinks<'a>(
    args: &RecordArgs,
    dir: Option<&'a OutputDir>,
    progress: bool,
    terminal: Option<crate::top::Terminal>,
    metrics: Option<crate::metrics::MetricsListener>,
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

/// Ends the launched command and the Python processes its tree started, if they still run.
fn end_launch(c: &Collector, launcher: Option<&mut launch::Launcher>) {
    let Some(l) = launcher else { return };
    l.stop();
    let launched: Vec<(u32, u64)> = c
        .targets
        .iter()
        .filter(|t| t.launched && t.exited_after.is_none())
        .map(|t| (t.pid, t.start_ticks))
        .collect();
    launch::terminate(&launched);
}

/// Attaches a Python process that the launched command's tree started (stopped at its exec
/// until `resume` is answered).
fn attach_launched(c: &mut Collector, pid: u32, interp: Interpreter, in_exec: bool) -> Result<()> {
    if c.live(pid).is_some() {
        return Ok(()); // found by a discovery scan meanwhile
    }
    if c.mode == Mode::Exact {
        static_warning(&interp);
    }
    c.add_launched(pid, interp, in_exec as u64)?;
    let t = c.targets.last_mut().unwrap();
    say!("{}", attach_line(t, c.mode, c.budget));
    Ok(())
}

/// Follows the targets that exec'd: prints what their new program is, and attaches it when it
/// is CPython.
fn follow_execs(c: &mut Collector) {
    for outcome in c.follow_execs() {
        match outcome {
            ExecOutcome::Python(i) => {
                let t = &c.targets[i];
                if c.mode == Mode::Exact {
                    static_warning(&t.interp);
                }
                say!("{}", attach_line(t, c.mode, c.budget));
            }
            ExecOutcome::NotPython { pid, comm } => {
                say!("tracer: pid {pid} now runs {comm}, not CPython: no longer traced")
            }
            ExecOutcome::Gone(pid) => {
                say!("tracer: pid {pid} exited after its exec")
            }
            ExecOutcome::Failed { pid, err } => {
                say!("tracer: pid {pid} not traced after its exec: {err}")
            }
        }
    }
}

/// The children traced processes forked since the last call get their entries.
fn take_forks(c: &mut Collector) {
    for f in c.take_forks() {
        say!(
            "tracer: tracing pid {} ({}), forked by pid {}",
            f.pid,
            crate::procfs::comm(f.pid),
            f.parent
        );
    }
}

/// The longest the final reading may take.
const FINAL_READING: Duration = Duration::from_secs(4);

/// Traces the new processes that `discovery` finds (not Python, or gone meanwhile: skipped).
fn adopt(c: &mut Collector, discovery: &mut Discovery, deadline: Option<Instant>) {
    // The children the kernel followed first: a scan must not take them for new processes.
    take_forks(c);
    let traced = c.traced_pids();
    for found in discovery.scan(&traced) {
        // `-d` passed while attaching the processes found: the rest are not attached.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let pid = found.pid;
        let interp = match python::inspect_pid(pid).map_err(Error::from) {
            Ok(i) => i,
            Err(Error::NotPython { .. }) => continue,
            Err(Error::NoSuchPid(_) | Error::Exited { .. }) => {
                c.missed.exited_before_attach += 1;
                continue;
            }
            Err(e) => {
                say!("tracer: pid {pid} not traced: {e}");
                continue;
            }
        };
        if c.mode == Mode::Exact {
            static_warning(&interp);
        }
        if let Err(e) = c.add(pid, interp) {
            say!("tracer: pid {pid} not traced: {e}");
            continue;
        }
        let t = c.targets.last_mut().unwrap();
        if t.container.is_none() {
            t.container = found.label;
        }
        say!("{}", attach_line(t, c.mode, c.budget));
    }
}

/// Has the deadline (`-d`) passed?
fn past(deadline: Option<tokio::time::Instant>) -> bool {
    deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
}

#[allow(clippy::too_many_arguments)]
async fn collect_loop(
    c: &mut Collector,
    archive: &mut Archive,
    args: &RecordArgs,
    sinks: &mut [Box<dyn Sink + '_>],
    started: Instant,
    discovery: &mut Discovery,
    mut launcher: Option<&mut launch::Launcher>,
    mut recording_line: Option<String>,
    last_tick: &mut Instant,
) -> Result<()> {
    let first = report_now(c, archive, started);
    for s in sinks.iter_mut() {
        s.start(&first)?;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Error::Other(format!("signal handler: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Error::Other(format!("signal handler: {e}")))?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    c.deadline = deadline.map(|d| d.into_std());
    let mut threads = tokio::time::interval(THREAD_REFRESH);
    threads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_checkpoint = started + args.interval;
    // Heap census: a first pass soon after attaching, then every interval.
    let mut census = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        args.interval,
    );
    census.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stack_samples = tokio::time::interval(STACK_SAMPLE);
    stack_samples.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quit = if args.live {
        crate::top::quit_key()
    } else {
        tokio::sync::mpsc::unbounded_channel().1
    };
    let mut waiting_said = false;
    loop {
        // `-d` is a deadline whatever the branch that ran last took.
        if past(deadline) {
            break;
        }
        // A signal that would have ended tracer (SIGHUP, SIGQUIT...): the reports, as for Ctrl-C.
        if let Some(sig) = crate::signals::received() {
            match sig {
                libc::SIGINT if args.live => {}
                libc::SIGINT => say!("tracer: interrupted, writing the reports"),
                libc::SIGTERM => say!("tracer: terminated, writing the reports"),
                _ => say!(
                    "tracer: {} received, writing the reports",
                    crate::signals::describe(sig)
                ),
            }
            break;
        }
        // Launch mode: the Python processes of the launched tree, as they start.
        let launch_event = async {
            match launcher.as_mut() {
                Some(l) if !l.done => l.events.recv().await,
                _ => std::future::pending().await,
            }
        };
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // Watch mode: windows open and close on time (a late close costs the target); no
        // wake-ups in between.
        let next_window = c.next_window_event();
        let window_due = async {
            match next_window {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = quit.recv() => break,
            ev = launch_event => {
                let l = launcher.as_mut().unwrap();
                match ev {
                    Some(launch::LaunchEvent::Python { pid, interp, in_exec, resume }) => {
                        let attached = attach_launched(c, pid, *interp, in_exec);
                        drop(resume);
                        match attached {
                            Ok(()) => {}
                            // The first one fails the launch, as before the tree was followed.
                            Err(e) if !c.ever_traced() => return Err(e),
                            Err(e) => say!("tracer: pid {pid} not traced: {e}"),
                        }
                        if let Some(line) = recording_line.take() {
                            say!("{line}");
                        }
                    }
                    Some(launch::LaunchEvent::Failed { pid, err }) => {
                        if !c.ever_traced() {
                            return Err(err);
                        }
                        say!("tracer: pid {pid} not traced: {err}");
                    }
                    Some(launch::LaunchEvent::Done) | None => {
                        l.done = true;
                        if !c.ever_traced() {
                            return Err(Error::Launch {
                                cmd: l.shown.clone(),
                                reason: "it exited without running a CPython interpreter".into(),
                            });
                        }
                    }
                }
            }
            _ = sigint.recv() => { if !args.live { say!("tracer: interrupted, writing the reports"); } break; }
            _ = sigterm.recv() => { say!("tracer: terminated, writing the reports"); break; }
            _ = until_deadline => break,
            _ = threads.tick() => {
                c.refresh_threads();
                take_forks(c);
                // A child that runs a program of its own (a subprocess) is read at once: its
                // Python frames start when its walk is published.
                if c.execs.iter().any(|e| e.forked) {
                    follow_execs(c);
                }
            }
            _ = window_due => c.windows(),
            _ = census.tick() => c.census(),
            _ = stack_samples.tick(), if c.census => c.sample_stacks(),
            _ = tick.tick() => {
                let events = c.tick();
                *last_tick = Instant::now();
                archive_closed(c, archive);
                for ev in events {
                    match ev {
                        Event::Exited(pid) => say!("tracer: pid {pid} exited"),
                        Event::Execd { pid, into } => say!("tracer: pid {pid} exec'd {into}; its entry keeps the figures up to the exec"),
                    }
                }
                follow_execs(c);
                // A tick that ran late on a loaded machine: past `-d`, nothing more is done.
                if past(deadline) {
                    break;
                }
                if let (Some(l), false) = (launcher.as_ref(), waiting_said) {
                    if !c.ever_traced() && started.elapsed() >= Duration::from_secs(1) {
                        say!("tracer: waiting for `{}` to start Python", l.shown);
                        waiting_said = true;
                    }
                }
                if sinks.iter().any(|s| s.wants_ticks()) {
                    let r = report_now(c, archive, started);
                    for s in sinks.iter_mut().filter(|s| s.wants_ticks()) {
                        s.tick(&r);
                    }
                }
                adopt(c, discovery, deadline.map(|d| d.into_std()));
                let launching = launcher.as_ref().is_some_and(|l| !l.done);
                if c.all_exited() && !discovery.follows() && !launching {
                    say!("tracer: every target has exited");
                    break;
                }
                if past(deadline) {
                    break;
                }
                // Watch mode takes a checkpoint after each window (when its samples change);
                // exact mode every interval.
                let due = if c.windowed() {
                    c.take_harvested()
                } else {
                    Instant::now() >= next_checkpoint
                };
                if due {
                    c.checkpoint();
                    next_checkpoint += args.interval;
                    if sinks.iter().any(|s| s.wants_checkpoints()) {
                        let r = report_now(c, archive, started);
                        for s in sinks.iter_mut().filter(|s| s.wants_checkpoints()) {
                            s.checkpoint(&r);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
