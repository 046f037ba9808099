//! Collector: reads the kernel maps into per-process snapshots, reconciles descriptors with
//! /proc/PID/fd, notices targets that exit or exec (an exec closes the old program's entry up to
//! the exec; the new program gets an entry of its own if it is CPython). It hands over plain views
//! (`snapshot`) and the entries that closed, and knows nothing of the report.

mod forks;
mod watch;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracer_common::{FdInfo, FdKey, PidStats};

use crate::config::{Mode, NativeMode};
use crate::frame::{Frame, Marker};
use crate::probes::{FileId, Probes};
use crate::procfs;
use crate::python::census::Census;
use crate::python::frames::{self, Check, Runtime};
use crate::python::{self, Interpreter};
use crate::say;
use crate::snapshot::{
    AllocGroup, CollectorView, History, HookCoverage, OpenFd, ProcSnapshot, StackKey, TargetView,
};
use crate::symbolize::Symbolizer;
use crate::util::monotonic_ns;
use crate::verdict::verdict_key;
pub(crate) use forks::How;
pub use forks::{Followed, Forked, Missed};
pub use watch::{Sample, Window};

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
    /// not given: see `attach_libc`; a launched process maps it only after its exec: tried
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
    /// Watch mode's samples and windows.
    pub watch: WatchState,
    /// The heap census (once the runtime is known).
    pub census: Option<Census>,
    /// Where its resident memory is, read at census passes.
    pub resident: ResidentState,
}

/// The readings of a process's resident memory.
#[derive(Default)]
pub struct ResidentState {
    reader: crate::resident::Reader,
    /// (seconds since tracing began, breakdown), oldest first; at most `MAX_CHECKPOINTS`
    /// (the older half thinned, as checkpoints are).
    pub readings: Vec<(f64, crate::resident::Breakdown)>,
}

impl ResidentState {
    fn read(&mut self, pid: u32, at: f64) {
        let Some(mut b) = self.reader.read(pid) else {
            return;
        };
        // The ranges were for this reading only.
        b.pools.ranges = Vec::new();
        b.heaps.ranges = Vec::new();
        self.readings.push((at, b));
        if self.readings.len() > crate::snapshot::MAX_CHECKPOINTS {
            let half = self.readings.len() / 2;
            let mut i = 0;
            self.readings.retain(|_| {
                i += 1;
                i == 1 || i > half || i % 2 == 0
            });
        }
    }
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

/// Reading a target's interpreter from outside.
#[derive(Default)]
pub struct Threads {
    /// The live interpreter, once its runtime is mapped (None when its layout is unknown).
    pub runtime: Option<Runtime>,
    /// Thread ids published to the kernel, with their thread state.
    pub published: HashMap<u32, u64>,
    /// The interpreter cannot be read (its layout is unknown, or fails the live checks): the
    /// one-line warning said at attach and in the summary.
    pub warning: Option<String>,
    /// The layout passed the live checks (`Runtime::validate`); else since when it is pending.
    pub layout_checked: bool,
    pub pending_since: Option<Instant>,
    /// When the thread list may be read again: reading it costs in proportion to the threads
    /// (thousands in some services), and is spaced so that it stays under 5% of a core.
    pub next_refresh: Option<Instant>,
    /// Where the outside sampler goes on in a long thread list (see `sample_stacks`).
    pub sample_cursor: usize,
}

/// Watch mode: live samples by address, how many windows ran and for how long the probes were
/// armed in all (windows belong to the process's `ProbeGroup`).
#[derive(Default)]
pub struct WatchState {
    pub samples: HashMap<u64, Sample>,
    /// When the last window opened (monotonic ns): samples from before it have survived at
    /// least one period, and only those count in checkpoints.
    pub window_opened_ns: u64,
    /// Fingerprints of what the closing window saw, by address, taken while frees are traced.
    pending: HashMap<u64, Sample>,
    pub windows: u64,
    pub armed: Duration,
    /// Runtime address of PyType_Type, and addresses already checked for being a type.
    type_type: Option<u64>,
    types: HashMap<u64, bool>,
}

/// Threads whose stacks one round of the outside sampler reads (every 10 ms).
const SAMPLED_THREADS: usize = 64;

/// How long a layout may stay undecided (a starting interpreter) before it is refused.
const LAYOUT_PENDING_LIMIT: Duration = Duration::from_secs(15);

/// The allocator probes of one interpreter file, shared by every target that maps it (the
/// programs keep the traced pids only). In watch mode the group's targets share its windows.
pub struct ProbeGroup {
    pub file: FileId,
    pub window: Window,
    pub next_window: Instant,
    /// Probes attached (exact mode: for as long as a target maps the file).
    pub probes: usize,
}

/// What happened to a target at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exited(u32),
    /// Its program was replaced by another (`into`, the new executable).
    Execd {
        pid: u32,
        into: String,
    },
}

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

