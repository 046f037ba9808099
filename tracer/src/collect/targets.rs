//! A traced process: who it is and where it stands, its entry added (attach, launch, fork,
//! exec), its exit, and the view of it the report reads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracer_common::{FdInfo, FdKey};

use super::census::ResidentState;
use super::threads::Threads;
use super::watch::WatchState;
use super::{Collector, Event, BEFORE_EXEC};
use crate::config::Mode;
use crate::frame::{Frame, Marker};
use crate::probes::Probes;
use crate::procfs;
use crate::python::census::Census;
use crate::python::{self, Interpreter};
use crate::say;
use crate::snapshot::{History, HookCoverage, OpenFd, ProcSnapshot, StackKey, TargetView};
use crate::util::monotonic_ns;

/// A traced process: who it is, where it stands (exit, exec), and what is followed in it, by
/// concern.
pub struct Target {
    /// Entries are numbered in the order they were attached (the reports list them so).
    pub seq: u64,
    pub pid: u32,
    pub comm: String,
    pub interp: Interpreter,
    pub attached_at: Instant,
    /// Start time (clock ticks after boot): a reused pid is another process.
    pub start_ticks: u64,
    /// Started by the launched command's process tree (ended with the recording).
    pub launched: bool,
    /// Forked by this traced process (its image is its parent's, up to an exec): its Python
    /// frames read through the parent's memory once it is gone.
    pub forked_from: Option<u32>,
    /// Stopped at the last tick (SIGSTOP, a debugger's stop).
    pub stopped: bool,
    /// Exact mode: whether its C library's malloc family is probed is decided (attached, or
    /// not given: see `Probes::give_libc`; a launched process maps it only after its exec: tried
    /// again at every tick until then).
    pub libc: bool,
    /// Short id (or name) of the container the process runs in (None on the host).
    pub container: Option<String>,
    /// Its pid in its own pid namespace, when that is not the host's.
    pub nspid: Option<u32>,
    /// Allocator probes attached for good (exact mode).
    pub uprobes: usize,
    /// Exact mode: probes on its C library's malloc family (its own).
    pub libc_probes: usize,
    /// When the process exited, or exec'd another program (then `exec.execd` says which).
    pub exited_after: Option<Duration>,
    pub exec: ExecState,
    /// CPU and allocator-call counters at the start and now.
    pub counters: Counters,
    /// The last snapshot taken while the process was alive.
    pub last: Option<ProcSnapshot>,
    /// Checkpoints, oldest first.
    pub history: History,
    /// Reading the interpreter: its runtime, its threads, the layout's live check.
    pub threads: Threads,
    /// Watch mode's windows and their survivors.
    pub watch: WatchState,
    /// The heap census (once the runtime is known).
    pub census: Option<Census>,
    /// Where its resident memory is, read at census passes.
    pub resident: ResidentState,
    /// The census round (`Collector::census`) its last pass belonged to.
    pub census_round: u64,
    /// Descriptors (number, open time) the kernel holds that /proc said closed at the last
    /// tick: dropped when the next tick says so again (see `tick`).
    pub gone_fds: Vec<(u32, u64)>,
}

/// Where a target stands with respect to exec.
#[derive(Debug, Clone, Default)]
pub struct ExecState {
    /// The program this entry's program was replaced by (exec): the entry is closed up to the
    /// exec, and the pid, if still traced, has an entry of its own for the new program.
    pub execd: Option<String>,
    /// The process's exec count (the kernel's `PidStats::execs`) this entry accounts for: one
    /// more is an exec of the entry's program.
    pub execs_seen: u64,
    /// When this program started, if by an exec seen by the kernel (monotonic ns; 0: unknown):
    /// allocations and descriptors from before belong to the program it replaced.
    pub born_ns: u64,
}

/// A target's counters when tracing started and at the last tick.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// utime+stime (ticks) when tracing started, and at the last tick.
    pub cpu_ticks_at_start: u64,
    pub cpu_ticks_last: u64,
    /// Allocator calls the kernel had counted for the pid before this entry.
    pub alloc_calls_base: u64,
}

