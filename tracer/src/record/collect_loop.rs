//! The recording's loop: threads published, forks and execs followed, watch windows, census
//! passes and stack reads, and the one-second tick (snapshots, closed entries, discovery,
//! checkpoints) that feeds the sinks, until Ctrl-C, a signal, `-d`, or every target gone.

use std::time::{Duration, Instant};

use super::attach::{adopt, attach_launched, follow_execs, take_forks};
use super::{archive_closed, report_now, TICK};
use crate::cli::RecordArgs;
use crate::collect::{Collector, Event};
use crate::discover::Discovery;
use crate::error::{Error, Result};
use crate::launch;
use crate::report::Archive;
use crate::say;
use crate::sink::Sink;

/// How often new Python threads are published to the kernel.
const THREAD_REFRESH: Duration = Duration::from_millis(100);
/// Python stacks read from outside while the census has a growing container to place (the call
/// paths to the lines that use it).
const STACK_READ: Duration = Duration::from_millis(10);
/// Between two slices of a census round.
const CENSUS_GAP: Duration = Duration::from_millis(10);

/// The children traced processes forked get their entries; a child that runs a program of
/// its own (a subprocess) is read at once: its Python frames start when its walk is published.
fn take_new_processes(c: &mut Collector) {
    take_forks(c);
    if c.execs.iter().any(|e| e.forked) {
        follow_execs(c);
    }
}

/// Has the deadline (`-d`) passed?
fn past(deadline: Option<tokio::time::Instant>) -> bool {
    deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn collect_loop(
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
    let mut stack_reads = tokio::time::interval(STACK_READ);
    stack_reads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quit = if args.live {
        crate::sink::live::quit_key()
    } else {
        tokio::sync::mpsc::unbounded_channel().1
    };
    let mut waiting_said = false;
    // A census round not done yet: it goes on after a short gap that lets the other branches
    // run (see `Collector::census`).
    let mut census_more = false;
    let mut census_gap = tokio::time::interval(CENSUS_GAP);
    census_gap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                take_new_processes(c);
            }
            _ = window_due => c.windows(),
            _ = census.tick() => census_more = !c.census(),
            _ = census_gap.tick(), if census_more => {
                // Processes that started go first (see `Collector::census_continue`).
                if c.adds_pending() {
                    take_new_processes(c);
                }
                census_more = !c.census_continue();
            }
            _ = stack_reads.tick(), if c.census => c.read_stacks(),
            _ = tick.tick() => {
                let events = c.tick();
                c.first_census_passes();
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
                // Watch mode takes a checkpoint after each window (when its survivors change);
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
