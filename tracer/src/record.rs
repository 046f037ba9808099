//! `tracer record`: resolve targets, attach, collect until the end, write the reports.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::collect::{Collector, Mode, NativeMode};
use crate::error::{Error, Result};
use crate::python::{self, Interpreter};
use crate::render::summary::coverage_warning;
use crate::report::{assess_coverage, Coverage};
use crate::{launch, probes::Probes, render, report, util, RecordArgs};

/// How often the maps are read (liveness, descriptor reconciliation, symbolization).
const TICK: Duration = Duration::from_secs(1);
/// How often new Python threads are published to the kernel.
const THREAD_REFRESH: Duration = Duration::from_millis(100);

fn attach_line(pid: u32, interp: &Interpreter, uprobes: usize, mode: Mode) -> String {
    format!(
        "tracer: tracing pid {pid} ({}): CPython {} in {}, {}",
        crate::procfs::comm(pid),
        interp.version,
        interp.target_path,
        match mode {
            Mode::Exact => format!("{uprobes} allocator probes (exact mode)"),
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
    let c = assess_coverage(interp, 0, 0.0);
    if matches!(c, Coverage::Low { .. } | Coverage::None { .. }) {
        if let Some(w) = coverage_warning(&c) {
            eprintln!("tracer: {w}");
        }
    }
}

pub fn run(args: RecordArgs) -> Result<i32> {
    if args.pids.is_empty() && args.command.is_empty() {
        return Err(Error::BadArgument(
            "nothing to trace: give -p PID (repeatable) or a command after --, e.g. `tracer record -- python app.py`".into(),
        ));
    }
    if args.interval.is_zero() {
        return Err(Error::BadArgument(
            "--interval must be greater than 0".into(),
        ));
    }
    util::require_privileges()?;
    let dir = util::prepare_output(args.output.as_deref())?;

    // Resolve running targets before loading anything: bad pids fail fast.
    let mut running = Vec::new();
    for &pid in &args.pids {
        running.push((pid, python::inspect_pid(pid)?));
    }
    let mut probes = Probes::load()?;
    probes.floor = args.floor;
    let mut c = Collector::new(probes, args.min_age);
    c.python_walk = !args.no_python_walk;
    c.mode = args.mode;
    c.interval = args.interval;
    c.window = args.window;
    c.budget = args.budget;
    c.native = if args.native {
        NativeMode::All
    } else if args.no_native {
        NativeMode::None
    } else {
        NativeMode::Leaf
    };
    for (pid, interp) in running {
        if args.mode == Mode::Exact {
            static_warning(&interp);
        }
        c.add(pid, interp)?;
        let t = c.targets.last().unwrap();
        eprintln!("{}", attach_line(pid, &t.interp, t.uprobes, args.mode));
    }
    let mut child = None;
    if !args.command.is_empty() {
        let l = launch::start(&args.command)?;
        if args.mode == Mode::Exact {
            static_warning(&l.interp);
        }
        let added = c.add(l.pid, l.interp.clone());
        launch::resume(&l);
        let mut l = l;
        if let Err(e) = added {
            launch::terminate(&mut l.child);
            return Err(e);
        }
        let t = c.targets.last().unwrap();
        eprintln!("{}", attach_line(l.pid, &t.interp, t.uprobes, args.mode));
        child = Some(l.child);
    }
    if args.mode == Mode::Exact && !args.pids.is_empty() && !args.floor {
        eprintln!(
            "tracer: exact mode traps every allocation (microseconds each): allocation-heavy code runs many times slower while traced; for a production service use --mode watch"
        );
    }
    eprintln!(
        "tracer: recording{}; press Ctrl-C to stop and write the reports to {}",
        args.duration
            .map(|d| format!(" for {:.0?}", d))
            .unwrap_or_default(),
        dir.display()
    );

    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the runtime: {e}")))?;
    rt.block_on(collect_loop(&mut c, &args, &dir, started))?;

    // Final checkpoint and reports.
    c.close_windows();
    c.tick();
    c.checkpoint();
    let report = report::build(&c, started.elapsed());
    render::write_all(&report, &dir)?;
    print!("{}", render::summary::render(&report, Some(&dir)));
    if let Some(mut ch) = child {
        launch::terminate(&mut ch);
    }
    c.probes.settle();
    Ok(0)
}

async fn collect_loop(
    c: &mut Collector,
    args: &RecordArgs,
    dir: &Path,
    started: Instant,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Error::Other(format!("signal handler: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Error::Other(format!("signal handler: {e}")))?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut threads = tokio::time::interval(THREAD_REFRESH);
    threads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Watch mode: windows open and close on time (a late close costs the target).
    let mut window_clock = tokio::time::interval(if c.mode == Mode::Watch {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(3600)
    });
    window_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_checkpoint = started + args.interval;
    let mut seq = 0u32;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => { eprintln!("tracer: interrupted, writing the reports"); break; }
            _ = sigterm.recv() => { eprintln!("tracer: terminated, writing the reports"); break; }
            _ = until_deadline => break,
            _ = threads.tick() => c.refresh_threads(),
            _ = window_clock.tick() => c.windows(),
            _ = tick.tick() => {
                for pid in c.tick() {
                    eprintln!("tracer: pid {pid} exited; keeping its last checkpoint");
                }
                if c.all_exited() {
                    eprintln!("tracer: every target has exited");
                    break;
                }
                // Watch mode takes a checkpoint after each window (when its samples change);
                // exact mode every interval.
                let due = match c.mode {
                    Mode::Watch => c.take_harvested(),
                    Mode::Exact => Instant::now() >= next_checkpoint,
                };
                if due {
                    c.checkpoint();
                    next_checkpoint += args.interval;
                    if args.snapshots {
                        seq += 1;
                        let elapsed = started.elapsed();
                        let sub = dir.join("snapshots").join(format!("{seq:04}-{:.0}s", elapsed.as_secs_f64()));
                        std::fs::create_dir_all(&sub).map_err(|e| Error::Output { dir: sub.display().to_string(), reason: e.to_string() })?;
                        render::write_all(&report::build(c, elapsed), &sub)?;
                    }
                }
            }
        }
    }
    Ok(())
}