/// How an entry comes to be traced.
#[derive(Debug, Clone, Copy, Default)]
pub struct How {
    /// Exec calls the process is stopped inside (launch mode's ptrace exec stop).
    pub execs_in_flight: u64,
    /// Started by the launched command's tree.
    pub launched: bool,
    /// Forked by this traced process, whose image it runs.
    pub forked_from: Option<u32>,
}

impl Collector {
    pub fn add(&mut self, pid: u32, interp: Interpreter) -> crate::error::Result<()> {
        self.add_entry(pid, interp, How::default())
    }

    /// Adds a process that is stopped inside `execs_in_flight` exec calls (launch mode: a
    /// ptrace exec stop, before the kernel's syscall exit counts the exec); its forks are
    /// followed (every Python process a launched command starts is traced).
    pub fn add_launched(
        &mut self,
        pid: u32,
        interp: Interpreter,
        execs_in_flight: u64,
    ) -> crate::error::Result<()> {
        self.add_entry(
            pid,
            interp,
            How {
                execs_in_flight,
                launched: true,
                forked_from: None,
            },
        )
    }

    /// Adds an entry for `pid`, running `interp`.
    pub(crate) fn add_entry(
        &mut self,
        pid: u32,
        interp: Interpreter,
        how: How,
    ) -> crate::error::Result<()> {
        // The kernel records a process's events from the moment it enters the target map, so
        // everything it needs to walk the process's Python frames is published first (the
        // layout checked, the thread list's address, the threads): a descriptor opened or a
        // block allocated while the probes were being attached had no Python frames.
        let uprobes = self.join_group(&interp)?;
        // (A forked child is not given them: decided, not retried.)
        let mut libc_probes = 0;
        let libc = self.mode == Mode::Exact
            && (how.forked_from.is_some() || {
                let (found, n) = self.probes.give_libc(pid);
                libc_probes = n;
                found
            });
        let type_type = interp
            .type_type_vaddr
            .and_then(|v| interp.bias_in(pid).map(|b| v.wrapping_add(b)));
        let warning = interp.unreadable_warning();
        if let Some(w) = &warning {
            if how.forked_from.is_none() {
                say!("{w}");
            }
        }
        if interp.layout().is_some_and(|l| l.op_load_global.is_empty()) && how.forked_from.is_none()
        {
            say!(
                "tracer: note: CPython {} is newer than tracer's opcode table: the heap census \
                 does not name the lines that use a global",
                interp.version
            );
        }
        // Threads of a program this pid ran before (an exec) are not this one's; a forked
        // child's thread was entered by the kernel (its parent's forking thread).
        let parent = how.forked_from.and_then(|p| self.live(p));
        let layout_checked = parent.is_some_and(|p| p.threads.layout_checked);
        let parent_launched = parent.is_some_and(|p| p.launched);
        if how.forked_from.is_none() {
            self.probes.set_threads(pid, &HashMap::new());
        }
        let st_k = self.probes.pid_stats(pid);
        let st = procfs::stat(pid);
        let ticks = st.map(|s| s.cpu_ticks).unwrap_or(0);
        self.added += 1;
        self.targets.push(Target {
            seq: self.added,
            pid,
            comm: procfs::comm(pid),
            interp,
            attached_at: Instant::now(),
            start_ticks: st.map(|s| s.start_ticks).unwrap_or(0),
            launched: how.launched || parent_launched,
            forked_from: how.forked_from,
            stopped: false,
            libc,
            container: procfs::container(pid),
            nspid: procfs::nspid(pid),
            uprobes,
            libc_probes,
            exited_after: None,
            exec: ExecState {
                execd: None,
                execs_seen: st_k.execs + how.execs_in_flight,
                born_ns: st_k.last_exec_ns,
            },
            counters: Counters {
                cpu_ticks_at_start: if how.forked_from.is_some() { 0 } else { ticks },
                cpu_ticks_last: ticks,
                alloc_calls_base: st_k.alloc_calls,
            },
            last: None,
            history: History::default(),
            threads: Threads {
                warning,
                layout_checked,
                ..Default::default()
            },
            watch: WatchState {
                type_type,
                ..Default::default()
            },
            census: None,
            resident: ResidentState::default(),
            census_round: 0,
            gone_fds: Vec::new(),
        });
        self.refresh_target(self.targets.len() - 1);
        // The heap's growth is counted from its break now.
        if let Some(heap) = procfs::maps(pid)
            .ok()
            .and_then(|m| m.into_iter().find(|m| m.path.as_deref() == Some("[heap]")))
        {
            self.probes.seed_break(pid, heap.end);
        }
        let follow = self.follows_forks(self.targets.len() - 1);
        if let Err(e) = self.probes.add_target(pid, follow) {
            self.targets.pop();
            self.probes.remove_target(pid);
            self.probes.set_threads(pid, &HashMap::new());
            self.retire_groups();
            return Err(e);
        }
        Ok(())
    }

