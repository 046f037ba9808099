//! The targets found while recording, attached and said: a launched command's Python
//! processes, forked children, programs after an exec, and the processes a discovery finds.

use std::time::Instant;

use crate::collect::{hooks_of, Collector, ExecOutcome};
use crate::config::Mode;
use crate::discover::Discovery;
use crate::error::{Error, Result};
use crate::python::{self, Interpreter};
use crate::render::summary::coverage_warning;
use crate::report::{assess_coverage, Coverage};
use crate::say;

/// The line that says a target is traced: its interpreter and what is attached.
pub(super) fn attach_line(t: &crate::collect::Target, mode: Mode, budget: f64) -> String {
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

pub(super) fn static_warning(interp: &Interpreter) {
    // Before any measurement: say at once when the build hides its allocations.
    let c = assess_coverage(&hooks_of(interp), 0, 0.0);
    if matches!(c, Coverage::Low { .. } | Coverage::None { .. }) {
        if let Some(w) = coverage_warning(&c) {
            say!("tracer: {w}");
        }
    }
}

/// Attaches a Python process that the launched command's tree started (stopped at its exec
/// until `resume` is answered).
pub(super) fn attach_launched(
    c: &mut Collector,
    pid: u32,
    interp: Interpreter,
    in_exec: bool,
) -> Result<()> {
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
pub(super) fn follow_execs(c: &mut Collector) {
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
pub(super) fn take_forks(c: &mut Collector) {
    for f in c.take_forks() {
        say!(
            "tracer: tracing pid {} ({}), forked by pid {}",
            f.pid,
            crate::procfs::comm(f.pid),
            f.parent
        );
    }
}

/// Traces the new processes that `discovery` finds (not Python, or gone meanwhile: skipped).
pub(super) fn adopt(c: &mut Collector, discovery: &mut Discovery, deadline: Option<Instant>) {
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
            Err(Error::NotPython { .. }) => {
                discovery.not_yet(pid);
                continue;
            }
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