/// The stack key of descriptors inherited across an exec.
const BEFORE_EXEC: StackKey = (-7, 0);
/// The stack key of descriptors opened just before an exec, after the last snapshot, whose
/// stack no snapshot named.
const JUST_BEFORE_EXEC: StackKey = (-8, 0);

pub struct Collector {
    pub probes: Probes,
    pub targets: Vec<Target>,
    pub groups: Vec<ProbeGroup>,
    pub symbolizer: Symbolizer,
    pub min_age: Duration,
    pub native: NativeMode,
    /// Walk Python frames in the kernel (off only to measure its cost).
    pub python_walk: bool,
    /// Take heap censuses.
    pub census: bool,
    pub mode: Mode,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Watch mode: how long each window lasts, and the share of time (percent) the probes may
    /// be armed, release included.
    pub window: Duration,
    pub budget: f64,
    /// A window was harvested since the last call to `take_harvested` (watch mode takes its
    /// checkpoints then).
    harvested: bool,
    /// Entries in the allocation and descriptor maps at the last tick.
    pub map_entries: (u64, u64),
    /// Entries closed (processes that exited or exec'd) since the last `take_closed`: the
    /// report keeps what it needs of them, the collector forgets them (a long `--all-python`
    /// recording sees thousands of short-lived processes).
    closed: Vec<Target>,
    /// Entries added so far.
    added: u64,
    /// Processes that exec'd, their new program not inspected yet.
    pub execs: Vec<PendingExec>,
    /// `--children`: every target's forks are followed (else only a launched command's).
    pub follow_children: bool,
    /// Processes followed for the processes they start, not traced (not CPython).
    pub followed: Vec<Followed>,
    /// Processes that could not be traced.
    pub missed: Missed,
    /// Ticks so far.
    ticks: u64,
    /// C libraries whose malloc family is probed (exact mode).
    /// The processes whose C library is probed (exact mode), keyed by `libc_key`.
    libc_files: std::collections::HashSet<FileId>,
    /// Processes given C library probes in this recording.
    libc_given: usize,
    /// A C library that could not be probed, or the processes' limit, was said.
    libc_said: bool,
    /// Stacks the kernel had lost at the last collection of its stack maps.
    stacks_lost_seen: u64,
    /// The tick of the last collection of the stack maps.
    stacks_collected_at: u64,
    /// What the last collection took.
    stacks_collect_cost: Duration,
    /// `-d` (and a time limit on the final reading): past it, a tick reads no more than it
    /// must, and leaves the other processes at their last snapshot.
    pub deadline: Option<Instant>,
    /// The recording is ending: the kernel's stack maps are not collected any more.
    pub ending: bool,
    started: Instant,
    /// Why the kernel's on-CPU stack sampler cannot run (said once).
    sampler_error: Option<String>,
}

impl Collector {
    pub fn new(probes: Probes, min_age: Duration) -> Collector {
        Collector {
            probes,
            targets: Vec::new(),
            groups: Vec::new(),
            symbolizer: Symbolizer::default(),
            min_age,
            native: NativeMode::Leaf,
            python_walk: true,
            census: true,
            mode: Mode::Exact,
            interval: Duration::from_secs(10),
            window: Duration::from_millis(200),
            budget: 0.0,
            harvested: false,
            map_entries: (0, 0),
            closed: Vec::new(),
            added: 0,
            execs: Vec::new(),
            follow_children: false,
            followed: Vec::new(),
            missed: Missed::default(),
            ticks: 0,
            libc_files: std::collections::HashSet::new(),
            libc_given: 0,
            libc_said: false,
            stacks_lost_seen: 0,
            stacks_collected_at: 0,
            stacks_collect_cost: Duration::ZERO,
            deadline: None,
            ending: false,
            sampler_error: None,
            started: Instant::now(),
        }
    }

    /// Has the recording's deadline (`-d`) passed?
    pub fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

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
                let (found, n) = self.attach_libc(pid);
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

    /// The probe group of an interpreter file, created (and in exact mode attached) for its
    /// first target. Returns the number of probes attached for good.
    fn join_group(&mut self, interp: &Interpreter) -> crate::error::Result<usize> {
        if let Some(g) = self.groups.iter().find(|g| g.file == interp.file_id) {
            return Ok(g.probes);
        }
        let probes = match self.mode {
            Mode::Exact => {
                let n = self.probes.attach_allocator(interp, &interp.alloc.hooks)?;
                let recycle = self.probes.attach_recycle(interp)?;
                if interp.alloc.new_reference.is_none()
                    && interp.alloc.constructors.is_empty()
                    && !interp.alloc.hooks.is_empty()
                {
                    say!(
                        "tracer: note: {}",
                        crate::python::allocator::NEW_REFERENCE_INLINED
                    );
                }
                n + recycle
            }
            Mode::Watch => 0,
        };
        self.groups.push(ProbeGroup {
            file: interp.file_id,
            window: Window::Closed,
            // The first window opens at once: a short run still gets samples.
            next_window: Instant::now(),
            probes,
        });
        Ok(probes)
    }