    /// Every target has exited (or exec'd a program that is not traced), and no exec is being
    /// followed.
    pub fn all_exited(&self) -> bool {
        self.targets.iter().all(|t| t.exited_after.is_some()) && self.execs.is_empty()
    }

    /// The live entry of a pid (a pid that exec'd also has closed entries).
    pub fn live(&self, pid: u32) -> Option<&Target> {
        self.targets
            .iter()
            .find(|t| t.pid == pid && t.exited_after.is_none())
    }

    /// The pids traced now: live entries, and processes whose new program is being inspected.
    pub fn traced_pids(&self) -> std::collections::HashSet<u32> {
        self.targets
            .iter()
            .filter(|t| t.exited_after.is_none())
            .map(|t| t.pid)
            .chain(self.execs.iter().map(|e| e.pid))
            .collect()
    }

    /// The entries closed since the last call (exited, or replaced by an exec), with their
    /// last snapshot, checkpoints and census; the collector keeps nothing of them.
    pub fn take_closed(&mut self) -> Vec<Target> {
        std::mem::take(&mut self.closed)
    }

    /// Has any process been traced (even one that has ended since)?
    pub fn ever_traced(&self) -> bool {
        self.added > 0
    }

    /// Drops what a closed entry no longer needs (its kernel state: the runtime it read, the
    /// threads it published); the rest goes with it at the end of the tick (`take_closed`).
    pub(super) fn freeze(&mut self, i: usize) {
        let t = &mut self.targets[i];
        t.threads.published.clear();
        t.threads.runtime = None;
        t.watch.pending = HashMap::new();
        t.watch.types = HashMap::new();
    }

    /// Closes the entry of a target that just exited (seen gone at a tick): its descriptors are
    /// the ones open at its exit, its kernel state goes.
    pub(super) fn close_exited(&mut self, i: usize, fds: &HashMap<FdKey, FdInfo>) -> Event {
        let pid = self.targets[i].pid;
        self.descriptors_at_exit(i, fds);
        let t = &mut self.targets[i];
        t.exited_after = Some(t.attached_at.elapsed());
        if t.comm == "?" || t.comm.is_empty() {
            t.comm = "python".into();
        }
        self.freeze(i);
        self.probes.set_threads(pid, &HashMap::new());
        self.symbolizer.forget(pid);
        Event::Exited(pid)
    }

