//! The report model: per process, outstanding allocations and open descriptors grouped by stack
//! (typed frames), judged over the checkpoints. Built from the collector's plain views
//! (`snapshot`), never from the collector itself; it knows nothing of output formats.

use std::time::Duration;

use tracer_common::stat;

use std::collections::{BTreeSet, HashMap};

/// What the heap census found (plain data made by the census, read by the renderers).
pub use crate::snapshot::census;

pub use crate::config::Mode;
use crate::frame::{verdict_key, Frame};
use crate::snapshot::{fd_label, Checkpoint, CollectorView, HookCoverage, TargetView};
use crate::util::monotonic_ns;
use crate::verdict::{self, judge_sampled, judge_series, Series};
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
}

/// Suspects kept per process.
const MAX_SUSPECTS: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub enum Coverage {
    /// Watch mode: allocations sampled in windows, then followed from outside.
    Sampled {
        windows: u64,
        samples: u64,
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
    pub allocs: Vec<AllocStack>,
    pub fds: Vec<FdStack>,
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
            before_exec: self.execd.is_some(),
        });
        v
    }

    /// Marks the entry of a program replaced by an exec (the pid's next program may have an
    /// entry of its own).
    fn before_exec(&self) -> &'static str {
        if self.execd.is_some() {
            ", before exec"
        } else {
            ""
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
    pub alloc_calls: u64,
    pub free_calls: u64,
    /// Entries in the allocation and descriptor maps, and their capacities.
    pub alloc_entries: u64,
    pub fd_entries: u64,
    /// Processes that exited (or exec'd) whose entries were dropped to bound the tracer's memory,
    /// and how many such entries are kept.
    pub closed_dropped: u64,
    pub closed_kept: usize,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    pub interval: Duration,
    /// Watch mode: window length and budget (percent of the time the probes may be armed).
    pub budget: Option<(Duration, f64)>,
    pub elapsed: Duration,
    pub min_age: Duration,
    pub procs: Vec<ProcReport>,
    pub health: Health,
}

/// Below this many allocator calls per CPU-second of the target, the hooks are missing most of
/// the heap: an interpreter running Python code allocates far more often (hundreds of thousands of
/// times per second untraced; ~30,000+ per second even under the ~20 us cost of each probe).
const LOW_CALL_RATE: f64 = 2000.0;
/// Judge the call rate only once the target has used this much CPU.
const MIN_CPU_TO_JUDGE: f64 = 0.3;

pub fn assess_coverage(hooks: &HookCoverage, alloc_calls: u64, cpu_seconds: f64) -> Coverage {
    if !hooks.hooked {
        return Coverage::None {
            reason: hooks.notes.clone(),
        };
    }
    let rate = (cpu_seconds >= MIN_CPU_TO_JUDGE).then(|| alloc_calls as f64 / cpu_seconds);
    if hooks.inlined_fast_path {
        return Coverage::Low {
            reason: format!(
                "this build inlines pymalloc into its callers (LTO/PGO): the hooks only see allocations that miss the inlined fast path{}",
                rate.map(|r| format!(" (measured {r:.0} allocator calls per CPU-second)")).unwrap_or_default()
            ),
        };
    }
    match rate {
        Some(r) if r < LOW_CALL_RATE => Coverage::Low {
            reason: format!(
                "only {alloc_calls} allocator calls seen in {cpu_seconds:.1} CPU-seconds of the target ({r:.0}/s): most allocations bypass the hooked functions"
            ),
        },
        r => Coverage::Good { calls_per_cpu_s: r },
    }
}

/// Watch mode on a build that inlines pymalloc: the windows see only the allocations that miss the
/// inlined fast path, which favour whatever code carves fresh blocks, not what keeps them.
fn watch_biased(t: &TargetView) -> bool {
    t.windows > 0 && t.hooks.inlined_fast_path
}