    /// Exact mode: probes on the malloc family of the C library `pid` maps, for that process
    /// only (a probe on the C library for every process would trap every program on the host,
    /// the tracer included): native allocations (an extension's buffers, numpy's data) are
    /// traced too. Returns whether the C library was found and the number of probes attached
    /// now; a C library that cannot be probed is said once.
    fn attach_libc(&mut self, pid: u32) -> (bool, usize) {
        let Some(m) = procfs::maps(pid).ok().and_then(|maps| {
            maps.into_iter().find(|m| {
                m.offset == 0
                    && m.path.as_deref().is_some_and(|p| {
                        let base = p.rsplit('/').next().unwrap_or(p);
                        base.starts_with("libc.so")
                            || (base.starts_with("libc-") && base.ends_with(".so"))
                    })
            })
        }) else {
            return (false, 0);
        };
        let path =
            std::path::PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
        if std::fs::metadata(&path).is_err() {
            return (false, 0);
        }
        let key = libc_key(pid);
        if self.libc_files.contains(&key) {
            return (true, 0);
        }
        // Each probe is removed on its own (a kernel grace period each, ~0.1 s): a recording
        // gives them to a few processes, never again to another once one has ended (processes
        // that come and go would keep the kernel removing probes).
        if self.libc_given >= LIBC_PROCESSES {
            if !self.libc_said {
                self.libc_said = true;
                say!(
                    "tracer: note: native allocations (malloc outside CPython) are traced in the first {LIBC_PROCESSES} processes; pid {pid} and later ones: CPython's allocator only"
                );
            }
            return (true, 0);
        }
        self.libc_given += 1;
        self.libc_files.insert(key);
        match self.probes.attach_libc(&path, key, pid) {
            Ok(n) => (true, n),
            Err(e) => {
                if !self.libc_said {
                    self.libc_said = true;
                    say!(
                        "tracer: note: native allocations (malloc outside CPython) are not traced: {e}"
                    );
                }
                (true, 0)
            }
        }
    }

    /// Exact mode: releases the C library probes of processes that are no longer traced.
    fn retire_libc(&mut self) {
        let live: std::collections::HashSet<FileId> = self
            .targets
            .iter()
            .filter(|t| t.exited_after.is_none())
            .map(|t| libc_key(t.pid))
            .collect();
        let gone: Vec<FileId> = self
            .libc_files
            .iter()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        for k in gone {
            self.libc_files.remove(&k);
            self.probes.release_allocator(k, false);
        }
    }