    /// A target that just exited: its descriptors are the ones open at its exit, as the kernel's
    /// map holds them (an exit closes them without a syscall the kernel sees), not the ones of
    /// its last snapshot, which a short-lived process may never have had.
    fn descriptors_at_exit(&mut self, i: usize, fds: &HashMap<FdKey, FdInfo>) {
        let pid = self.targets[i].pid;
        let born = self.targets[i].exec.born_ns;
        let min_age = self.min_age.as_nanos() as u64;
        let now = monotonic_ns();
        // Not the ones /proc said closed at the last tick (dropped at the next: see `tick`).
        let gone = std::mem::take(&mut self.targets[i].gone_fds);
        let mut open: Vec<OpenFd> = fds
            .iter()
            .filter(|(k, v)| k.pid == pid && now.saturating_sub(v.ts_ns) >= min_age)
            .filter(|(k, v)| !gone.contains(&(k.fd, v.ts_ns)))
            .map(|(k, v)| {
                let mut info = *v;
                if info.ts_ns < born {
                    info.ustack = BEFORE_EXEC.0;
                    info.pystack = BEFORE_EXEC.1;
                }
                let named = self.targets[i].last.as_ref().and_then(|l| {
                    l.fds
                        .iter()
                        .find(|f| f.fd == k.fd && f.info.ts_ns == v.ts_ns)
                        .and_then(|f| f.target.clone())
                });
                OpenFd {
                    fd: k.fd,
                    info,
                    target: named,
                }
            })
            .collect();
        open.sort_by_key(|f| f.fd);
        let mut keys: Vec<StackKey> = open
            .iter()
            .map(|f| (f.info.ustack, f.info.pystack))
            .collect();
        keys.dedup();
        let known: Vec<StackKey> = self.targets[i]
            .last
            .as_ref()
            .map(|l| l.frames.keys().copied().collect())
            .unwrap_or_default();
        let mut frames = HashMap::new();
        for k in keys.into_iter().filter(|k| !known.contains(k)) {
            let f = if k == BEFORE_EXEC {
                vec![Frame::Marker(Marker::OpenedBeforeExec)]
            } else {
                self.frames_read(i, k, true)
            };
            frames.insert(k, f);
        }
        let stats = self.probes.pid_stats(pid);
        let last = self.targets[i].last.get_or_insert_with(|| ProcSnapshot {
            stats,
            ..ProcSnapshot::default()
        });
        last.frames.extend(frames);
        last.fds = open;
    }
}

impl Target {
    /// Has its program been replaced by an exec the collector has not handled yet?
    pub(super) fn replaced(&self, probes: &Probes) -> bool {
        probes.pid_stats(self.pid).execs > self.exec.execs_seen
    }

    /// The entry as the report reads it.
    pub fn view(&self) -> TargetView<'_> {
        let ticks_per_s = procfs::clock_ticks_per_sec();
        TargetView {
            seq: self.seq,
            pid: self.pid,
            comm: &self.comm,
            container: self.container.as_deref(),
            nspid: self.nspid,
            interpreter: format!(
                "CPython {} ({})",
                self.interp.version, self.interp.target_path
            ),
            hooks: hooks_of(&self.interp),
            exited_after: self.exited_after,
            execd: self.exec.execd.as_deref(),
            last: self.last.as_ref(),
            history: &self.history.checkpoints,
            alloc_calls_base: self.counters.alloc_calls_base,
            cpu_seconds: self
                .counters
                .cpu_ticks_last
                .saturating_sub(self.counters.cpu_ticks_at_start) as f64
                / ticks_per_s as f64,
            windows: self.watch.windows,
            survivors: self.watch.survivors.len() as u64,
            armed: self.watch.armed,
            traced_for: self
                .exited_after
                .unwrap_or_else(|| self.attached_at.elapsed()),
            census: self.census.as_ref().map(|c| c.facts()),
            resident: &self.resident.readings,
            warning: self.threads.warning.clone().or_else(|| {
                // Never silent: a layout that could not be checked was never used.
                let unchecked = !self.threads.layout_checked
                    && self.interp.layout().is_some()
                    && self.threads.pending_since.is_some();
                if self.stopped && self.exited_after.is_none() {
                    Some(format!(
                        "WARNING: pid {} is stopped (SIGSTOP, or a debugger holds it): nothing it does shows until it runs again",
                        self.pid
                    ))
                } else if unchecked && self.exec.execd.is_some() {
                    Some(format!(
                        "WARNING: CPython {}: its program was replaced by an exec before tracer could check its layout: no Python frames and no heap census for it; its descriptors up to the exec are listed",
                        self.interp.version
                    ))
                } else {
                    unchecked.then(|| {
                        python::unreadable_line(
                            &self.interp.version.to_string(),
                            "its interpreter never showed a running thread list to check the \
                             layout against",
                        )
                    })
                }
            }),
        }
    }
}

/// What an interpreter's allocator hooks can see.
pub fn hooks_of(interp: &Interpreter) -> HookCoverage {
    HookCoverage {
        hooked: interp.alloc.source != python::HookSource::None && !interp.alloc.hooks.is_empty(),
        notes: interp.alloc.notes.join("; "),
        inlined_fast_path: interp.alloc.inlined_fast_path,
    }
}
