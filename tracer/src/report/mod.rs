//! The report model: per process, outstanding allocations and open descriptors grouped by stack
//! (typed frames), judged over the checkpoints. Built from the collector's plain views
//! (`snapshot`), never from the collector itself; it knows nothing of output formats.
//!
//! Suspects are placed at the application's line (`place.rs`): the stacks that share a call path
//! down to their innermost application frame are one suspect, judged on their sum, with the
//! library frames beneath it that hold the most kept as its `via` ("which allocation").

use std::time::Duration;

use tracer_common::stat;

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the heap census found, judged (the census's facts -> containers, types, tasks).
pub mod census;

pub mod resident;

pub use crate::config::Mode;
use crate::frame::Frame;
use crate::place::innermost_app;
pub use crate::place::AppPaths;
use crate::snapshot::{fd_label, Checkpoint, CollectorView, HookCoverage, TargetView};
use crate::util::monotonic_ns;
use crate::verdict::verdict_key;
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
const MAX_SUSPECTS: usize = 50;
/// Library call paths kept per suspect.
pub const MAX_VIA: usize = 3;

/// A stack's place: the key its series is judged under, its application frame, and the frames
/// below that frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub key: Vec<Frame>,
    pub app_frame: Option<Frame>,
    pub below: Vec<Frame>,
}

/// The file of a Python frame that a reader can open: generated code (`<string>`, the methods
/// namedtuple and dataclasses make, named like `__init__` on 3.13) and frozen modules are
/// never the placed frame; a file is a path or at least a name with an extension.
fn source_file(f: &Frame) -> Option<&str> {
    match f {
        Frame::Python { file, .. }
            if !file.starts_with('<') && (file.contains('/') || file.contains('.')) =>
        {
            Some(file.as_str())
        }
        _ => None,
    }
}

/// Places a verdict key (Python call path; descriptors: followed by the kind of resource) at its
/// innermost application frame: the key is cut below that frame, so that every stack through
/// the same application line is judged together. A stack without an application frame keeps
/// its key.
pub fn place(key: &[Frame], resource: Resource, paths: &AppPaths) -> Placed {
    let (path, leaf) = match (resource, key.split_last()) {
        (Resource::Descriptors, Some((leaf @ Frame::Resource { .. }, path))) => (path, Some(leaf)),
        _ => (key, None),
    };
    let Some(i) = innermost_app(paths, path.iter().map(source_file)) else {
        return Placed {
            key: key.to_vec(),
            app_frame: None,
            below: Vec::new(),
        };
    };
    let mut placed = path[..=i].to_vec();
    placed.extend(leaf.cloned());
    Placed {
        key: placed,
        app_frame: Some(path[i].clone()),
        below: path[i + 1..].to_vec(),
    }
}

/// Where the code that grows a census container sits in the application: of the sampled stacks
/// through its uses (most seen first), the first one with an application frame gives that frame
/// and, when the use itself is below it (in a library), the use.
/// A library use that only reads the container (see `ContainerReport::readers`) does not
/// feed it: its stacks are not where the container grows.
pub fn fed_from(k: &census::ContainerReport, paths: &AppPaths) -> Option<(Frame, Option<Frame>)> {
    k.stacks.iter().find_map(|(stack, _)| {
        let i = innermost_app(paths, stack.iter().map(source_file))?;
        let below = stack[i + 1..].iter().rev().find(|f| f.is_python()).cloned();
        if below
            .as_ref()
            .is_some_and(|b| k.readers.iter().any(|r| same_code(r, b)))
        {
            return None;
        }
        Some((stack[i].clone(), below))
    })
}

/// Two frames of the same function (their lines may differ).
fn same_code(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (
            Frame::Python {
                function: fa,
                file: la,
                ..
            },
            Frame::Python {
                function: fb,
                file: lb,
                ..
            },
        ) => fa == fb && la == lb,
        _ => false,
    }
}

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
    /// Which of the pid's programs replaced by an exec this is (1: the first), when it is one.
    pub image: u32,
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
    /// Resident memory split into parts (None before the first census pass, or without one).
    pub resident: Option<resident::ResidentReport>,
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
    pub min_age: Duration,
    pub procs: Vec<ProcReport>,
    pub health: Health,
    /// How frames are told apart as the application's (`--app-path`).
    pub places: AppPaths,
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

/// The stacks (verdict keys) of one placed suspect.
struct Group<'a> {
    app_frame: Option<Frame>,
    /// Each key, and its frames below the application frame.
    members: Vec<(&'a Vec<Frame>, Vec<Frame>)>,
}