    /// The live targets that map an interpreter file.
    fn members(&self, file: FileId) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&i| {
                self.targets[i].exited_after.is_none() && self.targets[i].interp.file_id == file
            })
            .collect()
    }

    /// Exact mode: detaches the probes of files that no live target maps any more.
    fn retire_groups(&mut self) {
        if self.mode != Mode::Exact {
            return;
        }
        let idle: Vec<FileId> = self
            .groups
            .iter()
            .map(|g| g.file)
            .filter(|&f| self.members(f).is_empty())
            .collect();
        for f in idle {
            self.probes.release_allocator(f, false);
            self.groups.retain(|g| g.file != f);
        }
        self.retire_libc();
    }

    /// Publishes each live target's threads (tid -> PyThreadState) to the kernel. Cheap: a few
    /// reads of target memory per thread; run often so new threads get Python stacks quickly.
    pub fn refresh_threads(&mut self) {
        for i in 0..self.targets.len() {
            self.refresh_target(i);
        }
    }

    /// `refresh_threads` for one target.
    fn refresh_target(&mut self, i: usize) {
        {
            let t = &mut self.targets[i];
            if t.exited_after.is_some() {
                return;
            }
            if replaced(&self.probes, t) {
                return; // its memory is another program's now (closed at the next tick)
            }
            let fresh = t.threads.runtime.is_none();
            if fresh {
                if t.threads.warning.is_some() {
                    return;
                }
                let (Some(layout), Some(rt), Some(ct)) = (
                    t.interp.layout(),
                    t.interp.runtime_vaddr,
                    t.interp.code_type_vaddr,
                ) else {
                    return;
                };
                let Some(bias) = t.interp.bias_in(t.pid) else {
                    return;
                };
                let mut runtime =
                    Runtime::new(t.pid, layout, rt.wrapping_add(bias), ct.wrapping_add(bias));
                // The layout is trusted once it reads this process right.
                if !t.threads.layout_checked {
                    let why = match runtime.validate() {
                        Check::Valid => None,
                        Check::Invalid(why) => Some(why),
                        Check::Pending(why) => {
                            let since = *t.threads.pending_since.get_or_insert_with(Instant::now);
                            if since.elapsed() <= LAYOUT_PENDING_LIMIT {
                                return;
                            }
                            Some(why)
                        }
                        // Starting or finalizing: nothing to check (said in the summary if
                        // it never changes).
                        Check::NotRunning => {
                            t.threads.pending_since.get_or_insert_with(Instant::now);
                            return;
                        }
                        // Threads decode: their frames are checked when one shows; after the
                        // limit (threads that only run native code) the thread check stands.
                        Check::ThreadsOnly => {
                            let since = *t.threads.pending_since.get_or_insert_with(Instant::now);
                            if since.elapsed() <= LAYOUT_PENDING_LIMIT {
                                return;
                            }
                            None
                        }
                    };
                    if let Some(why) = why {
                        let w = python::unreadable_line(
                            &t.interp.version.to_string(),
                            &format!("its layout does not fit the live process ({why})"),
                        );
                        say!("{w}");
                        t.threads.warning = Some(w);
                        return;
                    }
                    t.threads.layout_checked = true;
                    let _ = self.probes.set_pyconf(t.pid, frames::pyconf(layout, t.pid));
                }
                t.threads.runtime = Some(runtime);
                // Launch mode: the file was not mapped when the target was added.
                if t.watch.type_type.is_none() {
                    t.watch.type_type = t.interp.type_type_vaddr.map(|v| v.wrapping_add(bias));
                }
                if self.census && t.census.is_none() {
                    let type_type = t.watch.type_type.unwrap_or(0);
                    t.census = Some(Census::new(
                        t.pid,
                        layout,
                        rt.wrapping_add(bias),
                        type_type,
                        crate::verdict::census_rules(),
                    ));
                }
            }
            if !fresh && t.threads.next_refresh.is_some_and(|n| Instant::now() < n) {
                return;
            }
            let began = Instant::now();
            let rt = t.threads.runtime.as_mut().unwrap();
            let now: HashMap<u32, u64> = rt.threads().into_iter().collect();
            t.threads.next_refresh =
                Some(began + (began.elapsed() * 20).min(Duration::from_secs(5)));
            if now.is_empty() {
                // Not initialised yet (launch mode): try again next time.
                t.threads.runtime = None;
                return;
            }
            if fresh && self.python_walk {
                // Now that the thread list is known, the kernel can find new threads by itself.
                let _ = self.probes.set_pyconf(t.pid, rt.conf());
            }
            if now != t.threads.published {
                self.probes.set_threads(t.pid, &now);
                t.threads.published = now;
            }
        }
    }

    /// Records every live target's last snapshot as a checkpoint, grouped by frames.
    pub fn checkpoint(&mut self) {
        let at = self.started.elapsed().as_secs_f64();
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            let Some(snap) = &t.last else { continue };
            let mut allocs: HashMap<Vec<Frame>, (u64, u64)> = HashMap::new();
            let mut fds: HashMap<Vec<Frame>, u64> = HashMap::new();
            // Watch mode counts the samples of earlier windows only: the ones the last window
            // just took are alive by construction, and their number is noise, not growth.
            let mut by_stack: HashMap<StackKey, (u64, u64)> = HashMap::new();
            if self.mode == Mode::Watch {
                let now = monotonic_ns();
                let min_age = self.min_age.as_nanos() as u64;
                for s in t.watch.samples.values().filter(|s| {
                    s.ts_ns < t.watch.window_opened_ns && now.saturating_sub(s.ts_ns) >= min_age
                }) {
                    let e = by_stack.entry(s.stack).or_default();
                    e.0 += s.size;
                    e.1 += 1;
                }
            } else {
                by_stack.extend(snap.allocs.iter().map(|(k, g)| (*k, (g.bytes, g.count))));
            }
            for (k, (bytes, count)) in by_stack {
                let frames = verdict_key(snap.frames.get(&k).cloned().unwrap_or_default());
                let e = allocs.entry(frames).or_default();
                e.0 += bytes;
                e.1 += count;
            }
            for f in &snap.fds {
                *fds.entry(snap.fd_site(f)).or_default() += 1;
            }
            t.history.push(at, allocs, fds);
        }
    }

    /// Samples the Python stacks every live target's threads are running (read from outside,
    /// the interpreter's thread list read fresh at each sample): the census attributes its growing containers to
    /// the call paths that reach the lines using them.
    ///
    /// While a census wants stacks, the kernel's on-CPU sampler records that process too (see
    /// `take_cpu_samples`); if it cannot run, this sampler is the only one (said once).
    pub fn sample_stacks(&mut self) {
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            let wants = t.census.as_ref().is_some_and(|c| c.wants_stacks);
            if replaced(&self.probes, t) {
                continue;
            }
            let Some(c) = t.census.as_mut() else {
                continue;
            };
            if wants != c.sampled && self.sampler_error.is_none() {
                match self.probes.set_sampled(t.pid, wants) {
                    Ok(()) => c.sampled = wants,
                    Err(e) => {
                        say!("tracer: on-CPU stack samples are off ({e}); stacks are sampled from outside only");
                        self.sampler_error = Some(e.to_string());
                    }
                }
            }
            if !wants {
                continue;
            }
            let Some(rt) = t.threads.runtime.as_mut() else {
                continue;
            };
            // A short thread list is read at every sample (a request thread lives a few
            // milliseconds); a long one is the last refresh's, sampled a slice at a time.
            let tstates = if t.threads.published.len() <= SAMPLED_THREADS {
                rt.tstates()
            } else {
                let mut all: Vec<u64> = t.threads.published.values().copied().collect();
                all.sort_unstable();
                let from = t.threads.sample_cursor % all.len();
                t.threads.sample_cursor = from + SAMPLED_THREADS;
                all.into_iter()
                    .cycle()
                    .skip(from)
                    .take(SAMPLED_THREADS)
                    .collect()
            };
            c.add_stacks(rt.stacks(&tstates));
        }
    }

    /// Leaves the kernel's on-CPU sampler off (`--no-cpu-samples`).
    pub fn no_cpu_samples(&mut self) {
        self.sampler_error = Some("--no-cpu-samples".into());
    }

    /// Moves the kernel's on-CPU samples of every sampled process into its census.
    fn take_cpu_samples(&mut self) {
        let mut samples = self.probes.take_samples();
        for t in self.targets.iter_mut() {
            let (Some(c), Some(rt)) = (t.census.as_mut(), t.threads.runtime.as_mut()) else {
                continue;
            };
            for (key, n) in samples.remove(&t.pid).unwrap_or_default() {
                if let Some(stack) = self.probes.pystack(key) {
                    c.add_stack(rt.labels(key, &stack), n);
                }
            }
        }
    }

    /// A heap census pass of every live target (read from outside; the targets run on).
    pub fn census(&mut self) {
        self.take_cpu_samples();
        let at = self.started.elapsed().as_secs_f64();
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            if replaced(&self.probes, t) {
                continue;
            }
            if let Some(c) = t.census.as_mut() {
                c.pass(at, t.threads.runtime.as_mut());
            }
            if self.census {
                t.resident.read(t.pid, at);
            }
        }
    }

    /// Frames of one stack, root first: Python frames with the native frames chosen by `native`.
    /// A forked child not read yet (or gone) has its Python frames read through its parent,
    /// whose image it ran.
    fn frames_of(&mut self, i: usize, key: StackKey) -> Vec<Frame> {
        self.frames_read(i, key, false)
    }

    /// `frames_of`, for a process that is `gone` or not.
    fn frames_read(&mut self, i: usize, key: StackKey, gone: bool) -> Vec<Frame> {
        let pid = self.targets[i].pid;
        let native = self.symbolizer.native(&self.probes, pid, key.0);
        let parent = self.targets[i].forked_from.and_then(|parent| {
            self.targets.iter().position(|t| {
                t.pid == parent && t.exited_after.is_none() && t.threads.runtime.is_some()
            })
        });
        let reader = match (gone, self.targets[i].threads.runtime.is_some()) {
            (true, _) | (false, false) => parent.or(Some(i)),
            (false, true) => Some(i),
        };
        let py = match (
            self.probes.pystack(key.1),
            reader.and_then(|r| self.targets[r].threads.runtime.as_mut()),
        ) {
            (Some(stack), Some(rt)) => rt.labels(key.1, &stack),
            _ => Vec::new(),
        };
        merge_frames(py, native, self.native)
    }

    /// A target that just exited: its descriptors are the ones open at its exit, as the kernel's
    /// map holds them (an exit closes them without a syscall the kernel sees), not the ones of
    /// its last snapshot, which a short-lived process may never have had.
    fn descriptors_at_exit(&mut self, i: usize, fds: &HashMap<FdKey, FdInfo>) {
        let pid = self.targets[i].pid;
        let born = self.targets[i].exec.born_ns;
        let min_age = self.min_age.as_nanos() as u64;
        let now = monotonic_ns();
        let mut open: Vec<OpenFd> = fds
            .iter()
            .filter(|(k, v)| k.pid == pid && now.saturating_sub(v.ts_ns) >= min_age)
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

    /// The collector as the report reads it: settings, counters and the live entries.
    pub fn view(&self) -> CollectorView<'_> {
        CollectorView {
            mode: self.mode,
            interval: self.interval,
            window: self.window,
            budget: self.budget,
            probes_off: self.mode == Mode::Watch && !self.windowed(),
            min_age: self.min_age,
            targets: self.targets.iter().map(Target::view).collect(),
            kernel_stats: self.probes.stats().to_vec(),
            map_entries: self.map_entries,
            missed: self.missed,
        }
    }

    /// Drops what a closed entry no longer needs (its kernel state: the runtime it read, the
    /// threads it published); the rest goes with it at the end of the tick (`take_closed`).
    fn freeze(&mut self, i: usize) {
        let t = &mut self.targets[i];
        t.threads.published.clear();
        t.threads.runtime = None;
        t.watch.pending = HashMap::new();
        t.watch.types = HashMap::new();
    }

    /// Closes the entry of a program replaced by an exec, as of the exec: its last snapshot
    /// (taken before the exec) and checkpoints stay; its kernel state goes (the old heap is
    /// void, the old layout and threads mean nothing in the new image). The pid stays in the
    /// kernel's target map while its new program is inspected (`follow_execs`).
    fn close_execd(&mut self, i: usize, st: &PidStats) -> Event {
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

    /// Takes a snapshot of every live target, closes the entries of targets that have exited
    /// (keeping their last snapshot) or exec'd (see `close_execd`). Returns what happened since
    /// the last call.
    pub fn tick(&mut self) -> Vec<Event> {
        self.probes.flush_log();
        let mut events = Vec::new();
        for i in 0..self.targets.len() {
            if self.targets[i].exited_after.is_some() {
                continue;
            }
            let st = self.probes.pid_stats(self.targets[i].pid);
            if st.execs > self.targets[i].exec.execs_seen {
                let event = self.close_execd(i, &st);
                // A forked child that exec'd before it was ever read (a subprocess) is its new
                // program only: its entry is not kept, and not said.
                let t = &self.targets[i];
                if t.forked_from.is_some() && t.last.is_none() {
                    self.execs.last_mut().unwrap().forked = true;
                    self.targets[i].history.clear();
                    self.targets[i].exec.execd = Some(String::new());
                } else {
                    events.push(event);
                }
            }
        }
        let now = monotonic_ns();
        let min_age = self.min_age.as_nanos() as u64;
        // Exact mode: each live target's outstanding allocations grouped by stack, in one walk
        // of the map (the entries themselves are not kept: a million weigh ~100 MB). What a
        // program left before an exec (older than its successor's birth) is not counted.
        let mut by_pid: HashMap<u32, (u64, HashMap<StackKey, AllocGroup>)> = match self.mode {
            Mode::Exact => self
                .targets
                .iter()
                .filter(|t| t.exited_after.is_none())
                .map(|t| (t.pid, (t.exec.born_ns, HashMap::new())))
                .collect(),
            Mode::Watch => HashMap::new(),
        };
        let alloc_entries = self.probes.for_each_alloc(|k, a| {
            if let Some((born, groups)) = by_pid.get_mut(&k.pid) {
                if a.ts_ns >= *born {
                    add_to_group(groups, (a.ustack, a.pystack), a.size, a.ts_ns, now, min_age);
                }
            }
        });
        let fds = self.probes.fds();
        self.map_entries = (alloc_entries, fds.len() as u64);
        // Where the heaps grew: brk moves and mprotects by stack since attach, mappings by
        // stack while they stay.
        let (grows, mappings) = self.probes.growth();
        let mut grown: HashMap<u32, HashMap<StackKey, (u64, u64)>> = HashMap::new();
        for (k, g) in &grows {
            let e = grown
                .entry(k.pid)
                .or_default()
                .entry((k.ustack, k.pystack))
                .or_default();
            e.0 += g.brk_bytes;
        }
        for (k, m) in &mappings {
            let e = grown
                .entry(k.pid)
                .or_default()
                .entry((m.ustack, m.pystack))
                .or_default();
            e.1 += m.len;
        }
        let mut ended = Vec::new();
        for i in 0..self.targets.len() {
            let pid = self.targets[i].pid;
            if self.targets[i].exited_after.is_some() {
                continue;
            }
            // Gone, a zombie, or its pid already reused by another process; when tracer cannot
            // look (out of descriptors), nothing is decided this tick.
            let liveness = procfs::liveness(pid, self.targets[i].start_ticks);
            if liveness == procfs::Liveness::Unknown {
                continue;
            }
            if liveness == procfs::Liveness::Gone {
                self.descriptors_at_exit(i, &fds);
                let t = &mut self.targets[i];
                t.exited_after = Some(t.attached_at.elapsed());
                if t.comm == "?" || t.comm.is_empty() {
                    t.comm = "python".into();
                }
                events.push(Event::Exited(pid));
                self.freeze(i);
                self.probes.set_threads(pid, &HashMap::new());
                ended.push(pid);
                self.symbolizer.forget(pid);
                continue;
            }
            // Past `-d` (a tick that many processes made long): the rest keep their last
            // snapshot, and their exits are still seen.
            if self.past_deadline() {
                continue;
            }
            if self.mode == Mode::Exact && !self.targets[i].libc {
                let (found, n) = self.attach_libc(pid);
                self.targets[i].libc = found;
                self.targets[i].libc_probes += n;
                if n > 0 {
                    say!("tracer: pid {pid}: {n} probes on its C library's malloc family (native allocations)");
                }
            }
            // Stopped by SIGSTOP or a debugger: said when it happens and when it ends.
            let stopped = procfs::stat(pid).is_some_and(|s| matches!(s.state, 'T' | 't'));
            if stopped != self.targets[i].stopped {
                self.targets[i].stopped = stopped;
                if stopped {
                    say!("tracer: WARNING: pid {pid} is stopped (SIGSTOP, or a debugger holds it): nothing it does shows until it runs again");
                } else {
                    say!("tracer: pid {pid} runs again");
                }
            }
            if self.mode == Mode::Watch {
                self.verify_samples(i);
            }
            let born = self.targets[i].exec.born_ns;
            // Descriptors: drop entries whose descriptor is gone (close_range, exec with CLOEXEC).
            // Unreadable (tracer out of descriptors, or the process just went): the entries
            // stay as they are until the next tick can look.
            let Ok(links) = procfs::fd_targets(pid) else {
                continue;
            };
            let mut open = Vec::new();
            let mut gone = Vec::new();
            for (k, v) in fds.iter().filter(|(k, _)| k.pid == pid) {
                match links.get(&k.fd) {
                    Some(t) => {
                        if now.saturating_sub(v.ts_ns) >= min_age {
                            let mut info = *v;
                            if info.ts_ns < born {
                                // Inherited across the exec: opened by the program before, whose
                                // stacks the new one cannot name.
                                info.ustack = BEFORE_EXEC.0;
                                info.pystack = BEFORE_EXEC.1;
                            }
                            open.push(OpenFd {
                                fd: k.fd,
                                info,
                                target: Some(t.clone()),
                            });
                        }
                    }
                    None => gone.push((k.fd, v.ts_ns)),
                }
            }
            open.sort_by_key(|f| f.fd);
            let mut groups = by_pid.remove(&pid).map(|g| g.1).unwrap_or_default();
            if self.mode == Mode::Watch {
                for s in self.targets[i]
                    .watch
                    .samples
                    .values()
                    .filter(|s| s.ts_ns >= born)
                {
                    add_to_group(&mut groups, s.stack, s.size, s.ts_ns, now, min_age);
                }
            }
            let mut frames = HashMap::new();
            let grows = grown.remove(&pid).unwrap_or_default();
            let keys: Vec<StackKey> = groups
                .keys()
                .copied()
                .chain(open.iter().map(|f| (f.info.ustack, f.info.pystack)))
                .chain(grows.keys().copied())
                .collect();
            for k in keys {
                if let std::collections::hash_map::Entry::Vacant(e) = frames.entry(k) {
                    let f = if k == BEFORE_EXEC {
                        vec![Frame::Marker(Marker::OpenedBeforeExec)]
                    } else {
                        self.frames_of(i, k)
                    };
                    e.insert(f);
                }
            }
            let stats = self.probes.pid_stats(pid);
            let t = &mut self.targets[i];
            if stats.execs > t.exec.execs_seen {
                // It exec'd while this snapshot was read: the last one from before the exec
                // stays (the next tick closes the entry), and the descriptors the exec closed
                // stay in the kernel's map (they were open at the exec).
                continue;
            }
            // Closed without the kernel seeing it (close_range beyond its first descriptors).
            for (fd, ts) in gone {
                self.probes.remove_fd(&FdKey { pid, fd }, Some(ts));
            }
            let t = &mut self.targets[i];
            if let Some(st) = procfs::stat(pid) {
                t.counters.cpu_ticks_last = st.cpu_ticks;
            }
            t.last = Some(ProcSnapshot {
                allocs: groups,
                fds: open,
                grows,
                stats,
                frames,
            });
        }
        self.probes.remove_targets(&ended);
        // Every ten ticks, and at once when stacks were lost, the kernel's stack maps lose what
        // nothing refers to any more.
        self.ticks += 1;
        let lost = {
            let s = self.probes.stats();
            s[tracer_common::stat::PYSTACK_LOST as usize]
                + s[tracer_common::stat::STACK_LOST as usize]
        };
        // A collection reads every map: when stacks keep being lost, one a tick while that is
        // cheap, one every third tick once one took long (many processes in exact mode: 4 s
        // of a 4.6 s tick), and none past `-d`.
        let due = self.ticks >= self.stacks_collected_at + 3
            || self.stacks_collect_cost < Duration::from_millis(200);
        let lost_more = lost > self.stacks_lost_seen && due;
        if (self.ticks.is_multiple_of(10) || lost_more) && !self.past_deadline() && !self.ending {
            let force = lost > self.stacks_lost_seen;
            self.stacks_collected_at = self.ticks;
            let began = Instant::now();
            self.stacks_lost_seen = lost;
            let samples: Vec<StackKey> = self
                .targets
                .iter()
                .flat_map(|t| t.watch.samples.values().chain(t.watch.pending.values()))
                .map(|s| s.stack)
                .collect();
            self.probes.collect_stacks(samples.into_iter(), force);
            self.stacks_collect_cost = began.elapsed();
        }
        // A program replaced by an exec keeps its group until its successor is known
        // (`follow_execs`): the same interpreter again keeps its probes.
        if events.iter().any(|e| matches!(e, Event::Exited(_))) {
            self.retire_groups();
        }
        let (closed, live) = std::mem::take(&mut self.targets)
            .into_iter()
            .partition(|t| t.exited_after.is_some());
        self.targets = live;
        self.closed.extend(
            closed
                .into_iter()
                .filter(|t: &Target| t.exec.execd.as_deref() != Some("")),
        );
        events
    }
}

