//! The report model: per process, outstanding allocations and open descriptors grouped by stack
//! (typed frames), judged over the checkpoints. Built from the collector's plain views
//! (`snapshot`), never from the collector itself; it knows nothing of output formats.
//!
//! Suspects are placed at the application's line (`place.rs`): the stacks that share a call path
//! down to their innermost application frame are one suspect, judged on their sum, with the
//! library frames beneath it that hold the most kept as its `via` ("which allocation").

use std::collections::HashMap;
use std::time::Duration;

use tracer_common::stat;

/// What the heap census found, judged (the census's facts -> containers, types, tasks).
pub mod census;

mod archive;
mod census_reading;
mod descriptors;
mod process;
pub mod resident;
mod suspects;

pub use archive::{Archive, MAX_CLOSED};
pub use census_reading::{AwaitedBy, CensusReading, FedFrom};
pub use descriptors::FdSite;
pub use process::{assess_coverage, process_report};
pub use suspects::{place, Placed};

pub use crate::config::Mode;
use crate::frame::Frame;
pub use crate::place::AppPaths;
use crate::snapshot::CollectorView;
pub use crate::verdict::{Trend, Verdict, MIN_CHECKPOINTS};

#[derive(Debug, Clone)]
pub struct AllocStack {
    /// Frames root first, below the process frame.
    pub frames: Vec<Frame>,
    pub bytes: u64,
    pub count: u64,
    pub oldest_age: Duration,
}

#[derive(Debug, Clone)]
pub struct FdStack {
    /// Frames root first, below the process frame; the last one names the resource.
    pub frames: Vec<Frame>,
    pub count: u64,
}

/// What a suspect holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Bytes (outstanding allocations, or live samples in watch mode).
    Memory,
    Descriptors,
}

/// A stack (or descriptor site) judged over the checkpoints.
#[derive(Debug, Clone)]
pub struct Suspect {
    pub resource: Resource,
    /// Frames root first; for descriptors the last one is the kind of resource.
    pub frames: Vec<Frame>,
    /// Outstanding bytes or open descriptors at the last checkpoint.
    pub now: u64,
    /// Objects (allocations or live samples) at the last checkpoint; descriptors: = now.
    pub count: u64,
    pub trend: Trend,
    pub oldest_age: Option<Duration>,
    /// The innermost application frame of its call path ("where in your code"), if it has one:
    /// then `frames` end there (descriptors: followed by the kind of resource).
    pub app_frame: Option<Frame>,
    /// The library frames below the application frame, largest first (at most `MAX_VIA`):
    /// "which allocation" (or which call opened the descriptors).
    pub via: Vec<Via>,
}

/// A call path below a suspect's application frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Via {
    /// The frames below the application frame, root first.
    pub frames: Vec<Frame>,
    /// Its bytes (memory) or descriptors at the last checkpoint.
    pub now: u64,
}

/// Suspects kept per process.
pub(crate) const MAX_SUSPECTS: usize = 50;
/// Library call paths kept per suspect.
pub const MAX_VIA: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub enum Coverage {
    /// Watch mode: allocations seen in windows (their survivors), then followed from outside.
    Windowed {
        windows: u64,
        survivors: u64,
        /// Share of the target's traced time (percent) its allocator probes were armed.
        armed_pct: f64,
        /// Why the windows see only part of the allocations (an inlining build), if they do.
        partial: Option<String>,
    },
    /// The hooks see the allocator's calls.
    Good { calls_per_cpu_s: Option<f64> },
    /// The hooks see a fraction of the allocations only.
    Low { reason: String },
    /// No allocator functions could be hooked.
    None { reason: String },
    /// Watch mode without a budget: no allocator probe by choice; the heap census reports.
    CensusOnly,
}

#[derive(Debug, Clone)]
pub struct ProcReport {
    pub pid: u32,
    pub comm: String,
    /// Short id (or name) of the container the process runs in (None on the host).
    pub container: Option<String>,
    /// Its pid inside its own pid namespace, when that differs from the host's.
    pub nspid: Option<u32>,
    pub interpreter: String,
    pub exited_after: Option<Duration>,
    /// The program the process exec'd (then `exited_after` is the time of the exec, and the
    /// figures are the last ones from before it).
    pub execd: Option<String>,
    /// Which of the pid's programs replaced by an exec this is (1: the first), when it is one.
    pub image: u32,
    pub allocs: Vec<AllocStack>,
    pub fds: Vec<FdStack>,
    /// The descriptors grouped by site, most first.
    pub fd_sites: Vec<FdSite>,
    pub total_bytes: u64,
    pub total_allocs: u64,
    pub open_fds: u64,
    pub coverage: Coverage,
    pub alloc_calls: u64,
    pub cpu_seconds: f64,
    /// Ranked: growing first (fastest first), then by size.
    pub suspects: Vec<Suspect>,
    pub checkpoints: usize,
    /// Memory stacks (Python call paths) that grew since the first checkpoint, with the bytes
    /// gained.
    pub growth: Vec<(Vec<Frame>, u64)>,
    /// The heap census (None when disabled or the interpreter's layout is unknown).
    pub census: Option<crate::report::census::CensusReport>,
    /// What the report reads in the census's findings (None without a census).
    pub census_reading: Option<CensusReading>,
    /// Resident memory split into parts (None before the first census pass, or without one).
    pub resident: Option<resident::ResidentReport>,
    /// The outstanding bytes against what the allocators hold in use, by the split of resident
    /// memory (None without one, or when the probes are off).
    pub in_use_seen: Option<resident::InUseSeen>,
    /// Where the heap grew since attach (brk, mmap, mprotect), by Python call path, most first.
    pub heap_growth: Vec<resident::HeapGrowth>,
    /// What tracer cannot read in this process (its interpreter's layout), one line.
    pub warning: Option<String>,
}

