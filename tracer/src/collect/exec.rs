//! Exec: a target's program replaced by another closes its entry up to the exec (its
//! descriptors the ones open at the exec), and the new program is inspected until it is known
//! (an entry of its own if it is CPython).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracer_common::{FdInfo, PidStats};

use super::targets::How;
use super::{Collector, Event, BEFORE_EXEC};
use crate::frame::{Frame, Marker};
use crate::procfs;
use crate::python;
use crate::snapshot::{OpenFd, ProcSnapshot, StackKey};
use crate::util::monotonic_ns;

/// A process that exec'd, its new program being inspected.
#[derive(Debug, Clone)]
pub struct PendingExec {
    pub pid: u32,
    pub start_ticks: u64,
    pub since: Instant,
    pub launched: bool,
    /// A child found through its parent's fork (not an exec of a traced program): quiet
    /// unless it runs Python, followed if it does not.
    pub forked: bool,
}

/// What the re-inspection of a process that exec'd found.
#[derive(Debug)]
pub enum ExecOutcome {
    /// A CPython program: the index of its new entry.
    Python(usize),
    /// Not CPython (after `EXEC_GRACE`): no longer traced.
    NotPython {
        pid: u32,
        comm: String,
    },
    Gone(u32),
    Failed {
        pid: u32,
        err: crate::error::Error,
    },
}

/// How long after an exec libpython may take to be mapped (the dynamic loader runs first).
pub const EXEC_GRACE: Duration = Duration::from_secs(3);

/// The stack key of descriptors opened just before an exec, after the last snapshot, whose
/// stack no snapshot named.
const JUST_BEFORE_EXEC: StackKey = (-8, 0);

impl Collector {
    /// Closes the entry of a program replaced by an exec, as of the exec: its last snapshot
    /// (taken before the exec) and checkpoints stay; its kernel state goes (the old heap is
    /// void, the old layout and threads mean nothing in the new image). The pid stays in the
    /// kernel's target map while its new program is inspected (`follow_execs`).
    pub(super) fn close_execd(&mut self, i: usize, st: &PidStats) -> Event {
        let now = monotonic_ns();
        let t = &mut self.targets[i];
        let pid = t.pid;
        let into = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_else(|_| "?".into());
        let since_exec = Duration::from_nanos(now.saturating_sub(st.last_exec_ns));
        t.exited_after = Some(t.attached_at.elapsed().saturating_sub(since_exec));
        t.exec.execd = Some(into.clone());
        t.exec.execs_seen = st.execs;
        // The last snapshot was read up to a tick before the exec: its descriptors become the
        // ones open at the exec.
        let at_exec = self.probes.take_exec_fds(pid, st.last_exec_ns);
        let born = t.exec.born_ns;
        if let Some(last) = t.last.as_mut() {
            descriptors_at_exec(
                last,
                at_exec,
                st.last_exec_ns,
                born,
                self.min_age.as_nanos() as u64,
            );
        }
        self.freeze(i);
        let t = &mut self.targets[i];
        self.probes.remove_pyconf(pid);
        self.probes.set_threads(pid, &HashMap::new());
        self.probes.purge_allocs(pid, st.last_exec_ns);
        self.symbolizer.forget(pid);
        self.execs.push(PendingExec {
            pid,
            start_ticks: t.start_ticks,
            since: Instant::now(),
            launched: t.launched,
            forked: false,
        });
        Event::Execd { pid, into }
    }

    /// Re-inspects the processes whose program was replaced by an exec: a CPython program gets
    /// an entry of its own (`Collector::add`); anything else, once `EXEC_GRACE` has passed
    /// without libpython being mapped (the dynamic loader maps it after the exec), or a process
    /// gone, is no longer traced.
    pub fn follow_execs(&mut self) -> Vec<ExecOutcome> {
        let mut out = Vec::new();
        for e in std::mem::take(&mut self.execs) {
            let same = procfs::stat(e.pid)
                .is_some_and(|s| !matches!(s.state, 'Z' | 'X') && s.start_ticks == e.start_ticks);
            let result = if same {
                python::inspect_pid(e.pid).map_err(crate::error::Error::from)
            } else {
                Err(crate::error::Error::NoSuchPid(e.pid))
            };
            let how = How {
                launched: e.launched,
                ..How::default()
            };
            let outcome = match result {
                Ok(interp) => match self.add_entry(e.pid, interp, how) {
                    Ok(()) => ExecOutcome::Python(self.targets.len() - 1),
                    Err(err) => ExecOutcome::Failed { pid: e.pid, err },
                },
                Err(crate::error::Error::NoSuchPid(_) | crate::error::Error::Exited { .. }) => {
                    ExecOutcome::Gone(e.pid)
                }
                Err(crate::error::Error::NotPython { .. }) if e.since.elapsed() < EXEC_GRACE => {
                    self.execs.push(e);
                    continue;
                }
                Err(crate::error::Error::NotPython { comm, .. }) => {
                    ExecOutcome::NotPython { pid: e.pid, comm }
                }
                Err(err) => ExecOutcome::Failed { pid: e.pid, err },
            };
            if e.forked {
                // A child found through a fork: not a program the user asked about; followed
                // for what it starts when it is not Python, quiet when it ended.
                match outcome {
                    ExecOutcome::Python(_) => out.push(outcome),
                    ExecOutcome::NotPython { .. } => self.follow_only(&e),
                    ExecOutcome::Gone(_) | ExecOutcome::Failed { .. } => {
                        self.probes.remove_target(e.pid)
                    }
                }
                continue;
            }
            if !matches!(outcome, ExecOutcome::Python(_)) && self.live(e.pid).is_none() {
                self.probes.remove_target(e.pid);
            }
            out.push(outcome);
        }
        if !out.is_empty() {
            self.retire_groups();
        }
        out
    }
}

