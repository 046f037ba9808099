//! Verdict policy: every series the tracer judges (a stack's outstanding bytes, a descriptor
//! site's open descriptors, a census container's items, a type's object count, the resident
//! memory) is judged here, with its noise floor, and every list of them is ordered here.
//!
//! Outstanding memory alone does not say "leak": a cache that fills once and stays flat is
//! healthy, and a burst of garbage is freed by the next collection. A series is `growing` when its
//! value keeps rising over the recent half of the recording: a robust slope (Theil-Sen, the median
//! of pairwise slopes, insensitive to one-off jumps) above zero, a net gain above the series'
//! noise floor, and rises in most steps at some time resolution (slow leaks rise in every coarse
//! step even when they do not in every checkpoint). `freed` means it went back to (almost)
//! nothing; everything else is `stable`; `unknown` until `MIN_CHECKPOINTS` values.

use std::cmp::Ordering;
use std::fmt;

use crate::frame::{Frame, Marker};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Growing,
    Stable,
    Freed,
    /// Fewer than `MIN_CHECKPOINTS` checkpoints: too early to judge.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Growing => "growing",
            Verdict::Stable => "stable",
            Verdict::Freed => "freed",
            Verdict::Unknown => "unknown",
        })
    }
}

/// Checkpoints needed before judging.
pub const MIN_CHECKPOINTS: usize = 4;
/// Fraction of steps that must rise (at the best resolution) for a sustained rise, and that may
/// fall. Flat steps are allowed: a sampled series only moves when a window was open.
const RISING_STEPS: f64 = 0.6;
const FALLING_STEPS: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    pub verdict: Verdict,
    /// Robust growth rate over the recent window, per minute.
    pub per_min: f64,
    /// Gain since the first checkpoint.
    pub gained: f64,
}