impl ProcReport {
    /// The root frames of every stack of this process: its container, if any, then the
    /// process.
    pub fn root_frames(&self) -> Vec<Frame> {
        let mut v: Vec<Frame> = self
            .container
            .iter()
            .cloned()
            .map(Frame::Container)
            .collect();
        v.push(Frame::Process {
            comm: self.comm.clone(),
            pid: self.pid,
            before_exec: self.execd.is_some().then_some(self.image.max(1)),
        });
        v
    }

    /// Marks the entry of a program replaced by an exec (the pid's next program may have an
    /// entry of its own), numbered from the second one.
    fn before_exec(&self) -> String {
        match (&self.execd, self.image) {
            (None, _) => String::new(),
            (Some(_), 0 | 1) => ", before exec".into(),
            (Some(_), n) => format!(", before exec {n}"),
        }
    }

    /// The process as the summary names it: host pid, and the pid inside its namespace.
    pub fn title(&self) -> String {
        let inner = match (self.nspid, &self.container) {
            (Some(n), Some(c)) => format!(", pid {n} in container {c}"),
            (Some(n), None) => format!(", pid {n} in its namespace"),
            (None, Some(c)) => format!(", container {c}"),
            (None, None) => String::new(),
        };
        format!(
            "{} (pid {}{inner}{})",
            self.comm,
            self.pid,
            self.before_exec()
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    pub alloc_map_full: u64,
    pub fd_map_full: u64,
    pub stacks_lost: u64,
    /// Python stacks the kernel could not record (its Python stack map was full).
    pub py_stacks_lost: u64,
    pub alloc_calls: u64,
    pub free_calls: u64,
    /// Entries in the allocation and descriptor maps, and their capacities.
    pub alloc_entries: u64,
    pub fd_entries: u64,
    /// Processes that exited (or exec'd) whose entries were dropped to bound the tracer's memory,
    /// and how many such entries are kept.
    pub closed_dropped: u64,
    pub closed_kept: usize,
    /// Processes that could not be traced.
    pub missed: crate::snapshot::Missed,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    pub interval: Duration,
    /// Watch mode: window length and budget (percent of the time the probes may be armed).
    pub budget: Option<(Duration, f64)>,
    pub elapsed: Duration,
    /// When tracing began, seconds since the epoch (the series' times add to it).
    pub started_unix: f64,
    pub min_age: Duration,
    pub procs: Vec<ProcReport>,
    pub health: Health,
    /// How frames are told apart as the application's (`--app-path`).
    pub places: AppPaths,
}

/// The report: the closed entries' (kept in `archive`) and the live ones', in the order they were
/// attached.
pub fn build(c: &CollectorView, archive: &Archive, elapsed: Duration) -> Report {
    let s = &c.kernel_stats;
    let counter = |i: u32| s.get(i as usize).copied().unwrap_or(0);
    let mut procs: Vec<(u64, ProcReport)> = archive.closed.clone();
    procs.extend(
        c.targets
            .iter()
            .map(|t| (t.seq, process_report(t, c.probes_off, &archive.places))),
    );
    procs.sort_by_key(|p| p.0);
    // A pid that exec'd several times: its replaced programs are numbered, in order.
    let mut images: HashMap<u32, u32> = HashMap::new();
    for (_, p) in procs.iter_mut().filter(|(_, p)| p.execd.is_some()) {
        let n = images.entry(p.pid).or_default();
        *n += 1;
        p.image = *n;
    }
    Report {
        mode: c.mode,
        interval: c.interval,
        budget: (c.mode == Mode::Watch).then_some((c.window, c.budget)),
        elapsed,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() - elapsed.as_secs_f64()),
        min_age: c.min_age,
        procs: procs.into_iter().map(|p| p.1).collect(),
        health: Health {
            alloc_map_full: counter(stat::ALLOC_MAP_FULL),
            fd_map_full: counter(stat::FD_MAP_FULL),
            stacks_lost: counter(stat::STACK_LOST),
            py_stacks_lost: counter(stat::PYSTACK_LOST),
            alloc_calls: counter(stat::ALLOC_CALLS),
            free_calls: counter(stat::FREE_CALLS),
            alloc_entries: c.map_entries.0,
            fd_entries: c.map_entries.1,
            closed_dropped: archive.dropped,
            closed_kept: archive.keep,
            missed: c.missed,
        },
        places: archive.places.clone(),
    }
}