/// Groups verdict keys by their place.
fn group<'a>(
    keys: impl Iterator<Item = &'a Vec<Frame>>,
    resource: Resource,
    paths: &AppPaths,
) -> BTreeMap<Vec<Frame>, Group<'a>> {
    let mut groups: BTreeMap<Vec<Frame>, Group<'a>> = BTreeMap::new();
    for k in keys {
        let p = place(k, resource, paths);
        groups
            .entry(p.key)
            .or_insert_with(|| Group {
                app_frame: p.app_frame,
                members: Vec::new(),
            })
            .members
            .push((k, p.below));
    }
    groups
}

/// The library call paths below a group's application frame, largest first.
fn via(members: &[(&Vec<Frame>, Vec<Frame>)], now: impl Fn(&Vec<Frame>) -> u64) -> Vec<Via> {
    let mut v: Vec<Via> = members
        .iter()
        .filter(|(_, below)| !below.is_empty())
        .map(|(k, below)| Via {
            frames: below.clone(),
            now: now(k),
        })
        .filter(|v| v.now > 0)
        .collect();
    v.sort_by(|a, b| b.now.cmp(&a.now).then_with(|| a.frames.cmp(&b.frames)));
    v.truncate(MAX_VIA);
    v
}

/// Judges every stack and descriptor site seen at any checkpoint, placed at its application
/// frame (`place`): the stacks through one application line are judged on their sum.
///
/// `biased`: the memory samples are not a fair sample of the allocations (see `watch_biased`):
/// memory suspects are listed but not judged.
fn suspects(
    t: &TargetView,
    allocs: &[AllocStack],
    now_ns: u64,
    sampled: bool,
    biased: bool,
    paths: &AppPaths,
) -> Vec<Suspect> {
    let h = t.history;
    // One value per checkpoint (the sum over a group's keys), 0 where they are absent.
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
    let last = h.last();
    let alloc_keys: BTreeSet<&Vec<Frame>> = h
        .iter()
        .flat_map(|c| c.allocs.keys().map(|k| &**k))
        .collect();
    for (key, g) in group(alloc_keys.into_iter(), Resource::Memory, paths) {
        let sum = |c: &Checkpoint, f: fn(&(u64, u64)) -> u64| -> u64 {
            g.members
                .iter()
                .filter_map(|(k, _)| c.allocs.get(*k))
                .map(f)
                .sum()
        };
        let bytes = series(&|c| sum(c, |v| v.0));
        let trend = if biased {
            Trend {
                verdict: Verdict::Unknown,
                ..judge_series(Series::Bytes, &bytes)
            }
        } else if sampled {
            // Samples are a small share of the allocations: judge their number, not their bytes.
            let counts = series(&|c| sum(c, |v| v.1));
            judge_sampled(&counts, &bytes)
        } else {
            judge_series(Series::Bytes, &bytes)
        };
        let at_last = |k: &Vec<Frame>| {
            last.and_then(|c| c.allocs.get(k))
                .copied()
                .unwrap_or((0, 0))
        };
        out.push(Suspect {
            resource: Resource::Memory,
            now: last.map(|c| sum(c, |v| v.0)).unwrap_or(0),
            count: last.map(|c| sum(c, |v| v.1)).unwrap_or(0),
            trend,
            oldest_age: g
                .members
                .iter()
                .filter_map(|(k, _)| oldest_alloc.get(*k).copied())
                .max(),
            via: via(&g.members, |k| at_last(k).0),
            app_frame: g.app_frame,
            frames: key,
        });
    }
    let fd_keys: BTreeSet<&Vec<Frame>> =
        h.iter().flat_map(|c| c.fds.keys().map(|k| &**k)).collect();
    for (key, g) in group(fd_keys.into_iter(), Resource::Descriptors, paths) {
        let sum =
            |c: &Checkpoint| -> u64 { g.members.iter().filter_map(|(k, _)| c.fds.get(*k)).sum() };
        let open = series(&sum);
        let now = last.map(sum).unwrap_or(0);
        let oldest = g
            .members
            .iter()
            .filter_map(|(k, _)| oldest_fd.get(*k).copied())
            .min();
        out.push(Suspect {
            resource: Resource::Descriptors,
            now,
            count: now,
            trend: judge_series(Series::Descriptors, &open),
            oldest_age: oldest.map(|ts| Duration::from_nanos(now_ns.saturating_sub(ts))),
            via: via(&g.members, |k| {
                last.and_then(|c| c.fds.get(k)).copied().unwrap_or(0)
            }),
            app_frame: g.app_frame,
            frames: key,
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
            (now.0 > before).then(|| (k.to_vec(), now.0 - before))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The report of one entry (a live process's, or the final one of an entry that closed).
pub fn process_report(t: &TargetView, probes_off: bool, paths: &AppPaths) -> ProcReport {
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
        image: 0,
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
        suspects: suspects(t, &allocs, now, t.windows > 0, watch_biased(t), paths),
        checkpoints: t.history.len(),
        growth: growth(t),
        census: t.census.as_ref().map(census::judge),
        resident: resident::report(t.resident),
        heap_growth: resident::heap_growth(snap),
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
    /// How the reports place frames (`--app-path`).
    places: AppPaths,
}

impl Archive {
    /// `places`: how every report (the closed entries' and the live ones') places frames.
    pub fn new(keep: usize, places: AppPaths) -> Archive {
        Archive {
            closed: Vec::new(),
            keep,
            dropped: 0,
            places,
        }
    }

    /// Adds the final report of an entry that closed; then, when more than `keep` are kept, the
    /// ones with nothing growing go first, oldest first; then the oldest. Their number is
    /// reported.
    pub fn add(&mut self, t: &TargetView, probes_off: bool) {
        let r = process_report(t, probes_off, &self.places);
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

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "/srv/app/app.py";
    const LOGGING: &str = "/usr/lib/python3.12/logging/__init__.py";
    const TEMPFILE: &str = "/usr/lib/python3.12/tempfile.py";
    const FLASK: &str = "/srv/venv/lib/python3.12/site-packages/flask/app.py";

    fn py(f: &str, file: &str, line: i32) -> Frame {
        Frame::python(f, file, Some(line))
    }

    /// The logger leak's stacks: Flask, the app's `user`, then logging's lines.
    fn logger_stack(leaf: Frame) -> Vec<Frame> {
        vec![
            py("dispatch_request", FLASK, 880),
            py("user", APP, 9),
            py("getLogger", LOGGING, 2150),
            leaf,
        ]
    }

    #[test]
    fn placed_at_the_innermost_application_frame() {
        let paths = AppPaths::default();
        let k = logger_stack(py("getLogger", LOGGING, 1403));
        let p = place(&k, Resource::Memory, &paths);
        assert_eq!(p.key, k[..2].to_vec());
        assert_eq!(p.app_frame, Some(py("user", APP, 9)));
        assert_eq!(p.below, k[2..].to_vec());
        // A leaf in the application: the key stays.
        let own = vec![py("dispatch_request", FLASK, 880), py("user", APP, 10)];
        let p = place(&own, Resource::Memory, &paths);
        assert_eq!(p.key, own);
        assert_eq!(p.app_frame, Some(py("user", APP, 10)));
        assert!(p.below.is_empty());
        // Generated code (a namedtuple's `__new__`) is not the application's line.
        let gen = vec![
            py("user", APP, 9),
            py("urlsplit", "/usr/lib/python3.12/urllib/parse.py", 506),
            py("<lambda>", "<string>", 1),
        ];
        let p = place(&gen, Resource::Memory, &paths);
        assert_eq!(p.key, gen[..1].to_vec());
        assert_eq!(p.below, gen[1..].to_vec());
        // No application frame: the key stays, unplaced.
        let lib = vec![py("run", FLASK, 1), py("dumps", LOGGING, 2)];
        let p = place(&lib, Resource::Memory, &paths);
        assert_eq!((p.key, p.app_frame), (lib, None));
        // Descriptors keep their kind of resource as the leaf.
        let kind = Frame::Resource {
            kind: "file".into(),
            name: None,
        };
        let fd = vec![
            py("spool", APP, 51),
            py("mkstemp", TEMPFILE, 357),
            py("_mkstemp_inner", TEMPFILE, 256),
            kind.clone(),
        ];
        let p = place(&fd, Resource::Descriptors, &paths);
        assert_eq!(p.key, vec![py("spool", APP, 51), kind]);
        assert_eq!(p.below, fd[1..3].to_vec());
        // --app-path: the Flask frame is the application's.
        let flask = AppPaths::new(&["/srv/venv/lib/python3.12/site-packages/flask".into()]);
        let p = place(&k, Resource::Memory, &flask);
        assert_eq!(p.key, k[..1].to_vec());
        assert_eq!(p.below, k[1..].to_vec());
    }

    fn target<'a>(history: &'a [Checkpoint]) -> TargetView<'a> {
        TargetView {
            seq: 0,
            pid: 1,
            comm: "python3",
            container: None,
            nspid: None,
            interpreter: String::new(),
            hooks: HookCoverage::default(),
            exited_after: None,
            execd: None,
            last: None,
            history,
            alloc_calls_base: 0,
            cpu_seconds: 0.0,
            windows: 0,
            samples: 0,
            armed: Duration::ZERO,
            traced_for: Duration::ZERO,
            census: None,
            resident: &[],
            warning: None,
        }
    }

    #[test]
    fn stacks_through_one_application_line_are_judged_together() {
        // Two logging lines below `user`, gaining 20 and 15 kB per checkpoint: each under the
        // noise floor alone (64 KiB over the recent window of 4 checkpoints), growing together. A line of the
        // application's own that stays flat stays apart and stable.
        let a = logger_stack(py("getLogger", LOGGING, 1403));
        let b = logger_stack(py("isEnabledFor", LOGGING, 1805));
        let flat = vec![py("dispatch_request", FLASK, 880), py("index", APP, 20)];
        let history: Vec<Checkpoint> = (0..6u64)
            .map(|i| Checkpoint {
                at: i as f64 * 10.0,
                allocs: HashMap::from([
                    (a.clone().into(), (20_000 * i, 10 * i)),
                    (b.clone().into(), (15_000 * i + 1, 5 * i + 1)),
                    (flat.clone().into(), (1 << 20, 100)),
                ]),
                fds: HashMap::new(),
            })
            .collect();
        let t = target(&history);
        let s = suspects(&t, &[], 0, false, false, &AppPaths::default());
        assert_eq!(s.len(), 2, "{s:#?}");
        let user = &s[0];
        assert_eq!(user.frames, a[..2].to_vec());
        assert_eq!(user.trend.verdict, Verdict::Growing);
        assert_eq!(user.now, 100_000 + 75_001);
        assert_eq!(user.count, 50 + 26);
        assert_eq!(user.app_frame, Some(py("user", APP, 9)));
        // Largest first: which allocation.
        assert_eq!(user.via.len(), 2);
        assert_eq!(user.via[0].frames, a[2..].to_vec());
        assert_eq!(user.via[0].now, 100_000);
        assert_eq!(user.via[1].frames, b[2..].to_vec());
        assert_eq!(s[1].frames, flat);
        assert_eq!(s[1].trend.verdict, Verdict::Stable);
        assert!(s[1].via.is_empty());
        // Judged apart, each logging line is under the floor: the grouping is what finds it.
        let lib = AppPaths::new(&["/nowhere".into()]);
        let s = suspects(&t, &[], 0, false, false, &lib);
        assert_eq!(s.len(), 3);
        assert!(s
            .iter()
            .all(|s| s.trend.verdict != Verdict::Growing && s.via.is_empty()));
    }

    #[test]
    fn descriptors_placed_at_the_application_line() {
        let kind = Frame::Resource {
            kind: "file".into(),
            name: None,
        };
        let site = |inner: i32| {
            vec![
                py("spool", APP, 51),
                py("mkstemp", TEMPFILE, 357),
                py("_mkstemp_inner", TEMPFILE, inner),
                kind.clone(),
            ]
        };
        let history: Vec<Checkpoint> = (0..6u64)
            .map(|i| Checkpoint {
                at: i as f64 * 10.0,
                allocs: HashMap::new(),
                fds: HashMap::from([(site(256).into(), i), (site(260).into(), 2 * i)]),
            })
            .collect();
        let s = suspects(
            &target(&history),
            &[],
            0,
            false,
            false,
            &AppPaths::default(),
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].resource, Resource::Descriptors);
        assert_eq!(s[0].frames, vec![py("spool", APP, 51), kind.clone()]);
        assert_eq!(s[0].now, 15);
        assert_eq!(s[0].trend.verdict, Verdict::Growing);
        assert_eq!(s[0].via[0].frames, site(260)[1..3].to_vec());
        assert_eq!(s[0].via[0].now, 10);
    }

    #[test]
    fn census_containers_fed_from_the_application() {
        let k = census::ContainerReport {
            name: "logging.Logger.manager.loggerDict".into(),
            named: true,
            type_name: "dict".into(),
            len: 10,
            trend: Trend {
                verdict: Verdict::Growing,
                per_min: 1.0,
                gained: 1.0,
            },
            holds: None,
            root: "global",
            uses: vec![py("getLogger", LOGGING, 1403)],
            readers: vec![],
            stacks: vec![
                (
                    vec![
                        py("_bootstrap", "<frozen x>", 1),
                        py("__init__", "__init__", 3),
                        py("getLogger", LOGGING, 1403),
                    ],
                    9,
                ),
                (logger_stack(py("getLogger", LOGGING, 1403)), 5),
            ],
        };
        let paths = AppPaths::default();
        assert_eq!(
            fed_from(&k, &paths),
            Some((py("user", APP, 9), Some(py("getLogger", LOGGING, 1403))))
        );
        let own = census::ContainerReport {
            stacks: vec![(vec![py("leak", APP, 3)], 2)],
            ..k.clone()
        };
        assert_eq!(fed_from(&own, &paths), Some((py("leak", APP, 3), None)));
        // A library function that only reads it (asyncio.all_tasks iterating the task
        // registry) does not feed it, whichever app frame called it: no line.
        let read = census::ContainerReport {
            readers: vec![py("getLogger", LOGGING, 1400)],
            ..k.clone()
        };
        assert_eq!(fed_from(&read, &paths), None);
        let none = census::ContainerReport {
            stacks: vec![],
            ..k
        };
        assert_eq!(fed_from(&none, &paths), None);
    }
}