/// Median of pairwise slopes.
fn theil_sen(p: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::new();
    for i in 0..p.len() {
        for j in i + 1..p.len() {
            let dt = p[j].0 - p[i].0;
            if dt > 0.0 {
                slopes.push((p[j].1 - p[i].1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(|a, b| a.total_cmp(b));
    let m = slopes.len() / 2;
    if slopes.len() % 2 == 1 {
        slopes[m]
    } else {
        (slopes[m - 1] + slopes[m]) / 2.0
    }
}

/// Is the rise sustained: at some resolution (every step, every 2nd, 4th... while at least three
/// steps remain), do most steps rise and few fall?
fn sustained(w: &[(f64, f64)]) -> bool {
    let mut stride = 1;
    while (w.len() - 1) / stride >= 3 {
        let pts: Vec<f64> = w.iter().step_by(stride).map(|p| p.1).collect();
        let steps = pts.len() - 1;
        let rises = pts.windows(2).filter(|s| s[1] > s[0]).count();
        let falls = pts.windows(2).filter(|s| s[1] < s[0]).count();
        if rises as f64 >= RISING_STEPS * steps as f64
            && falls as f64 <= FALLING_STEPS * steps as f64
        {
            return true;
        }
        stride *= 2;
    }
    false
}

/// Judges one stack from its (seconds, value) checkpoints, oldest first. `min_gain` is the
/// smallest net gain over the recent window that can count as growth (noise floor).
pub fn judge(series: &[(f64, f64)], min_gain: f64) -> Trend {
    judge_rate(series, min_gain, series)
}

/// As `judge`, with the verdict taken from `verdict_series` (sample counts, in watch mode) and
/// the rate and gain from `series` (bytes).
pub fn judge_rate(verdict_series: &[(f64, f64)], min_gain: f64, series: &[(f64, f64)]) -> Trend {
    let v = judge_one(verdict_series, min_gain);
    let r = judge_one(series, 0.0);
    Trend {
        verdict: v.verdict,
        per_min: r.per_min,
        gained: r.gained,
    }
}

fn judge_one(series: &[(f64, f64)], min_gain: f64) -> Trend {
    let first = series.first().map(|p| p.1).unwrap_or(0.0);
    let last = series.last().map(|p| p.1).unwrap_or(0.0);
    let peak = series.iter().map(|p| p.1).fold(0.0, f64::max);
    let gained = last - first;
    if series.len() < MIN_CHECKPOINTS {
        return Trend {
            verdict: Verdict::Unknown,
            per_min: 0.0,
            gained,
        };
    }
    // The recent half (at least MIN_CHECKPOINTS points): growth that stopped long ago is a
    // plateau, not a leak.
    let n = series.len();
    let w = &series[n - (n / 2 + 1).max(MIN_CHECKPOINTS).min(n)..];
    let per_s = theil_sen(w);
    let net = w.last().unwrap().1 - w[0].1;
    let verdict = if peak > 0.0 && last <= peak * 0.05 {
        Verdict::Freed
    } else if per_s > 0.0 && net >= min_gain && sustained(w) {
        Verdict::Growing
    } else {
        Verdict::Stable
    };
    Trend {
        verdict,
        per_min: per_s * 60.0,
        gained,
    }
}

/// What a series counts: each kind has its noise floor, the smallest net gain over the recent
/// window that can count as growth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Series {
    /// Outstanding bytes of a stack (exact mode).
    Bytes,
    /// Survivors of a stack: allocations a watch window saw that are still alive (a small share
    /// of the allocations).
    Survivors,
    /// Open descriptors of a site.
    Descriptors,
    /// Items of a census container.
    Items,
    /// Objects of one type: noisier than a container's length, since garbage in cycles counts
    /// until a full collection frees it.
    Objects,
    /// Tuples and dicts tracked by the gc: one that holds only atomic items is untracked only
    /// by a full collection (dicts up to 3.12), minutes apart in a busy process (a Celery
    /// master gained 1,100 such tuples a minute, which one `gc.collect()` took back, with 10
    /// objects unreachable): their tracked count rises between full collections in any busy
    /// program. A leak of them shows in the container that holds them.
    LazilyUntracked,
    /// The process's resident memory, in bytes.
    Resident,
}

impl Series {
    /// The series of a census type's object count.
    pub fn of_type(name: &str) -> Series {
        if name == "tuple" || name == "dict" {
            Series::LazilyUntracked
        } else {
            Series::Objects
        }
    }

    /// The noise floor, given the series' last value.
    pub fn min_gain(self, last: f64) -> f64 {
        match self {
            Series::Bytes => 64.0 * 1024.0,
            Series::Survivors => 8.0,
            Series::Descriptors => 2.0,
            // 16 items, or 1% of the size.
            Series::Items => (last * 0.01).max(16.0),
            // 16 objects, or 5% of them.
            Series::Objects => (last * 0.05).max(16.0),
            // 16 objects, or a quarter of them.
            Series::LazilyUntracked => (last * 0.25).max(16.0),
            // 1 MiB, or 2% of the resident size.
            Series::Resident => (last * 0.02).max(1048576.0),
        }
    }
}

/// Judges one series of (seconds, value) points, oldest first.
pub fn judge_series(kind: Series, series: &[(f64, f64)]) -> Trend {
    let last = series.last().map(|p| p.1).unwrap_or(0.0);
    let mut floor = kind.min_gain(last);
    if matches!(
        kind,
        Series::Objects | Series::LazilyUntracked | Series::Descriptors | Series::Items
    ) {
        // Objects that the gc collects in batches (reference cycles) swing between passes by
        // what one collection frees: a count that drops that much at once must gain more than
        // the drop to be growing, or passes that fall between collections read as a rise. So
        // do the descriptors such objects hold (an SQLAlchemy engine per request: its pooled
        // connection's file stays open until a full collection takes the engine's cycle), and
        // containers pruned in batches (sqlite3's list of weak references to a connection's
        // cursors, pruned every 200 cursors).
        let drop = series
            .windows(2)
            .map(|w| w[0].1 - w[1].1)
            .fold(0.0, f64::max);
        let base = floor;
        floor = floor.max(drop);
        // And since a collection came, the count must pass the peak it fell from: a recording
        // that ends on the rise between two collections (engines made per request, in cycles)
        // has not grown.
        let last_drop = series.windows(2).rposition(|w| w[0].1 - w[1].1 > base);
        let mut t = judge(series, floor);
        if let Some(i) = last_drop {
            let peak = series[..=i].iter().map(|p| p.1).fold(0.0, f64::max);
            if t.verdict == Verdict::Growing && last - peak < base {
                t.verdict = Verdict::Stable;
            }
        }
        return t;
    }
    judge(series, floor)
}

/// As `judge_series`, for a series of counts or byte sizes.
pub fn judge_counts(kind: Series, series: &[(f64, u64)]) -> Trend {
    let s: Vec<(f64, f64)> = series.iter().map(|&(t, v)| (t, v as f64)).collect();
    judge_series(kind, &s)
}

/// Watch windows: the verdict from the stack's survivors, the rate and gain from its bytes.
pub fn judge_survivors(survivors: &[(f64, f64)], bytes: &[(f64, f64)]) -> Trend {
    judge_rate(survivors, Series::Survivors.min_gain(0.0), bytes)
}

fn growing(t: &Trend) -> bool {
    t.verdict == Verdict::Growing
}

/// A memory stack whose outstanding allocations are a population that turns over: every one of
/// them younger than a checkpoint interval, so none that an earlier checkpoint counted is still
/// there. Garbage waiting for the gc (reference cycles made per request) and short-lived work
/// are such populations; sampled at checkpoints that fall at different points of the gc's
/// cycle, their size can rise over several checkpoints in a row, but nothing accumulates: they
/// are not growing. A leak keeps its allocations, which age with the recording. A few
/// allocations only (a buffer that grows by realloc is one young block at a time) are not a
/// population: left to the series.
pub fn turned_over(oldest_age_s: f64, allocations: u64, interval_s: f64) -> bool {
    const POPULATION: u64 = 8;
    allocations >= POPULATION && oldest_age_s < interval_s
}

/// The order of every list of judged things: growing first, fastest first; then the others,
/// largest first. `size` is what "largest" means for the list (bytes, items, objects).
pub fn order(a: &Trend, a_size: u64, b: &Trend, b_size: u64) -> Ordering {
    order_grouped((a, 0, a_size), (b, 0, b_size))
}

/// As `order`, with groups (lower first) between "growing first" and the rates: things whose
/// rates cannot be compared (bytes before descriptors), or that a reader can place (named
/// containers before unnamed ones).
pub fn order_grouped(a: (&Trend, u8, u64), b: (&Trend, u8, u64)) -> Ordering {
    let ((ta, ga, sa), (tb, gb, sb)) = (a, b);
    growing(tb)
        .cmp(&growing(ta))
        .then(ga.cmp(&gb))
        .then_with(|| {
            if growing(ta) {
                tb.per_min.total_cmp(&ta.per_min)
            } else {
                Ordering::Equal
            }
        })
        .then(sb.cmp(&sa))
}

// What the readings say: the rules the report applies beside the series' verdicts.

/// Resident memory's noise floor: it grows when it gains more than 1 MiB or 2% of the resident
/// size (`rss`), steadily.
pub fn resident_min_gain(rss: u64) -> f64 {
    (rss as f64 * 0.02).max(1048576.0)
}

/// The allocators keep fragmented free space when it is a quarter of the resident size or more.
pub fn fragmented(free: u64, rss: u64) -> bool {
    rss > 0 && free * 4 >= rss
}

/// What malloc_trim(0) would give back is worth saying from 1 MiB.
pub const TRIM_WORTH_SAYING: u64 = 1 << 20;

/// A part of resident memory is worth showing on its own from 5% of the resident size.
pub fn large_part(bytes: u64, rss: u64) -> bool {
    bytes * 20 >= rss
}

/// Exact mode saw most of the memory the allocators hold in use when its outstanding bytes are
/// this share of it (percent) or more; below, the rest was allocated before it attached, or
/// through a fast path the build inlines.
pub const SEEN_MOST_PCT: f64 = 90.0;

/// `n` of `of` is most of them: more than half.
pub fn most(n: u64, of: u64) -> bool {
    n * 2 > of
}

/// Resident memory grows and nothing the heap census reaches does: no container, no type. Said
/// only once every container is judged (too few passes say nothing yet).
pub fn grows_out_of_reach(rss: Verdict, containers: &[Verdict], types: &[Verdict]) -> bool {
    rss == Verdict::Growing
        && containers.iter().all(|v| *v != Verdict::Unknown)
        && !containers.contains(&Verdict::Growing)
        && !types.contains(&Verdict::Growing)
}

/// The rules the heap census asks while it collects (it judges nothing itself): which containers
/// to name and describe first, which are suspect, which classes grow.
pub fn census_rules() -> crate::python::census::Rules {
    crate::python::census::Rules {
        rank: rank_containers,
        suspect: container_suspect,
        objects_growing: |s| judge_counts(Series::Objects, s).verdict == Verdict::Growing,
    }
}

/// Census containers' length series in the order of every list of judged things (growing first,
/// fastest first, then the longest): (index, judged growing).
pub fn rank_containers(series: &[&[(f64, u64)]]) -> Vec<(usize, bool)> {
    let mut v: Vec<(usize, Trend, u64)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let len = s.last().map(|p| p.1).unwrap_or(0);
            (i, judge_counts(Series::Items, s), len)
        })
        .collect();
    v.sort_by(|a, b| order(&a.1, a.2, &b.1, b.2));
    v.into_iter().map(|(i, t, _)| (i, growing(&t))).collect()
}

/// A census container is suspect when its length is judged growing, or rose at each of the last
/// three passes (not a verdict yet: reason enough to look for its name and sample the stacks
/// that use it).
pub fn container_suspect(s: &[(f64, u64)]) -> bool {
    let rising = s.len() >= 3 && s[s.len() - 3..].windows(2).all(|w| w[1].1 > w[0].1);
    rising || growing(&judge_counts(Series::Items, s))
}

/// The grouping key of what verdicts judge (memory sites, descriptor sites): verdicts judge
/// Python call paths: the native frames below them (which C routine allocated,
/// or first touched a page in watch mode) would split one line's growth into several stacks.
pub fn verdict_key(frames: Vec<Frame>) -> Vec<Frame> {
    if frames.iter().any(Frame::is_python) {
        frames
            .into_iter()
            .filter(|f| f.is_python() || *f == Frame::Marker(Marker::Truncated))
            .collect()
    } else {
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_collected_counts_must_pass_their_last_peak() {
        // Cells of engines made per request (in reference cycles): a full collection every
        // ~30 s, the recording ends on a rise.
        let s: Vec<(f64, u64)> = [2900, 2980, 3060, 3140, 2880, 2950, 3010, 3080, 3150, 3200]
            .iter()
            .enumerate()
            .map(|(i, &n)| (5.0 * i as f64, n))
            .collect();
        assert_ne!(judge_counts(Series::Objects, &s).verdict, Verdict::Growing);
        // A leak under the same collections: each peak above the last.
        let s: Vec<(f64, u64)> = [2900, 3100, 3300, 3500, 3250, 3450, 3650, 3850, 4050, 4250]
            .iter()
            .enumerate()
            .map(|(i, &n)| (5.0 * i as f64, n))
            .collect();
        assert_eq!(judge_counts(Series::Objects, &s).verdict, Verdict::Growing);
        // sqlite3's weak references to a connection's cursors: pruned every 200 cursors.
        let s: Vec<(f64, u64)> = [40, 80, 120, 160, 200, 20, 60, 100, 140, 185]
            .iter()
            .enumerate()
            .map(|(i, &n)| (5.0 * i as f64, n))
            .collect();
        assert_ne!(judge_counts(Series::Items, &s).verdict, Verdict::Growing);
    }

    #[test]
    fn tracked_tuples_rise_between_full_collections() {
        // A healthy Celery master's gc-tracked tuples every 10 s (one gc.collect() took back
        // 1,000 of them, with 10 objects unreachable).
        let s: Vec<(f64, u64)> = [12428, 12807, 12540, 12918, 13232, 13330]
            .iter()
            .enumerate()
            .map(|(i, &n)| (10.0 * i as f64, n))
            .collect();
        assert_eq!(judge_counts(Series::Objects, &s).verdict, Verdict::Growing);
        assert_ne!(
            judge_counts(Series::of_type("tuple"), &s).verdict,
            Verdict::Growing
        );
        // Tuples kept by a leak double within a minute: still growing.
        let s: Vec<(f64, u64)> = (0..6)
            .map(|i| (10.0 * i as f64, 12000 + 2500 * i))
            .collect();
        assert_eq!(
            judge_counts(Series::of_type("tuple"), &s).verdict,
            Verdict::Growing
        );
    }

    fn series(v: &[f64]) -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, x)| (i as f64 * 10.0, *x))
            .collect()
    }

    #[test]
    fn a_steady_leak_grows() {
        let s = series(&[0., 10., 20., 30., 40., 50., 60., 70.]);
        let t = judge(&s, 1.0);
        assert_eq!(t.verdict, Verdict::Growing);
        assert!((t.per_min - 60.0).abs() < 1e-9);
        assert_eq!(t.gained, 70.0);
    }

    #[test]
    fn a_cache_that_filled_is_stable() {
        let s = series(&[0., 50., 100., 100., 101., 100., 99., 100., 100., 100.]);
        assert_eq!(judge(&s, 1.0).verdict, Verdict::Stable);
    }

    #[test]
    fn collected_garbage_is_freed_or_stable() {
        let s = series(&[0., 30., 5., 28., 3., 30., 2., 0.]);
        assert_eq!(judge(&s, 1.0).verdict, Verdict::Freed);
        let s = series(&[0., 30., 5., 28., 3., 30., 2., 29.]);
        assert_eq!(judge(&s, 1.0).verdict, Verdict::Stable);
    }

    #[test]
    fn a_slow_chunky_leak_grows_at_a_coarser_resolution() {
        // one step every other checkpoint (a sampled heap: one arena per 20 s)
        let s = series(&[0., 0., 1., 1., 2., 2., 3., 3., 4., 4., 5., 5., 6.]);
        assert_eq!(judge(&s, 1.0).verdict, Verdict::Growing);
    }

    #[test]
    fn rare_steps_are_not_a_leak() {
        let s = series(&[0., 1., 1., 1., 1., 1., 2., 2., 2., 2., 2., 2.]);
        assert_eq!(judge(&s, 1.0).verdict, Verdict::Stable);
    }

    #[test]
    fn every_kind_has_its_floor() {
        // 10 items over a 100k-item dict is noise; 10 descriptors are not.
        let dict = series(&[100_000., 100_002., 100_004., 100_006., 100_008., 100_010.]);
        assert_eq!(judge_series(Series::Items, &dict).verdict, Verdict::Stable);
        let counts: Vec<(f64, u64)> = (0..8).map(|i| (i as f64 * 10.0, 100 + 500 * i)).collect();
        assert_eq!(
            judge_counts(Series::Items, &counts).verdict,
            Verdict::Growing
        );
        let fds = series(&[0., 2., 4., 6., 8., 10.]);
        assert_eq!(
            judge_series(Series::Descriptors, &fds).verdict,
            Verdict::Growing
        );
        let rss = series(&[1e9, 1.001e9, 1.002e9, 1.003e9, 1.004e9, 1.005e9]);
        assert_eq!(
            judge_series(Series::Resident, &rss).verdict,
            Verdict::Stable
        );
    }

    #[test]
    fn garbage_in_cycles_is_under_the_objects_floor() {
        // A clean service's cells between full collections: +2 a second over ~1500.
        let cells: Vec<(f64, u64)> = (0..12).map(|i| (i as f64 * 5.0, 1380 + 10 * i)).collect();
        assert_eq!(
            judge_counts(Series::Objects, &cells).verdict,
            Verdict::Stable
        );
        // Leaked file objects: +1 a second from a few.
        let files: Vec<(f64, u64)> = (0..18).map(|i| (i as f64 * 5.0, 5 + 5 * i)).collect();
        assert_eq!(
            judge_counts(Series::Objects, &files).verdict,
            Verdict::Growing
        );
    }

    #[test]
    fn objects_collected_in_batches_are_not_growing() {
        // Reference cycles between collections: passes that happen to fall later after each
        // collection (the census pass of tests/census.rs on 3.10 read 40..900 Nodes).
        let nodes: Vec<(f64, u64)> = [40, 700, 90, 380, 520, 610, 260, 700]
            .iter()
            .enumerate()
            .map(|(i, &n)| (i as f64 * 4.0, n))
            .collect();
        assert_eq!(
            judge_counts(Series::Objects, &nodes).verdict,
            Verdict::Stable
        );
        // A leak with the same swing on top of it still grows.
        let leak: Vec<(f64, u64)> = nodes
            .iter()
            .enumerate()
            .map(|(i, &(t, n))| (t, n + 1000 * i as u64))
            .collect();
        assert_eq!(
            judge_counts(Series::Objects, &leak).verdict,
            Verdict::Growing
        );
    }

    #[test]
    fn a_young_population_turned_over_a_young_block_did_not() {
        // The gc's garbage: 580 objects, the oldest 1.2 s old, checkpoints 5 s apart.
        assert!(turned_over(1.2, 580, 5.0));
        // A leak's allocations age with the recording.
        assert!(!turned_over(30.0, 580, 5.0));
        // One buffer grown by realloc is young at every checkpoint: the series judges it.
        assert!(!turned_over(0.5, 1, 5.0));
        // Fewer than two checkpoints: no interval, nothing turned over.
        assert!(!turned_over(1.2, 580, 0.0));
    }

    #[test]
    fn growing_first_fastest_first_then_largest() {
        let g = |per_min| Trend {
            verdict: Verdict::Growing,
            per_min,
            gained: 1.0,
        };
        let s = Trend {
            verdict: Verdict::Stable,
            per_min: 0.0,
            gained: 0.0,
        };
        assert_eq!(order(&g(1.0), 10, &s, 1000), Ordering::Less);
        assert_eq!(order(&g(5.0), 10, &g(1.0), 1000), Ordering::Less);
        assert_eq!(order(&s, 1000, &s, 10), Ordering::Less);
        // a group between: growing descriptors after growing memory, whatever their rates
        assert_eq!(
            order_grouped((&g(1.0), 0, 1), (&g(9.0), 1, 1)),
            Ordering::Less
        );
        assert_eq!(
            order_grouped((&s, 1, 1), (&g(9.0), 0, 1)),
            Ordering::Greater
        );
    }

    #[test]
    fn noise_floor_and_short_runs() {
        let s = series(&[100., 100.5, 101., 101.5, 102., 102.5]);
        assert_eq!(judge(&s, 10.0).verdict, Verdict::Stable);
        assert_eq!(
            judge(&series(&[0., 10., 20.]), 1.0).verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn the_grouping_key_keeps_python_frames() {
        let st = vec![
            Frame::python("main", "app.py", Some(3)),
            Frame::python("_find", "<frozen importlib._bootstrap>", Some(1)),
            Frame::native("PyList_Append"),
        ];
        assert_eq!(verdict_key(st.clone()), st[..2].to_vec());
        let native = vec![Frame::native("malloc")];
        assert_eq!(verdict_key(native.clone()), native);
    }

    #[test]
    fn census_rules_rank_and_suspect() {
        let up: Vec<(f64, u64)> = (0..8).map(|i| (i as f64 * 10.0, 100 + 500 * i)).collect();
        let flat: Vec<(f64, u64)> = (0..8).map(|i| (i as f64 * 10.0, 8000)).collect();
        let small: Vec<(f64, u64)> = (0..8).map(|i| (i as f64 * 10.0, 10)).collect();
        assert_eq!(
            rank_containers(&[&small, &flat, &up]),
            vec![(2, true), (1, false), (0, false)]
        );
        assert!(container_suspect(&up) && !container_suspect(&flat));
        // Rising at each of the last passes, too early for a verdict.
        assert!(container_suspect(&[(0.0, 1), (1.0, 2), (2.0, 3)]));
        assert!(!container_suspect(&[(0.0, 1), (1.0, 2)]));
        assert!((super::census_rules().objects_growing)(&up));
    }
}