/// Makes a snapshot's descriptors the ones open at an exec at `exec_ns` (`at_exec`, by number,
/// as the kernel kept them): those closed since the snapshot go, those opened since come, with
/// the frames the snapshot knows for their stack (a marker otherwise: the program that could
/// name them is gone) and no link (the kernel's path names a file). `born`: when the program
/// itself started (its own exec).
fn descriptors_at_exec(
    last: &mut ProcSnapshot,
    at_exec: HashMap<u32, FdInfo>,
    exec_ns: u64,
    born: u64,
    min_age: u64,
) {
    last.fds
        .retain(|f| at_exec.get(&f.fd).is_some_and(|v| v.ts_ns == f.info.ts_ns));
    for (fd, mut info) in at_exec {
        if last.fds.iter().any(|f| f.fd == fd) || exec_ns.saturating_sub(info.ts_ns) < min_age {
            continue;
        }
        let (key, marker) = if info.ts_ns < born {
            (BEFORE_EXEC, Marker::OpenedBeforeExec)
        } else {
            (JUST_BEFORE_EXEC, Marker::OpenedJustBeforeExec)
        };
        if key == BEFORE_EXEC || !last.frames.contains_key(&(info.ustack, info.pystack)) {
            (info.ustack, info.pystack) = key;
            last.frames
                .entry(key)
                .or_insert_with(|| vec![Frame::Marker(marker)]);
        }
        last.fds.push(OpenFd {
            fd,
            info,
            target: None,
        });
    }
    last.fds.sort_by_key(|f| f.fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<Frame> {
        s.iter().map(|x| Frame::native(x)).collect()
    }

    fn fd(ts_ns: u64, stack: StackKey) -> FdInfo {
        FdInfo {
            ts_ns,
            pystack: stack.1,
            ustack: stack.0,
            kind: 0,
            syscall: 0,
            a: 0,
            b: 0,
            tid: 0,
            path: [0; tracer_common::PATH_LEN],
        }
    }

    #[test]
    fn descriptors_are_the_ones_open_at_the_exec() {
        let site = (3, 30);
        let mut last = ProcSnapshot::default();
        last.frames.insert(site, v(&["open"]));
        // Read at the last snapshot: 3 (still open at the exec), 4 (closed before it), 5
        // (closed, and its number taken by a newer descriptor before the exec).
        for (n, ts) in [(3, 100), (4, 110), (5, 120)] {
            last.fds.push(OpenFd {
                fd: n,
                info: fd(ts, site),
                target: Some(format!("/f{n}")),
            });
        }
        let at_exec = HashMap::from([
            (3, fd(100, site)),
            (5, fd(900, (9, 90))),
            (6, fd(950, site)),
            (7, fd(50, (8, 80))),
        ]);
        descriptors_at_exec(&mut last, at_exec, 1000, 60, 0);
        let got: Vec<(u32, StackKey, bool)> = last
            .fds
            .iter()
            .map(|f| (f.fd, (f.info.ustack, f.info.pystack), f.target.is_some()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, site, true),
                (5, JUST_BEFORE_EXEC, false),
                (6, site, false),
                (7, BEFORE_EXEC, false),
            ]
        );
        assert_eq!(
            last.frames[&JUST_BEFORE_EXEC],
            vec![Frame::Marker(Marker::OpenedJustBeforeExec)]
        );
        assert_eq!(
            last.frames[&BEFORE_EXEC],
            vec![Frame::Marker(Marker::OpenedBeforeExec)]
        );
        // Younger than --min-age at the exec: not listed, as in a snapshot.
        let mut young = ProcSnapshot::default();
        descriptors_at_exec(&mut young, HashMap::from([(3, fd(990, site))]), 1000, 0, 50);
        assert!(young.fds.is_empty());
    }
}
