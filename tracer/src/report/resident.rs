//! Resident memory, judged part by part: the last reading of each part, its growth per minute
//! and verdict over the readings, and what that says (a leak in objects, fragmentation, native
//! memory, buffers).

use crate::frame::Frame;
use crate::resident::{glibc::Heaps, pymalloc::Pools, Breakdown, Part};
use crate::snapshot::ProcSnapshot;
use crate::verdict::verdict_key;
use crate::verdict::{self, judge, Trend, Verdict};

/// One part of resident memory.
#[derive(Debug, Clone)]
pub struct PartReport {
    pub part: Part,
    pub bytes: u64,
    pub trend: Trend,
}

/// A process's resident memory, split.
#[derive(Debug, Clone)]
pub struct ResidentReport {
    pub rss: u64,
    pub trend: Trend,
    pub parts: Vec<PartReport>,
    pub pools: Pools,
    pub heaps: Heaps,
    pub threads: u64,
    pub notes: Vec<String>,
    pub readings: usize,
    /// Each reading's total (seconds since tracing began, bytes), oldest first: what the
    /// verdict judged.
    pub series: Vec<(f64, u64)>,
    pub last_ms: u128,
    /// What the split says (None: nothing to say, or not yet).
    pub reading: Option<Reading>,
    /// The parts worth showing on their own: the large ones (`verdict::large_part`) and the
    /// growing ones, largest first.
    pub notable: Vec<Part>,
}

impl ResidentReport {
    pub fn part(&self, p: Part) -> Option<&PartReport> {
        self.parts.iter().find(|r| r.part == p)
    }

    /// The parts that grow, fastest first.
    pub fn growing(&self) -> Vec<&PartReport> {
        let mut v: Vec<&PartReport> = self
            .parts
            .iter()
            .filter(|p| p.trend.verdict == Verdict::Growing)
            .collect();
        v.sort_by(|a, b| b.trend.per_min.total_cmp(&a.trend.per_min));
        v
    }
}

/// Judges the readings (oldest first). A part grows when it gains more than its noise floor
/// (`verdict::resident_min_gain`), steadily (the rule of every series: `verdict::judge`).
pub fn report(readings: &[(f64, Breakdown)]) -> Option<ResidentReport> {
    let (_, last) = readings.last()?;
    let floor = verdict::resident_min_gain(last.rss);
    let series = |f: &dyn Fn(&Breakdown) -> u64| -> Vec<(f64, f64)> {
        readings.iter().map(|(t, b)| (*t, f(b) as f64)).collect()
    };
    let parts = Part::ALL
        .iter()
        .map(|&p| PartReport {
            part: p,
            bytes: last.get(p),
            trend: judge(&series(&|b| b.get(p)), floor),
        })
        .collect();
    let mut r = ResidentReport {
        rss: last.rss,
        trend: judge(&series(&|b| b.rss), floor),
        parts,
        pools: last.pools.clone(),
        heaps: last.heaps.clone(),
        threads: last.threads,
        notes: last.notes.clone(),
        readings: readings.len(),
        series: readings.iter().map(|(t, b)| (*t, b.rss)).collect(),
        last_ms: last.took.as_millis(),
        reading: None,
        notable: Vec::new(),
    };
    r.reading = reading(&r);
    r.notable = notable(&r);
    Some(r)
}

/// The parts worth showing on their own, largest first.
fn notable(r: &ResidentReport) -> Vec<Part> {
    let mut parts: Vec<&PartReport> = r
        .parts
        .iter()
        .filter(|p| p.bytes > 0)
        .filter(|p| verdict::large_part(p.bytes, r.rss) || p.trend.verdict == Verdict::Growing)
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.bytes));
    parts.into_iter().map(|p| p.part).collect()
}

/// What the split says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// This part grows fastest.
    Grows(Part),
    /// Nothing grows, and the allocators keep this much free resident memory
    /// (`verdict::fragmented`), of which malloc_trim(0) would give back `trimmable` (worth
    /// saying: `verdict::TRIM_WORTH_SAYING`).
    Fragmented {
        free: u64,
        trimmable: u64,
        worth_trimming: bool,
    },
}

fn reading(r: &ResidentReport) -> Option<Reading> {
    if let Some(top) = r.growing().first() {
        return Some(Reading::Grows(top.part));
    }
    // "Nothing grows" needs verdicts.
    if r.parts.iter().any(|p| p.trend.verdict == Verdict::Unknown) {
        return None;
    }
    let free = r.part(Part::SmallFree).map_or(0, |p| p.bytes)
        + r.part(Part::MallocFree).map_or(0, |p| p.bytes);
    verdict::fragmented(free, r.rss).then_some(Reading::Fragmented {
        free,
        trimmable: r.heaps.trimmable,
        worth_trimming: r.heaps.trimmable >= verdict::TRIM_WORTH_SAYING,
    })
}

/// Where a process's heap grew, at one Python call path.
#[derive(Debug, Clone)]
pub struct HeapGrowth {
    pub frames: Vec<Frame>,
    /// Bytes the program break moved up by there (glibc's main heap), since attach.
    pub brk: u64,
    /// Bytes of anonymous memory mapped there that is still mapped (large malloc chunks,
    /// pymalloc arenas, extensions' allocators), or made writable (glibc's thread arenas).
    pub mapped: u64,
}

/// The call paths the heap grew at, most first (at most 8).
pub fn heap_growth(snap: &ProcSnapshot) -> Vec<HeapGrowth> {
    let mut by: std::collections::HashMap<Vec<Frame>, (u64, u64)> =
        std::collections::HashMap::new();
    for (k, (brk, mapped)) in &snap.grows {
        let frames = verdict_key(snap.frames.get(k).cloned().unwrap_or_default());
        let e = by.entry(frames).or_default();
        e.0 += brk;
        e.1 += mapped;
    }
    let mut v: Vec<HeapGrowth> = by
        .into_iter()
        .filter(|(_, (b, m))| b + m > 0)
        .map(|(frames, (brk, mapped))| HeapGrowth {
            frames,
            brk,
            mapped,
        })
        .collect();
    v.sort_by(|a, b| {
        (b.brk + b.mapped)
            .cmp(&(a.brk + a.mapped))
            .then_with(|| a.frames.cmp(&b.frames))
    });
    v.truncate(8);
    v
}

/// What share of the memory the allocators hold in use (small objects, malloc's chunks in use,
/// large blocks) a process's outstanding allocations are: exact mode's check against the
/// allocators' own account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InUseSeen {
    /// Bytes the allocators hold in use.
    pub in_use: u64,
    /// Outstanding bytes over `in_use`, in percent (at most 100).
    pub pct: f64,
    /// Most of it was seen (`verdict::SEEN_MOST_PCT`).
    pub most: bool,
}

/// `outstanding` bytes against what the split `r` says the allocators hold in use (None when
/// they hold nothing).
pub fn in_use_seen(r: &ResidentReport, outstanding: u64) -> Option<InUseSeen> {
    let in_use: u64 = [Part::SmallObjects, Part::MallocInUse, Part::LargeBlocks]
        .iter()
        .filter_map(|x| r.part(*x))
        .map(|x| x.bytes)
        .sum();
    if in_use == 0 {
        return None;
    }
    let share = outstanding as f64 * 100.0 / in_use as f64;
    Some(InUseSeen {
        in_use,
        pct: share.min(100.0),
        most: share >= verdict::SEEN_MOST_PCT,
    })
}