/// Judges every stack and descriptor site seen at any checkpoint.
///
/// `biased`: the memory samples are not a fair sample of the allocations (see `watch_biased`):
/// memory suspects are listed but not judged.
fn suspects(
    t: &TargetView,
    allocs: &[AllocStack],
    now_ns: u64,
    sampled: bool,
    biased: bool,
) -> Vec<Suspect> {
    let h = t.history;
    // One value per checkpoint, 0 where the key is absent.
    let series = |value: &dyn Fn(&Checkpoint) -> u64| -> Vec<(f64, f64)> {
        h.iter().map(|c| (c.at, value(c) as f64)).collect()
    };
    let mut out = Vec::new();
    // The oldest allocation of each memory site, and the oldest descriptor of each descriptor
    // site (computed once: thousands of stacks map to hundreds of sites).
    let mut oldest_alloc: HashMap<Vec<Frame>, Duration> = HashMap::new();
    for a in allocs {
        let e = oldest_alloc
            .entry(verdict_key(a.frames.clone()))
            .or_default();
        *e = (*e).max(a.oldest_age);
    }
    let mut oldest_fd: HashMap<Vec<Frame>, u64> = HashMap::new();
    if let Some(s) = t.last {
        for f in &s.fds {
            let e = oldest_fd.entry(s.fd_site(f)).or_insert(u64::MAX);
            *e = (*e).min(f.info.ts_ns);
        }
    }
    let alloc_keys: BTreeSet<&Vec<Frame>> = h.iter().flat_map(|c| c.allocs.keys()).collect();
    for k in alloc_keys {
        let bytes = series(&|c| c.allocs.get(k).map(|v| v.0).unwrap_or(0));
        let last = h
            .last()
            .and_then(|c| c.allocs.get(k))
            .copied()
            .unwrap_or((0, 0));
        let trend = if biased {
            Trend {
                verdict: Verdict::Unknown,
                ..judge_series(Series::Bytes, &bytes)
            }
        } else if sampled {
            // Samples are a small share of the allocations: judge their number, not their bytes.
            let counts = series(&|c| c.allocs.get(k).map(|v| v.1).unwrap_or(0));
            judge_sampled(&counts, &bytes)
        } else {
            judge_series(Series::Bytes, &bytes)
        };
        out.push(Suspect {
            resource: Resource::Memory,
            frames: k.clone(),
            now: last.0,
            count: last.1,
            trend,
            oldest_age: oldest_alloc.get(k).copied(),
        });
    }
    let fd_keys: BTreeSet<&Vec<Frame>> = h.iter().flat_map(|c| c.fds.keys()).collect();
    for k in fd_keys {
        let open = series(&|c| c.fds.get(k).copied().unwrap_or(0));
        let now = h.last().and_then(|c| c.fds.get(k)).copied().unwrap_or(0);
        let oldest = oldest_fd.get(k).copied();
        out.push(Suspect {
            resource: Resource::Descriptors,
            frames: k.clone(),
            now,
            count: now,
            trend: judge_series(Series::Descriptors, &open),
            oldest_age: oldest.map(|ts| Duration::from_nanos(now_ns.saturating_sub(ts))),
        });
    }
    // Bytes and descriptors are not comparable: memory before descriptors.
    out.sort_by(|a, b| {
        let key = |s: &Suspect| (s.resource == Resource::Descriptors) as u8;
        verdict::order_grouped((&a.trend, key(a), a.now), (&b.trend, key(b), b.now))
            .then_with(|| a.frames.cmp(&b.frames))
    });
    out.truncate(MAX_SUSPECTS);
    out
}

