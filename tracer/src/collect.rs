//! Collector: reads the kernel maps into per-process snapshots, reconciles descriptors with
//! /proc/PID/fd, notices targets that exit or exec (an exec closes the old program's entry up to
//! the exec; the new program gets an entry of its own if it is CPython).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracer_common::{FdInfo, FdKey, PidStats};

use crate::probes::{FileId, Probes};
use crate::procfs;
use crate::python::census::Census;
use crate::python::frames::{self, Check, Runtime};
use crate::python::mem::{self, Memory};
use crate::python::{self, Interpreter};
use crate::sampling::{self, Fingerprint};
use crate::say;
use crate::symbolize::Symbolizer;

/// Which native frames join the Python ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativeMode {
    /// Only the native frames below the innermost Python frame (the C path to the allocation or
    /// syscall); all native frames when there is no Python stack.
    #[default]
    Leaf,
    All,
    None,
}

/// How allocations are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Every allocation and free, through uprobes on the allocator (a short-window debugging
    /// mode: each probe hit costs microseconds).
    #[default]
    Exact,
    /// For production: no allocator probe (the heap census and Python stacks read from outside);
    /// with --budget, allocator probes in short budgeted windows, what they saw then followed from
    /// outside the process.
    Watch,
}

/// Outstanding values per stack (frames, root first) at one checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Seconds since tracing began.
    pub at: f64,
    /// Bytes and objects (allocations, or live samples in watch mode) per stack.
    pub allocs: HashMap<Vec<String>, (u64, u64)>,
    /// Open descriptors per site: the stack and the kind of resource, without its name.
    pub fds: HashMap<Vec<String>, u64>,
}

/// A traced process.
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub interp: Interpreter,
    pub attached_at: Instant,
    /// utime+stime (ticks) when tracing started.
    pub cpu_ticks_at_start: u64,
    pub cpu_ticks_last: u64,
    /// Start time (clock ticks after boot): a reused pid is another process.
    pub start_ticks: u64,
    /// When the process exited, or exec'd another program (then `execd` says which).
    pub exited_after: Option<Duration>,
    /// The program this entry's program was replaced by (exec): the entry is closed up to the
    /// exec, and the pid, if still traced, has an entry of its own for the new program.
    pub execd: Option<String>,
    /// The process's exec count (the kernel's `PidStats::execs`) this entry accounts for: one
    /// more is an exec of the entry's program.
    pub execs_seen: u64,
    /// When this program started, if by an exec seen by the kernel (monotonic ns; 0: unknown):
    /// allocations and descriptors from before belong to the program it replaced.
    pub born_ns: u64,
    /// Allocator calls the kernel had counted for the pid before this entry.
    pub alloc_calls_base: u64,
    /// Started by the launched command's process tree (ended with the recording).
    pub launched: bool,
    /// The last snapshot taken while the process was alive.
    pub last: Option<ProcSnapshot>,
    /// The entry's report, made when it closed (exit or exec); what it was made from is
    /// dropped then (a long `--all-python` recording sees thousands of short-lived processes).
    pub frozen: Option<crate::report::ProcReport>,
    pub uprobes: usize,
    /// The live interpreter, once its runtime is mapped (None when its layout is unknown).
    pub runtime: Option<Runtime>,
    /// Thread ids published to the kernel, with their thread state.
    pub published: HashMap<u32, u64>,
    /// Watch mode: live samples by address, how many windows ran and for how long the probes
    /// were armed in all (windows belong to the process's `ProbeGroup`).
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
    /// Checkpoints, oldest first.
    pub history: Vec<Checkpoint>,
    /// The heap census (once the runtime is known).
    pub census: Option<Census>,
    /// Short id (or name) of the container the process runs in (None on the host).
    pub container: Option<String>,
    /// Its pid in its own pid namespace, when that is not the host's.
    pub nspid: Option<u32>,
    /// The interpreter cannot be read (its layout is unknown, or fails the live checks): the
    /// one-line warning said at attach and in the summary.
    pub warning: Option<String>,
    /// The layout passed the live checks (`Runtime::validate`); else since when it is pending.
    pub layout_checked: bool,
    pub pending_since: Option<Instant>,
}

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

