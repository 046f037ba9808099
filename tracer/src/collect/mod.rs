//! Collector: reads the kernel maps into per-process snapshots, reconciles descriptors with
//! /proc/PID/fd, notices targets that exit or exec (an exec closes the old program's entry up to
//! the exec; the new program gets an entry of its own if it is CPython). It hands over plain views
//! (`snapshot`) and the entries that closed, and knows nothing of the report.
//!
//! One file per job: `targets` (what a traced process is, adding it, its exit, the view the
//! report reads), `exec` (a program replaced by an exec, and the new one inspected), `forks` (the
//! processes traced ones start), `groups` (the allocator probes shared by the processes that map
//! an interpreter file), `threads` (publishing a process's Python threads to the kernel),
//! `census` (heap census passes, resident memory, the Python stacks read for the census), `watch`
//! (watch mode's windows and their survivors), `tick` (the snapshot of every target, each
//! second), `checkpoint` (the snapshots kept as series), `merge` (a stack's frames, Python and
//! native joined).

mod census;
mod checkpoint;
mod exec;
mod forks;
mod groups;
mod merge;
mod targets;
mod threads;
mod tick;
mod watch;

use std::time::{Duration, Instant};

use crate::config::{Mode, NativeMode};
use crate::probes::Probes;
use crate::snapshot::{CollectorView, StackKey};
use crate::symbolize::Symbolizer;
pub use census::ResidentState;
pub use exec::{ExecOutcome, PendingExec, EXEC_GRACE};
pub use forks::{Followed, Forked, Missed};
pub use groups::ProbeGroup;
pub use merge::merge_frames;
pub use targets::{hooks_of, Counters, ExecState, Target};
pub use threads::Threads;
pub use watch::{Survivor, WatchState, Window};

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

/// The stack key of descriptors inherited across an exec.
const BEFORE_EXEC: StackKey = (-7, 0);

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
    /// Interpreter files (device, inode) whose layout read a live process right: trusted for
    /// the other processes that map them (see `refresh_target`).
    trusted_files: std::collections::HashSet<(u64, u64)>,
    /// Census rounds started so far (`census`).
    census_round: u64,
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
            stacks_lost_seen: 0,
            stacks_collected_at: 0,
            stacks_collect_cost: Duration::ZERO,
            deadline: None,
            ending: false,
            sampler_error: None,
            started: Instant::now(),
            census_round: 0,
            trusted_files: Default::default(),
        }
    }

    /// Has the recording's deadline (`-d`) passed?
    pub fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
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
}