/// Bytes gained by each memory stack between the first and the last checkpoint.
fn growth(t: &TargetView) -> Vec<(Vec<Frame>, u64)> {
    let (Some(first), Some(last)) = (t.history.first(), t.history.last()) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<Frame>, u64)> = last
        .allocs
        .iter()
        .filter_map(|(k, now)| {
            let before = first.allocs.get(k).map(|v| v.0).unwrap_or(0);
            (now.0 > before).then(|| (k.clone(), now.0 - before))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The report of one entry (a live process's, or the final one of an entry that closed).
pub fn process_report(t: &TargetView, probes_off: bool) -> ProcReport {
    let empty = Default::default();
    let snap = t.last.unwrap_or(&empty);
    let now = monotonic_ns();
    let frames_of = |k: (i32, u64)| snap.frames.get(&k).cloned().unwrap_or_default();
    let mut allocs: Vec<AllocStack> = snap
        .allocs
        .iter()
        .map(|(k, g)| AllocStack {
            frames: frames_of(*k),
            bytes: g.bytes,
            count: g.count,
            oldest_age: Duration::from_nanos(now.saturating_sub(g.oldest_ts)),
        })
        .collect();
    allocs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.frames.cmp(&b.frames)));
    let mut fds: Vec<FdStack> = Vec::new();
    for f in &snap.fds {
        let mut frames = frames_of((f.info.ustack, f.info.pystack));
        frames.push(fd_label(f));
        match fds.iter_mut().find(|s| s.frames == frames) {
            Some(s) => s.count += 1,
            None => fds.push(FdStack { frames, count: 1 }),
        }
    }
    fds.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
    // The pid's counters include the programs it ran before an exec.
    let alloc_calls = snap.stats.alloc_calls.saturating_sub(t.alloc_calls_base);
    let cpu_seconds = t.cpu_seconds;
    ProcReport {
        pid: t.pid,
        comm: t.comm.to_string(),
        container: t.container.map(str::to_string),
        nspid: t.nspid,
        interpreter: t.interpreter.clone(),
        exited_after: t.exited_after,
        execd: t.execd.map(str::to_string),
        total_bytes: allocs.iter().map(|a| a.bytes).sum(),
        total_allocs: allocs.iter().map(|a| a.count).sum(),
        open_fds: snap.fds.len() as u64,
        coverage: if probes_off {
            Coverage::CensusOnly
        } else if t.windows > 0 {
            Coverage::Sampled {
                windows: t.windows,
                samples: t.samples,
                armed_pct: 100.0 * t.armed.as_secs_f64() / t.traced_for.as_secs_f64().max(1e-9),
                partial: match assess_coverage(&t.hooks, 0, 0.0) {
                    Coverage::Low { reason } | Coverage::None { reason } => Some(reason),
                    _ => None,
                },
            }
        } else {
            assess_coverage(&t.hooks, alloc_calls, cpu_seconds)
        },
        alloc_calls,
        cpu_seconds,
        suspects: suspects(t, &allocs, now, t.windows > 0, watch_biased(t)),
        checkpoints: t.history.len(),
        growth: growth(t),
        census: t.census.clone(),
        warning: t.warning.clone(),
        allocs,
        fds,
    }
}

/// Most closed entries (processes that exited or exec'd) kept for the reports, by default.
pub const MAX_CLOSED: usize = 500;

/// The reports of the entries that closed (exit or exec), made once when they close: their
/// figures no longer change, and what they were made from is dropped. At most `keep` are kept:
/// a host that starts processes all day must not grow the tracer without bound.
#[derive(Debug, Clone)]
pub struct Archive {
    /// (entry number, report), oldest entry first.
    closed: Vec<(u64, ProcReport)>,
    keep: usize,
    dropped: u64,
}

impl Archive {
    pub fn new(keep: usize) -> Archive {
        Archive {
            closed: Vec::new(),
            keep,
            dropped: 0,
        }
    }

    /// Adds the final report of an entry that closed; then, when more than `keep` are kept, the
    /// ones with nothing growing go first, oldest first; then the oldest. Their number is
    /// reported.
    pub fn add(&mut self, t: &TargetView, probes_off: bool) {
        let r = process_report(t, probes_off);
        let at = self.closed.partition_point(|(seq, _)| *seq < t.seq);
        self.closed.insert(at, (t.seq, r));
        let n = self.closed.len();
        if n <= self.keep {
            return;
        }
        let mut excess = n - self.keep;
        let growing = |r: &ProcReport| {
            r.suspects
                .iter()
                .any(|s| s.trend.verdict == Verdict::Growing)
        };
        for quiet_only in [true, false] {
            self.closed.retain(|(_, r)| {
                let drop = excess > 0 && !(quiet_only && growing(r));
                if drop {
                    excess -= 1;
                }
                !drop
            });
        }
        self.dropped += (n - self.keep) as u64;
    }
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
            .map(|t| (t.seq, process_report(t, c.probes_off))),
    );
    procs.sort_by_key(|p| p.0);
    Report {
        mode: c.mode,
        interval: c.interval,
        budget: (c.mode == Mode::Watch).then_some((c.window, c.budget)),
        elapsed,
        min_age: c.min_age,
        procs: procs.into_iter().map(|p| p.1).collect(),
        health: Health {
            alloc_map_full: counter(stat::ALLOC_MAP_FULL),
            fd_map_full: counter(stat::FD_MAP_FULL),
            stacks_lost: counter(stat::STACK_LOST),
            alloc_calls: counter(stat::ALLOC_CALLS),
            free_calls: counter(stat::FREE_CALLS),
            alloc_entries: c.map_entries.0,
            fd_entries: c.map_entries.1,
            closed_dropped: archive.dropped,
            closed_kept: archive.keep,
        },
    }
}
