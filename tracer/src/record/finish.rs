//! The end of a recording: the final reading (a tick, within `FINAL_READING` past the deadline)
//! and the final reports while the probes go, then what the command prints.

use std::time::{Duration, Instant};

use super::archive_closed;
use crate::cli::RecordArgs;
use crate::collect::Collector;
use crate::error::Result;
use crate::output::OutputDir;
use crate::report::{self, Archive, Report};
use crate::say;
use crate::sink::Sink;
use crate::{launch, render, util};

/// The longest the final reading may take.
const FINAL_READING: Duration = Duration::from_secs(4);

/// Final checkpoint and reports, while the probes go (their removal takes seconds; the
/// allocation probes go first, the free probes last, so the final reading is the state at the
/// interruption). Returns the final report and whether every sink wrote it.
pub(super) fn final_reports(
    c: &mut Collector,
    archive: &mut Archive,
    sinks: &mut [Box<dyn Sink + '_>],
    args: &RecordArgs,
    started: Instant,
    last_tick: Instant,
) -> (Report, Result<()>) {
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
    archive_closed(c, archive);
    c.checkpoint();
    let report = report::build(&c.view(), archive, started.elapsed());
    let mut written = Ok(());
    for s in sinks.iter_mut() {
        let w = s.finish(&report);
        if written.is_ok() {
            written = w;
        }
    }
    util::unhurry(niceness);
    (report, written)
}

/// What the command prints at the end, and its exit code: the summary (with where the reports
/// are), or the error that kept the reports from being written.
pub(super) fn conclude(
    report: &Report,
    written: Result<()>,
    dir: Option<&OutputDir>,
    args: &RecordArgs,
) -> Result<i32> {
    let Some(d) = dir else {
        return Ok(0);
    };
    if let Err(e) = written {
        // The recording is not lost: the summary goes to stdout, and the directory keeps the
        // last set written at a checkpoint, if any.
        if !args.live {
            util::print_quietly(&render::summary::render(report, None));
        }
        return Err(e);
    }
    if args.live {
        say!("tracer: reports written to {}", d.current_path().display());
    } else {
        util::print_quietly(&render::summary::render(report, Some(&d.current_path())));
    }
    Ok(0)
}

/// Ends the launched command and the Python processes its tree started, if they still run.
pub(super) fn end_launch(c: &Collector, launcher: Option<&mut launch::Launcher>) {
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