/// Where a group's watch window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Closed,
    /// Probes attached at this time.
    Open(Instant),
    /// Allocation probes being released, frees still traced (the window opened at this time).
    Closing(Instant),
    /// What the window saw is fingerprinted; the free probes are being released.
    Freeing(Instant),
}

/// An allocation seen by a watch window and still alive at its end.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub stack: StackKey,
    pub size: u64,
    pub ts_ns: u64,
    pub fp: Fingerprint,
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

/// Most closed entries (processes that exited or exec'd) kept for the reports, by default.
pub const MAX_CLOSED: usize = 500;

/// Most samples kept per process (a leak adds a few per window).
const MAX_SAMPLES: usize = 200_000;

/// Stack key: native stack id and Python stack key.
pub type StackKey = (i32, u64);

#[derive(Debug, Clone, Copy, Default)]
pub struct AllocGroup {
    pub bytes: u64,
    pub count: u64,
    pub oldest_ts: u64,
}

#[derive(Debug, Clone)]
pub struct OpenFd {
    pub fd: u32,
    pub info: FdInfo,
    /// readlink of /proc/PID/fd/N when it was read.
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ProcSnapshot {
    pub allocs: HashMap<StackKey, AllocGroup>,
    pub fds: Vec<OpenFd>,
    pub stats: PidStats,
    /// Frames of every stack in this snapshot, root first (resolved while the process lives).
    pub frames: HashMap<StackKey, Vec<String>>,
}

impl ProcSnapshot {
    /// The descriptor site of an open descriptor, as verdicts group it: its Python call path
    /// and the kind of resource.
    pub fn fd_site(&self, f: &OpenFd) -> Vec<String> {
        let mut frames = verdict_key(
            self.frames
                .get(&(f.info.ustack, f.info.pystack))
                .cloned()
                .unwrap_or_default(),
        );
        frames.push(fd_site_label(f));
        frames
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

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
    /// Closed entries (processes that exited or exec'd) kept at most, and how many were dropped.
    pub keep_closed: usize,
    pub closed_dropped: u64,
    /// Processes that exec'd, their new program not inspected yet.
    pub execs: Vec<PendingExec>,
    started: Instant,
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
            keep_closed: MAX_CLOSED,
            closed_dropped: 0,
            execs: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn add(&mut self, pid: u32, interp: Interpreter) -> crate::error::Result<()> {
        self.add_stopped(pid, interp, 0)
    }

    /// Adds a process that is stopped inside `execs_in_flight` exec calls (launch mode: a
    /// ptrace exec stop, before the kernel's syscall exit counts the exec).
    pub fn add_stopped(
        &mut self,
        pid: u32,
        interp: Interpreter,
        execs_in_flight: u64,
    ) -> crate::error::Result<()> {
        self.probes.add_target(pid)?;
        let uprobes = match self.join_group(&interp) {
            Ok(n) => n,
            Err(e) => {
                self.probes.remove_target(pid);
                return Err(e);
            }
        };
        let type_type = interp
            .type_type_vaddr
            .and_then(|v| interp.bias_in(pid).map(|b| v.wrapping_add(b)));
        let warning = interp.unreadable_warning();
        if let Some(w) = &warning {
            say!("{w}");
        }
        if interp.layout().is_some_and(|l| l.op_load_global.is_empty()) {
            say!(
                "tracer: note: CPython {} is newer than tracer's opcode table: the heap census \
                 does not name the lines that use a global",
                interp.version
            );
        }
        // Threads of a program this pid ran before (an exec) are not this one's.
        self.probes.set_threads(pid, &HashMap::new());
        let st_k = self.probes.pid_stats(pid);
        let st = procfs::stat(pid);
        let ticks = st.map(|s| s.cpu_ticks).unwrap_or(0);
        self.targets.push(Target {
            pid,
            comm: procfs::comm(pid),
            interp,
            attached_at: Instant::now(),
            cpu_ticks_at_start: ticks,
            cpu_ticks_last: ticks,
            start_ticks: st.map(|s| s.start_ticks).unwrap_or(0),
            exited_after: None,
            execd: None,
            execs_seen: st_k.execs + execs_in_flight,
            born_ns: st_k.last_exec_ns,
            alloc_calls_base: st_k.alloc_calls,
            launched: false,
            last: None,
            frozen: None,
            uprobes,
            runtime: None,
            published: HashMap::new(),
            samples: HashMap::new(),
            window_opened_ns: 0,
            pending: HashMap::new(),
            windows: 0,
            armed: Duration::ZERO,
            type_type,
            types: HashMap::new(),
            history: Vec::new(),
            census: None,
            container: procfs::container(pid),
            nspid: procfs::nspid(pid),
            warning,
            layout_checked: false,
            pending_since: None,
        });
        self.refresh_threads();
        Ok(())
    }

    /// The probe group of an interpreter file, created (and in exact mode attached) for its
    /// first target. Returns the number of probes attached for good.
    fn join_group(&mut self, interp: &Interpreter) -> crate::error::Result<usize> {
        if let Some(g) = self.groups.iter().find(|g| g.file == interp.file_id) {
            return Ok(g.probes);
        }
        let probes = match self.mode {
            Mode::Exact => self.probes.attach_allocator(interp, &interp.alloc.hooks)?,
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
    }

    /// Publishes each live target's threads (tid -> PyThreadState) to the kernel. Cheap: a few
    /// reads of target memory per thread; run often so new threads get Python stacks quickly.
    pub fn refresh_threads(&mut self) {
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            if replaced(&self.probes, t) {
                continue; // its memory is another program's now (closed at the next tick)
            }
            let fresh = t.runtime.is_none();
            if fresh {
                if t.warning.is_some() {
                    continue;
                }
                let (Some(layout), Some(rt), Some(ct)) = (
                    t.interp.layout(),
                    t.interp.runtime_vaddr,
                    t.interp.code_type_vaddr,
                ) else {
                    continue;
                };
                let Some(bias) = t.interp.bias_in(t.pid) else {
                    continue;
                };
                let mut runtime =
                    Runtime::new(t.pid, layout, rt.wrapping_add(bias), ct.wrapping_add(bias));
                // The layout is trusted once it reads this process right.
                if !t.layout_checked {
                    let why = match runtime.validate() {
                        Check::Valid => None,
                        Check::Invalid(why) => Some(why),
                        Check::Pending(why) => {
                            let since = *t.pending_since.get_or_insert_with(Instant::now);
                            if since.elapsed() <= LAYOUT_PENDING_LIMIT {
                                continue;
                            }
                            Some(why)
                        }
                        // Starting or finalizing: nothing to check (said in the summary if
                        // it never changes).
                        Check::NotRunning => {
                            t.pending_since.get_or_insert_with(Instant::now);
                            continue;
                        }
                        // Threads decode: their frames are checked when one shows; after the
                        // limit (threads that only run native code) the thread check stands.
                        Check::ThreadsOnly => {
                            let since = *t.pending_since.get_or_insert_with(Instant::now);
                            if since.elapsed() <= LAYOUT_PENDING_LIMIT {
                                continue;
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
                        t.warning = Some(w);
                        continue;
                    }
                    t.layout_checked = true;
                    let _ = self.probes.set_pyconf(t.pid, frames::pyconf(layout, t.pid));
                }
                t.runtime = Some(runtime);
                // Launch mode: the file was not mapped when the target was added.
                if t.type_type.is_none() {
                    t.type_type = t.interp.type_type_vaddr.map(|v| v.wrapping_add(bias));
                }
                if self.census && t.census.is_none() {
                    let type_type = t.type_type.unwrap_or(0);
                    t.census = Some(Census::new(t.pid, layout, rt.wrapping_add(bias), type_type));
                }
            }
            let rt = t.runtime.as_mut().unwrap();
            let now: HashMap<u32, u64> = rt.threads().into_iter().collect();
            if now.is_empty() {
                // Not initialised yet (launch mode): try again next time.
                t.runtime = None;
                continue;
            }
            if fresh && self.python_walk {
                // Now that the thread list is known, the kernel can find new threads by itself.
                let _ = self.probes.set_pyconf(t.pid, rt.conf());
            }
            if now != t.published {
                self.probes.set_threads(t.pid, &now);
                t.published = now;
            }
        }
    }

    /// Watch mode: opens and closes the allocator windows, one per probe group. Run every
    /// ~10 ms.
    ///
    /// A window's cost is the time its probes are armed: the window itself plus their release
    /// (see `Probes::release_allocator`). The next window opens when that time is `budget`
    /// percent of the time since this one opened.
    pub fn windows(&mut self) {
        if !self.windowed() {
            return;
        }
        let now = Instant::now();
        for g in 0..self.groups.len() {
            let file = self.groups[g].file;
            let members = self.members(file);
            match self.groups[g].window {
                Window::Open(since)
                    if members.is_empty() || now.duration_since(since) >= self.window =>
                {
                    self.probes.release_allocator(file, true);
                    self.groups[g].window = Window::Closing(since);
                }
                Window::Closing(since) | Window::Freeing(since) => {
                    if let Some(armed) = self.close_step(g) {
                        self.groups[g].next_window = since + armed.mul_f64(100.0 / self.budget);
                        self.harvested = true;
                    }
                }
                Window::Closed if !members.is_empty() && now >= self.groups[g].next_window => {
                    // Attached through a live process's view of the file.
                    let interp = &self.targets[members[0]].interp;
                    let hooks = crate::probes::watch_hooks(&interp.alloc.hooks);
                    match self.probes.attach_allocator(interp, &hooks) {
                        Ok(_) => {
                            self.groups[g].window = Window::Open(now);
                            let opened = monotonic_ns();
                            for i in members {
                                self.targets[i].windows += 1;
                                self.targets[i].window_opened_ns = opened;
                            }
                        }
                        Err(e) => {
                            say!("tracer: {e}; retrying later");
                            self.groups[g].next_window =
                                now + self.window.mul_f64(100.0 / self.budget);
                        }
                    }
                }
                _ => {}
            }
        }
        // Groups whose processes all exited, once their window is closed.
        let idle: Vec<FileId> = self
            .groups
            .iter()
            .filter(|g| g.window == Window::Closed)
            .map(|g| g.file)
            .filter(|&f| self.members(f).is_empty())
            .collect();
        self.groups.retain(|g| !idle.contains(&g.file));
    }

    /// Watch mode with a budget: allocator probes in windows. (`--budget 0`: none at all; the
    /// heap census and the descriptors only.)
    pub fn windowed(&self) -> bool {
        self.mode == Mode::Watch && self.budget > 0.0
    }

    /// When `windows` next has something to do (None outside watch mode).
    pub fn next_window_event(&self) -> Option<Instant> {
        if !self.windowed() {
            return None;
        }
        let poll = Instant::now() + Duration::from_millis(10);
        self.groups
            .iter()
            .map(|g| match g.window {
                Window::Open(since) => since + self.window,
                Window::Closing(_) | Window::Freeing(_) => poll,
                Window::Closed => g.next_window,
            })
            .min()
    }

    /// Was a window harvested since the last call?
    pub fn take_harvested(&mut self) -> bool {
        std::mem::take(&mut self.harvested)
    }

    /// One step in closing a group's window, once the probes released by the previous step are
    /// gone. The window's allocations are fingerprinted while the free probes still remove what
    /// dies (a block freed unseen and reused by another object would otherwise be fingerprinted
    /// as that object, and live on under the window's stack); the free probes go next, and what
    /// is still in the map then becomes samples. Returns the time the probes were armed when
    /// done.
    fn close_step(&mut self, g: usize) -> Option<Duration> {
        let file = self.groups[g].file;
        if !self.probes.released(file) {
            return None;
        }
        let members = self.members(file);
        match self.groups[g].window {
            Window::Closing(since) => {
                for &i in &members {
                    self.fingerprint_window(i);
                }
                self.probes.release_allocator(file, false);
                self.groups[g].window = Window::Freeing(since);
                None
            }
            Window::Freeing(since) => {
                let armed = since.elapsed();
                for &i in &members {
                    self.harvest(i);
                    self.targets[i].armed += armed;
                }
                self.groups[g].window = Window::Closed;
                Some(armed)
            }
            _ => None,
        }
    }

    /// Fingerprints the allocations the window saw that hold a Python object.
    fn fingerprint_window(&mut self, i: usize) {
        let pid = self.targets[i].pid;
        let mut seen = Vec::new();
        self.probes.for_each_alloc(|k, a| {
            if k.pid == pid {
                seen.push((*k, *a));
            }
        });
        let t = &mut self.targets[i];
        t.pending.clear();
        for (k, a) in seen {
            if t.samples.len() + t.pending.len() >= MAX_SAMPLES {
                break;
            }
            let Some(bytes) =
                mem::Process(pid).bytes(k.addr, (a.size as usize).min(8 * sampling::WORDS))
            else {
                continue;
            };
            // The type candidates (words 1, 3, 5), checked against the target's memory.
            let w = sampling::words_of(&bytes);
            let known: HashMap<u64, bool> = [w[1], w[3], w[5]]
                .into_iter()
                .map(|c| (c, is_type_object(pid, t.type_type, &mut t.types, c)))
                .collect();
            if let Some(fp) =
                sampling::fingerprint(&bytes, a.size, |c| known.get(&c).copied().unwrap_or(false))
            {
                t.pending.insert(
                    k.addr,
                    Sample {
                        stack: (a.ustack, a.pystack),
                        size: a.size,
                        ts_ns: a.ts_ns,
                        fp,
                    },
                );
            }
        }
    }

    /// After the free probes are gone: the fingerprinted allocations that were not freed
    /// meanwhile (still in the map, same entry) become samples.
    fn harvest(&mut self, i: usize) {
        let pid = self.targets[i].pid;
        let left: HashMap<u64, u64> = self
            .probes
            .take_allocs(pid)
            .into_iter()
            .map(|(k, a)| (k.addr, a.ts_ns))
            .collect();
        let t = &mut self.targets[i];
        for (addr, s) in t.pending.drain() {
            if left.get(&addr) == Some(&s.ts_ns) {
                t.samples.insert(addr, s);
            }
        }
    }

    /// Closes every window (before the final report), waiting for the probes to go.
    pub fn close_windows(&mut self) {
        for g in 0..self.groups.len() {
            if let Window::Open(since) = self.groups[g].window {
                self.probes.release_allocator(self.groups[g].file, true);
                self.groups[g].window = Window::Closing(since);
            }
            while matches!(
                self.groups[g].window,
                Window::Closing(_) | Window::Freeing(_)
            ) {
                if self.close_step(g).is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Drops the samples whose block no longer holds what was sampled.
    fn verify_samples(&mut self, i: usize) {
        let t = &mut self.targets[i];
        let pid = t.pid;
        t.samples.retain(|addr, s| {
            match sampling::read_words(&mem::Process(pid), *addr, s.fp.n) {
                Some(now) => sampling::alive(&s.fp, &now),
                None => false, // unmapped
            }
        });
    }

    /// Records every live target's last snapshot as a checkpoint, grouped by frames.
    pub fn checkpoint(&mut self) {
        let at = self.started.elapsed().as_secs_f64();
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            let Some(snap) = &t.last else { continue };
            let mut cp = Checkpoint {
                at,
                ..Default::default()
            };
            // Watch mode counts the samples of earlier windows only: the ones the last window
            // just took are alive by construction, and their number is noise, not growth.
            let mut by_stack: HashMap<StackKey, (u64, u64)> = HashMap::new();
            if self.mode == Mode::Watch {
                let now = monotonic_ns();
                let min_age = self.min_age.as_nanos() as u64;
                for s in t.samples.values().filter(|s| {
                    s.ts_ns < t.window_opened_ns && now.saturating_sub(s.ts_ns) >= min_age
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
                let e = cp.allocs.entry(frames).or_default();
                e.0 += bytes;
                e.1 += count;
            }
            for f in &snap.fds {
                *cp.fds.entry(snap.fd_site(f)).or_default() += 1;
            }
            t.history.push(cp);
        }
    }

    /// Samples the Python stacks every live target's threads are running (read from outside,
    /// the thread states already published): the census attributes its growing containers to
    /// the call paths that reach the lines using them.
    pub fn sample_stacks(&mut self) {
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            if !t.census.as_ref().is_some_and(|c| c.wants_stacks) || replaced(&self.probes, t) {
                continue;
            }
            let (Some(c), Some(rt)) = (t.census.as_mut(), t.runtime.as_mut()) else {
                continue;
            };
            let tstates: Vec<u64> = t.published.values().copied().collect();
            c.add_stacks(rt.stacks(&tstates));
        }
    }

    /// A heap census pass of every live target (read from outside; the targets run on).
    pub fn census(&mut self) {
        let at = self.started.elapsed().as_secs_f64();
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            if replaced(&self.probes, t) {
                continue;
            }
            if let Some(c) = t.census.as_mut() {
                c.pass(at, t.runtime.as_mut());
            }
        }
    }

    /// Frames of one stack, root first: Python frames with the native frames chosen by `native`.
    fn frames_of(&mut self, i: usize, key: StackKey) -> Vec<String> {
        let pid = self.targets[i].pid;
        let native = self.symbolizer.native(&self.probes, pid, key.0);
        let py = match (self.probes.pystack(key.1), self.targets[i].runtime.as_mut()) {
            (Some(stack), Some(rt)) => rt.labels(key.1, &stack),
            _ => Vec::new(),
        };
        merge_frames(py, native, self.native)
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

    /// Keeps at most `keep_closed` closed entries: a host that starts processes all day must not
    /// grow the tracer without bound. The ones with nothing growing go first, oldest first;
    /// then the oldest. Their number is reported.
    fn bound_closed(&mut self) {
        let closed = self
            .targets
            .iter()
            .filter(|t| t.exited_after.is_some())
            .count();
        if closed <= self.keep_closed {
            return;
        }
        let mut excess = closed - self.keep_closed;
        let growing = |t: &Target| {
            t.frozen.as_ref().is_some_and(|r| {
                r.suspects
                    .iter()
                    .any(|s| s.trend.verdict == crate::trend::Verdict::Growing)
            })
        };
        for quiet_only in [true, false] {
            self.targets.retain(|t| {
                let drop = excess > 0 && t.exited_after.is_some() && !(quiet_only && growing(t));
                if drop {
                    excess -= 1;
                }
                !drop
            });
        }
        self.closed_dropped += (closed - self.keep_closed) as u64;
    }

    /// Makes a closed entry's report for good and drops what it was made from.
    fn freeze(&mut self, i: usize) {
        let probes_off = self.mode == Mode::Watch && !self.windowed();
        let frozen = crate::report::freeze(&self.targets[i], probes_off);
        let t = &mut self.targets[i];
        t.frozen = Some(frozen);
        t.published.clear();
        t.runtime = None;
        t.census = None;
        t.last = None;
        t.history = Vec::new();
        t.samples = HashMap::new();
        t.pending = HashMap::new();
        t.types = HashMap::new();
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
        t.execd = Some(into.clone());
        t.execs_seen = st.execs;
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
                python::inspect_pid(e.pid)
            } else {
                Err(crate::error::Error::NoSuchPid(e.pid))
            };
            let outcome = match result {
                Ok(interp) => match self.add(e.pid, interp) {
                    Ok(()) => {
                        let t = self.targets.last_mut().unwrap();
                        t.launched = e.launched;
                        ExecOutcome::Python(self.targets.len() - 1)
                    }
                    Err(err) => ExecOutcome::Failed { pid: e.pid, err },
                },
                Err(crate::error::Error::NoSuchPid(_)) => ExecOutcome::Gone(e.pid),
                Err(crate::error::Error::NotPython { .. }) if e.since.elapsed() < EXEC_GRACE => {
                    self.execs.push(e);
                    continue;
                }
                Err(crate::error::Error::NotPython { comm, .. }) => {
                    ExecOutcome::NotPython { pid: e.pid, comm }
                }
                Err(err) => ExecOutcome::Failed { pid: e.pid, err },
            };
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
            if st.execs > self.targets[i].execs_seen {
                events.push(self.close_execd(i, &st));
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
                .map(|t| (t.pid, (t.born_ns, HashMap::new())))
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
        for i in 0..self.targets.len() {
            let pid = self.targets[i].pid;
            if self.targets[i].exited_after.is_some() {
                continue;
            }
            // Gone, a zombie, or its pid already reused by another process.
            let alive = procfs::stat(pid).is_some_and(|s| {
                !matches!(s.state, 'Z' | 'X') && s.start_ticks == self.targets[i].start_ticks
            });
            if !alive {
                let t = &mut self.targets[i];
                t.exited_after = Some(t.attached_at.elapsed());
                if t.comm == "?" || t.comm.is_empty() {
                    t.comm = "python".into();
                }
                events.push(Event::Exited(pid));
                self.freeze(i);
                self.probes.set_threads(pid, &HashMap::new());
                self.probes.remove_target(pid);
                self.symbolizer.forget(pid);
                continue;
            }
            if self.mode == Mode::Watch {
                self.verify_samples(i);
            }
            let born = self.targets[i].born_ns;
            // Descriptors: drop entries whose descriptor is gone (close_range, exec with CLOEXEC).
            let links = procfs::fd_targets(pid).unwrap_or_default();
            let mut open = Vec::new();
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
                    None => self
                        .probes
                        .remove_fd(&FdKey { pid, fd: k.fd }, Some(v.ts_ns)),
                }
            }
            open.sort_by_key(|f| f.fd);
            let mut groups = by_pid.remove(&pid).map(|g| g.1).unwrap_or_default();
            if self.mode == Mode::Watch {
                for s in self.targets[i].samples.values().filter(|s| s.ts_ns >= born) {
                    add_to_group(&mut groups, s.stack, s.size, s.ts_ns, now, min_age);
                }
            }
            let mut frames = HashMap::new();
            let keys: Vec<StackKey> = groups
                .keys()
                .copied()
                .chain(open.iter().map(|f| (f.info.ustack, f.info.pystack)))
                .collect();
            for k in keys {
                if let std::collections::hash_map::Entry::Vacant(e) = frames.entry(k) {
                    let f = if k == BEFORE_EXEC {
                        vec!["[opened before exec]".to_string()]
                    } else {
                        self.frames_of(i, k)
                    };
                    e.insert(f);
                }
            }
            let stats = self.probes.pid_stats(pid);
            let t = &mut self.targets[i];
            if stats.execs > t.execs_seen {
                // It exec'd while this snapshot was read: the last one from before the exec
                // stays (the next tick closes the entry).
                continue;
            }
            if let Some(st) = procfs::stat(pid) {
                t.cpu_ticks_last = st.cpu_ticks;
            }
            t.last = Some(ProcSnapshot {
                allocs: groups,
                fds: open,
                stats,
                frames,
            });
        }
        // A program replaced by an exec keeps its group until its successor is known
        // (`follow_execs`): the same interpreter again keeps its probes.
        if events.iter().any(|e| matches!(e, Event::Exited(_))) {
            self.retire_groups();
        }
        self.bound_closed();
        events
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

/// Has the target's program been replaced by an exec the collector has not handled yet?
fn replaced(probes: &Probes, t: &Target) -> bool {
    probes.pid_stats(t.pid).execs > t.execs_seen
}

/// Is `addr` a Python type object (its own type is `type`, or a metaclass whose type is)?
fn is_type_object(
    pid: u32,
    type_type: Option<u64>,
    cache: &mut HashMap<u64, bool>,
    addr: u64,
) -> bool {
    let Some(tt) = type_type else { return false };
    if addr < 0x1000 {
        return false;
    }
    if let Some(v) = cache.get(&addr) {
        return *v;
    }
    let ty = |a: u64| -> Option<u64> {
        procfs::read_mem(pid, a + 8, 8)
            .ok()
            .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
    };
    let v = match ty(addr) {
        Some(m) if m == tt => true,
        Some(m) if m > 0x1000 => ty(m) == Some(tt),
        _ => false,
    };
    if cache.len() < 100_000 {
        cache.insert(addr, v);
    }
    v
}

/// Is this a Python frame label ("function (file:LINE)")?
pub fn is_python_frame(f: &str) -> bool {
    f.ends_with(')')
        && f.contains(" (")
        && f.rsplit(':')
            .next()
            .is_some_and(|l| l.trim_end_matches(')').parse::<u32>().is_ok())
}

/// Verdicts judge Python call paths: the native frames below them (which C routine allocated,
/// or first touched a page in watch mode) would split one line's growth into several stacks.
pub fn verdict_key(frames: Vec<String>) -> Vec<String> {
    if frames.iter().any(|f| is_python_frame(f)) {
        frames
            .into_iter()
            .filter(|f| is_python_frame(f) || f == "[truncated]")
            .collect()
    } else {
        frames
    }
}

/// The kind of resource a descriptor refers to, without its name: descriptors opened at the same
/// place count as one site whatever file they name.
pub fn fd_site_label(f: &OpenFd) -> String {
    crate::report::split_resource(&crate::report::fd_label(f)).0
}

/// Is this native frame part of the interpreter's own machinery (where Python frames take over)?
fn is_interpreter_frame(name: &str) -> bool {
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
pub fn merge_frames(py: Vec<String>, native: Vec<String>, mode: NativeMode) -> Vec<String> {
    if py.is_empty() {
        return match mode {
            NativeMode::None => vec!["[no Python stack]".into()],
            _ => native,
        };
    }
    let mut out = py;
    match mode {
        NativeMode::None => {}
        NativeMode::All => out.extend(native),
        NativeMode::Leaf => {
            // From the leaf up to the first interpreter frame, at most four.
            let leaf: Vec<String> = native
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn native_frames_join_python_ones() {
        let py = v(&["main (app.py:10)", "leak (app.py:3)"]);
        let native = v(&[
            "_start",
            "_PyEval_EvalFrameDefault",
            "list_append",
            "_PyObject_Malloc",
        ]);
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::Leaf),
            v(&[
                "main (app.py:10)",
                "leak (app.py:3)",
                "list_append",
                "_PyObject_Malloc"
            ])
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
            v(&["[no Python stack]"])
        );
    }
}