impl Target {
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
            samples: self.watch.samples.len() as u64,
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

/// Counts an allocation (or a live sample) in its stack's group, once it is `min_age` old.
fn add_to_group(
    groups: &mut HashMap<StackKey, AllocGroup>,
    stack: StackKey,
    size: u64,
    ts: u64,
    now: u64,
    min_age: u64,
) {
    if now.saturating_sub(ts) < min_age {
        return;
    }
    let g = groups.entry(stack).or_default();
    g.bytes += size;
    g.count += 1;
    if g.oldest_ts == 0 || ts < g.oldest_ts {
        g.oldest_ts = ts;
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

/// Has the target's program been replaced by an exec the collector has not handled yet?
fn replaced(probes: &Probes, t: &Target) -> bool {
    probes.pid_stats(t.pid).execs > t.exec.execs_seen
}

/// Is this native frame part of the interpreter's own machinery (where Python frames take over)?
fn is_interpreter_frame(frame: &Frame) -> bool {
    let Frame::Native { symbol: Some(name) } = frame else {
        return true; // unknown
    };
    name.starts_with('[')
        || name.contains("EvalFrame")
        || name.starts_with("_PyEval_")
        || name.starts_with("PyEval_")
        || name.starts_with("_PyObject_Vectorcall")
        || name.starts_with("_PyFunction_Vectorcall")
        || name.starts_with("PyObject_Call")
        || name.starts_with("_PyObject_Call")
        || name.starts_with("method_vectorcall")
        || name.starts_with("cfunction_")
}

/// Joins Python frames (root first) and native frames (root first).
pub fn merge_frames(py: Vec<Frame>, native: Vec<Frame>, mode: NativeMode) -> Vec<Frame> {
    if py.is_empty() {
        return match mode {
            NativeMode::None => vec![Frame::Marker(Marker::NoPythonStack)],
            _ => native,
        };
    }
    let mut out = py;
    match mode {
        NativeMode::None => {}
        NativeMode::All => out.extend(native),
        NativeMode::Leaf => {
            // From the leaf up to the first interpreter frame, at most four.
            let leaf: Vec<Frame> = native
                .iter()
                .rev()
                .take_while(|n| !is_interpreter_frame(n))
                .take(4)
                .cloned()
                .collect();
            out.extend(leaf.into_iter().rev());
        }
    }
    out
}

/// Exact mode traces the C library's malloc family in this many processes at most (the
/// processes it was attached to or launched, not the children it follows).
const LIBC_PROCESSES: usize = 4;

/// The key of a process's C library probes among the probes' files (no file has inode 0).
fn libc_key(pid: u32) -> FileId {
    (u64::MAX, pid as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<Frame> {
        s.iter().map(|x| Frame::native(x)).collect()
    }

    #[test]
    fn native_frames_join_python_ones() {
        let py = vec![
            Frame::python("main", "app.py", Some(10)),
            Frame::python("leak", "app.py", Some(3)),
        ];
        let native = v(&[
            "_start",
            "_PyEval_EvalFrameDefault",
            "list_append",
            "_PyObject_Malloc",
        ]);
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::Leaf),
            [py.clone(), v(&["list_append", "_PyObject_Malloc"])].concat()
        );
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::None),
            py
        );
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::All).len(),
            6
        );
        assert_eq!(
            merge_frames(vec![], native.clone(), NativeMode::Leaf),
            native
        );
        assert_eq!(
            merge_frames(vec![], native, NativeMode::None),
            vec![Frame::Marker(Marker::NoPythonStack)]
        );
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
