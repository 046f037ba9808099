//! The processes traced ones start. A target that follows its forks (`--children`, and the
//! Python processes of a launched command) has the kernel enter each child it forks in the
//! target map from the fork on (`TARGET_FOLLOW_FORKS`), and record the fork (`FORKS`). Every
//! 100 ms the collector takes those records: a forked child runs its parent's image, so it gets
//! an entry at once with its parent's interpreter (no file to read again); a vfork child (or one
//! of a process followed only) runs its own program, which is inspected as after an exec. A
//! child that is not Python stays followed (its own forks and execs: a shell between Pythons)
//! without being traced. Nothing is missed silently: children that ended before their program
//! could be read, and processes found that exited before they could be attached, are counted.

use tracer_common::{FORK_ADOPTED, FORK_VFORK};

use super::exec::PendingExec;
use super::targets::How;
use super::Collector;
use crate::procfs;
pub use crate::snapshot::Missed;

/// A process followed for the processes it starts, not traced (not CPython).
#[derive(Debug, Clone)]
pub struct Followed {
    pub pid: u32,
    pub start_ticks: u64,
    /// The kernel's exec count for it when it was last inspected.
    pub execs_seen: u64,
    pub launched: bool,
}

/// A child that got an entry of its own.
pub struct Forked {
    pub pid: u32,
    pub parent: u32,
}

impl Collector {
    /// Does the target at `i` have its forks followed?
    pub(crate) fn follows_forks(&self, i: usize) -> bool {
        self.follow_children || self.targets[i].launched
    }

    /// Takes the forks the kernel recorded: a forked child of a live target gets an entry with
    /// its parent's interpreter; a vfork child, or the child of a followed process, is inspected
    /// like a program after an exec (`follow_execs`). Also re-inspects followed processes that
    /// exec'd and forgets those that ended. Returns the children that got an entry.
    pub fn take_forks(&mut self) -> Vec<Forked> {
        let mut out = Vec::new();
        for (k, info) in self.probes.take_forks() {
            if info.flags & FORK_ADOPTED == 0 {
                // Not entered by the kernel (a container's pid namespace, or a parent whose forks
                // are not followed): `--children`'s scan of /proc finds those.
                continue;
            }
            let child = k.child;
            if self.live(child).is_some() || self.execs.iter().any(|e| e.pid == child) {
                continue;
            }
            let parent = self
                .targets
                .iter()
                .position(|t| t.pid == k.parent && t.exited_after.is_none());
            let launched = parent.is_some_and(|p| self.targets[p].launched)
                || self
                    .followed
                    .iter()
                    .any(|f| f.pid == k.parent && f.launched);
            match parent {
                Some(p) if info.flags & FORK_VFORK == 0 => {
                    let interp = self.targets[p].interp.clone();
                    let how = How {
                        launched,
                        forked_from: Some(k.parent),
                        ..How::default()
                    };
                    match self.add_entry(child, interp, how) {
                        Ok(()) => out.push(Forked {
                            pid: child,
                            parent: k.parent,
                        }),
                        Err(_) => {
                            self.missed.exited_before_attach += 1;
                            self.probes.remove_target(child);
                        }
                    }
                }
                _ => self.execs.push(PendingExec {
                    pid: child,
                    start_ticks: procfs::stat(child).map_or(0, |s| s.start_ticks),
                    since: std::time::Instant::now(),
                    launched,
                    forked: true,
                }),
            }
        }
        self.missed.forks_lost = self.probes.stats()[tracer_common::stat::FORK_LOST as usize];
        self.check_followed();
        out
    }

    /// Processes that started and wait for their entry: forks not taken yet, and forked
    /// children's execs not inspected yet. They go before a census round (`census_continue`):
    /// a round can wait, a process that is starting cannot (its frames start with its entry).
    pub fn adds_pending(&self) -> bool {
        self.execs.iter().any(|e| e.forked) || self.probes.forks_pending()
    }

    /// Followed processes: one that exec'd is inspected again; one that ended is forgotten.
    fn check_followed(&mut self) {
        for f in std::mem::take(&mut self.followed) {
            match procfs::liveness(f.pid, f.start_ticks) {
                procfs::Liveness::Gone => {
                    self.probes.remove_target(f.pid);
                    continue;
                }
                procfs::Liveness::Unknown => {}
                procfs::Liveness::Alive => {
                    if self.probes.pid_stats(f.pid).execs > f.execs_seen {
                        self.execs.push(PendingExec {
                            pid: f.pid,
                            start_ticks: f.start_ticks,
                            since: std::time::Instant::now(),
                            launched: f.launched,
                            forked: true,
                        });
                        continue;
                    }
                }
            }
            self.followed.push(f);
        }
    }

    /// A child whose program is not CPython: followed for what it starts, not traced.
    pub(crate) fn follow_only(&mut self, e: &PendingExec) {
        if self.probes.follow_only(e.pid).is_ok() {
            self.followed.push(Followed {
                pid: e.pid,
                start_ticks: e.start_ticks,
                execs_seen: self.probes.pid_stats(e.pid).execs,
                launched: e.launched,
            });
        }
    }
}
